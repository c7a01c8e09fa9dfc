"""Simulated shoppers: personas, what each does in the store, and the truth of it.

A visitor gets a plan from its persona (which shelves, what to take, what to put back,
how long to queue, which door to leave by), then walks it over the walkable floor at a
human pace, frame by frame. Where people stand still (a shelf front, the checkout queue,
the exit gate) they stand on spots a shoulder's width and more apart, and a day
(``simulator.day``) gives each visitor a spot no one else holds at that time
(``Spots``): two people on one point would be one figure to any camera.

Playing a plan gives two things: the events a perfect set of sensors would report
(entries, zone changes, picks, positions, face matches, staff sessions), and the ground
truth QA checks the pipeline against (the true path, the true cart and receipt, the dwell
per zone, the alerts that should fire).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from shapely.geometry import Point, Polygon

from core import events as ev
from core.layout import Layout, Shelf
from simulator.floor import Floor, Pt

FRAME_S = 0.5
SOURCE = "sim"
SPOT_M = 0.6  # spots along a shelf front are at least this far apart...
QUEUE_SPOT_M = 0.5  # ...those of the queue's line this far, its rows too
SPOT_EDGE_M = 0.25  # spots keep this far inside their zone
QUEUE = "queue"  # the place name of the checkout queue's line (shelf fronts: their zone id)
GATE = "gate"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # spots' clock: seconds from here


class Persona(StrEnum):
    """Who comes in, and how they behave (``docs`` in each plan function below)."""

    MISSION = "mission"  # knows what they want: one to three items, straight to the gate
    BROWSER = "browser"  # walks many aisles, lingers, takes little
    HESITANT = "hesitant"  # takes an item and puts it back, again and again
    GROUP = "group"  # two or three who came together and share one cart
    PASSERBY = "passerby"  # walks past on the pavement and does not come in
    QUEUE_WAITER = "queue_waiter"  # waits long in the checkout queue
    WRONG_SHELF = "wrong_shelf"  # puts an item back on another shelf than it came from
    STAFF = "staff"  # restocks: a staff session, the stock room, no cart
    MEMBER = "member"  # an enrolled member, recognised at the entrance
    NO_RECEIPT = "no_receipt"  # leaves with an item by the entrance, not through the gate


@dataclass(frozen=True)
class Act:
    """One thing a visitor does: walk to a place, stand there, take or put back an item."""

    to: Pt | None = None
    wait_s: float = 0.0
    place: str | None = None  # ``to`` is a spot of this place (``Store.spots``): any free one
    take: tuple[str, str] | None = None  # (shelf id, sku)
    back: tuple[str, str] | None = None
    unsure: bool = False
    """The take is from a weighed slot, and the shelf adapter cannot tell who took it (as
    with another cart's shopper as near): a ``shelf.unresolved``, not a pick."""


@dataclass
class Truth:
    """What really happened in one visit."""

    visitor: str
    persona: Persona
    path: list[tuple[float, float, float]] = field(default_factory=list)  # (t, x, y)
    cart: Counter[str] = field(default_factory=Counter)
    paid: bool = False
    dwell: Counter[str] = field(default_factory=Counter)  # seconds per zone
    alerts: list[str] = field(default_factory=list)  # names of the alerts that should fire
    cart_id: str = ""
    moves: list[tuple[datetime, str, int]] = field(default_factory=list)  # (when, sku, +1/-1)


@dataclass(frozen=True)
class AlertThresholds:
    """When the frustration alerts the truth predicts are due: the frustration pack's
    parameters, given by the layer that reads the packs (``simulator.day.alert_thresholds``).
    The truth applies them to what really happened in a visit, as the pack's rules do."""

    queue_wait_s: float  # queue_wait_long: one stay in the checkout queue this long
    hesitation_count: int  # hesitation: this many put-backs of one SKU...
    hesitation_window_s: float  # ...within this many seconds


@dataclass(frozen=True)
class Visitor:
    id: str
    persona: Persona
    start: datetime
    group: str | None = None  # shoppers of one group share a cart
    member: str | None = None  # the enrolled member's pseudonymous id
    speed: float = 1.2  # metres per second
    acts: tuple[Act, ...] = ()


def _centre(points: tuple[tuple[float, float], ...]) -> Pt:
    return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)


class Store:
    """The places of a store visitors walk between, worked out once per layout."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout.prepare()
        self.floor = Floor(layout)
        self.staff_floor = Floor(layout, staff=True)
        self.thief_floor = Floor(layout, any_door=True, avoid=("exit_gate",))
        by_kind = {z.kind: z for z in layout.zones}
        self.queue = _centre(by_kind["checkout_queue"].polygon)
        self.gate = _centre(by_kind["exit_gate"].polygon)
        self.stock = _centre(by_kind["staff_only"].polygon) if "staff_only" in by_kind else None
        entrance = next(ln for ln in layout.lines if ln.kind in ("entrance", "entrance_exit"))
        exit_ = next(ln for ln in layout.lines if ln.kind in ("exit", "entrance_exit"))
        self.outside_in = self._beside(entrance.points, out=True)
        self.inside_in = self._beside(entrance.points, out=False)
        self.outside_out = self._beside(exit_.points, out=True)
        self.stocked = [s for s in layout.shelves if s.slots]
        self.passby = next((ln for ln in layout.lines if ln.kind == "passby"), None)
        # Where people stand still: a row along each shelf front; the queue's line, head
        # first, snaking over its zone from the end nearest the gate; a row across the gate.
        self.spots: dict[str, tuple[Pt, ...]] = {
            s.zone: tuple(_rows(self.layout.zone(s.zone).polygon, rows=1)[0]) for s in self.stocked
        }
        self.spots[QUEUE] = _queue_line(by_kind["checkout_queue"].polygon, self.gate)
        (a, b) = exit_.points
        self.spots[GATE] = tuple(
            _rows(by_kind["exit_gate"].polygon, rows=1, axis=(b[0] - a[0], b[1] - a[1]))[0]
        )

    def _beside(self, points: tuple[tuple[float, float], tuple[float, float]], out: bool) -> Pt:
        """A metre from the middle of a door line, outside the store or inside it."""
        (x0, y0), (x1, y1) = points
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        cx, cy = _centre(self.layout.floor)
        nx, ny = -(y1 - y0), x1 - x0
        norm = math.hypot(nx, ny) or 1.0
        towards_centre = (cx - mx) * nx + (cy - my) * ny > 0
        sign = (-1 if towards_centre else 1) * (1 if out else -1)
        return mx + sign * nx / norm, my + sign * ny / norm

    def front(self, shelf: Shelf) -> Pt:
        return _centre(self.layout.zone(shelf.zone).polygon)

    def spot(self, place: str, rng: random.Random | None = None) -> Act:
        """Going to stand at ``place`` (a shelf front's zone id, ``QUEUE`` or ``GATE``): the
        spot ``rng`` picks (the queue: its head), any free one when the visit is played."""
        spots = self.spots[place]
        k = rng.randrange(len(spots)) if rng is not None and place != QUEUE else 0
        return Act(to=spots[k], place=place)


def _rows(
    polygon: tuple[tuple[float, float], ...],
    rows: int | None,
    axis: Pt | None = None,
    gap: float = SPOT_M,
) -> list[list[Pt]]:
    """Spots over a zone: rows along ``axis`` (default: the zone's long side), ``gap``
    apart or more, along a row and between rows (``rows``: at most that many), and
    ``SPOT_EDGE_M`` inside its edges; a side too short for two gets one, in its middle."""
    shape = Polygon(polygon)
    corners = list(shape.minimum_rotated_rectangle.exterior.coords)[:4]
    if axis is None:
        sides = [(corners[1][0] - corners[0][0], corners[1][1] - corners[0][1])]
        sides.append((corners[2][0] - corners[1][0], corners[2][1] - corners[1][1]))
        axis = max(sides, key=lambda v: math.hypot(*v))
    norm = math.hypot(*axis)
    u = (axis[0] / norm, axis[1] / norm)
    n = (-u[1], u[0])
    c = shape.centroid.x, shape.centroid.y
    along = [(p[0] - c[0]) * u[0] + (p[1] - c[1]) * u[1] for p in corners]
    across = [(p[0] - c[0]) * n[0] + (p[1] - c[1]) * n[1] for p in corners]

    def places(lo: float, hi: float, gap: float, most: int | None) -> list[float]:
        room = hi - lo - 2 * SPOT_EDGE_M
        k = max(1, math.floor(room / gap + 1e-9) + 1) if room > 0 else 1
        k = min(k, most) if most else k
        if k == 1:
            return [(lo + hi) / 2]
        return [lo + SPOT_EDGE_M + room * i / (k - 1) for i in range(k)]

    out = []
    for b in places(min(across), max(across), gap, rows):
        row = [
            (round(c[0] + a * u[0] + b * n[0], 3), round(c[1] + a * u[1] + b * n[1], 3))
            for a in places(min(along), max(along), gap, None)
        ]
        out.append([p for p in row if shape.contains(Point(p))] or row[:1])
    return out


def _queue_line(polygon: tuple[tuple[float, float], ...], gate: Pt) -> tuple[Pt, ...]:
    """The checkout queue's spots in line order: the head is the end of the row nearest
    the gate that is nearer the gate, and the line snakes back along the next rows."""
    rows = sorted(
        _rows(polygon, rows=None, gap=QUEUE_SPOT_M),
        key=lambda r: math.dist(((r[0][0] + r[-1][0]) / 2, (r[0][1] + r[-1][1]) / 2), gate),
    )
    if math.dist(rows[0][-1], gate) < math.dist(rows[0][0], gate):
        rows = [r[::-1] for r in rows]
    return tuple(p for i, r in enumerate(rows) for p in (r if i % 2 == 0 else r[::-1]))


class Spots:
    """Who stands on which spot when, over a day. A visitor going to stand somewhere takes
    the spot its plan picked if it is free for the whole stay, else the free one nearest
    to it (the queue: the free one nearest its head). With none free, one standing on a
    spot already (in the queue, at a shelf) stays there until one is free, as people do;
    else, or after ``MAX_WAIT_S``, it shares the one held least over its stay."""

    PAD_S = 1.5  # a spot is held this long before the arrival and after leaving
    MAX_WAIT_S = 60.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self.held: dict[Pt, list[list[float]]] = {}
        self._last: dict[str, list[float]] = {}  # each visitor's latest hold

    def take(
        self, visitor: str, place: str, wanted: Pt, begin: float, end: float, standing: bool
    ) -> tuple[Pt, float]:
        """A spot of ``place`` for [begin, end] (seconds, any one clock), now held, and how
        long to wait where the visitor stands (``standing``: on the spot it took last)
        before walking there."""
        spots = self.store.spots[place]
        order = list(spots) if place == QUEUE else sorted(spots, key=lambda p: math.dist(p, wanted))
        last = self._last.get(visitor)
        waits = int(self.MAX_WAIT_S / FRAME_S) if standing and last is not None else 0
        for k in range(waits + 1):
            d = k * FRAME_S
            span = [begin + d - self.PAD_S, end + d + self.PAD_S]
            free = [
                p for p in order if not any(self._overlap(h, span) for h in self.held.get(p, []))
            ]
            if free:
                if last is not None:
                    last[1] += d  # still standing on the last spot meanwhile
                return self._hold(visitor, free[0], span), d
        span = [begin - self.PAD_S, end + self.PAD_S]
        least = min(order, key=lambda p: sum(self._overlap(h, span) for h in self.held.get(p, [])))
        return self._hold(visitor, least, span), 0.0

    def _hold(self, visitor: str, spot: Pt, span: list[float]) -> Pt:
        self.held.setdefault(spot, []).append(span)
        self._last[visitor] = span
        return spot

    @staticmethod
    def _overlap(a: list[float], b: list[float]) -> float:
        return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


# -- plans: one function per persona --------------------------------------------------------


def _shopping(store: Store, rng: random.Random, n: int, linger: tuple[float, float]) -> list[Act]:
    acts = []
    for shelf in rng.sample(store.stocked, k=min(n, len(store.stocked))):
        acts.append(replace(store.spot(shelf.zone, rng), wait_s=rng.uniform(*linger)))
        acts.append(Act(take=(shelf.id, rng.choice(shelf.skus))))
    return acts


def _checkout(store: Store, rng: random.Random, queue_s: float | None = None) -> list[Act]:
    wait = rng.uniform(3, 25) if queue_s is None else queue_s
    return [
        replace(store.spot(QUEUE), wait_s=wait),
        replace(store.spot(GATE, rng), wait_s=rng.uniform(1, 3)),
        Act(to=store.outside_out),
    ]


def plan(store: Store, persona: Persona, rng: random.Random) -> tuple[Act, ...]:
    """What a visitor of this persona will do, walking in from outside the entrance."""
    enter = [Act(to=store.outside_in), Act(to=store.inside_in)]
    if persona is Persona.MISSION:
        return (*enter, *_shopping(store, rng, rng.randint(1, 3), (3, 8)), *_checkout(store, rng))
    if persona is Persona.BROWSER:
        acts = _shopping(store, rng, rng.randint(4, 7), (8, 25))
        # A browser looks at more than they take: most picks become mere visits.
        acts = [a for i, a in enumerate(acts) if a.take is None or i % 4 == 1]
        return (*enter, *acts, *_checkout(store, rng))
    if persona is Persona.HESITANT:
        shelf = rng.choice(store.stocked)
        item = (shelf.id, rng.choice(shelf.skus))
        dither = [Act(take=item), Act(wait_s=4), Act(back=item), Act(wait_s=3)] * 3
        keep = rng.random() < 0.5
        return (
            *enter,
            replace(store.spot(shelf.zone, rng), wait_s=5),
            *dither,
            *([Act(take=item)] if keep else []),
            *_checkout(store, rng),
        )
    if persona is Persona.WRONG_SHELF:
        first, other = rng.sample(store.stocked, k=2)
        item = (first.id, rng.choice(first.skus))
        return (
            *enter,
            replace(store.spot(first.zone, rng), wait_s=4),
            Act(take=item),
            *_shopping(store, rng, 1, (3, 6)),
            replace(store.spot(other.zone, rng), wait_s=3),
            Act(back=(other.id, item[1])),  # back on another shelf: still off the cart
            *_checkout(store, rng),
        )
    if persona is Persona.QUEUE_WAITER:
        return (
            *enter,
            *_shopping(store, rng, rng.randint(1, 2), (3, 8)),
            *_checkout(store, rng, queue_s=rng.uniform(100, 160)),
        )
    if persona is Persona.NO_RECEIPT:
        return (
            *enter,
            *_shopping(store, rng, 1, (3, 6)),
            Act(to=store.outside_in),  # out by the entrance, the gate never passed
        )
    if persona is Persona.STAFF:
        stock = store.stock or store.queue
        return (
            *enter,
            Act(to=stock, wait_s=rng.uniform(20, 60)),
            replace(store.spot(rng.choice(store.stocked).zone, rng), wait_s=30),
            Act(to=store.outside_out),
        )
    # MEMBER and GROUP shop like mission shoppers; PASSERBY is not planned on the floor.
    return (*enter, *_shopping(store, rng, rng.randint(1, 3), (3, 10)), *_checkout(store, rng))


# -- playing a plan -------------------------------------------------------------------------


def _walk(floor: Floor, a: Pt, b: Pt, speed: float) -> list[Pt]:
    """Points one frame apart along the walkable path from a to b."""
    corners = floor.path(a, b)
    step = speed * FRAME_S
    out: list[Pt] = []
    for p, q in itertools.pairwise(corners):
        n = max(1, math.ceil(math.dist(p, q) / step))
        out += [
            (p[0] + (q[0] - p[0]) * k / n, p[1] + (q[1] - p[1]) * k / n) for k in range(1, n + 1)
        ]
    return out


def play(
    store: Store,
    visitor: Visitor,
    thresholds: AlertThresholds | None,
    spots: Spots | None = None,
) -> tuple[list[ev.Event], Truth]:
    """The events perfect sensors would report for this visit, and what really happened;
    ``thresholds``: when the frustration alerts are due (None: no pack raises them);
    ``spots``: who stands where over the day (None: every visitor on its plan's spots)."""
    layout = store.layout
    base = {"store": layout.store.id, "source": SOURCE, "subject": visitor.id}
    floor = {Persona.STAFF: store.staff_floor, Persona.NO_RECEIPT: store.thief_floor}.get(
        visitor.persona, store.floor
    )
    truth = Truth(visitor.id, visitor.persona, cart_id=visitor.group or visitor.id)
    out: list[ev.Event] = []
    t = 0.0
    pos: Pt = visitor.acts[0].to or store.outside_in
    zones: set[str] = set()
    doors = [ln for ln in layout.lines if ln.kind in ("entrance", "exit", "entrance_exit")]

    def at(seconds: float) -> datetime:
        return visitor.start + timedelta(seconds=round(seconds, 3))

    def frame(p: Pt) -> None:
        nonlocal zones, pos, t
        t += FRAME_S
        for line in doors:
            way = line.crossing(pos, p)
            if way > 0:
                out.append(
                    ev.new(
                        ev.ShopperEntered,
                        at=at(t),
                        data=ev.EntryData(line=line.id, group=visitor.group),
                        **base,
                    )
                )
                if visitor.member:
                    data = ev.FaceMatchData(member=visitor.member, confidence=0.95)
                    out.append(ev.new(ev.FaceMatched, at=at(t + 0.5), data=data, **base))
            elif way < 0:
                out.append(
                    ev.new(ev.ShopperExited, at=at(t), data=ev.ExitData(line=line.id), **base)
                )
        # Every zone the person is in: stepping from an aisle to a shelf front inside it
        # enters the front, and does not leave the aisle.
        now = set(layout.zones_at(*p))
        for name in sorted(zones - now):
            out.append(ev.new(ev.ZoneExited, at=at(t), data=ev.ZoneExitData(zone=name), **base))
        for name in sorted(now - zones):
            if layout.zone(name).kind == "exit_gate" and truth.cart:
                truth.paid = True  # the gate charges the cart as it is
            out.append(ev.new(ev.ZoneEntered, at=at(t), data=ev.ZoneData(zone=name), **base))
        zones = now
        for name in now:
            truth.dwell[name] += FRAME_S
        truth.path.append((t, round(p[0], 3), round(p[1], 3)))
        pos = p

    if visitor.persona is Persona.STAFF:
        data = ev.StaffData(badge=f"badge-{visitor.id[-4:]}")
        out.append(ev.new(ev.StaffSessionStarted, at=at(0), data=data, **base))
    truth.path.append((0.0, round(pos[0], 3), round(pos[1], 3)))
    on_spot = False  # standing on the spot taken last
    for i, act in enumerate(visitor.acts):
        to = act.to
        if to is not None and act.place is not None and spots is not None:
            # Held from the arrival to the next walk: put-backs and dithering stay put.
            walk = len(_walk(floor, pos, to, visitor.speed)) * FRAME_S if to != pos else 0.0
            stay = 0.0
            for k, later in enumerate(visitor.acts[i:]):
                if k and later.to is not None:
                    break
                stay += int(later.wait_s / FRAME_S) * FRAME_S
            begin = (visitor.start - EPOCH).total_seconds() + t + walk
            to, delay = spots.take(visitor.id, act.place, to, begin, begin + stay, on_spot)
            for _ in range(round(delay / FRAME_S)):
                frame(pos)
        if to is not None and to != pos:
            for p in _walk(floor, pos, to, visitor.speed):
                frame(p)
        if to is not None:
            on_spot = act.place is not None
        for _ in range(int(act.wait_s / FRAME_S)):
            frame(pos)
        if act.take is not None and act.unsure:
            shelf, sku = act.take
            out.append(_unsure(layout, visitor.id, shelf, sku, at(t), base))
        elif act.take is not None:
            shelf, sku = act.take
            out.append(
                ev.new(ev.ItemPicked, at=at(t), data=ev.ItemData(sku=sku, shelf=shelf), **base)
            )
        if act.take is not None and visitor.persona is not Persona.STAFF:
            truth.cart[sku] += 1
            truth.moves.append((at(t), sku, 1))
        if act.back is not None:
            shelf, sku = act.back
            out.append(
                ev.new(ev.ItemPutBack, at=at(t), data=ev.ItemData(sku=sku, shelf=shelf), **base)
            )
            truth.cart[sku] = max(0, truth.cart[sku] - 1)
            truth.moves.append((at(t), sku, -1))
        truth.cart += Counter()  # drops zero counts
    if visitor.persona is Persona.STAFF:
        data = ev.StaffData(badge=f"badge-{visitor.id[-4:]}")
        out.append(ev.new(ev.StaffSessionEnded, at=at(t + FRAME_S), data=data, **base))
    out.sort(key=lambda e: e.at)  # stable: what happened at one instant keeps its order
    _expected_alerts(layout, visitor, truth, out, thresholds)
    return out, truth


def _unsure(
    layout: Layout, subject: str, shelf: str, sku: str, at: datetime, base: dict[str, Any]
) -> ev.Event:
    """The shelf adapter's report of a unit taken from a weighed slot by a shopper it
    cannot tell from another as near (``adapters/shelf.py``)."""
    slot = next(sl for sl in layout.shelf(shelf).slots if sl.sku == sku)
    item = next(c for c in layout.catalog if c.sku == sku)
    assert slot.sensor is not None and item.weight_g is not None
    data = ev.ShelfUnresolvedData(
        sensor=slot.sensor,
        shelf=shelf,
        sku=sku,
        grams=-item.weight_g,
        picked=True,
        reason=f"{subject} at 0.30 m, but also another shopper at 0.35 m: who took it is not sure",
        confidence=0.525,
        candidates=(ev.ShelfCandidate(subject=subject, distance_m=0.3),),
        items=(ev.ShelfItem(sku=sku, qty=1),),
    )
    return ev.new(ev.ShelfUnresolved, at=at, data=data, **{**base, "source": slot.sensor})


def _expected_alerts(
    layout: Layout,
    visitor: Visitor,
    truth: Truth,
    events: list[ev.Event],
    thresholds: AlertThresholds | None,
) -> None:
    """The alerts this visit should raise (what QA expects to see): frustration applied to
    what really happened (``events``: what perfect sensors report of it), in time order."""
    if visitor.persona is Persona.STAFF:
        return
    if thresholds is not None:
        if _hesitated(events, thresholds.hesitation_count, thresholds.hesitation_window_s):
            truth.alerts.append("hesitation")
        if max(_queue_stays(layout, events), default=0.0) >= thresholds.queue_wait_s:
            truth.alerts.append("queue_wait_long")
    if truth.cart and not truth.paid and visitor.group is None:
        truth.alerts.append("left_without_receipt")


def _hesitated(events: list[ev.Event], count: int, window_s: float) -> bool:
    """Whether ``count`` put-backs of one SKU came within ``window_s`` (both ends counted)."""
    backs: dict[str, list[float]] = {}
    for e in events:
        if isinstance(e, ev.ItemPutBack):
            backs.setdefault(e.data.sku, []).append(e.at.timestamp())
    return any(
        t[i] - t[i - count + 1] <= window_s
        for t in backs.values()
        for i in range(count - 1, len(t))
    )


def _queue_stays(layout: Layout, events: list[ev.Event]) -> list[float]:
    """How long each stay in the checkout queue lasted, timed as the frustration pack times
    it: from stepping into a queue zone to stepping out of one, or out of the store."""

    def queue(e: ev.ZoneEntered | ev.ZoneExited) -> bool:
        return layout.zone(e.data.zone).kind == "checkout_queue"

    stays: list[float] = []
    since: datetime | None = None
    for e in events:
        if since is not None and (
            isinstance(e, ev.ShopperExited) or (isinstance(e, ev.ZoneExited) and queue(e))
        ):
            stays.append((e.at - since).total_seconds())
            since = None
        elif since is None and isinstance(e, ev.ZoneEntered) and queue(e):
            since = e.at
    return stays if since is None else [*stays, math.inf]  # still queueing when it ended


def position_events(store: Store, visits: list[tuple[Visitor, Truth]]) -> list[ev.Event]:
    """Everyone's position, one event per frame for the whole floor (what the cameras'
    tracks, projected to the floor and merged, report)."""
    frames: dict[datetime, list[ev.PositionSample]] = {}
    for visitor, truth in visits:
        for t, x, y in truth.path:
            at = visitor.start + timedelta(seconds=round(t, 3))
            frames.setdefault(at, []).append(ev.PositionSample(visitor.id, x, y))
    start = min((v.start for v, _ in visits), default=None)
    out = []
    for at in sorted(frames):
        n = round((at - start).total_seconds() / FRAME_S) if start else 0
        data = ev.PositionData(frame=n, samples=tuple(frames[at]))
        out.append(
            ev.new(
                ev.PositionSamples,
                store=store.layout.store.id,
                at=at,
                source=SOURCE,
                subject="floor",
                data=data,
            )
        )
    return out
