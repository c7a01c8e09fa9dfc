"""Scripted visits: shoppers who walk a fixed route through a store layout.

The smallest honest source of events until the full simulator exists: each shopper walks
from the entrance past some shelves to the exit at walking speed, takes items from the
shelves' slots (and puts one back), and every event an adapter would emit comes out,
including a position sample per camera frame and zone changes derived from the positions.
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
SOURCE = "scripted"


@dataclass(frozen=True)
class Visit:
    shopper: str
    start: datetime
    stops: tuple[Shelf, ...]
    picks: tuple[tuple[str, str], ...]  # (shelf id, sku), in order
    put_back: tuple[str, str] | None


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
            Visit(f"v-{seed}-{i:04d}", start + timedelta(seconds=40 * i), stops, picks, put_back)
        )
    return visits


def _route(layout: Layout, visit: Visit) -> list[tuple[float, float]]:
    entry = next(ln for ln in layout.lines if ln.kind in ("entrance", "entrance_exit"))
    out = next(ln for ln in layout.lines if ln.kind in ("exit", "entrance_exit"))
    door_in, door_out = _centre(entry.points), _centre(out.points)
    outside = (door_in[0], door_in[1] - 0.8) if door_in[1] < 1 else (door_in[0] - 0.8, door_in[1])
    leave = (
        (door_out[0], door_out[1] - 0.8) if door_out[1] < 1 else (door_out[0] - 0.8, door_out[1])
    )
    inside = (
        _zone_centre(layout, "entrance")
        if any(z.kind == "entrance" for z in layout.zones)
        else door_in
    )
    waypoints = [outside, inside]
    for shelf in visit.stops:
        waypoints.append(_centre(layout.zone(shelf.zone).polygon))
    waypoints += [_zone_centre(layout, "checkout_queue"), _zone_centre(layout, "exit_gate"), leave]
    return waypoints


def _walk(route: list[tuple[float, float]]) -> Iterator[tuple[float, float, int]]:
    """Points every frame along the route; the int is the index of the waypoint reached."""
    step = WALK_M_PER_S * FRAME_S
    for i, (a, b) in enumerate(itertools.pairwise(route)):
        n = max(1, math.ceil(math.dist(a, b) / step))
        for k in range(n):
            t = k / n
            yield a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, i
    yield route[-1][0], route[-1][1], len(route) - 1


def visit_events(layout: Layout, visit: Visit) -> list[ev.Event]:
    """Every event one visit produces, in event-time order."""
    store = layout.store.id
    entry = next(ln for ln in layout.lines if ln.kind in ("entrance", "entrance_exit"))
    exit_line = next(ln for ln in layout.lines if ln.kind in ("exit", "entrance_exit"))
    base = {"store": store, "source": SOURCE, "subject": visit.shopper}
    out: list[ev.Event] = []
    at = visit.start
    zone: str | None = None
    prev: tuple[float, float] | None = None
    reached = 0
    for frame, (x, y, wp) in enumerate(_walk(_route(layout, visit))):
        at = visit.start + timedelta(seconds=frame * FRAME_S)
        if prev is not None:
            if entry.crossing(prev, (x, y)) > 0:
                out.append(
                    ev.new(ev.ShopperEntered, at=at, data=ev.EntryData(line=entry.id), **base)
                )
            if exit_line.crossing(prev, (x, y)) < 0:
                out.append(
                    ev.new(ev.ShopperExited, at=at, data=ev.ExitData(line=exit_line.id), **base)
                )
        now = layout.zone_at(x, y)
        if now != zone:
            if zone is not None:
                out.append(ev.new(ev.ZoneExited, at=at, data=ev.ZoneData(zone=zone), **base))
            if now is not None:
                out.append(ev.new(ev.ZoneEntered, at=at, data=ev.ZoneData(zone=now), **base))
            zone = now
        if wp > reached and 2 <= wp < 2 + len(visit.stops):
            shelf_id, sku = visit.picks[wp - 2]
            item = ev.ItemData(sku=sku, shelf=shelf_id)
            out.append(ev.new(ev.ItemPicked, at=at + timedelta(seconds=3), data=item, **base))
            if visit.put_back == (shelf_id, sku):
                out.append(ev.new(ev.ItemPutBack, at=at + timedelta(seconds=9), data=item, **base))
        reached = wp
        sample = ev.PositionSample(visit.shopper, round(x, 3), round(y, 3))
        out.append(
            ev.new(
                ev.PositionSamples,
                store=store,
                at=at,
                source=SOURCE,
                subject="floor",
                data=ev.PositionData(frame=frame, samples=(sample,)),
            )
        )
        prev = (x, y)
    return sorted(out, key=lambda e: e.at)
