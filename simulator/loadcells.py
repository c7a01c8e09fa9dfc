"""Simulated load cells under the weighed slots of a store: readings from the simulated
picks and put-backs, with what real cells add (noise, a slow drift, the hand's weight on
the shelf while it reaches, the time a load takes to settle).

The readings are the ground truth's: each true pick or put-back on a weighed slot moves
its load by whole units of the SKU (each unit's weight varies within its tolerance), so
``adapters/weights.py`` can be measured against the picks that made them. With
``strays``, a put-back on a shelf with no slot of its SKU (a shopper leaving it where
they stand) lands on one of that shelf's weighed slots, chosen by the seed, and stays
there: nobody picks it again. The format is the weight adapter's (``docs/adapters.md``):
one JSON object a reading, ``sensor``, ``at`` (ISO 8601, UTC) and ``grams``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from core import events as ev
from core.layout import Layout

__all__ = ["CellNoise", "Reading", "readings"]


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    sensor: str
    at: datetime
    grams: float


@dataclass(frozen=True, slots=True)
class CellNoise:
    hz: float = 10.0  # readings a second
    noise_g: float = 1.0  # uniform, either way
    drift_g_min: float = 0.3  # the most a cell drifts a minute (each its own, steady)
    hand_s: float = 0.8  # how long a hand rests on the shelf around a pick
    hand_g: float = 400.0  # the most it presses (or lifts) meanwhile
    depth: int = 6  # units behind each facing at the start
    quiet_hz: float | None = None  # readings a second far from any hand (None: hz)
    busy_s: float = 20.0  # how far from a hand the cell reads at hz


def readings(
    layout: Layout,
    events: Iterable[ev.Event],
    start: datetime,
    end: datetime,
    seed: int = 0,
    noise: CellNoise | None = None,
    strays: bool = False,
) -> Iterator[Reading]:
    """Every weighed slot's readings from ``start`` to ``end``, in time order, from the
    true picks and put-backs in ``events`` (``strays``: also those put back on a shelf
    with no slot of their SKU)."""
    n = noise or CellNoise()
    rng = random.Random(seed)
    items = {c.sku: c for c in layout.catalog}
    cells: dict[tuple[str, str], _Cell] = {}
    for shelf in layout.shelves:
        for slot in shelf.slots:
            if slot.sensor is None:
                continue
            item = items[slot.sku]
            assert item.weight_g is not None and item.tolerance_g is not None
            cells[(shelf.id, slot.sku)] = _Cell(
                slot.sensor,
                item.weight_g,
                item.tolerance_g,
                slot.facings * n.depth,
                rng.uniform(-n.drift_g_min, n.drift_g_min) / 60,
                random.Random(rng.random()),
            )
    by_shelf: dict[str, list[_Cell]] = {}
    for (shelf_id, _), cell in cells.items():
        by_shelf.setdefault(shelf_id, []).append(cell)
    for e in events:
        if isinstance(e, ev.ItemPicked | ev.ItemPutBack):
            cell = cells.get((e.data.shelf, e.data.sku))
            if cell is not None:
                qty = e.data.qty if isinstance(e, ev.ItemPutBack) else -e.data.qty
                cell.steps.append((e.at, qty))
            elif strays and isinstance(e, ev.ItemPutBack) and by_shelf.get(e.data.shelf):
                item = items[e.data.sku]
                if item.weight_g is not None and item.tolerance_g is not None:
                    other = rng.choice(by_shelf[e.data.shelf])
                    grams = [
                        item.weight_g + rng.uniform(-0.5, 0.5) * item.tolerance_g
                        for _ in range(e.data.qty)
                    ]
                    other.foreign.append((e.at, sum(grams)))
    streams = [c.stream(start, end, n) for c in cells.values()]
    yield from heapq.merge(*streams, key=lambda r: r.at)


class _Cell:
    def __init__(
        self,
        sensor: str,
        unit_g: float,
        tolerance_g: float,
        units: int,
        drift_g_s: float,
        rng: random.Random,
    ) -> None:
        self.sensor, self.unit_g, self.tolerance_g = sensor, unit_g, tolerance_g
        self.units, self.drift_g_s, self.rng = units, drift_g_s, rng
        self.steps: list[tuple[datetime, int]] = []
        self.foreign: list[tuple[datetime, float]] = []  # other SKUs left here: when, grams

    def _unit(self) -> float:
        return self.unit_g + self.rng.uniform(-0.5, 0.5) * self.tolerance_g

    def stream(self, start: datetime, end: datetime, n: CellNoise) -> Iterator[Reading]:
        units = [self._unit() for _ in range(self.units)]  # what the slot holds
        tare = 2500.0 + self.rng.uniform(-200, 200)  # the shelf's own weight
        steps = sorted(self.steps)
        foreign = sorted(self.foreign)
        hands = sorted([t for t, _ in steps] + [t for t, _ in foreign])
        i, h, every, at = 0, 0, timedelta(seconds=1 / n.hz), start
        quiet = timedelta(seconds=1 / (n.quiet_hz or n.hz))
        j, left = 0, 0.0  # foreign goods on the slot so far
        while at < end:
            while i < len(steps) and steps[i][0] <= at:
                qty = steps[i][1]
                if qty < 0:
                    del units[max(0, len(units) + qty) :]  # an empty slot gives nothing
                else:
                    units += [self._unit() for _ in range(qty)]
                i += 1
            while j < len(foreign) and foreign[j][0] <= at:
                left += foreign[j][1]
                j += 1
            grams = tare + sum(units) + left + (at - start).total_seconds() * self.drift_g_s
            grams += self.rng.uniform(-n.noise_g, n.noise_g)
            while h < len(hands) and (hands[h] - at).total_seconds() < -n.hand_s / 2:
                h += 1
            if h < len(hands) and abs((hands[h] - at).total_seconds()) <= n.hand_s / 2:
                grams += self.rng.uniform(-0.25, 1.0) * n.hand_g  # the hand on the shelf
            yield Reading(sensor=self.sensor, at=at, grams=round(grams, 1))
            at += every if n.quiet_hz is None or self._near(hands, h, at, n.busy_s) else quiet

    @staticmethod
    def _near(hands: list[datetime], h: int, at: datetime, busy_s: float) -> bool:
        """Whether a hand (the first not yet past is ``hands[h]``) is within ``busy_s``."""
        return any(
            0 <= k < len(hands) and abs((hands[k] - at).total_seconds()) <= busy_s
            for k in (h - 1, h)
        )
