"""The engine's generated fast paths equal the general code they stand for, on generated
inputs: an aggregate's fold with its expressions inline, a group's fresh accumulators,
a listed group's item, a sequence's sums and its scope."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import events as ev
from rules.expressions import Where, compile_expr
from rules.operators import aggregate, sequence
from rules.operators.aggregate import ComputeSpec, _folder, _fresh
from rules.operators.base import Scope
from rules.operators.sequence import Candidate, StepSpec, StepsScope

HERE = Where("test.yaml", 1, 1)
KINDS = ["count", "sum", "mean", "min", "max", "distinct", "percentile", "floored", "underflow"]


def _new(fn: str) -> Any:
    """A fresh accumulator as the engine made it before ``_fresh`` (the specification)."""
    if fn == "distinct":
        return set()
    if fn in ("floored", "underflow"):
        return [0.0, 0.0]
    if fn == "dwell":
        return 0.0
    return {"count": 0, "sum": 0.0, "mean": [0.0, 0], "min": None, "max": None}.get(fn, [])


@given(st.lists(st.sampled_from([*KINDS, "dwell"]), max_size=8))
def test_a_fresh_group_holds_the_accumulators_made_one_by_one(kinds: list[str]) -> None:
    new = _fresh(kinds)
    first, second = new(), new()
    assert first == [_new(k) for k in kinds]
    assert [type(a) for a in first] == [type(_new(k)) for k in kinds]
    for a, b in zip(first, second, strict=True):
        assert a is not b or not isinstance(a, list | set)  # no group shares one


# -- the fold ------------------------------------------------------------------------------


@dataclass
class Item:
    track: str
    v: Any
    w: int


def _expr(source: str) -> Any:
    return compile_expr(source, HERE, names=("s",), functions={"int": int}, itself="s").fn


OF = ["s.v", "s.v * 2", "s.w", "int(s.v // 3)", "s.track"]
WHERE = [None, "s.w > 0", "s.v > 1"]


@st.composite
def computes(draw: st.DrawFn) -> list[ComputeSpec]:
    out = []
    for n in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(KINDS))
        fn = "sum" if kind == "floored" else kind
        of = None if kind == "count" else draw(st.sampled_from(OF))
        if kind in ("sum", "mean", "min", "max", "percentile", "floored", "underflow"):
            of = draw(st.sampled_from(OF[:4]))  # numbers
        where = draw(st.sampled_from(WHERE))
        floor = -5.0 if kind == "floored" else (0.0 if kind == "underflow" else None)
        out.append(
            ComputeSpec(
                f"c{n}",
                fn,
                _expr(of) if of else None,
                _expr(where) if where else None,
                50.0 if kind == "percentile" else None,
                floor,
            )
        )
    if draw(st.booleans()):  # a dwell, of the person some compute may also read
        out.append(ComputeSpec("dwell", "dwell", _expr("s.track"), None, None, None, 2.0))
    return out


def _called(fn: Any) -> Any:
    """The same function, without an inline form: the fold calls it, as it always did."""
    return None if fn is None else (lambda s: fn(s))


ITEMS = st.builds(
    Item,
    st.sampled_from(["a", "b", "c"]),
    # None fails ``s.v * 2`` (and a comparison): an error mid-fold, mid-event
    st.one_of(st.integers(-3, 9), st.floats(-2, 9, allow_nan=False), st.none()),
    st.integers(-1, 3),
)


@settings(max_examples=300, deadline=None)
@given(
    computes(),
    st.sampled_from([None, "(int(s.w), )", "(s.track, s.w)"]),
    st.sampled_from([None, "s.w != 2", "s.v > 0"]),
    st.integers(1, 3),
    st.lists(st.lists(ITEMS, max_size=5), max_size=8),
)
def test_a_fold_with_its_expressions_inline_equals_the_loop_that_calls_them(
    specs: list[ComputeSpec],
    key: str | None,
    keep: str | None,
    windows: int,
    events: list[list[Item]],
) -> None:
    """The same accumulators, causes, people seen and errors, event after event, as the
    fold calling each expression in a loop over the windows."""
    key_fn, keep_fn = (_expr(key) if key else None), (_expr(keep) if keep else None)
    fast = _folder(specs, key_fn, None, keep_fn, targets=windows)
    called = [
        ComputeSpec(c.name, c.fn, _called(c.of), _called(c.where), c.q, c.floor, c.cap)
        for c in specs
    ]
    slow = _folder(called, _called(key_fn), None, _called(keep_fn), targets=None)
    new = _fresh([c.kind for c in specs])
    states = []
    for fold in (fast, slow):
        groups: list[dict[Any, Any]] = [{} for _ in range(windows)]
        seen: dict[str, float] = {}
        errors = []
        for n, items in enumerate(events):
            e = SimpleNamespace(id=f"e{n}")
            try:
                fold(items, e, list(groups), lambda k: new(), seen, float(n))
                errors.append(None)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        states.append((groups, seen, errors))
    assert states[0] == states[1]


def test_an_expression_that_fails_inline_fails_as_its_function_does() -> None:
    of = _expr("s.v * 2")
    fold = _folder([ComputeSpec("x", "sum", of, None, None)], None, None, None, targets=2)
    groups: list[dict[Any, Any]] = [{}, {}]
    with pytest.raises(Exception) as inline:
        fold([Item("a", None, 0)], SimpleNamespace(id="e"), groups, lambda k: [0.0], {}, 0.0)
    with pytest.raises(Exception) as called:
        of(Item("a", None, 0))
    assert type(inline.value) is type(called.value)
    assert str(inline.value) == str(called.value)
    assert "test.yaml:1:1: evaluating 's.v * 2': TypeError" in str(inline.value)
    assert groups == [{(): [[0.0], ["e"]]}, {}]  # the first window's group was opened


# -- sequences -------------------------------------------------------------------------------


def _step_event(n: int) -> ev.Event:
    from datetime import UTC, datetime, timedelta

    return ev.new(
        ev.ZoneEntered,
        store="s",
        at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        source="cam",
        subject=f"v{n}",
        data=ev.ZoneData(zone=f"z{n}"),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["picked", "other"]), st.integers(-5, 5)), max_size=4),
    st.lists(st.floats(-100, 100, allow_nan=False), max_size=5),
    st.sampled_from(["picked", "other"]),
    st.integers(-5, 5),
)
def test_a_sequences_sums_add_as_they_did_one_by_one(
    sums: list[tuple[str, int]], held: list[float], kind: str, qty: int
) -> None:
    """The generated adder gives the sums the general one does, and refuses sums of
    another length (a rule reloaded with other sums) with the same error."""
    specs = [
        (f"s{i}", (lambda e, k=k: e.kind == k), (lambda e, q=q: e.qty * q))
        for i, (k, q) in enumerate(sums)
    ]
    rule = sequence.Sequence.__new__(sequence.Sequence)
    rule.sums = specs
    adder = sequence._adder(specs, rule._each_added)
    e = SimpleNamespace(kind=kind, qty=qty)
    got: Any
    want: Any
    try:
        want = rule._each_added(tuple(held), e)  # type: ignore[arg-type]
    except ValueError as exc:
        want = str(exc)
    try:
        got = adder(tuple(held), e)  # type: ignore[arg-type]
    except ValueError as exc:
        got = str(exc)
    assert got == want


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.lists(st.floats(-9, 9, allow_nan=False), max_size=3), st.data())
def test_a_sequences_scope_shows_what_the_scope_it_replaced_showed(
    matched: int, sums: list[float], data: st.DataObject
) -> None:
    """Steps and key made when read give the values the eager scope held."""
    positives = [(StepSpec(f"step{i}", None, None, None), []) for i in range(3)]
    steps = tuple(_step_event(i) for i in range(matched))
    key = data.draw(st.sampled_from(["v-1", ("v-1", "milk"), 7]))
    e = _step_event(9)
    names = [f"sum{i}" for i in range(len(sums))]
    extra = {"elapsed_s": 12.5, **dict(zip(names, sums, strict=True))}
    lazy = StepsScope(e, dict(extra), positives, steps, key)  # type: ignore[arg-type]
    named = {spec.name: s for (spec, _), s in zip(positives, steps, strict=False)}
    eager = Scope(e, {"steps": SimpleNamespace(**named), **extra, "key": sequence.key_text(key)})
    for name in ["elapsed_s", "key", *names, "subject", "data", "id", "at", "type"]:
        assert getattr(lazy, name) == getattr(eager, name)
    assert vars(lazy.steps) == vars(eager.steps)
    with pytest.raises(AttributeError):
        lazy.window_start  # noqa: B018
    assert getattr(lazy, "window_start", None) is None


def test_a_candidate_scope_is_a_steps_scope() -> None:
    rule = sequence.Sequence.__new__(sequence.Sequence)
    rule.positives, rule.sums = [], []
    scope = rule._scope(Candidate(0, ()), _step_event(1), 5.0, "k")
    assert isinstance(scope, StepsScope)
    assert scope.elapsed_s == 0.0 and scope.key == "k"


# -- the whole engine ------------------------------------------------------------------------


def test_the_standard_packs_derive_the_same_with_the_fast_paths_off(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An hour of a store, all packs: the same derived events and the same state with every
    fold calling its expressions in a loop, every listed group made through its scope and
    every sequence adding its sums one by one."""
    from rules.snapshot import snapshot
    from tests import enginekit

    events = enginekit.store_day(hours=1, shoppers=30)
    fast = enginekit.engine()
    monkeypatch.setattr(aggregate, "inline_form", lambda fn: None)
    slow = enginekit.engine()
    for r in slow.rules.rules:
        if isinstance(r, aggregate.Aggregate):
            r._lister = None
            r._fold = _folder(*r._fold_parts, targets=None)
        if isinstance(r, sequence.Sequence):
            r._add = r._each_added
    assert isinstance(fast.rules.by_id["heatmap.tiles"], aggregate.Aggregate)
    assert fast.rules.by_id["heatmap.tiles"]._lister is not None
    outputs, states = [], []
    for e in (fast, slow):
        out = []
        for i in range(0, len(events), 50):
            out += e.process(events[i : i + 50]).derived
        states.append(snapshot(e))
        out += e.advance("corner-01", events[-1].at.timestamp() + 86400).derived
        outputs.append([ev.encode(d) for d in out])
    assert states[0] == states[1]
    assert outputs[0] == outputs[1]
    assert sum(b'"type":"heatmap.tiles"' in d for d in outputs[0]) > 100


# -- dispatch, keys, gates -------------------------------------------------------------------

CONDS = [None, "s.v > 1", "s.w != 0", "s.v * 2 > 3", "s.track == 'a'"]  # None * 2 fails


def _cond(source: str | None) -> Any:
    return None if source is None else _expr(source)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(CONDS), st.sampled_from(CONDS), st.booleans()), max_size=6),
    ITEMS,
)
def test_an_event_goes_through_its_rules_as_the_loop_took_it(
    rules: list[tuple[str | None, str | None, bool]], item: Item
) -> None:
    """The generated dispatch calls the same handlers in the same order, and reports the
    same failures (of a condition or of a handler), as the loop over the handlers did."""
    from rules.engine import RuleError, _dispatcher, _message

    def handlers(log: list[str]) -> tuple[tuple[Any, Any, Any, str], ...]:
        out = []
        for n, (guard, where, fails) in enumerate(rules):

            def on_event(p: Any, e: Any, ts: float, emitter: Any, n: int = n, f: bool = fails):
                log.append(f"rule{n}")
                if f:
                    raise RuntimeError(f"rule{n} failed")

            out.append((_cond(guard), _cond(where), on_event, f"r{n}"))
        return tuple(out)

    item_e = SimpleNamespace(id="e1", track=item.track, v=item.v, w=item.w)
    loop_log: list[str] = []
    loop_errors: list[RuleError] = []
    for guard, where, on_event, rule_id in handlers(loop_log):  # the loop it replaced
        try:
            if (guard is None or guard(item_e)) and (where is None or where(item_e)):
                on_event(None, item_e, 0.0, None)
        except Exception as exc:
            loop_errors.append(RuleError(rule_id, item_e.id, _message(exc)))
    log: list[str] = []
    errors: list[RuleError] = []
    if rules:
        _dispatcher("t", handlers(log))(None, item_e, 0.0, None, errors)
    assert log == loop_log
    assert errors == loop_errors


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*CONDS[1:], "s.track", "s.w"]), max_size=4), ITEMS)
def test_a_key_of_several_parts_and_a_gate_equal_their_general_forms(
    parts: list[str], item: Item
) -> None:
    from rules.engine import _either
    from rules.loader import _tuple_key

    fns = [_expr(p) for p in parts]

    def outcome(fn: Any, truth: bool = False) -> Any:
        try:
            value = fn(item)
            return ("value", bool(value) if truth else value)
        except Exception as exc:
            return ("error", type(exc).__name__, str(exc))

    assert outcome(_tuple_key(fns)) == outcome(lambda e: tuple(f(e) for f in fns))
    if fns:  # a gate is asked whether it lets the event through
        # A guard that fails lets it through: the rule's own guard reports the failure.

        def general(e: Any) -> bool:
            try:
                return any(g(e) for g in fns)
            except Exception:
                return True

        assert outcome(_either(tuple(fns)), truth=True) == outcome(general, truth=True)


# -- the clock ---------------------------------------------------------------------------------

CLOCK_PACK = """
pack: p
version: "1"
needs: [layout]
rules:
  - id: picks
    where: type == "item.picked"
    metric: {name: picks, value: "1"}
  - id: gate
    where: type == "zone.entered" and zone_kind(data.zone) == "exit_gate"
    metric: {name: gate, value: "1"}
  - id: per_10s
    where: type == "zone.exited"
    aggregate:
      window: {tumbling: 10s}
      compute: {n: count()}
"""


def _spec_engine(lateness: float, idle: float) -> Any:
    """The engine's loop and acceptance as first written: every event's time computed, its
    store looked up, ``_tick`` called for every newer event: the specification the inline
    clock keeps to."""
    from core.layout import load_layout
    from rules.engine import _NEVER, Engine, EngineFailure, Output
    from rules.loader import load_rules
    from rules.reference import Reference
    from tests.enginekit import LAYOUT_FILE

    class Spec(Engine):
        def process(self, events: Any) -> Output:
            out = Output()
            rules = self.rules
            for e in events:
                p = self.partitions.get(e.store) or self._partition(e.store)
                ts = e.at.timestamp()
                if ts < p.watermark:
                    p.late += 1
                    out.late.append(e)
                elif e.type in rules.interested and (
                    (gate := rules.gates.get(e.type)) is None or gate(e)
                ):
                    self.accept(p, e, ts, out)
                elif (
                    ts > p.sources.get(e.source, _NEVER)
                    and self._tick(p, e.source, ts)
                    and (p.buffer or (p.timers and p.timers[0][0] <= p.watermark))
                ):
                    self._drain(p, out)
            return out

        def accept(self, p: Any, e: Any, ts: float, out: Output) -> None:
            import heapq
            from hashlib import blake2b

            recent = self._seen[p.store]
            h = int.from_bytes(blake2b(e.id.encode(), digest_size=8).digest())
            if h in recent[0] or h in recent[1]:
                return
            if ts >= recent[2]:
                recent[0], recent[1], recent[2] = set(), recent[0], ts + 3600.0
            recent[0].add(h)
            if ts > p.sources.get(e.source, _NEVER):
                self._tick(p, e.source, ts)
            if not p.buffer and ts <= p.watermark:
                if p.timers and p.timers[0][0] <= ts:
                    self._timers(p, ts, out)
                try:
                    self._apply(p, e, ts, out, 0)
                except Exception as exc:
                    raise EngineFailure(e, exc) from exc
                if len(p.timers) > p.compact_at:
                    self._compact(p)
                return
            p.arrivals += 1
            heapq.heappush(p.buffer, (ts, p.arrivals, e))
            self._drain(p, out)

    layout = load_layout(LAYOUT_FILE).prepare()
    rules = load_rules([("p.yaml", CLOCK_PACK)], Reference.of(layout))
    return Spec(rules, lateness_s=lateness, source_idle_s=idle)


@st.composite
def clock_events(draw: st.DrawFn) -> list[ev.Event]:
    """Events of one or two stores from one to three sources, times mostly rising, with
    ties, stragglers and repeats."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    out: list[ev.Event] = []
    t = 0.0
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 4.0, 30.0]))
        back = draw(st.sampled_from([0.0, 0.0, 0.0, 2.0, 20.0]))  # a straggler
        when = t0 + timedelta(seconds=max(0.0, t - back))
        common = {
            "store": draw(st.sampled_from(["corner-01", "corner-01", "corner-02"])),
            "at": when,
            "source": draw(st.sampled_from(["a", "a", "b", "c"])),
            "subject": "v1",
        }
        kind = draw(st.sampled_from(["picked", "in", "out", "frame"]))
        if kind == "picked":
            item = ev.ItemData(sku="cola-500ml", shelf="fridge-drinks")
            e: ev.Event = ev.new(ev.ItemPicked, data=item, **common)
        elif kind in ("in", "out"):
            zone = ev.ZoneData(zone=draw(st.sampled_from(["exit-gate", "aisle-1"])))
            cls = ev.ZoneEntered if kind == "in" else ev.ZoneExited
            e = ev.new(cls, data=zone, **common)  # type: ignore[type-var]
        else:
            e = ev.new(ev.PositionSamples, data=ev.PositionData(frame=0, samples=()), **common)
        out.append(e)
        if draw(st.integers(0, 9)) == 0:
            out.append(e)  # delivered twice
    return out


@settings(max_examples=150, deadline=None)
@given(
    clock_events(),
    st.sampled_from([0.0, 2.0]),
    st.sampled_from([0.0, 5.0, 60.0]),
    st.integers(1, 7),
)
def test_the_engines_clock_keeps_to_the_loop_as_first_written(
    events: list[ev.Event], lateness: float, idle: float, batch: int
) -> None:
    """The same derived events, late events and clocks (watermark, newest, sources, the
    source holding the store back), batch after batch, as the loop that looked every
    event's store and time up and ticked the clock through ``_tick`` for each."""
    from core.layout import load_layout
    from rules.engine import Engine
    from rules.loader import load_rules
    from rules.reference import Reference
    from tests.enginekit import LAYOUT_FILE

    layout = load_layout(LAYOUT_FILE).prepare()
    fast = Engine(
        load_rules([("p.yaml", CLOCK_PACK)], Reference.of(layout)),
        lateness_s=lateness,
        source_idle_s=idle,
    )
    spec = _spec_engine(lateness, idle)
    for i in range(0, len(events), batch):
        got, want = fast.process(events[i : i + batch]), spec.process(events[i : i + batch])
        assert [ev.encode(d) for d in got.derived] == [ev.encode(d) for d in want.derived]
        assert [e.id for e in got.late] == [e.id for e in want.late]
        assert got.errors == want.errors
        for store, p in spec.partitions.items():
            q = fast.partitions[store]
            assert (q.watermark, q.newest, q.sources, q.held_by, q.late) == (
                p.watermark,
                p.newest,
                p.sources,
                p.held_by,
                p.late,
            )
