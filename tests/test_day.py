"""A simulated store day: deterministic, on its time-of-day curve, and the standard packs'
receipts are exactly the true ones."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from functools import cache
from itertools import combinations, pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

from core import events as ev
from core.layout import load_layout
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from simulator.day import Run, simulate
from simulator.shoppers import QUEUE, Persona, Store

ROOT = Path(__file__).resolve().parent.parent
PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


@cache
def store() -> Store:
    return Store(load_layout(ROOT / "examples" / "stores" / "convenience.yaml"))


@cache
def day(seed: int, shoppers: int = 150) -> Run:
    return simulate(store(), OPEN, hours=15, shoppers=shoppers, seed=seed)


def derived(run: Run) -> list[ev.Event]:
    reference = Reference.of(store().layout, members=run.members)
    engine = Engine(load_rules(PACKS, reference))
    out = engine.process(run.events)
    out.extend(engine.advance("corner-01", run.events[-1].at.timestamp() + 86400))
    assert not out.errors and not out.late
    return out.derived


def test_the_same_seed_gives_the_same_day_byte_for_byte() -> None:
    a = simulate(store(), OPEN, hours=2, shoppers=20, seed=7)
    b = simulate(store(), OPEN, hours=2, shoppers=20, seed=7)
    assert [ev.encode(e) for e in a.events] == [ev.encode(e) for e in b.events]
    assert [t.path for t in a.truth] == [t.path for t in b.truth]
    c = simulate(store(), OPEN, hours=2, shoppers=20, seed=8)
    assert [ev.encode(e) for e in c.events] != [ev.encode(e) for e in a.events]


def test_every_receipt_is_exactly_the_true_one() -> None:
    run = day(1)
    receipts = {
        d.data.cart: {line.sku: line.qty for line in d.data.lines}
        for d in derived(run)
        if isinstance(d, ev.ReceiptIssued)
    }
    assert receipts == run.receipts()
    assert len(receipts) > 100
    assert any(v.group for v in run.visitors), "the mix has groups sharing a cart"


def test_arrivals_follow_the_time_of_day_curve() -> None:
    run = day(2, 400)
    hours = Counter(v.start.astimezone(OPEN.tzinfo).hour for v in run.visitors)
    assert hours[18] > 1.5 * hours[15] and hours[12] > hours[10]
    assert min(hours) >= 7 and max(hours) <= 21


def test_staff_and_passers_by_are_traffic_apart() -> None:
    run = day(3)
    out = derived(run)
    footfall = sum(
        d.data.value for d in out if isinstance(d, ev.Metric) and d.data.name == "footfall"
    )
    shoppers = sum(1 for v in run.visitors if v.persona is not Persona.STAFF)
    assert footfall == shoppers
    assert run.passers_by == 2 * 150
    rates = [
        d.data.value
        for d in out
        if isinstance(d, ev.Metric) and d.data.name == "capture_rate_of_traffic"
    ]
    assert rates and all(0 < r < 1 for r in rates)


def test_people_on_the_floor_follow_the_true_paths() -> None:
    run = simulate(store(), OPEN, hours=0.2, shoppers=5, seed=4)
    origin = min(v.start for v in run.visitors)
    frames = dict(run.people(2.0))  # the simulator's own frame rate: no interpolation
    for visitor, truth in zip(run.visitors, run.truth, strict=True):
        offset = (visitor.start - origin).total_seconds()
        for t, x, y in truth.path[:: max(1, len(truth.path) // 10)]:
            there = {p.track: (p.x, p.y) for p in frames[offset + t]}
            assert there[visitor.id] == (x, y)
    busiest = max(len(people) for people in frames.values())
    assert busiest >= 2


def test_no_two_shoppers_stand_still_on_one_spot_at_once() -> None:
    """Two people standing on one point are one figure to every camera: at a shelf, in
    the queue and at the gate each stands on a spot of their own, spots 0.45 m apart or
    more, and the busy hour still brings people to the same places at the same time."""
    run = simulate(store(), OPEN.replace(hour=18), hours=0.5, shoppers=60, seed=5)
    standing: dict[float, list[tuple[str, float, float]]] = {}
    places: Counter[tuple[float, float]] = Counter()
    for visitor, truth in zip(run.visitors, run.truth, strict=True):
        offset = (visitor.start - OPEN).total_seconds()
        for (_, x0, y0), (t, x, y) in pairwise(truth.path):
            if (x0, y0) == (x, y) and store().layout.zone_at(x, y) is not None:
                standing.setdefault(offset + t, []).append((visitor.id, x, y))
                places[(x, y)] += 1
    shared = 0
    for people in standing.values():
        for (_a, xa, ya), (_b, xb, yb) in combinations(people, 2):
            if math.dist((xa, ya), (xb, yb)) < 0.45:
                shared += 1
    assert shared == 0
    assert max(len(p) for p in standing.values()) >= 6  # a busy half hour
    spots = {p for kind in store().spots.values() for p in kind}
    assert {p for p, n in places.items() if n >= 20} <= spots  # long stays are on spots
    assert len({p for p in places if p in spots}) >= 20


def test_the_queue_is_a_line_from_the_gate_and_shelf_spots_spread_along_the_front() -> None:
    s = store()
    layout = s.layout
    line = s.spots[QUEUE]
    assert len(line) >= 4
    assert all(layout.zone(layout.zone_at(*p) or "").kind == "checkout_queue" for p in line)
    assert all(math.dist(a, b) >= 0.45 for a, b in pairwise(line))
    assert all(math.dist(a, b) < 1.2 for a, b in pairwise(line))  # a line, no jumps
    gate = s.gate
    head = math.dist(line[0], gate)  # the head: one of the spots nearest the gate
    assert head <= min(math.dist(p, gate) for p in line) + 0.1 < math.dist(line[-1], gate)
    for shelf in s.stocked:
        front = s.spots[shelf.zone]
        assert len(front) >= 3, shelf.id
        assert all(layout.zone_at(*p) == shelf.zone for p in front)
        assert all(math.dist(a, b) >= 0.45 for a, b in combinations(front, 2))
        assert max(math.dist(a, b) for a, b in combinations(front, 2)) >= 1.0  # spread out
