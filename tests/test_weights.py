"""The weight-change detector against recorded-style load-cell noise (hypothesis): noise,
drift, spikes and touches alone make no change; every whole-unit pick and put-back is
found, dated at the reach; a change that is no whole number of units is flagged."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.weights import LevelSettings, SensorLevel, SlotScale, scales_of
from core.layout import CatalogItem, load_layout

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
HZ = 10  # readings a second
COLA = CatalogItem(sku="cola-500ml", name="Cola", price=1.79, weight_g=540.0)  # type: ignore[arg-type]


class Cell:
    """A load cell: its true load, noise (uniform, as a 24-bit ADC's after its filter),
    a slow drift, and now and then a one-reading spike."""

    def __init__(self, seed: int, noise_g: float, drift_g_min: float, spikes: float) -> None:
        self.rng = random.Random(seed)
        self.noise_g, self.drift, self.spikes = noise_g, drift_g_min / 60 / HZ, spikes
        self.n = 0

    def reading(self, load: float) -> tuple[datetime, float]:
        self.n += 1
        g = load + self.n * self.drift + self.rng.uniform(-self.noise_g, self.noise_g)
        if self.rng.random() < self.spikes:
            g += self.rng.choice([-1, 1]) * self.rng.uniform(20, 400)  # a knock on the shelf
        return T0 + timedelta(seconds=self.n / HZ), g


noise = st.floats(0.0, 1.5)
drift = st.floats(-0.5, 0.5)  # grams a minute


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    load=st.floats(0, 20_000),
    noise_g=noise,
    drift_g_min=drift,
    spikes=st.floats(0, 0.02),
    touches=st.lists(st.tuples(st.floats(30, 3000), st.integers(2, 8)), max_size=5),
)
def test_noise_drift_spikes_and_touches_alone_make_no_change(
    seed: int,
    load: float,
    noise_g: float,
    drift_g_min: float,
    spikes: float,
    touches: list[tuple[float, int]],
) -> None:
    cell, level = Cell(seed, noise_g, drift_g_min, spikes), SensorLevel()
    changes = [level.read(*cell.reading(load)) for _ in range(3 * HZ)]  # a level first
    for extra, readings in touches:  # a hand pressing, or an item lifted and set back
        changes += [level.read(*cell.reading(load + extra)) for _ in range(readings)]
        changes += [level.read(*cell.reading(load)) for _ in range(20 * HZ)]
    assert [c for c in changes if c is not None] == []
    assert level.level is not None and abs(level.level - (load + cell.n * cell.drift)) < 6


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    units=st.lists(st.integers(-6, 6).filter(bool), min_size=1, max_size=6),
    noise_g=noise,
    drift_g_min=drift,
    packaging=st.floats(-0.9, 0.9),  # each unit's weight off by this share of the tolerance
)
def test_every_whole_unit_pick_and_put_back_is_found_and_dated_at_the_reach(
    seed: int, units: list[int], noise_g: float, drift_g_min: float, packaging: float
) -> None:
    cell = Cell(seed, noise_g, drift_g_min, 0.0)
    scale = SlotScale("fd-3", "fridge-drinks", COLA, SensorLevel())
    unit = 540.0 + packaging * COLA.tolerance_g  # type: ignore[operator]
    load, found, reaches = (2 + 6 * len(units)) * unit, [], []
    for _ in range(3 * HZ):
        assert scale.read(*cell.reading(load)) is None
    for k in units:
        hand = []
        for _ in range(HZ // 2):  # the hand on the shelf: the load jumps about
            hand.append(cell.reading(load + cell.rng.uniform(-300, 600)))
            found.append(scale.read(*hand[-1]))
        load -= k * unit
        after = [cell.reading(load) for _ in range(4 * HZ)]
        found += [scale.read(*r) for r in after]
        reaches.append((hand[0][0], after[0][0]))
    got = [c for c in found if c is not None]
    assert [(c.picked, c.qty, c.review) for c in got] == [(k > 0, abs(k), None) for k in units]
    for c, (first, last) in zip(got, reaches, strict=True):  # dated within the reach
        assert first <= c.change.started <= last
        assert c.change.settled - last < timedelta(seconds=1.5)


def test_a_change_that_is_no_whole_number_of_units_is_flagged_not_guessed() -> None:
    cell = Cell(1, 0.5, 0.0, 0.0)
    scale = SlotScale("fd-3", "fridge-drinks", COLA, SensorLevel())
    out = [scale.read(*cell.reading(5000)) for _ in range(30)]
    out += [scale.read(*cell.reading(5000 - 810)) for _ in range(30)]  # one and a half
    (change,) = [c for c in out if c is not None]
    assert change.qty == 0 and change.picked
    assert change.review is not None and "1.50 units of cola-500ml taken" in change.review


def test_readings_out_of_order_or_not_numbers_are_refused() -> None:
    level = SensorLevel()
    level.read(T0, 10.0)
    with pytest.raises(ValueError, match="not a number"):
        level.read(T0, float("nan"))
    with pytest.raises(ValueError, match="comes after"):
        level.read(T0 - timedelta(seconds=1), 10.0)
    with pytest.raises(ValueError, match="settle_s"):
        LevelSettings(settle_s=0)


def test_the_example_store_weighs_its_drinks_fridge_with_a_cell_per_slot() -> None:
    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    scales = scales_of(layout)
    assert scales and {s.shelf for s in scales.values()} >= {"fridge-drinks"}
    assert all(s.item.weight_g for s in scales.values())
