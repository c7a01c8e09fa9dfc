"""Whose hand was it: a weighed slot's change to the shopper at the shelf, with a
confidence, from the shoppers' floor positions around the moment of the reach.

Everyone within ``reach_m`` of the shelf's footprint while the load was off its level is
a candidate; the nearest (at their nearest moment) is the one. Confidence falls as the
second nearest comes as close: two shoppers shoulder to shoulder at one shelf cannot be
told apart by where they stand, and that is said (``review``), not guessed. Nobody near
the shelf, or the nearest out of reach, is also a review item.

A put-back into another slot: a load that rises by no whole number of the slot's own
SKU is matched against what the shopper has taken so far (``held``): a whole number of
one of those is a put-back of that SKU, on this shelf. Two of them that fit (two SKUs of
similar weight) are both named (``items``) and the change is a review item: which one
went back is not guessed.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shapely.geometry import Point

from adapters.weights import SlotChange
from core.layout import CatalogItem, Shelf

__all__ = ["Attribution", "Attributor", "Positions"]


@dataclass(frozen=True, slots=True)
class Attribution:
    subject: str | None  # None: nobody to give it to
    confidence: float
    sku: str
    qty: int
    picked: bool
    review: str | None = None  # why a person should look
    candidates: tuple[tuple[str, float], ...] = ()  # who was within reach, nearest first (m)
    items: tuple[tuple[str, int], ...] = ()  # what an ambiguous put-back could be


class Positions:
    """The shoppers' floor positions of the last ``keep_s``, as the position samples
    give them; bounded per subject."""

    def __init__(self, keep_s: float = 30.0, per_subject: int = 600) -> None:
        self.keep = timedelta(seconds=keep_s)
        self.per_subject = per_subject
        self._at: dict[str, deque[tuple[datetime, float, float]]] = defaultdict(
            lambda: deque(maxlen=self.per_subject)
        )

    def add(self, at: datetime, samples: Iterable[tuple[str, float, float]]) -> None:
        for subject, x, y in samples:
            self._at[subject].append((at, x, y))
        cutoff = at - self.keep
        for subject in [s for s, d in self._at.items() if d and d[-1][0] < cutoff]:
            del self._at[subject]

    def near(self, shelf: Shelf, start: datetime, end: datetime) -> dict[str, float]:
        """Each subject's nearest distance to the shelf between ``start`` and ``end``."""
        out: dict[str, float] = {}
        for subject, track in self._at.items():
            d = min(
                (shelf.shape.distance(Point(x, y)) for t, x, y in track if start <= t <= end),
                default=math.inf,
            )
            if math.isfinite(d):
                out[subject] = d
        return out


@dataclass(frozen=True, slots=True)
class Attributor:
    reach_m: float = 1.2  # from where a shopper stands to what they take
    margin_m: float = 1.0  # the second nearest this much farther: sure
    min_confidence: float = 0.75  # below: a review item
    before_s: float = 3.0  # positions this long before the reach count (a track occluded)

    def attribute(
        self,
        change: SlotChange,
        shelf: Shelf,
        positions: Positions,
        catalog: Mapping[str, CatalogItem],
        held: Mapping[str, Mapping[str, int]] | None = None,
        groups: Mapping[str, str] | None = None,
    ) -> Attribution:
        """The change's shopper, SKU and quantity (``held``: what each cart holds so
        far, SKU -> units, to read a put-back into another slot; ``groups``: the group
        of each shopper who came in with others, whose cart is the group's).

        Members of one group share one cart: which of them reached changes nothing on
        the receipt, so only shoppers of other carts make it unsure."""
        groups = groups or {}
        start = change.change.started - timedelta(seconds=self.before_s)
        near = sorted(
            positions.near(shelf, start, change.change.settled).items(), key=lambda p: p[1]
        )
        sku, qty, review = change.sku, change.qty, change.review
        within = tuple((s, round(d, 3)) for s, d in near if d <= self.reach_m)
        if not near or near[0][1] > self.reach_m:
            where = f"nearest {near[0][1]:.1f} m away" if near else "no one on the floor"
            why = _join(review, f"nobody at the shelf ({where})")
            return Attribution(None, 0.0, sku, qty, change.picked, why)
        subject, d1 = near[0]
        cart = groups.get(subject, subject)
        d2 = next(
            (d for s, d in near[1:] if d <= self.reach_m and groups.get(s, s) != cart), math.inf
        )
        confidence = (
            1.0 if not math.isfinite(d2) else min(1.0, 0.5 + (d2 - d1) / (2 * self.margin_m))
        )
        items: tuple[tuple[str, int], ...] = ()
        if review is not None and not change.picked and held:
            fits = _whole_units(change.change.delta_g, held.get(cart, {}), catalog)
            if len(fits) == 1:
                (sku, qty), review = fits[0], None
            elif fits:
                items = tuple(fits)
                named = " or ".join(f"{k} x {s}" for s, k in fits)
                review = f"{review}; {subject} held what weighs the same: {named}"
        if confidence < self.min_confidence:
            others = ", ".join(
                f"{s} at {d:.2f} m"
                for s, d in near[1:]
                if d <= self.reach_m and groups.get(s, s) != cart
            )
            review = _join(
                review, f"{subject} at {d1:.2f} m, but also {others}: who took it is not sure"
            )
        return Attribution(
            subject, round(confidence, 3), sku, qty, change.picked, review, within, items
        )


def _whole_units(
    added_g: float, held: Mapping[str, int], catalog: Mapping[str, CatalogItem]
) -> list[tuple[str, int]]:
    """The SKUs of those held whose whole units weigh ``added_g`` (a put-back), each
    with its units, in SKU order."""
    fits = []
    for sku, units in sorted(held.items()):
        item = catalog.get(sku)
        if item is None or item.weight_g is None or item.tolerance_g is None or units <= 0:
            continue
        k = round(added_g / item.weight_g)
        if 0 < k <= units and abs(added_g - k * item.weight_g) <= item.tolerance_g * k:
            fits.append((sku, k))
    return fits


def _join(a: str | None, b: str) -> str:
    return b if a is None else f"{a}; {b}"
