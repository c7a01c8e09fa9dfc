"""The simulator's load cells against the weight-change detector: readings made from a
simulated store's true picks and put-backs (noise, drift, hands on the shelf) give back
every unit taken and returned on each weighed slot, each change dated at a true one."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from adapters.weights import scales_of
from core import events as ev
from core.layout import load_layout
from simulator.day import simulate
from simulator.loadcells import CellNoise, Reading, readings

LAYOUT = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
START = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


def test_simulated_readings_give_back_every_unit_taken_and_returned() -> None:
    layout = load_layout(LAYOUT)
    run = simulate(layout, START, hours=0.4, shoppers=80, seed=3)
    weighed = {(sh.id, sl.sku): sl.sensor for sh in layout.shelves for sl in sh.slots if sl.sensor}
    truth: Counter[tuple[str | None, bool]] = Counter()
    moments = []
    for e in run.events:
        if isinstance(e, ev.ItemPicked | ev.ItemPutBack) and (e.data.shelf, e.data.sku) in weighed:
            truth[(weighed[(e.data.shelf, e.data.sku)], isinstance(e, ev.ItemPicked))] += e.data.qty
            moments.append(e.at)
    assert sum(truth.values()) >= 10, truth
    scales = scales_of(layout)
    found: Counter[tuple[str | None, bool]] = Counter()
    end = START + timedelta(hours=0.5)
    for r in readings(layout, run.events, START, end, seed=1, noise=CellNoise(depth=20)):
        change = scales[r.sensor].read(r.at, r.grams)
        if change is not None:
            assert change.review is None, change.review
            found[(r.sensor, change.picked)] += change.qty
            nearest = min(abs((change.change.started - m).total_seconds()) for m in moments)
            assert nearest <= 0.5, (change, nearest)
    assert found == truth


def test_readings_are_json_lines_of_sensor_time_and_grams() -> None:
    layout = load_layout(LAYOUT)
    first = next(readings(layout, [], START, START + timedelta(seconds=1)))
    line = msgspec.json.encode(first)
    assert set(msgspec.json.decode(line)) == {"sensor", "at", "grams"}
    assert msgspec.json.decode(line, type=Reading) == first
