"""The shelf receipts benchmark (``bench/shelf_receipts.py``) in small: a few simulated
visits, their rendered shelf-camera clips and load-cell readings, and the receipts of
each way of seeing the shelves, all as true; its store weighs every slot and films every
shelf; a wrong cart is listed with its cause."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from shapely.geometry import Point

from adapters.shelfcam import protobuf_compat
from core import events as ev
from simulator.scenario_report import CartReceipts
from tests.benchkit import load_bench

protobuf_compat()
pytest.importorskip("mediapipe")


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    return load_bench("shelf_receipts")


def test_the_bench_store_weighs_every_slot_and_films_every_shelf(bench) -> None:  # type: ignore[no-untyped-def]
    layout, _ = bench.shelved_layout(5.0)
    assert all(slot.sensor for shelf in layout.shelves for slot in shelf.slots)
    filmed = {c.shelf: c for c in layout.shelf_cameras}
    assert set(filmed) == {s.id for s in layout.shelves}
    for shelf in layout.shelves:
        cam = filmed[shelf.id]
        assert [v.sku for v in cam.slots] == [s.sku for s in shelf.slots]
        (x0, y0), (x1, y1) = cam.span
        # the span is the shelf's front, where a shopper in its zone reaches in
        assert layout.zone(shelf.zone).shape.distance(Point((x0 + x1) / 2, (y0 + y1) / 2)) < 1e-9
        for end in cam.span:
            assert shelf.shape.distance(Point(*end)) < 1e-9


def test_a_few_visits_give_true_receipts_every_way(bench, capsys) -> None:  # type: ignore[no-untyped-def]
    shares = bench.main(["--shoppers", "8", "--hours", "0.5", "--workers", "1", "--seed", "2"])
    out = capsys.readouterr().out
    assert set(shares) == set(bench.MODES)
    assert shares == dict.fromkeys(bench.MODES, 1.0), out
    assert "frames rendered and read" in out and "readings through two shelf adapters" in out


def test_a_wrong_cart_is_listed_with_its_cause(bench) -> None:  # type: ignore[no-untyped-def]
    t = bench.OPEN

    def pick(subject: str, sku: str, s: float) -> ev.ItemPicked:
        data = ev.ItemData(sku=sku, shelf="g1-east", qty=1)
        return ev.new(ev.ItemPicked, store="corner-01", at=t + timedelta(seconds=s),
                      source="sim", subject=subject, data=data)  # fmt: skip

    truth = [pick("v-a", "chewing-gum-mint", 0), pick("v-a", "milk-chocolate-100g", 60)]
    review = ev.new(
        ev.ShelfUnresolved, store="corner-01", at=t + timedelta(seconds=59), source="g1-east-w2",
        subject="v-a", data=ev.ShelfUnresolvedData(
            sensor="g1-east-w2", shelf="g1-east", sku="milk-chocolate-100g", grams=-160.0,
            picked=True, reason="a change of -160.0 g is 1.52 units: not a whole number",
        ),
    )  # fmt: skip
    made = [pick("v-b", "chewing-gum-mint", 0.5), review]
    cart = CartReceipts("v-a", {"chewing-gum-mint": 1, "milk-chocolate-100g": 1}, ())
    why = bench.causes(cart, SimpleNamespace(events=truth), made, {})
    assert why == [
        "picked chewing-gum-mint at 06:00:00: given to v-b (sim)",
        "picked milk-chocolate-100g at 06:01:00: sent to review (g1-east-w2: a change of "
        "-160.0 g is 1.52 units: not a whole number)",
    ]
