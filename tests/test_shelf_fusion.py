"""A shelf camera's reading of a reach settles what a weighed slot's change alone cannot:
a change that is no whole number of units, or one two shoppers were equally near, goes to
the shopper the camera saw, as the camera saw it; without a reading at that slot then,
or with one that is unsure or disagrees, it is a review item as before."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from adapters.shelfcam import ShelfReading
from core import events as ev
from core.layout import Layout, load_layout
from tests.test_shelf import Shelf

LAYOUT = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
CAM = "shelfcam-drinks"


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(LAYOUT)


def saw(
    s: Shelf,
    subject: str,
    action: Literal["picked", "put_back", "none"] = "picked",
    qty: int = 1,
    sku: str = "cola-500ml",
    review: str | None = None,
    at: datetime | None = None,
) -> None:
    """The camera's reading of a reach that starts now (or ``at``) and lasts 1.6 s,
    given to the adapter before the step it explains."""
    start = at or s.t
    s.adapter.seen(
        ShelfReading(
            camera=CAM, shelf="fridge-drinks", sku=sku, action=action, qty=qty,
            subject=subject, confidence=0.97, started=start,
            ended=start + timedelta(seconds=1.6), column=320.0, review=review,
        )
    )  # fmt: skip


def test_no_whole_number_of_units_is_what_the_camera_saw_taken(corner: Layout) -> None:
    s = Shelf(corner)
    s.where = {"v-ann": (0.9, 3.2)}
    saw(s, "v-ann", qty=1)
    s.step(810)  # one and a half colas by the weight (a hand still resting on the shelf)
    (e,) = s.events()
    assert isinstance(e, ev.ItemPicked) and e.subject == "v-ann"
    assert (e.data.sku, e.data.shelf, e.data.qty) == ("cola-500ml", "fridge-drinks", 1)
    assert s.adapter.stats.by_camera == 1


def test_two_shoppers_shoulder_to_shoulder_is_the_arm_the_camera_saw(corner: Layout) -> None:
    """By the floor both are as near; the camera saw Bob's arm. The weight's whole units
    stand: two colas."""
    s = Shelf(corner)
    s.where = {"v-ann": (0.8, 2.6), "v-bob": (0.9, 3.1)}
    saw(s, "v-bob", qty=1)  # the camera counts facings: one; the weight says two
    s.step(1080)
    (e,) = s.events()
    assert isinstance(e, ev.ItemPicked) and e.subject == "v-bob" and e.data.qty == 2


def test_without_a_reading_at_that_slot_then_it_is_a_review_as_before(corner: Layout) -> None:
    s = Shelf(corner)
    s.where = {"v-ann": (0.9, 3.2)}
    saw(s, "v-ann", sku="water-still-500ml")  # another slot
    saw(s, "v-ann", at=s.t - timedelta(seconds=30))  # this slot, half a minute earlier
    s.step(810)
    (e,) = s.events()
    assert isinstance(e, ev.ShelfUnresolved) and "not a whole number" in e.data.reason
    assert s.adapter.stats.by_camera == 0


def test_a_camera_that_is_unsure_or_disagrees_leaves_it_to_a_person(corner: Layout) -> None:
    s = Shelf(corner)
    s.where = {"v-ann": (0.9, 3.2)}
    saw(s, "v-ann", review="the change of cola-500ml is faint (confidence 0.6)")
    s.step(810)
    saw(s, "v-ann", action="put_back")
    s.step(810)  # the load fell; the camera says a facing filled
    saw(s, "v-ann", action="none")
    s.step(810)
    unsure, disagree, nothing = s.events()
    for e in (unsure, disagree, nothing):
        assert isinstance(e, ev.ShelfUnresolved) and CAM in e.data.reason
        ev.validate(e)
    assert "not sure either" in unsure.data.reason  # type: ignore[attr-defined]
    assert "saw put back, but the load fell" in disagree.data.reason  # type: ignore[attr-defined]
    assert "no facing change" in nothing.data.reason  # type: ignore[attr-defined]


def test_one_reach_explains_one_change(corner: Layout) -> None:
    s = Shelf(corner)
    s.where = {"v-ann": (0.9, 3.2)}
    saw(s, "v-ann")
    s.step(810)
    s.step(810)  # a second odd change right after, which the camera did not see
    first, second = s.events()
    assert isinstance(first, ev.ItemPicked)
    assert isinstance(second, ev.ShelfUnresolved)


def test_two_held_skus_of_one_weight_the_camera_does_not_guess_either(corner: Layout) -> None:
    """A bottle of water (still or sparkling: both weigh about 522 g) put among the iced
    coffee: the camera sees a coffee facing filled, not which bottle it was."""
    s = Shelf(corner, "fd-5")
    s.where = {"v-ann": (0.9, 3.2)}
    s.adapter.held["v-ann"].update({"water-still-500ml": 1, "water-sparkling-500ml": 1})
    saw(s, "v-ann", action="put_back", sku="iced-coffee-250ml")
    s.step(-522, "fd-5")
    (e,) = s.events()
    assert isinstance(e, ev.ShelfUnresolved) and len(e.data.items) == 2
    assert "which product went back is not seen" in e.data.reason


def test_a_put_back_the_camera_saw_by_a_shopper_who_held_it(corner: Layout) -> None:
    s = Shelf(corner)
    s.where = {"v-ann": (0.8, 2.6), "v-bob": (0.9, 3.1)}
    s.adapter.held["v-bob"]["cola-500ml"] = 1
    saw(s, "v-bob", action="put_back")
    s.step(-540)  # shoulder to shoulder: the weight alone cannot say whose
    (e,) = s.events()
    assert isinstance(e, ev.ItemPutBack) and e.subject == "v-bob" and e.data.qty == 1
    assert s.adapter.held["v-bob"]["cola-500ml"] == 0
