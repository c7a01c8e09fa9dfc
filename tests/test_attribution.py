"""A weighed slot's change to the shopper at the shelf: one shopper, two at one shelf
(apart and shoulder to shoulder), one reaching past another, a put-back into another
slot, a pick while the floor lost the shopper, and nobody there at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.attribution import Attributor, Positions
from adapters.weights import Change, SlotChange
from core.layout import Layout, load_layout

LAYOUT = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
# fridge-drinks: its front is the line x = 0.5 from y = 2.2 to 4.3; shoppers stand east of it.


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(LAYOUT)


def pick(
    sku: str = "cola-500ml", qty: int = 1, delta: float = -540.0, review: str | None = None
) -> SlotChange:
    change = Change(T, T + timedelta(seconds=1.2), delta)
    return SlotChange("fd-3", "fridge-drinks", sku, delta < 0, qty, change, review)


def standing(*where: tuple[str, float, float], gap: tuple[float, float] | None = None) -> Positions:
    """Each subject at (x, y) every 0.2 s from 5 s before to 3 s after the reach (``gap``:
    no samples between these seconds, an occlusion)."""
    p = Positions()
    for k in range(-25, 16):
        s = k * 0.2
        if gap is not None and gap[0] <= s <= gap[1]:
            continue
        p.add(T + timedelta(seconds=s), where)
    return p


def attribute(corner: Layout, change: SlotChange, positions: Positions, held=None):  # type: ignore[no-untyped-def]
    catalog = {c.sku: c for c in corner.catalog}
    return Attributor().attribute(change, corner.shelf("fridge-drinks"), positions, catalog, held)


def test_one_shopper_at_the_shelf_took_it(corner: Layout) -> None:
    a = attribute(corner, pick(), standing(("v-ann", 0.9, 3.0), ("v-bob", 5.0, 3.0)))
    assert (a.subject, a.confidence, a.review, a.picked, a.qty) == ("v-ann", 1.0, None, True, 1)


def test_two_at_one_shelf_apart_is_the_nearer_and_shoulder_to_shoulder_is_a_review(
    corner: Layout,
) -> None:
    apart = attribute(corner, pick(), standing(("v-ann", 0.8, 2.6), ("v-bob", 1.65, 4.0)))
    assert apart.subject == "v-ann" and apart.review is None and apart.confidence >= 0.75
    close = attribute(corner, pick(), standing(("v-ann", 0.8, 2.6), ("v-bob", 0.9, 3.1)))
    assert close.subject == "v-ann" and close.confidence < 0.75
    assert close.review is not None and "v-bob" in close.review and "not sure" in close.review


def test_reaching_past_another_shopper_is_not_given_to_either_silently(corner: Layout) -> None:
    # Bob, behind Ann, reaches past her: from where they stand, it could be either.
    a = attribute(corner, pick(), standing(("v-ann", 0.8, 3.0), ("v-bob", 1.2, 3.0)))
    assert a.review is not None and a.confidence < 0.75


def test_a_put_back_into_another_slot_is_the_item_the_shopper_held(corner: Layout) -> None:
    # A cola (540 g) put back among the still water (520 g a bottle): 1.04 waters, flagged
    # by the slot, but one whole cola of the two Ann holds.
    flagged = pick("water-still-500ml", 0, 540.0, "not a whole number of units")
    a = attribute(
        corner,
        flagged,
        standing(("v-ann", 0.9, 2.5)),
        {"v-ann": {"cola-500ml": 2, "butter-250g": 1}},
    )
    assert (a.subject, a.sku, a.qty, a.picked, a.review) == ("v-ann", "cola-500ml", 1, False, None)
    other = attribute(corner, flagged, standing(("v-ann", 0.9, 2.5)), {"v-ann": {"butter-250g": 1}})
    assert other.review is not None and other.qty == 0, "nothing she holds weighs that: a review"


def test_a_pick_while_the_floor_lost_the_shopper_goes_to_where_they_were(corner: Layout) -> None:
    a = attribute(corner, pick(), standing(("v-ann", 0.9, 3.0), gap=(-2.0, 3.0)))
    assert a.subject == "v-ann" and a.review is None


def test_nobody_at_the_shelf_is_a_review_not_a_charge(corner: Layout) -> None:
    far = attribute(corner, pick(), standing(("v-bob", 4.0, 3.0)))
    assert far.subject is None and far.review is not None and "nearest 3.5 m away" in far.review
    empty = attribute(corner, pick(), Positions())
    assert empty.subject is None and "no one on the floor" in (empty.review or "")
