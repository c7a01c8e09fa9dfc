"""Simulated shoppers: personas, what each does in the store, and the truth of it.

A visitor gets a plan from its persona (which shelves, what to take, what to put back,
how long to queue, which door to leave by), then walks it over the walkable floor at a
human pace, frame by frame. Playing a plan gives two things: the events a perfect set of
sensors would report (entries, zone changes, picks, positions, face matches, staff
sessions), and the ground truth QA checks the pipeline against (the true path, the true
cart and receipt, the dwell per zone, the alerts that should fire).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from core import events as ev
from core.layout import Layout, Shelf
from simulator.floor import Floor, Pt

FRAME_S = 0.5
SOURCE = "sim"


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
    take: tuple[str, str] | None = None  # (shelf id, sku)
    back: tuple[str, str] | None = None


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


# -- plans: one function per persona --------------------------------------------------------


def _shopping(store: Store, rng: random.Random, n: int, linger: tuple[float, float]) -> list[Act]:
    acts = []
    for shelf in rng.sample(store.stocked, k=min(n, len(store.stocked))):
        acts.append(Act(to=store.front(shelf), wait_s=rng.uniform(*linger)))
        acts.append(Act(take=(shelf.id, rng.choice(shelf.skus))))
    return acts


def _checkout(store: Store, rng: random.Random, queue_s: float | None = None) -> list[Act]:
    wait = rng.uniform(3, 25) if queue_s is None else queue_s
    return [
        Act(to=store.queue, wait_s=wait),
        Act(to=store.gate, wait_s=rng.uniform(1, 3)),
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
            Act(to=store.front(shelf), wait_s=5),
            *dither,
            *([Act(take=item)] if keep else []),
            *_checkout(store, rng),
        )
    if persona is Persona.WRONG_SHELF:
        first, other = rng.sample(store.stocked, k=2)
        item = (first.id, rng.choice(first.skus))
        return (
            *enter,
            Act(to=store.front(first), wait_s=4),
            Act(take=item),
            *_shopping(store, rng, 1, (3, 6)),
            Act(to=store.front(other), wait_s=3),
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
            Act(to=store.front(rng.choice(store.stocked)), wait_s=30),
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
    store: Store, visitor: Visitor, thresholds: AlertThresholds | None
) -> tuple[list[ev.Event], Truth]:
    """The events perfect sensors would report for this visit, and what really happened;
    ``thresholds``: when the frustration alerts are due (None: no pack raises them)."""
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
    for act in visitor.acts:
        if act.to is not None and act.to != pos:
            for p in _walk(floor, pos, act.to, visitor.speed):
                frame(p)
        for _ in range(int(act.wait_s / FRAME_S)):
            frame(pos)
        if act.take is not None:
            shelf, sku = act.take
            out.append(
                ev.new(ev.ItemPicked, at=at(t), data=ev.ItemData(sku=sku, shelf=shelf), **base)
            )
            if visitor.persona is not Persona.STAFF:
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
