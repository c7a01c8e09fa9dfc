"""Scripted visits: shoppers who walk a fixed, straight route through a store layout.

Simpler than the full simulator (``simulator.day``): straight walks between waypoints, one
zone at a time, no personas. It stays as the fixed workload of the engine benchmark (so that
figures recorded over time compare) and of tests that want a cheap, steady event stream;
QA, the demo and the accuracy benchmark use the full simulator.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from core import events as ev
from core.layout import Layout, Shelf

WALK_M_PER_S = 1.2
FRAME_S = 0.5
SHELF_S = 12.0  # standing at a shelf
SOURCE = "scripted"


@dataclass(frozen=True)
class Visit:
    shopper: str
    start: datetime
    stops: tuple[Shelf, ...]
    picks: tuple[tuple[str, str], ...]  # (shelf id, sku), in order
    put_back: tuple[str, str] | None
    hesitant: bool = False  # puts the first item back and takes it again, three times
    skips_gate: bool = False  # walks out through the entrance, not through the exit gate
    queue_s: float = 0.0  # waits this long in the checkout queue


def _centre(points: tuple[tuple[float, float], ...]) -> tuple[float, float]:
    return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)


def _zone_centre(layout: Layout, kind: str) -> tuple[float, float]:
    return _centre(next(z for z in layout.zones if z.kind == kind).polygon)


def plan(layout: Layout, n_shoppers: int, start: datetime, seed: int = 1) -> list[Visit]:
    """Who visits when, which shelves they stop at, and what they take."""
    rng = random.Random(seed)
    stocked = [s for s in layout.shelves if s.slots]
    visits = []
    for i in range(n_shoppers):
        stops = tuple(rng.sample(stocked, k=min(len(stocked), rng.randint(1, 3))))
        picks = tuple((s.id, rng.choice(s.skus)) for s in stops)
        put_back = picks[0] if rng.random() < 0.3 else None
        visits.append(
            Visit(
                f"v-{seed}-{i:04d}",
                start + timedelta(seconds=40 * i),
                stops,
                picks,
                put_back,
                hesitant=rng.random() < 0.1,
                skips_gate=rng.random() < 0.05,
                queue_s=rng.choice((0.0, 0.0, 0.0, 20.0, 100.0)),
            )
        )
    return visits


Point = tuple[float, float]


def _route(layout: Layout, visit: Visit) -> list[tuple[Point, int | None]]:
    """The waypoints, each with the index of the shelf stop it is (None for the rest).

    A shopper stands still at each shelf long enough to take, hesitate and put back, and
    in the queue for ``queue_s``: standing still is the same waypoint once a frame.
    """
    entry = next(ln for ln in layout.lines if ln.kind in ("entrance", "entrance_exit"))
    out = next(ln for ln in layout.lines if ln.kind in ("exit", "entrance_exit"))
    door_in, door_out = _centre(entry.points), _centre(out.points)
    outside = (door_in[0], door_in[1] - 0.8) if door_in[1] < 1 else (door_in[0] - 0.8, door_in[1])
    leave = (
        (door_out[0], door_out[1] - 0.8) if door_out[1] < 1 else (door_out[0] - 0.8, door_out[1])
    )
    has_entrance = any(z.kind == "entrance" for z in layout.zones)
    inside = _zone_centre(layout, "entrance") if has_entrance else door_in
    route: list[tuple[Point, int | None]] = [(outside, None), (inside, None)]
    for i, shelf in enumerate(visit.stops):
        at_shelf = _centre(layout.zone(shelf.zone).polygon)
        route += [(at_shelf, i)] + [(at_shelf, None)] * int(SHELF_S / FRAME_S)
    if visit.skips_gate:
        return [*route, (inside, None), (outside, None)]
    queue = _zone_centre(layout, "checkout_queue")
    route += [(queue, None)] * (1 + int(visit.queue_s / FRAME_S))
    return [*route, (_zone_centre(layout, "exit_gate"), None), (leave, None)]


def _walk(route: list[tuple[Point, int | None]]) -> Iterator[tuple[float, float, int | None]]:
    """A point every frame along the route, with the stop reached on that frame, if any."""
    step = WALK_M_PER_S * FRAME_S
    yield route[0][0][0], route[0][0][1], route[0][1]
    for (a, _), (b, stop) in itertools.pairwise(route):
        n = max(1, math.ceil(math.dist(a, b) / step))
        for k in range(1, n + 1):
            t = k / n
            yield a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, stop if k == n else None


def _shelf_events(visit: Visit, stop: int, at: datetime, base: dict[str, str]) -> list[ev.Event]:
    """Taking the stop's item, maybe hesitating over it, maybe putting it back."""
    shelf_id, sku = visit.picks[stop]
    item = ev.ItemData(sku=sku, shelf=shelf_id)
    out: list[ev.Event] = [ev.new(ev.ItemPicked, at=at + timedelta(seconds=2), data=item, **base)]
    if visit.hesitant and stop == 0:
        for k in range(3):
            back = at + timedelta(seconds=3 + 2 * k)
            out.append(ev.new(ev.ItemPutBack, at=back, data=item, **base))
            again = back + timedelta(seconds=1)
            out.append(ev.new(ev.ItemPicked, at=again, data=item, **base))
    if visit.put_back == (shelf_id, sku):
        out.append(ev.new(ev.ItemPutBack, at=at + timedelta(seconds=10), data=item, **base))
    return out


def visit_events(layout: Layout, visit: Visit) -> list[ev.Event]:
    """Every event one visit produces, in event-time order."""
    store = layout.store.id
    doors = [ln for ln in layout.lines if ln.kind in ("entrance", "exit", "entrance_exit")]
    base = {"store": store, "source": SOURCE, "subject": visit.shopper}
    out: list[ev.Event] = []
    zone: str | None = None
    prev: Point | None = None
    for frame, (x, y, stop) in enumerate(_walk(_route(layout, visit))):
        at = visit.start + timedelta(seconds=frame * FRAME_S)
        if prev is not None:
            for line in doors:
                crossed = line.crossing(prev, (x, y))
                if crossed > 0 and line.kind != "exit":
                    data = ev.EntryData(line=line.id)
                    out.append(ev.new(ev.ShopperEntered, at=at, data=data, **base))
                elif crossed < 0:  # out through any door: the exit, or the entrance
                    data = ev.ExitData(line=line.id)
                    out.append(ev.new(ev.ShopperExited, at=at, data=data, **base))
        now = layout.zone_at(x, y)
        if now != zone:
            if zone is not None:
                out.append(ev.new(ev.ZoneExited, at=at, data=ev.ZoneExitData(zone=zone), **base))
            if now is not None:
                out.append(ev.new(ev.ZoneEntered, at=at, data=ev.ZoneData(zone=now), **base))
            zone = now
        if stop is not None:
            out += _shelf_events(visit, stop, at, base)
        sample = ev.PositionSample(visit.shopper, round(x, 3), round(y, 3))
        data = ev.PositionData(frame=frame, samples=(sample,))
        out.append(
            ev.new(
                ev.PositionSamples, store=store, at=at, source=SOURCE, subject="floor", data=data
            )
        )
        prev = (x, y)
    return sorted(out, key=lambda e: e.at)
