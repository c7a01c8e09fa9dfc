"""A simulated store day: visitors arriving on a time-of-day curve, a persona mix, groups,
passers-by and staff, played together; the events in time order, and the truth.

The truth's alerts follow the rule packs the day is checked against (the standard ones
unless told): their thresholds are read from the packs' files, not assumed.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from itertools import accumulate
from pathlib import Path

import msgspec

from core import events as ev
from core.layout import Layout
from rules.loader import PACKS, pack_files, pack_params
from simulator.render import Person
from simulator.shoppers import (
    FRAME_S,
    SOURCE,
    AlertThresholds,
    Persona,
    Spots,
    Store,
    Truth,
    Visitor,
    plan,
    play,
    position_events,
)

# Shoppers per opening hour, relative, local time: a morning peak, lunch, the evening rush.
ARRIVALS: dict[int, float] = {
    7: 0.6, 8: 1.2, 9: 0.8, 10: 0.7, 11: 0.9, 12: 1.4, 13: 1.2, 14: 0.7,
    15: 0.7, 16: 0.9, 17: 1.5, 18: 1.6, 19: 1.1, 20: 0.7, 21: 0.4,
}  # fmt: skip


class Mix(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shares of personas among visitors (normalised), and passers-by per visitor."""

    mission: float = 0.40
    browser: float = 0.18
    hesitant: float = 0.05
    group: float = 0.06
    queue_waiter: float = 0.04
    wrong_shelf: float = 0.04
    member: float = 0.12
    no_receipt: float = 0.01
    staff: float = 0.01
    passers_by_per_visitor: float = 2.0


DEFAULT_MIX = Mix()
FRUSTRATION = "frustration"  # the pack whose parameters the truth's frustration alerts follow


def standard_packs(folder: Path = PACKS) -> list[Path]:
    """The rule packs of ``folder`` (their ``*_test.yaml`` unit tests left out)."""
    return pack_files([folder])


def alert_thresholds(packs: Sequence[Path]) -> AlertThresholds | None:
    """The frustration pack's thresholds, from its file among ``packs``; None if it is not
    among them (then its alerts are never due). ``ValueError`` naming the file and the
    parameter when one the truth follows is missing or not what the rules take."""
    return _thresholds(tuple((p, p.stat().st_mtime_ns) for p in packs))


@cache
def _thresholds(packs: tuple[tuple[Path, int], ...]) -> AlertThresholds | None:
    for path, _ in packs:
        name, params = pack_params(path)
        if name == FRUSTRATION:
            return AlertThresholds(
                queue_wait_s=_param(path, params, "queue_wait", "duration"),
                hesitation_count=int(_param(path, params, "hesitation_count", "count")),
                hesitation_window_s=_param(path, params, "hesitation_window", "duration"),
            )
    return None


def _param(path: Path, params: dict[str, str | int | float | bool], key: str, kind: str) -> float:
    """A parameter the truth follows, as the rules take it: a duration (seconds, parsed by the
    loader) or a count (a whole number of at least 1)."""
    value = params.get(key)
    count = kind == "count"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (count and not (isinstance(value, int) and value >= 1))
    ):
        raise ValueError(
            f"{path}: the simulator's truth follows the {FRUSTRATION} pack's parameter "
            f"{key!r}, which should be a {kind}; got {value!r}"
        )
    return value


@dataclass
class Run:
    """What a simulation produced: events in event-time order, and the truth per visitor."""

    events: list[ev.Event]
    visitors: list[Visitor]
    truth: list[Truth]
    passers_by: int = 0
    members: dict[str, str] = field(default_factory=dict)

    def truth_records(self) -> list[dict[str, object]]:
        """The truth as plain records, one per visitor (written beside a run, for QA)."""
        return [
            {
                "visitor": t.visitor,
                "persona": t.persona.value,
                "cart": t.cart_id,
                "items": dict(t.cart),
                "paid": t.paid,
                "dwell_s": dict(t.dwell),
                "alerts": t.alerts,
                "path": t.path,
            }
            for t in self.truth
        ]

    def people(self, fps: float) -> Iterator[tuple[float, list[Person]]]:
        """Everyone on the floor, ``fps`` times a second from the first arrival to the last
        departure: true positions, interpolated between the simulator's frames, for the
        renderer (seconds from the first arrival)."""
        tracks = [(v, t.path) for v, t in zip(self.visitors, self.truth, strict=True) if t.path]
        if not tracks:
            return
        origin = min(v.start for v, _ in tracks)
        offsets = [(v, (v.start - origin).total_seconds(), path) for v, path in tracks]
        end = max(offset + path[-1][0] for _, offset, path in offsets)
        for k in range(int(end * fps) + 1):
            now = k / fps
            people = []
            for v, offset, path in offsets:
                t = now - offset
                if not 0 <= t <= path[-1][0]:
                    continue
                i = min(int(t / FRAME_S), len(path) - 1)
                (t0, x0, y0), (t1, x1, y1) = path[i], path[min(i + 1, len(path) - 1)]
                f = 0.0 if t1 == t0 else min(1.0, (t - t0) / (t1 - t0))
                people.append(Person(v.id, x0 + (x1 - x0) * f, y0 + (y1 - y0) * f))
            yield now, people

    def receipts(self) -> dict[str, dict[str, int]]:
        """The receipts that should be issued, by cart: a group's once all of it has paid.

        A shared cart is every member's picks and put-backs in time order, never below
        zero: one member may put back what another took.
        """
        moves: dict[str, list[tuple[datetime, str, int]]] = {}
        unpaid: set[str] = set()
        for t in self.truth:
            if t.persona is Persona.STAFF:
                continue
            moves.setdefault(t.cart_id, []).extend(t.moves)
            if not t.paid and t.cart:
                unpaid.add(t.cart_id)
        out = {}
        for cart_id, changes in moves.items():
            cart: Counter[str] = Counter()
            for _, sku, n in sorted(changes):
                cart[sku] = max(0, cart[sku] + n)
            if +cart and cart_id not in unpaid:
                out[cart_id] = dict(+cart)
        return out


def _arrivals(
    rng: random.Random,
    start: datetime,
    hours: float,
    n: int,
    curve: dict[int, float] = ARRIVALS,
) -> list[datetime]:
    """``n`` arrival times in [start, start + hours), following ARRIVALS (by local hour)."""
    minutes = max(1, math.ceil(hours * 60))
    weights = [curve.get((start + timedelta(minutes=m)).hour, 0.05) for m in range(minutes)]
    cumulative = list(accumulate(weights))
    total = cumulative[-1]
    out = []
    for _ in range(n):
        m = bisect.bisect_left(cumulative, rng.uniform(0, total))
        # On the cameras' frame clock: everyone seen in one frame is reported together.
        second = round(rng.uniform(0, 60) / FRAME_S) * FRAME_S
        out.append(start + timedelta(minutes=m, seconds=second))
    return sorted(out)


def simulate(
    layout: Layout | Store,
    start: datetime,
    *,
    hours: float,
    shoppers: int,
    seed: int,
    mix: Mix = DEFAULT_MIX,
    arrivals: dict[int, float] = ARRIVALS,
    packs: Sequence[Path] | None = None,
) -> Run:
    """A store for ``hours`` from ``start`` (local time zone aware), ``shoppers`` visitors
    arriving on ``arrivals`` (relative weights by local hour); the truth's alerts follow
    ``packs`` (default: the standard ones)."""
    store = layout if isinstance(layout, Store) else Store(layout)
    thresholds = alert_thresholds(standard_packs() if packs is None else packs)
    rng = random.Random(seed)
    shares = {p: getattr(mix, p.value) for p in Persona if p is not Persona.PASSERBY}
    personas, weights = list(shares), list(shares.values())
    visitors: list[Visitor] = []
    sid = store.layout.store.id
    for i, at in enumerate(_arrivals(rng, start, hours, shoppers, arrivals)):
        persona = rng.choices(personas, weights)[0]
        speed = rng.uniform(0.9, 1.4)
        if persona is Persona.GROUP:
            group = f"g-{seed}-{i}"
            for k in range(rng.randint(2, 3)):
                acts = plan(store, persona, rng)
                vid = f"{sid}-{seed}-{i}-{k}"
                when = at + timedelta(seconds=2 * k)
                visitors.append(Visitor(vid, persona, when, group=group, speed=speed, acts=acts))
            continue
        member = f"m-{rng.getrandbits(24):06x}" if persona is Persona.MEMBER else None
        acts = plan(store, persona, rng)
        visitors.append(
            Visitor(f"{sid}-{seed}-{i}", persona, at, member=member, speed=speed, acts=acts)
        )
    spots = Spots(store)  # in order of arrival: the earlier visitor has the spot
    played = [(v, *play(store, v, thresholds, spots)) for v in visitors]
    events = [e for _, es, _ in played for e in es]
    events += position_events(store, [(v, t) for v, _, t in played])
    passers = _passers_by(store, rng, start, hours, int(shoppers * mix.passers_by_per_visitor))
    events += passers
    events.sort(key=lambda e: (e.at, e.id))
    members = {v.member: "enrolled" for v in visitors if v.member}
    return Run(events, visitors, [t for _, _, t in played], len(passers), members)


def _passers_by(
    store: Store, rng: random.Random, start: datetime, hours: float, n: int
) -> list[ev.Event]:
    """People walking past on the pavement: one ``passerby.seen`` each, at the passby line."""
    if store.passby is None:
        return []
    out = []
    for k, at in enumerate(_arrivals(rng, start, hours, n)):
        data = ev.PasserbyData(line=store.passby.id)
        subject = f"p-{rng.getrandbits(32):08x}-{k}"
        out.append(
            ev.new(
                ev.PasserbySeen,
                store=store.layout.store.id,
                at=at,
                source=SOURCE,
                subject=subject,
                data=data,
            )
        )
    return out
