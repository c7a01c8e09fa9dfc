"""A store's weight shelves to events: readings in, picks, put-backs and review items out.

Each reading goes to its slot's scale (``adapters/weights.py``), which turns settled
load changes into whole units of the slot's SKU. A change then waits until the floor's
position samples have passed it by ``after_s`` (the shopper who reached is known only
once the floor has seen the reach), and goes to the shopper at the shelf
(``adapters/attribution.py``) as ``item.picked`` or ``item.put_back`` with its quantity;
``source`` is the sensor, ``at`` the moment the load left its level, so a re-run over
the same readings makes the same event ids.

What cannot be settled from the weight and the floor alone is never guessed: a change
that is no whole number of units, one that two SKUs fit, one nobody was near, or one
two shoppers were equally near, becomes a ``shelf.unresolved`` event with the slot, the
grams, the candidates and the reason. It charges nobody; the ``shelves`` rule pack
raises it as an alert a person looks at, and the receipt is corrected if need be.

A shelf camera that saw the reach settles what the weight cannot
(``seen``): when a change would go to review and the camera's reading of a reach at the
same slot overlaps it in time, the camera's sure reading decides (who, taken or put
back, and, for a change that is no whole number of units, how many); a camera that was
unsure too, or that disagrees with the load's direction, leaves it to a person as before.

Positions that never come (no camera, an empty store) do not hold changes forever: the
caller says when to give up waiting (``release(force=True)``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from adapters.attribution import Attribution, Attributor, Positions
from adapters.shelfcam import ShelfReading
from adapters.weights import LevelSettings, SlotChange, SlotScale, scales_of
from core import events as ev
from core.layout import Layout

__all__ = ["ShelfAdapter", "ShelfSettings", "ShelfStats", "UnknownSensor"]


@dataclass(frozen=True, slots=True)
class ShelfSettings:
    levels: LevelSettings = field(default_factory=LevelSettings)
    attributor: Attributor = field(default_factory=Attributor)
    after_s: float = 1.0
    """Positions this long after a change settled are awaited before it is attributed."""
    keep_s: float = 60.0
    """Position samples kept: longer than a hand stays on a shelf."""
    max_groups: int = 100_000
    """Shoppers whose group is kept (a day of a busy store is a few thousand)."""
    max_waiting: int = 10_000
    """Changes waiting for positions, at most; beyond it the oldest goes with what is known."""
    seen_slack_s: float = 1.0
    """A camera's reach this near a change in time (either side) is evidence for it."""
    max_seen: int = 1000
    """Camera readings kept per slot, unused, at most (the oldest go first)."""

    def __post_init__(self) -> None:
        for name in ("after_s", "keep_s", "seen_slack_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 3600):
                raise ValueError(f"shelf setting {name}: {value!r} is not in [0, 3600]")


class UnknownSensor(KeyError):
    """A reading from a sensor the layout puts under no slot."""


@dataclass
class ShelfStats:
    readings: int = 0
    changes: int = 0
    events: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # why changes went to review
    by_camera: int = 0  # changes a shelf camera's reading settled


class ShelfAdapter:
    """The synchronous part: feed it readings and position samples in any interleaving
    (each in its own time order), take the events it releases."""

    def __init__(self, layout: Layout, settings: ShelfSettings | None = None) -> None:
        self.layout = layout
        self.settings = s = settings or ShelfSettings()
        self.scales: dict[str, SlotScale] = scales_of(layout, s.levels)
        self.catalog = {c.sku: c for c in layout.catalog}
        self.positions = Positions(keep_s=s.keep_s)
        self.positions_at: datetime | None = None  # the newest position sample's time
        self.readings_at: datetime | None = None  # the newest reading's time
        self.held: dict[str, Counter[str]] = defaultdict(Counter)  # each cart's, from here
        self.groups: dict[str, str] = {}  # shopper -> group, for those who came in with others
        self.stats = ShelfStats()
        self._waiting: deque[SlotChange] = deque()
        self._seen: dict[tuple[str, str], deque[ShelfReading]] = defaultdict(
            lambda: deque(maxlen=s.max_seen)
        )

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def waiting_until(self) -> datetime | None:
        """When the last change waiting for positions settled (None: none waits)."""
        return max((c.change.settled for c in self._waiting), default=None)

    def reading(self, sensor: str, at: datetime, grams: float) -> list[ev.Event]:
        """One reading; raises ``UnknownSensor`` for a sensor under no slot and
        ``ValueError`` for one out of its sensor's time order. The events it lets go
        (only when the waiting changes overflow)."""
        scale = self.scales.get(sensor)
        if scale is None:
            raise UnknownSensor(sensor)
        change = scale.read(at, grams)
        self.stats.readings += 1
        if self.readings_at is None or at > self.readings_at:
            self.readings_at = at
        if change is None:
            return []
        self.stats.changes += 1
        self._waiting.append(change)
        out = []
        while len(self._waiting) > self.settings.max_waiting:
            out += self._attribute(self._waiting.popleft())
        return out

    def samples(self, event: ev.PositionSamples) -> None:
        """A frame of the floor's position samples (its ``track`` is the shopper)."""
        self.positions.add(event.at, ((s.track, s.x, s.y) for s in event.data.samples))
        if self.positions_at is None or event.at > self.positions_at:
            self.positions_at = event.at

    def floor_known(self, until: datetime) -> None:
        """No position frame comes before ``until`` (the next one is later: the floor
        was empty meanwhile), so changes up to then can be attributed."""
        if self.positions_at is None or until > self.positions_at:
            self.positions_at = until

    def seen(self, reading: ShelfReading) -> None:
        """A shelf camera's reading of a reach (``adapters/shelfcam.py``): evidence for a
        change of the same slot about then. Give it before the change is released (the
        readings of a camera that lags behind the scales come too late to count)."""
        self._seen[(reading.shelf, reading.sku)].append(reading)

    def entered(self, event: ev.ShopperEntered) -> None:
        """A shopper came in; one in a group shares the group's cart."""
        if event.data.group is not None:
            self.groups[event.subject] = event.data.group
            while len(self.groups) > self.settings.max_groups:  # the oldest visits first
                del self.groups[next(iter(self.groups))]

    def due(self, at: datetime) -> bool:
        """Whether positions up to ``at`` are known."""
        return self.positions_at is not None and self.positions_at >= at

    def release(self, *, force: bool = False) -> list[ev.Event]:
        """The events of the changes whose positions are known (``force``: all of them,
        with what is known: the positions are not coming)."""
        out: list[ev.Event] = []
        after = timedelta(seconds=self.settings.after_s)
        while self._waiting and (force or self.due(self._waiting[0].change.settled + after)):
            out += self._attribute(self._waiting.popleft())
        return out

    def _attribute(self, change: SlotChange) -> list[ev.Event]:
        shelf = self.layout.shelf(change.shelf)
        a = self.settings.attributor.attribute(
            change, shelf, self.positions, self.catalog, self.held, self.groups
        )
        if a.review is not None or a.subject is None or a.qty <= 0:
            a = self._by_camera(change, a)
        if a.review is None and a.subject is not None and a.qty > 0:
            e = self._pick(change, a)
        else:
            e = self._unresolved(change, a)
        self.stats.events[e.type] += 1
        return [e]

    def _by_camera(self, change: SlotChange, a: Attribution) -> Attribution:
        """What a shelf camera's reading of a reach at the slot then makes of a change
        the weight and the floor could not settle: the attribution it decides, or the
        one given with the camera's own doubt added to the review."""
        seen = self._seen.get((change.shelf, change.sku))
        slack = timedelta(seconds=self.settings.seen_slack_s)
        c = change.change
        near = [
            r for r in seen or () if r.started - slack <= c.settled and c.started <= r.ended + slack
        ]
        if not near:
            return a
        # the reach nearest the change in time; one reach explains one change
        r = min(near, key=lambda r: abs((r.started - c.started).total_seconds()))
        assert seen is not None
        seen.remove(r)
        doubt = _camera_doubt(r, change, self.held, self.groups)
        if doubt is not None:
            return replace(a, review=f"{a.review or 'no whole unit'}; {r.camera}: {doubt}")
        assert r.subject is not None
        qty = a.qty if change.review is None and a.qty > 0 else r.qty
        self.stats.by_camera += 1
        return Attribution(
            r.subject, r.confidence, change.sku, qty, change.picked, None, a.candidates
        )

    def _pick(self, change: SlotChange, a: Attribution) -> ev.Event:
        assert a.subject is not None
        cls = ev.ItemPicked if a.picked else ev.ItemPutBack
        held = self.held[self.groups.get(a.subject, a.subject)]
        held[a.sku] = max(0, held[a.sku] + (a.qty if a.picked else -a.qty))
        return ev.new(
            cls,
            store=self.layout.store.id,
            at=change.change.started,
            source=change.sensor,
            subject=a.subject,
            data=ev.ItemData(sku=a.sku, shelf=change.shelf, qty=a.qty),
        )

    def _unresolved(self, change: SlotChange, a: Attribution) -> ev.Event:
        reason = a.review or "no whole unit"
        self.stats.reasons[_kind(reason)] += 1
        items = a.items or (((a.sku, a.qty),) if a.qty > 0 else ())
        data = ev.ShelfUnresolvedData(
            sensor=change.sensor,
            shelf=change.shelf,
            sku=change.sku,
            grams=round(change.change.delta_g, 1),
            picked=change.picked,
            reason=reason[:1000],
            confidence=a.confidence,
            candidates=tuple(
                ev.ShelfCandidate(subject=s, distance_m=d)
                for s, d in a.candidates[: ev.MAX_CANDIDATES]
            ),
            items=tuple(ev.ShelfItem(sku=s, qty=q) for s, q in items[: ev.MAX_CANDIDATES]),
        )
        return ev.new(
            ev.ShelfUnresolved,
            store=self.layout.store.id,
            at=change.change.started,
            source=change.sensor,
            subject=a.subject or change.sensor,
            data=data,
        )

    def flush(self) -> list[ev.Event]:
        """The end of the readings: every change still waiting, with what is known."""
        return self.release(force=True)


def _camera_doubt(
    r: ShelfReading,
    change: SlotChange,
    held: Mapping[str, Mapping[str, int]],
    groups: Mapping[str, str],
) -> str | None:
    """Why a camera's reading cannot settle a change (None: it can)."""
    if r.review is not None:
        return f"the shelf camera is not sure either ({r.review})"
    if r.action == "none" or r.subject is None:
        return "the shelf camera saw a reach, but no facing change"
    if (r.action == "picked") != change.picked:
        moved = "fell" if change.picked else "rose"
        return f"the shelf camera saw {r.action.replace('_', ' ')}, but the load {moved}"
    if not change.picked and held.get(groups.get(r.subject, r.subject), {}).get(r.sku, 0) < r.qty:
        return (
            f"the shelf camera saw {r.subject} fill a facing of {r.sku}, but they held "
            "none of it: which product went back is not seen"
        )
    return None


def _kind(reason: str) -> str:
    """A review reason's kind, for the counts: its words before the first number."""
    if "not a whole number" in reason:
        return "no whole number of units"
    if "weighs the same" in reason:
        return "two SKUs fit"
    if "nobody at the shelf" in reason:
        return "nobody at the shelf"
    if "not sure" in reason:
        return "who took it is not sure"
    return "other"
