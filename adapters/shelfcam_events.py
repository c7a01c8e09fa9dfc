"""A shelf camera's readings to the events of the log, where no weight sensor weighs the
slot: a sure pick or put-back as ``item.picked`` / ``item.put_back``, anything a person
should look at as ``shelf.unresolved`` (the camera as its sensor, no grams), never a
silent charge.

The camera sees a facing filled, not which product filled it, so a put-back is sure only
when the shopper's cart holds the slot's SKU: what each cart took is kept here, from the
camera's own picks, in the order of the reaches (members of one group share a cart).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from adapters.shelfcam import ShelfReading, item_event
from core import events as ev

__all__ = ["CameraEvents"]


class CameraEvents:
    """Readings of one store's shelf cameras in, in the order of their reaches; events out."""

    def __init__(self, store: str, max_groups: int = 100_000) -> None:
        self.store = store
        self.max_groups = max_groups
        self.held: dict[str, Counter[str]] = defaultdict(Counter)  # each cart's, from here
        self.groups: dict[str, str] = {}  # shopper -> group, for those who came in with others
        self.events: Counter[str] = Counter()

    def entered(self, event: ev.ShopperEntered) -> None:
        """A shopper came in; one in a group shares the group's cart."""
        if event.data.group is not None:
            self.groups[event.subject] = event.data.group
            while len(self.groups) > self.max_groups:  # the oldest visits first
                del self.groups[next(iter(self.groups))]

    def reading(self, r: ShelfReading) -> list[ev.Event]:
        """The event of one reading: none for a reach that moved nothing."""
        if r.action == "none":
            return []
        review = r.review
        cart = self.groups.get(r.subject, r.subject) if r.subject is not None else None
        if review is None and r.action == "put_back" and cart is not None:
            has = self.held[cart][r.sku]
            if has < r.qty:
                review = (
                    f"{r.subject} puts {r.qty} back into the slot of {r.sku} but their cart "
                    f"holds {has}: maybe another product, wrong slot"
                )
        made = item_event(r, self.store) if review is None else None
        if made is not None and cart is not None:
            step = r.qty if r.action == "picked" else -r.qty
            self.held[cart][r.sku] = max(0, self.held[cart][r.sku] + step)
        else:
            made = ev.new(
                ev.ShelfUnresolved,
                store=self.store,
                at=r.started + (r.ended - r.started) / 2,
                source=r.camera,
                subject=r.subject or r.camera,
                data=ev.ShelfUnresolvedData(
                    sensor=r.camera,
                    shelf=r.shelf,
                    sku=r.sku,
                    grams=0.0,
                    picked=r.action == "picked",
                    reason=(review or "nobody to give it to")[:1000],
                    confidence=r.confidence,
                    items=(ev.ShelfItem(sku=r.sku, qty=r.qty),),
                ),
            )
        self.events[made.type] += 1
        return [made]
