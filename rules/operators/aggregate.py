"""``aggregate``: tumbling or sliding windows, grouped, with count, sum, mean, min, max,
distinct and percentiles.

A ``sum`` with a ``floor`` never goes below it, and ``underflow`` is what such a sum cut
off: an exit with no entry seen leaves occupancy at 0 instead of offsetting it all day,
and the inconsistency is counted rather than hidden.

A ``dwell`` sums, per item, the time since the same person's previous item (any window,
any group) if that is at most ``cap``; a first sample, or one after a longer gap (a lost
track: where the person was is not known), counts nothing. It is right at any camera
rate, and a person two overlapping cameras report at one instant counts once (the second
sample is 0 s after the first).

An event (or, with ``each``, every item of a list in it that passes ``filter``: the
samples of a frame) falls in the windows that contain its time; when the watermark passes
a window's end, the rule fires once per group with the window's values. ``cumulative``
keeps running values across windows (occupancy: entries minus exits) and reports them at
each window's end.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any

import msgspec

from core import events as ev
from rules.expressions import define, inline_form
from rules.operators.base import Cond, Emitter, Partition, Rule, Scope, thaw, utc

MAX_CAUSES = 64  # a window's output names at most this many of the events it counted


@dataclass(frozen=True, slots=True)
class ComputeSpec:
    name: str
    fn: str  # count, sum, mean, min, max, distinct, percentile, underflow
    of: Callable[[Any], Any] | None
    where: Cond | None
    q: float | None
    floor: float | None = None  # a sum's or an underflow's
    cap: float | None = None  # a dwell's longest gap

    @property
    def kind(self) -> str:
        """How it accumulates: a floored sum keeps what it cut off beside its value."""
        return "floored" if self.fn == "sum" and self.floor is not None else self.fn


# A fresh accumulator of each kind.
_FRESH: dict[str, str] = {
    "distinct": "set()", "floored": "[0.0, 0.0]", "underflow": "[0.0, 0.0]", "dwell": "0.0",
    "count": "0", "sum": "0.0", "mean": "[0.0, 0]", "min": "None", "max": "None",
    "percentile": "[]",
}  # fmt: skip


def _fresh(kinds: list[str]) -> Callable[[], list[Any]]:
    """One generated function that makes a group's accumulators: a window opens hundreds of
    groups (a heatmap's cells): one list display, not a call and a branch per compute."""
    namespace: dict[str, Any] = {"__builtins__": {}, "set": set}
    exec(f"def fresh():\n    return [{', '.join(_FRESH[k] for k in kinds)}]", namespace)
    return namespace["fresh"]  # type: ignore[no-any-return]


def _finisher(fn: str, q: float | None) -> Callable[[Any], float] | None:
    """What turns an accumulator into its value (None: it is its value), chosen once per
    rule: a window's end finishes every group's accumulators, a heatmap's hundreds."""
    if fn in ("count", "sum", "dwell"):
        return None
    if fn == "floored":
        return lambda acc: acc[0]
    if fn == "underflow":
        return lambda acc: acc[1]
    if fn == "distinct":
        return len
    if fn == "mean":
        return lambda acc: acc[0] / acc[1] if acc[1] else 0.0
    if fn in ("min", "max"):
        return lambda acc: 0.0 if acc is None else acc

    def percentile(acc: list[float]) -> float:
        if not acc:
            return 0.0
        ordered = sorted(acc)
        return ordered[max(0, math.ceil((q or 0) / 100 * len(ordered)) - 1)]  # nearest rank

    return percentile


# Per kind, how an item's value ``v{i}`` goes into accumulator ``a[{i}]``.
_STEP: dict[str, list[str]] = {
    "count": ["a[{i}] += 1"],
    "sum": ["a[{i}] += v{i}"],
    "mean": ["m = a[{i}]", "m[0] += v{i}", "m[1] += 1"],
    "min": ["v = v{i}", "if a[{i}] is None or v < a[{i}]:", "    a[{i}] = v"],
    "max": ["v = v{i}", "if a[{i}] is None or v > a[{i}]:", "    a[{i}] = v"],
    "distinct": ["a[{i}].add(v{i})"],
    "percentile": ["a[{i}].append(v{i})"],
    "floored": [
        "m = a[{i}]",
        "v = m[0] + v{i}",
        "if v < f{i}:",
        "    m[1] += f{i} - v",
        "    v = f{i}",
        "m[0] = v",
    ],
}
_STEP["underflow"] = _STEP["floored"]
_STEP["dwell"] = ["a[{i}] += d"]  # ``d``: the item's gap, computed once for all windows


def _forget(seen: dict[str, float], now: float, cap: float) -> None:
    """Drop the people unseen for longer than ``cap`` (their next sample counts 0 anyway).

    Called when the table reaches a power of two: what it holds decides, not when the rule
    last swept, so rules that share a fold and rules folding alone keep the same table.
    """
    for person in [person for person, t in seen.items() if now - t > cap]:
        del seen[person]


def _folder(
    computes: list[ComputeSpec],
    key_fn: Callable[[Any], tuple[Any, ...]] | None,
    make: Callable[[ev.Event, Any], Any] | None,
    keep: Cond | None,
    targets: int | None = None,
) -> Callable[..., None]:
    """One generated function that folds an event's items into their groups' accumulators.

    Generated from fixed templates (no text of the pack's in it), with the compiled
    expressions bound as names: this is the engine's innermost loop (a heatmap's, per
    position sample). Expressions compiled here (``rules.expressions.inline_form``) are
    evaluated in place rather than called, each in the ``try`` that makes its errors
    what its function raises; others are called.

    ``targets``: how many windows each event falls in, when that never changes (tumbling
    windows): the loop over them is then written out, and an item's expressions are
    evaluated once, where they were first needed, their values used for the windows after.
    Expressions are pure (the same item gives the same value), so the accumulators, and
    what an expression that fails leaves behind, are the same as with a loop evaluating
    them for each window. The dwell's person is evaluated before the windows; a compute
    of the very same expression (``distinct(s.track)`` beside ``dwell`` of ``s.track``)
    takes its value.
    """
    namespace: dict[str, Any] = {
        # No builtin at all: the fold names what it uses, and the expressions inlined in it
        # name only their cells (a template's strftime, which imports through the frame's
        # builtins, is never part of a fold).
        "__builtins__": {},
        "len": len,
        "make": make,
        "str": str,
        "type": type,
        "MAX": MAX_CAUSES,
    }
    calls: dict[str, Callable[[Any], Any]] = {}  # the name of each expression's function

    def value(var: str, name: str, fn: Callable[[Any], Any]) -> str:
        """``var = name(s)``: an expression's value (made inline below, if it can be)."""
        namespace[name] = calls[name] = fn
        return f"{var} = {name}(s)"

    lines = [
        "def fold(items, e, targets, fresh, seen, now):",
        "    eid = e.id",
    ]
    if targets is not None:
        lines.append(f"    {''.join(f't{n}, ' for n in range(targets))}= targets")
    if make is not None:
        lines += ["    for x in items:", "        s = make(e, x)"]
    else:
        lines.append("    for s in items:")
    if keep is not None:
        lines += [
            "        " + value("kept", "keep", keep),
            "        if not kept:",
            "            continue",
        ]
    lines.append("        " + value("k", "key", key_fn) if key_fn is not None else "        k = ()")
    dwell = next((c for c in computes if c.fn == "dwell"), None)
    same_as_person: set[int] = set()
    if dwell is not None:  # the person's gap, once per item, whatever windows it falls in
        assert dwell.of is not None
        namespace["cap"], namespace["forget"] = dwell.cap, _forget
        person = inline_form(dwell.of)
        for i, c in enumerate(computes):
            form = inline_form(c.of) if c.of is not None else None
            if person is not None and form is not None and form.same_value(person):
                same_as_person.add(i)
        lines += [
            "        " + value("who", "person", dwell.of),
            "        p = who if type(who) is str else str(who)",
            "        t = seen.get(p)",
            "        d = 0.0 if t is None or now - t > cap else now - t",
            "        seen[p] = now",
            "        n = len(seen)",
            "        if n >= 1024 and not n & (n - 1):",
            "            forget(seen, now, cap)",
        ]

    def window(groups: str, indent: str, first: bool) -> list[str]:
        """Fold the item into its group of one window (``first``: evaluate the values)."""
        block = [
            f"g = {groups}.get(k)",
            "if g is None:",
            f"    g = {groups}[k] = [fresh(k), [eid]]",
            "else:",
            "    c = g[1]",
            "    if len(c) < MAX and c[-1] != eid:",  # a day's groups are full soon
            "        c.append(eid)",
            "a = g[0]",
        ]
        for i, c in enumerate(computes):
            namespace[f"f{i}"] = c.floor
            step = [line.format(i=i) for line in _STEP[c.kind]]
            if c.of is not None and any(f"v{i}" in line for line in step):
                if i in same_as_person:
                    step = [f"v{i} = who", *step] if first else step
                elif first:
                    step = [value(f"v{i}", f"o{i}", c.of), *step]
            if c.where is not None:
                test = [value(f"u{i}", f"w{i}", c.where)] if first else []
                step = [*test, f"if u{i}:", *("    " + line for line in step)]
            block += step
        return [indent + line for line in block]

    if targets is None:
        lines += ["        for groups in targets:", *window("groups", "            ", True)]
    else:
        for n in range(targets):
            lines += window(f"t{n}", "        ", n == 0)
    define("\n".join(lines), calls, namespace, "<aggregate fold>")
    return namespace["fold"]  # type: ignore[no-any-return]


_SCOPE = "_s"  # the name the inline forms give the scope


class Group(msgspec.Struct, kw_only=True):
    """One group of a window: its key, a value per compute, the events it counted."""

    key: tuple[Any, ...]
    values: list[Any]  # in the order of ``Windows.computes``; a distinct's set sorted
    causes: list[str] = []


class Window(msgspec.Struct, kw_only=True):
    start: float
    groups: list[Group]


class Windows(msgspec.Struct, kw_only=True):
    """An aggregate rule's state in a store, as a snapshot holds it."""

    computes: list[str]  # the names of each group's values, in order
    windows: list[Window] = []  # open, by start
    running: list[Group] = []  # a cumulative rule's values across windows (no causes)
    seen: dict[str, float] = {}  # a dwell's people: the time of each one's last sample


class Aggregate(Rule):
    kind = "aggregate"
    state_type = Windows

    def __init__(
        self,
        *args: Any,
        window_s: float,
        every_s: float,
        each: Callable[[Any], Any] | None,
        item_scope: Callable[[ev.Event, Any], Any] | None,
        group_by: list[tuple[str, Callable[[Any], Any]]],
        computes: list[ComputeSpec],
        cumulative: bool,
        having: Cond | None,
        item_filter: Cond | None = None,
        local_tz: Callable[[str], tzinfo] | None = None,
        pipeline: tuple[Any, ...] | None = None,
        **kw: Any,
    ) -> None:
        """``pipeline``: what decides how an event's items are folded (its types, where,
        each, filter, group_by and computes; None if cumulative), for ``share_folds``."""
        super().__init__(*args, **kw)
        self.item_filter = item_filter
        self.local_tz = local_tz
        # The loader appends the whole key as one tuple expression, named "".
        key_fn = group_by.pop()[1] if group_by and group_by[-1][0] == "" else None
        self._fold_parts = (computes, key_fn, item_scope if each else None, item_filter)
        self.window_s, self.every_s = window_s, every_s
        # One window per event: tumbling (from the epoch, or the store's local midnight).
        self._tumbling = window_s == every_s or local_tz is not None
        self._fold = _folder(*self._fold_parts, targets=1 if self._tumbling else None)
        self.each, self.item_scope = each, item_scope
        self.group_by, self.computes = group_by, computes
        self._finish = [(c.name, _finisher(c.kind, c.q)) for c in computes]
        new = self._new = _fresh([c.kind for c in computes])
        self._fresh_group = lambda k: new()  # a window's new group (not cumulative)
        self._cap = next((c.cap for c in computes if c.fn == "dwell"), None)
        self.cumulative, self.having = cumulative, having
        self._days: dict[str, tuple[float, float]] = {}  # store -> its local day, for 24h windows
        self.pipeline = None if cumulative else pipeline
        self._lister = _lister(self.output, [n for n, _ in group_by], self._finish, having)
        self._sharers: list[Aggregate] = []  # the rules whose windows its fold fills too
        self._led = False  # another rule folds its items

    def _starts(self, ts: float, store: str) -> list[float]:
        w, e = self.window_s, self.every_s
        if self.local_tz is not None:  # tumbling, from the store's local midnight
            day = self._days.get(store)
            if day is not None and day[0] <= ts < day[1]:
                return [day[0]]  # a day-long window: the store's day, known already
            tz = self.local_tz(store)
            local = datetime.fromtimestamp(ts, tz)
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            since = (local - midnight).total_seconds()  # wall-clock seconds
            if w == 86400:
                # Every instant of a local day (23 or 25 hours long on a DST change) has
                # its midnight as the start: remember the day, and skip the tz arithmetic
                # for the rest of it (the tz arithmetic was most of an event's cost here).
                tomorrow = datetime.combine(local.date() + timedelta(days=1), dtime(0), tz)
                self._days[store] = (midnight.timestamp(), tomorrow.timestamp())
            return [midnight.timestamp() + math.floor(since / w) * w]
        if w == e:
            return [math.floor(ts / w) * w]
        last = math.floor(ts / e)
        first = math.floor((ts - w) / e) + 1
        return [k * e for k in range(first, last + 1)]

    def _open(self, p: Partition, ts: float, targets: list[dict[Any, Any]]) -> dict[str, Any]:
        """Add the groups of this rule's windows that hold ``ts`` to ``targets``, opening
        (and timing) those that are new; returns the rule's state."""
        st = p.rule_state(self.id)
        windows: dict[float, dict[Any, Any]] = st.setdefault("windows", {})
        for start in self._starts(ts, p.store):
            groups = windows.get(start)
            if groups is None:
                groups = windows[start] = {}
                p.schedule(start + self.window_s, self.id, start, p.new_token())
            targets.append(groups)
        return st

    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        if self._led:
            return  # the rule it shares a fold with has filled its windows
        targets: list[dict[Any, Any]] = []
        st = self._open(p, ts, targets)
        for rule in self._sharers:
            rule._open(p, ts, targets)
        if self.cumulative:  # tumbling only: one running value per group, across windows
            running = st.setdefault("running", {})
            new = self._new

            def fresh(k: Any) -> list[Any]:
                return running.setdefault(k, new())  # type: ignore[no-any-return]
        else:
            fresh = self._fresh_group

        seen = None
        if self._cap is not None:
            seen = st.setdefault("seen", {})
            for rule in self._sharers:  # one table, as each would keep alone (and restored)
                p.rule_state(rule.id)["seen"] = seen
        items = self.each(e) if self.each else (e,)
        self._fold(items, e, targets, fresh, seen, ts)  # type: ignore[misc]

    def save_state(self, state: dict[str, Any]) -> Windows:
        save = self._save_values
        return Windows(
            computes=[c.name for c in self.computes],
            windows=[
                Window(
                    start=start,
                    groups=[Group(key=k, values=save(a), causes=c) for k, (a, c) in g.items()],
                )
                for start, g in state.get("windows", {}).items()
            ],
            running=[Group(key=k, values=save(a)) for k, a in state.get("running", {}).items()],
            seen=state.get("seen", {}),
        )

    def load_state(self, saved: Windows) -> dict[str, Any]:
        names = [c.name for c in self.computes]
        if saved.computes != names:
            raise ValueError(f"the state computes {saved.computes}; the rule computes {names}")
        load = self._load_values
        running = {thaw(g.key): load(g.values) for g in saved.running}
        windows: dict[float, dict[Any, Any]] = {}
        for w in saved.windows:
            groups = windows[w.start] = {}
            for g in w.groups:
                key = thaw(g.key)
                # A cumulative rule's open windows share their groups' values with the
                # running ones (one list each): link them again.
                shared = self.cumulative and key in running
                groups[key] = [running[key] if shared else load(g.values), g.causes]
        state: dict[str, Any] = {}
        if windows:
            state["windows"] = windows
        if running:
            state["running"] = running
        if saved.seen:
            state["seen"] = dict(saved.seen)
        return state

    def _save_values(self, accs: list[Any]) -> list[Any]:
        """A distinct's set as a sorted list (one state, one snapshot); the rest as is."""
        return [_sorted(acc) if isinstance(acc, set) else acc for acc in accs]

    def _load_values(self, values: list[Any]) -> list[Any]:
        if len(values) != len(self.computes):
            raise ValueError(f"{len(values)} values for {len(self.computes)} computes")
        return [
            _as_set(value) if c.fn == "distinct" else value
            for c, value in zip(self.computes, values, strict=True)
        ]

    def timer_alive(self, p: Partition, key: Any, token: int) -> bool:
        return key in p.state.get(self.id, {}).get("windows", {})

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:
        st = p.rule_state(self.id)
        groups = st.setdefault("windows", {}).pop(key, None)
        if not groups:
            return
        start, end = utc(key), utc(key + self.window_s)
        labels = [name for name, _ in self.group_by]
        emit = self.output.emit
        listed = emit.groups if emit is not None else None
        items: list[dict[str, Any]] = []
        window_causes: dict[str, None] = {}  # in order, each once
        finish, having = self._finish, self.having
        lister = self._lister
        for gkey, (accs, causes) in groups.items():
            if lister is not None and len(gkey) == len(labels) and len(accs) == len(finish):
                items.append(lister(gkey, accs, start, end))
                if len(window_causes) < MAX_CAUSES:
                    for cause in causes:
                        if len(window_causes) >= MAX_CAUSES:
                            break
                        window_causes[cause] = None
                continue
            extra: dict[str, Any] = dict(zip(labels, gkey, strict=True))
            for (name, fin), acc in zip(finish, accs, strict=True):
                extra[name] = acc if fin is None else fin(acc)
            extra["window_start"], extra["window_end"] = start, end
            extra["key"] = "/".join(map(str, gkey))
            scope = Scope(None, extra)
            if having is not None and not having(scope):
                continue
            if listed is None:
                self.fire(p, scope, gkey or p.store, ts, tuple(causes), out, (key, gkey))
                continue
            items.append(listed.item(scope))
            if len(window_causes) < MAX_CAUSES:
                for cause in causes:
                    if len(window_causes) >= MAX_CAUSES:
                        break
                    window_causes[cause] = None
        if items:  # one event for the window, its groups listed
            scope = Scope(None, {"window_start": start, "window_end": end})
            self.fire(p, scope, p.store, ts, tuple(window_causes), out, key, items)


def _lister(
    output: Any,
    labels: list[str],
    finish: list[tuple[str, Callable[[Any], Any] | None]],
    having: Cond | None,
) -> Callable[[tuple[Any, ...], list[Any], datetime, datetime], dict[str, Any]] | None:
    """For a rule that lists its groups in one event, where each item's fields are names
    of the group (``cell_x: cx``) and no ``having`` picks groups: one generated function
    that makes a group's item from its key and accumulators, without the group's scope.

    The item is the one the scope gives: a name is the window's (``window_start``,
    ``window_end``, ``key``), else a compute's, else a label's, as the scope is filled.
    None where that does not apply (the general way then runs).
    """
    emit = output.emit
    listed = emit.groups if emit is not None else None
    if listed is None or having is not None:
        return None
    computes = [name for name, _ in finish]
    namespace: dict[str, Any] = {"__builtins__": {}, "str": str, "map": map}
    # Every compute is finished, in order, as the scope's are: a percentile of values
    # that do not compare fails here as it would there.
    lines = ["def item(gkey, accs, start, end):"]
    for i, (_, fin) in enumerate(finish):
        namespace[f"fin{i}"] = fin
        lines.append(f"    r{i} = accs[{i}]" if fin is None else f"    r{i} = fin{i}(accs[{i}])")
    parts = []
    for n, (field, fn) in enumerate(listed.fields.items()):
        form = inline_form(fn)
        body = form.body if form is not None else None
        if not (
            isinstance(body, ast.Attribute)
            and isinstance(body.value, ast.Name)
            and body.value.id == _SCOPE
        ):
            return None
        name = body.attr
        if name in ("window_start", "window_end"):
            value = "start" if name == "window_start" else "end"
        elif name == "key":
            value = "'/'.join(map(str, gkey))"
        elif name in computes:
            value = f"r{computes.index(name)}"
        elif name in labels:
            value = f"gkey[{labels.index(name)}]"
        else:
            return None  # a name the group's scope does not have: it fails the general way
        namespace[f"field{n}"] = field
        parts.append(f"field{n}: {value}, ")
    lines.append(f"    return {{{''.join(parts)}}}")
    exec("\n".join(lines), namespace)
    return namespace["item"]  # type: ignore[no-any-return]


def _sorted(values: set[Any]) -> list[Any]:
    """Plain strings or numbers (the visitors of a heatmap cell, a day long) sort as they
    are, much faster than by ``repr`` (``docs/benchmarks-history.md``)."""
    kinds = set(map(type, values))
    if len(kinds) == 1 and kinds <= {str, int, float}:
        return sorted(values)
    return sorted(values, key=repr)


def _as_set(values: list[Any]) -> set[Any]:
    try:
        return set(values)  # plain values: most distincts (visitors), at C speed
    except TypeError:  # tuples, which came back as lists
        return {thaw(v) for v in values}


def share_folds(rules: Sequence[Rule]) -> None:
    """Let consecutive aggregates that fold the same items the same way (the heatmap's
    10 s tiles and its day) fold each item once, into all their windows.

    The first of a run does it, opening each rule's windows in the rules' order, as they
    would in turn: the state and output are the same, byte for byte
    (``tests/test_operators.py``); only an item that fails is reported once, not per rule.
    Per position sample, the staff filter and the cell were computed twice; what sharing
    saves is in ``docs/benchmarks-history.md`` (the third round, callgrind).
    """
    lead: Aggregate | None = None
    for r in rules:
        if not isinstance(r, Aggregate) or r.pipeline is None:
            lead = None
        elif lead is not None and r.pipeline == lead.pipeline:
            lead._sharers.append(r)
            r._led = True
            fixed = lead._tumbling and all(s._tumbling for s in lead._sharers)
            lead._fold = _folder(
                *lead._fold_parts, targets=1 + len(lead._sharers) if fixed else None
            )
        else:
            lead = r


ENVELOPE = ("type", "id", "store", "at", "source", "subject", "v", "data", "rule", "caused_by")


def item_scope_class(name: str) -> Callable[[ev.Event, Any], Any]:
    """A scope for ``each``: the event's fields, and the item under ``name``.

    A class per rule, with slots and properties: per sample this is the hot path of a
    heatmap, and a generic ``__getattr__`` costs several times as much.
    """

    def field(attr: str) -> property:
        return property(lambda self: getattr(self._event, attr))

    namespace: dict[str, Any] = {"__slots__": ("_event", name)}
    for attr in ENVELOPE:
        if attr != name:
            namespace[attr] = field(attr)

    def __init__(self: Any, event: ev.Event, item: Any) -> None:
        self._event = event
        setattr(self, name, item)

    namespace["__init__"] = __init__
    return type(f"Each_{name}", (), namespace)
