"""The engine's promises, as properties: batching, order within lateness, carts, causes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import events as ev
from core.layout import Layout, load_layout
from rules.engine import Engine, RuleSet
from rules.loader import PackError, load_rules
from rules.reference import Reference
from simulator.scripted import plan, visit_events

ROOT = Path(__file__).resolve().parent.parent
PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
OTHERS = [p for p in PACKS if p.name != "carts.yaml"]
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@cache
def layout() -> Layout:
    return load_layout(ROOT / "examples" / "stores" / "convenience.yaml")


def standard() -> RuleSet:
    return load_rules(PACKS, Reference.of(layout()))


def engine(lateness_s: float = 0.0, source_idle_s: float = 0.0) -> Engine:
    return Engine(standard(), lateness_s=lateness_s, source_idle_s=source_idle_s)


@cache
def day(seed: int, shoppers: int = 12) -> tuple[ev.Event, ...]:
    events = [e for v in plan(layout(), shoppers, T0, seed) for e in visit_events(layout(), v)]
    return tuple(sorted(events, key=lambda e: (e.at, e.id)))


def run(e: Engine, batches: list[list[ev.Event]], end: float) -> list[bytes]:
    out = []
    for batch in batches:
        out += [ev.encode(d) for d in e.process(batch).derived]
    out += [ev.encode(d) for d in e.advance("corner-01", end).derived]
    return out


def split(events: tuple[ev.Event, ...], cuts: list[int]) -> list[list[ev.Event]]:
    edges = sorted({min(c, len(events)) for c in cuts})
    parts, start = [], 0
    for edge in [*edges, len(events)]:
        parts.append(list(events[start:edge]))
        start = edge
    return parts


def end_of(events: tuple[ev.Event, ...]) -> float:
    return events[-1].at.timestamp() + 24 * 3600


def test_the_standard_packs_derive_something_of_every_kind() -> None:
    kinds = {ev.decode(b).type for b in run(engine(), [list(day(1))], end_of(day(1)))}
    assert {"cart.item_added", "receipt.issued", "metric", "heatmap.tiles"} <= kinds


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(1, 4), cuts=st.lists(st.integers(0, 3000), max_size=12))
def test_any_batching_gives_the_same_output_byte_for_byte(seed: int, cuts: list[int]) -> None:
    events = day(seed)
    whole = run(engine(), [list(events)], end_of(events))
    batched = run(engine(), split(events, cuts), end_of(events))
    assert batched == whole
    assert len(whole) > 50


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(1, 4), shuffle_seed=st.integers(0, 10_000))
def test_reordering_within_the_lateness_changes_nothing(seed: int, shuffle_seed: int) -> None:
    """Events arrive out of order (by up to 1.5 s here); with 2 s of lateness the output is
    that of the ordered log. Those of one instant keep their order (their source's): the
    engine applies them in the order they came."""
    events = day(seed)
    rng = random.Random(shuffle_seed)
    delay = {at: rng.uniform(0, 1.5) for at in sorted({e.at for e in events})}
    jittered = sorted(events, key=lambda e: e.at.timestamp() + delay[e.at])  # stable
    ordered = run(engine(lateness_s=2.0), [list(events)], end_of(events))
    shuffled = run(engine(lateness_s=2.0), [jittered], end_of(events))
    assert shuffled == ordered


CAMERA_TYPES = frozenset({"position.samples", "zone.entered", "zone.exited", "passerby.seen"})


def by_sources(
    events: tuple[ev.Event, ...], rng: random.Random, camera_lag_s: float
) -> list[ev.Event]:
    """The events as three sources deliver them: each in its own order, the cameras
    ``camera_lag_s`` (and up to a second) behind the shelves and the door, and those up to a
    second behind the store. Ids are kept, so outputs compare."""
    sent = {"cameras": 0.0, "shelves": 0.0, "door": 0.0}
    arrivals = []
    for e in events:
        if e.type in CAMERA_TYPES:
            name, delay = "cameras", camera_lag_s + rng.uniform(0, 1)
        else:
            name = "shelves" if e.type.startswith("item.") else "door"
            delay = rng.uniform(0, 1)
        sent[name] = max(sent[name], e.at.timestamp() + delay)
        arrivals.append((sent[name], msgspec.structs.replace(e, source=name)))
    return [e for _, e in sorted(arrivals, key=lambda x: x[0])]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(1, 4),
    lag_seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
)
def test_sources_that_lag_behind_each_other_change_nothing(
    seed: int, lag_seed: int, cuts: list[int]
) -> None:
    """Cameras 4 s behind the shelves and the door, each source in order but for a second:
    with a second of lateness per source, the output is that of the ordered log, in any
    batches. One clock per store (an idle bound of 0) sets camera events aside."""
    arrived = by_sources(day(seed), random.Random(lag_seed), camera_lag_s=4.0)
    ordered = sorted(arrived, key=lambda e: (e.at, e.id))
    end = end_of(day(seed))
    want = run(engine(lateness_s=1.0, source_idle_s=10.0), [ordered], end)
    got = run(engine(lateness_s=1.0, source_idle_s=10.0), split(tuple(arrived), cuts), end)
    assert got == want
    one_clock = engine(lateness_s=1.0)
    assert {e.source for e in one_clock.process(arrived).late} == {"cameras"}


def test_a_quiet_source_holds_the_store_back_for_the_idle_bound_only() -> None:
    e = engine(source_idle_s=10.0)

    def beat(source: str, second: float) -> ev.Event:
        at = T0 + timedelta(seconds=second)
        return ev.new(ev.StoreHeartbeat, store="corner-01", at=at, source=source, subject=source)

    e.process([beat("door", 0)])
    p = e.partitions["corner-01"]
    assert p.watermark == T0.timestamp()
    e.process([beat("cam", 5)])
    assert (p.watermark, p.held_by) == (T0.timestamp(), "door")  # the door may still send
    e.process([beat("cam", 10)])
    assert p.watermark == T0.timestamp()  # 10 s behind: still within the bound
    e.process([beat("cam", 10.5)])
    assert (p.watermark, p.held_by, sorted(p.sources)) == (T0.timestamp() + 10.5, "cam", ["cam"])
    assert [x.source for x in e.process([beat("door", 3)]).late] == ["door"]


def test_invented_sources_are_bounded_per_store() -> None:
    """A million made-up sources must not fill the memory: idle ones are forgotten, and
    past the bound the one furthest behind."""
    e = engine(lateness_s=1.0, source_idle_s=3600.0)
    e.max_sources = 50
    events = [
        ev.new(
            ev.StoreHeartbeat,
            store="corner-01",
            at=T0 + timedelta(seconds=k / 10),
            source=f"forged-{k}",
            subject="x",
        )
        for k in range(500)
    ]
    e.process(events)
    p = e.partitions["corner-01"]
    assert len(p.sources) == 50 and p.watermark == T0.timestamp() + 45.0 - 1.0


def test_events_of_one_instant_are_applied_in_the_order_they_arrived_buffered_or_not() -> None:
    """Two shoppers joining the queue at one instant are applied in the order they came,
    whether they wait in the buffer or the watermark is at their instant already: the
    queue-length window's causes (so its id) follow that order."""
    at = T0 + timedelta(seconds=10)

    def entered(shopper: str, zone: str, seconds: float) -> ev.Event:
        when, data = at + timedelta(seconds=seconds), ev.ZoneData(zone=zone)
        return ev.new(
            ev.ZoneEntered, store="corner-01", at=when, source="cam", subject=shopper, data=data
        )

    a, b = entered("v1", "checkout-queue", 0), entered("v2", "checkout-queue", 0)
    clock = entered("v3", "aisle-1", 2)  # the watermark (lateness 2 s) at their instant

    def window(order: list[ev.Event]) -> tuple[str, ...]:
        e = engine(lateness_s=2.0)
        e.process(order)
        out = e.advance("corner-01", at.timestamp() + 3600)
        (length,) = [d for d in out.derived if d.rule.id == "traffic.queue_length"]
        return length.caused_by

    assert window([a, b, clock]) == window([clock, a, b]) == (a.id, b.id)
    assert window([b, a, clock]) == window([clock, b, a]) == (b.id, a.id)


def test_a_pick_and_its_put_back_at_one_instant_leave_nothing_on_the_receipt() -> None:
    """With a lateness, both wait in the buffer; the put-back came second, so it is applied
    second, whatever their ids: the item is not charged."""
    base = {"store": "corner-01", "source": "shelf", "subject": "v1"}
    item = ev.ItemData(sku="cola-500ml", shelf="fridge-drinks")
    # An instant where the put-back's id sorts first: the order ids would have given.
    at = next(
        t
        for t in (T0 + timedelta(seconds=10 + k) for k in range(100))
        if ev.new(ev.ItemPutBack, at=t, data=item, **base).id
        < ev.new(ev.ItemPicked, at=t, data=item, **base).id
    )
    picked = ev.new(ev.ItemPicked, at=at, data=item, **base)
    put_back = ev.new(ev.ItemPutBack, at=at, data=item, **base)
    chosen = ev.new(
        ev.ItemPicked,
        at=at - timedelta(seconds=1),
        data=ev.ItemData(sku="butter-250g", shelf="fridge-dairy"),
        **base,
    )
    gate = ev.new(
        ev.ZoneEntered, at=at + timedelta(seconds=5), data=ev.ZoneData(zone="exit-gate"), **base
    )
    e = engine(lateness_s=2.0)
    out = e.process([chosen, picked, put_back, gate])
    out.extend(e.advance("corner-01", at.timestamp() + 3600))
    (receipt,) = [d for d in out.derived if isinstance(d, ev.ReceiptIssued)]
    assert [(line.sku, line.qty) for line in receipt.data.lines] == [("butter-250g", 1)]


def test_late_events_are_reported_not_applied() -> None:
    e = engine(lateness_s=1.0)
    base = {"store": "corner-01", "source": "cam", "subject": "v1"}
    first = ev.new(
        ev.ItemPicked,
        at=T0 + timedelta(seconds=10),
        data=ev.ItemData(sku="cola-500ml", shelf="fridge-drinks"),
        **base,
    )
    later = ev.new(
        ev.ZoneEntered, at=T0 + timedelta(seconds=20), data=ev.ZoneData(zone="aisle-1"), **base
    )
    late = ev.new(
        ev.ItemPicked,
        at=T0 + timedelta(seconds=5),
        data=ev.ItemData(sku="butter-250g", shelf="fridge-dairy"),
        **base,
    )
    out = e.process([first, later, late])
    assert out.late == [late]
    assert e.partitions["corner-01"].late == 1
    assert [d.data.sku for d in out.derived if isinstance(d, ev.CartItemAdded)] == ["cola-500ml"]


def test_a_repeated_event_is_applied_once() -> None:
    events = list(day(2))
    once = run(engine(), [events], end_of(day(2)))
    twice = run(engine(), [events, events[: len(events) // 2]], end_of(day(2)))
    assert twice == once


def test_every_cause_resolves_to_an_event_that_exists() -> None:
    events = day(3)
    known = {e.id for e in events}
    for raw in run(engine(), [list(events)], end_of(events)):
        d = ev.decode(raw)
        assert isinstance(d, ev.DerivedEvent)
        assert d.caused_by and set(d.caused_by) <= known, d
        known.add(d.id)


_moves = st.lists(
    st.tuples(
        st.sampled_from(["pick", "back"]),
        st.sampled_from(["cola-500ml", "butter-250g", "cheddar-200g"]),
        st.integers(1, 3),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(moves=_moves)
def test_a_cart_never_holds_a_negative_count(moves: list[tuple[str, str, int]]) -> None:
    e = engine()
    base = {"store": "corner-01", "source": "cam", "subject": "v1"}
    events: list[ev.Event] = []
    for i, (kind, sku, qty) in enumerate(moves):
        cls = ev.ItemPicked if kind == "pick" else ev.ItemPutBack
        events.append(
            ev.new(
                cls,
                at=T0 + timedelta(seconds=i),
                data=ev.ItemData(sku=sku, shelf="A", qty=qty),
                **base,
            )
        )
    events.append(
        ev.new(
            ev.ZoneEntered,
            at=T0 + timedelta(seconds=100),
            data=ev.ZoneData(zone="exit-gate"),
            **base,
        )
    )
    cart: dict[str, int] = {}
    expected: dict[str, int] = {}
    for kind, sku, qty in moves:
        expected[sku] = (
            expected.get(sku, 0) + qty if kind == "pick" else max(0, expected.get(sku, 0) - qty)
        )
    receipts = []
    for d in e.process(events).derived:
        if isinstance(d, ev.CartItemAdded):
            cart[d.data.sku] = cart.get(d.data.sku, 0) + d.data.qty
        elif isinstance(d, ev.CartItemRemoved):
            cart[d.data.sku] = cart.get(d.data.sku, 0) - d.data.qty
            assert cart[d.data.sku] >= 0
        elif isinstance(d, ev.ReceiptIssued):
            receipts.append({line.sku: line.qty for line in d.data.lines})
    held = {s: n for s, n in expected.items() if n}
    assert receipts == ([held] if held else [])
    assert all(n >= 0 for n in cart.values())


BAD_PACK = """
pack: carts
version: "2.0.0"
rules:
  - id: cart
    where: data.__class__
    tally: {add: {when: "true"}, remove: {when: "true"}, close: {when: "true"}}
"""


def test_a_refused_pack_leaves_the_running_rules_and_their_output_alone() -> None:
    events = day(4)
    half = len(events) // 2
    reference_run = run(engine(), [list(events)], end_of(events))

    e = Engine(standard())
    out = [ev.encode(d) for d in e.process(events[:half]).derived]
    with pytest.raises(PackError) as info:
        e.reload(load_rules([*OTHERS, ("carts.yaml", BAD_PACK)], Reference.of(layout())))
    assert "__class__" in str(info.value)
    out += run(e, [list(events[half:])], end_of(events))
    assert out == reference_run


def test_a_reload_swaps_versions_and_keeps_the_state_of_rules_that_stay() -> None:
    events = day(4)
    half = len(events) // 2
    e = Engine(standard())
    first = e.process(events[:half]).derived
    carts = (
        (ROOT / "rules" / "packs" / "carts.yaml")
        .read_text()
        .replace('version: "1.2.0"', 'version: "1.3.0"')
    )
    e.reload(load_rules([*OTHERS, ("carts.yaml", carts)], Reference.of(layout())))
    second = e.process(events[half:]).derived
    assert {d.rule.version for d in first if d.rule.id == "carts.cart"} == {"1.2.0"}
    assert {d.rule.version for d in second if d.rule.id == "carts.cart"} == {"1.3.0"}
    # Carts opened before the reload are still closed into receipts after it.
    opened = {d.data.cart for d in first if isinstance(d, ev.CartItemAdded)}
    paid = {d.data.cart for d in second if isinstance(d, ev.ReceiptIssued)}
    assert opened & paid


def _staff(kind: type[ev.Event], shopper: str, seconds: float) -> ev.Event:
    return ev.new(
        kind,
        store="corner-01",
        at=T0 + timedelta(seconds=seconds),
        source="badge",
        subject=shopper,
        data=ev.StaffData(badge="b-7"),
    )


def _pick(shopper: str, seconds: float) -> ev.Event:
    data = ev.ItemData(sku="cola-500ml", shelf="fridge-drinks")
    at = T0 + timedelta(seconds=seconds)
    return ev.new(
        ev.ItemPicked, store="corner-01", at=at, source="shelf", subject=shopper, data=data
    )


def test_staff_build_no_cart_in_an_engine_built_the_obvious_way() -> None:
    e = Engine(load_rules(PACKS, Reference.of(layout())))
    out = e.process([_staff(ev.StaffSessionStarted, "s-1", 0), _pick("s-1", 5), _pick("v-1", 6)])
    assert [d.subject for d in out.derived if isinstance(d, ev.CartItemAdded)] == ["v-1"]


def test_a_reloaded_rule_set_knows_the_staff_on_shift() -> None:
    e = Engine(standard())
    e.process([_staff(ev.StaffSessionStarted, "s-1", 0)])
    e.reload(standard())  # loaded apart, with a context of its own
    out = e.process([_pick("s-1", 5), _staff(ev.StaffSessionEnded, "s-1", 6), _pick("s-1", 7)])
    assert [d.data.sku for d in out.derived if isinstance(d, ev.CartItemAdded)] == ["cola-500ml"]
    assert [d.at for d in out.derived if isinstance(d, ev.CartItemAdded)] == [
        T0 + timedelta(seconds=7)
    ]


def test_a_rule_set_runs_in_one_engine_at_a_time() -> None:
    """A second engine would empty the first one's staff set under it."""
    rules = standard()
    first = Engine(rules)
    with pytest.raises(ValueError, match="another engine"):
        Engine(rules)
    first.process([_staff(ev.StaffSessionStarted, "s-1", 0)])
    del first  # gone: the rule set is free, and a new engine starts with empty sets
    out = Engine(rules).process([_pick("s-1", 5)])
    assert [d.subject for d in out.derived if isinstance(d, ev.CartItemAdded)] == ["s-1"]


FAILING = """
pack: shaky
version: "1"
rules:
  - id: divide
    where: type == "item.picked" and 1 / (data.qty - 1) > 0
    alert: {name: shaky}
"""


def test_a_failing_rule_is_reported_and_the_others_carry_on() -> None:
    e = Engine(load_rules([*PACKS, ("shaky.yaml", FAILING)], Reference.of(layout())))
    out = e.process(day(1))
    assert out.errors and all(err.rule == "shaky.divide" for err in out.errors)
    assert "ZeroDivisionError" in out.errors[0].message
    assert any(isinstance(d, ev.CartItemAdded) for d in out.derived)


def test_state_is_freed_after_the_shopper_leaves() -> None:
    e = engine()
    events = day(1, shoppers=30)
    e.process(events)
    p = e.partitions["corner-01"]
    carts = p.state["carts.cart"]
    assert carts.get("carts") == {} and carts.get("alias") == {}
    for rule_id in ("frustration.queue_wait", "frustration.stuck_at_gate", "traffic.queue_wait"):
        assert not p.state.get(rule_id), rule_id
