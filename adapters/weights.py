"""Weight shelves: a slot's load-cell readings to stable weight changes, and changes to
whole units of the slot's SKU.

A load cell's reading wanders (noise, a slow drift with temperature) and jumps while a
hand is on the shelf. A *level* is a load that holds: ``settle_s`` of readings within
``band_g`` of their median. The level follows drift while it holds; a change is the step
from one level to the next, dated when the load first left the old level (the moment of
the reach, which is what attribution needs). A load that leaves its level and comes back
to it (a touch, a product lifted and put down again) is no change.

A change becomes units through the catalog: ``-delta / weight_g`` rounded, if what is
left over is within the SKU's tolerance for that many units; otherwise it is published
as it is, flagged for review (a change that is no whole number of units), never
guessed.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from core.layout import CatalogItem, Layout

__all__ = ["Change", "LevelSettings", "SensorLevel", "SlotChange", "SlotScale", "scales_of"]


@dataclass(frozen=True, slots=True)
class LevelSettings:
    band_g: float = 5.0
    """Readings this close to a level are that level (noise, drift between readings)."""
    settle_s: float = 1.0
    """How long a load must hold to be a level: longer than a hand resting on the shelf."""
    follow: float = 0.05
    """How much of each reading's distance to the level the level moves (drift)."""
    max_pending: int = 3000
    """Readings kept while the load is off its level (5 minutes at 10 a second)."""

    def __post_init__(self) -> None:
        for name in ("band_g", "settle_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 10_000):
                raise ValueError(f"weight setting {name}: {value!r} is not in (0, 10000]")
        if not 0 <= self.follow < 1:
            raise ValueError(f"weight setting follow: {self.follow!r} is not in [0, 1)")


@dataclass(frozen=True, slots=True)
class Change:
    started: datetime  # when the load left its level
    settled: datetime  # when the new level was known
    delta_g: float  # new level less old (a pick is negative)


@dataclass
class SensorLevel:
    """One load cell's level and the readings since the load left it."""

    settings: LevelSettings = field(default_factory=LevelSettings)
    level: float | None = None
    _off: deque[tuple[datetime, float]] = field(default_factory=deque)
    _last: datetime | None = None

    def read(self, at: datetime, grams: float) -> Change | None:
        """One reading, in time order; the change it completes, if any. A reading out
        of order or not a finite number raises ``ValueError``."""
        if not math.isfinite(grams):
            raise ValueError(f"a reading of {grams!r} g is not a number")
        if self._last is not None and at < self._last:
            raise ValueError(f"a reading at {at.isoformat()} comes after {self._last.isoformat()}")
        self._last = at
        s = self.settings
        if self.level is not None and abs(grams - self.level) <= s.band_g:
            self._off.clear()  # back on the level (or never left it): no change
            self.level += s.follow * (grams - self.level)
            return None
        self._off.append((at, grams))
        if len(self._off) > s.max_pending:
            self._off.popleft()
        settled = self._settled(at)
        if settled is None:
            return None
        started = self._off[0][0]
        self._off.clear()
        if self.level is None:  # the first level: nothing to compare it with
            self.level = settled
            return None
        delta, self.level = settled - self.level, settled
        return Change(started, at, delta)

    def _settled(self, now: datetime) -> float | None:
        """The median of the readings of the last ``settle_s``, if all lie within the
        band of it and they span ``settle_s``."""
        s = self.settings
        recent = [g for t, g in self._off if (now - t).total_seconds() <= s.settle_s]
        span = (now - self._off[0][0]).total_seconds()
        if span < s.settle_s or len(recent) < 3:
            return None
        middle = statistics.median(recent)
        if all(abs(g - middle) <= s.band_g / 2 for g in recent):
            return middle
        return None


@dataclass(frozen=True, slots=True)
class SlotChange:
    """A change of a weighed slot in units of its SKU (``qty`` > 0), or flagged."""

    sensor: str
    shelf: str
    sku: str
    picked: bool  # True: taken from the shelf; False: put on it
    qty: int  # whole units; 0 when flagged
    change: Change
    review: str | None = None  # why it is no whole number of units


@dataclass
class SlotScale:
    """A load cell under one slot: its level, and its changes in units of the slot's SKU."""

    sensor: str
    shelf: str
    item: CatalogItem
    level: SensorLevel

    def read(self, at: datetime, grams: float) -> SlotChange | None:
        change = self.level.read(at, grams)
        if change is None:
            return None
        weight, tolerance = self.item.weight_g, self.item.tolerance_g
        assert weight is not None and tolerance is not None  # the layout checks it
        units = -change.delta_g / weight
        k = round(units)
        left = abs(change.delta_g + k * weight)
        base = SlotChange(self.sensor, self.shelf, self.item.sku, k > 0, abs(k), change)
        if k != 0 and left <= tolerance * abs(k) and left < weight / 2:
            return base
        why = (
            f"a change of {change.delta_g:+.1f} g is {abs(units):.2f} units of "
            f"{self.item.sku} {'taken' if units > 0 else 'put back'} ({weight:g} g each, "
            f"within {tolerance:g} g): not a whole number"
        )
        return SlotChange(
            self.sensor, self.shelf, self.item.sku, change.delta_g < 0, 0, change, why
        )


def scales_of(layout: Layout, settings: LevelSettings | None = None) -> dict[str, SlotScale]:
    """Each weighed slot of the layout, by its sensor id."""
    items = {c.sku: c for c in layout.catalog}
    out = {}
    for shelf in layout.shelves:
        for slot in shelf.slots:
            if slot.sensor is not None:
                out[slot.sensor] = SlotScale(
                    slot.sensor,
                    shelf.id,
                    items[slot.sku],
                    SensorLevel(settings or LevelSettings()),
                )
    return out
