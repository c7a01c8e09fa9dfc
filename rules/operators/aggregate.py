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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any

import msgspec

from core import events as ev
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


def _new(fn: str) -> Any:
    if fn == "distinct":
        return set()
    if fn in ("floored", "underflow"):
        return [0.0, 0.0]  # the floored sum, what the floor cut off
    if fn == "dwell":
        return 0.0
    return {"count": 0, "sum": 0.0, "mean": [0.0, 0], "min": None, "max": None}.get(fn, [])


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


_STEP: dict[str, list[str]] = {
    "count": ["a[{i}] += 1"],
    "sum": ["a[{i}] += o{i}(s)"],
    "mean": ["m = a[{i}]", "m[0] += o{i}(s)", "m[1] += 1"],
    "min": ["v = o{i}(s)", "if a[{i}] is None or v < a[{i}]:", "    a[{i}] = v"],
    "max": ["v = o{i}(s)", "if a[{i}] is None or v > a[{i}]:", "    a[{i}] = v"],
    "distinct": ["a[{i}].add(o{i}(s))"],
    "percentile": ["a[{i}].append(o{i}(s))"],
    "floored": [
        "m = a[{i}]",
        "v = m[0] + o{i}(s)",
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
) -> Callable[..., None]:
    """One generated function that folds an event's items into their groups' accumulators.

    Generated from fixed templates (no text of the pack's in it), with the compiled
    expressions bound as names. The general loop (a key method, a loop over the computes
    with a branch per kind) cost much more per sample on the heatmap's hot path, the
    engine's innermost loop (``docs/benchmarks-history.md``).
    """
    namespace: dict[str, Any] = {"__builtins__": {}, "len": len, "make": make, "keep": keep}
    namespace["MAX"] = MAX_CAUSES
    namespace["key"] = key_fn
    namespace["str"] = str
    key = "key(s)" if key_fn is not None else "()"
    lines = [
        "def fold(items, e, targets, fresh, seen, now):",
        "    eid = e.id",
        "    for x in items:",
        "        s = make(e, x)" if make is not None else "        s = x",
    ]
    if keep is not None:
        lines += ["        if not keep(s):", "            continue"]
    lines += [f"        k = {key}"]
    dwell = next((c for c in computes if c.fn == "dwell"), None)
    if dwell is not None:  # the person's gap, once per item, whatever windows it falls in
        namespace["person"], namespace["cap"] = dwell.of, dwell.cap
        namespace["forget"] = _forget
        lines += [
            "        p = str(person(s))",
            "        t = seen.get(p)",
            "        d = 0.0 if t is None or now - t > cap else now - t",
            "        seen[p] = now",
            "        n = len(seen)",
            "        if n >= 1024 and not n & (n - 1):",
            "            forget(seen, now, cap)",
        ]
    lines += [
        "        for groups in targets:",
        "            g = groups.get(k)",
        "            if g is None:",
        "                g = groups[k] = [fresh(k), [eid]]",
        "            else:",
        "                c = g[1]",
        "                if c[-1] != eid and len(c) < MAX:",
        "                    c.append(eid)",
        "            a = g[0]",
    ]
    for i, c in enumerate(computes):
        step = [line.format(i=i) for line in _STEP[c.kind]]
        namespace[f"o{i}"], namespace[f"w{i}"], namespace[f"f{i}"] = c.of, c.where, c.floor
        if c.where is not None:
            step = [f"if w{i}(s):", *("    " + line for line in step)]
        lines += ["            " + line for line in step]
    exec("\n".join(lines), namespace)
    return namespace["fold"]  # type: ignore[no-any-return]


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
        self._fold = _folder(computes, key_fn, item_scope if each else None, item_filter)
        self.window_s, self.every_s = window_s, every_s
        self.each, self.item_scope = each, item_scope
        self.group_by, self.computes = group_by, computes
        self._finish = [(c.name, _finisher(c.kind, c.q)) for c in computes]
        self._cap = next((c.cap for c in computes if c.fn == "dwell"), None)
        self.cumulative, self.having = cumulative, having
        self._days: dict[str, tuple[float, float]] = {}  # store -> its local day, for 24h windows
        self.pipeline = None if cumulative else pipeline
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
        computes = self.computes
        if self.cumulative:  # tumbling only: one running value per group, across windows
            running = st.setdefault("running", {})

            def fresh(k: Any) -> list[Any]:
                return running.setdefault(k, [_new(c.kind) for c in computes])  # type: ignore[no-any-return]
        else:

            def fresh(k: Any) -> list[Any]:
                return [_new(c.kind) for c in computes]

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
        for gkey, (accs, causes) in groups.items():
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
