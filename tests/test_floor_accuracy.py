"""The floor adapters against the simulator's truth, every camera of the convenience store.

A few simulated minutes are filmed without pixels (``simulator.render.truth_boxes``), the
boxes go through tracking, the projector, the hand-off and the event maker
(``adapters.store_floor``), and ``bench/floor_accuracy.py`` sets the events beside the
simulator's; it measures busy hours (``docs/benchmarks.md``). Here, issue 14's targets on
a short run: entries and exits all right, dwell within 1 s for 95 % of the visits, the
heatmap's cells at r >= 0.95, from perfect boxes and from jittered ones with some dropped.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from adapters.floor_events import EventSettings
from adapters.handoff import HandoffSettings
from adapters.store_floor import FloorSettings, StoreFloor
from core import events as ev
from core.layout import load_layout
from rules.engine import Engine
from rules.loader import PACKS as STANDARD_PACKS
from rules.loader import load_rules, pack_files
from rules.reference import Reference
from tests.benchkit import load_bench

# Four cameras' boxes for minutes of a store through the whole chain: a minute or two on
# a quiet machine, longer on a shared one.
pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
PACKS = pack_files([STANDARD_PACKS])


@cache
def bench() -> ModuleType:
    """bench/floor_accuracy.py, whose figures these tests hold to account."""
    return load_bench("floor_accuracy")


@cache
def filmed() -> Any:
    return bench().film(LAYOUT, minutes=3.0, shoppers=6, seed=2)


@cache
def adapted(jitter: float = 0.0, drop: float = 0.0) -> Any:
    return bench().adapt(filmed(), jitter=jitter, drop=drop, seed=2)


@cache
def figures(jitter: float = 0.0, drop: float = 0.0) -> Any:
    f = bench().compare(filmed(), adapted(jitter, drop))
    print("\n" + bench().report(f))
    return f


@pytest.mark.parametrize(("jitter", "drop"), [(0.0, 0.0), (0.02, 0.05)])
def test_every_entry_and_exit_is_counted_once(jitter: float, drop: float) -> None:
    f = figures(jitter, drop)
    assert f.true_entries == f.entries == f.entries_paired >= 6
    assert f.true_exits == f.exits == f.exits_paired  # no double counts, none missed


@pytest.mark.parametrize(("jitter", "drop"), [(0.0, 0.0), (0.02, 0.05)])
def test_a_shopper_keeps_one_subject_across_the_four_cameras(jitter: float, drop: float) -> None:
    f = figures(jitter, drop)
    assert f.subjects == f.visitors and f.subjects_per_visitor == 1.0
    assert f.floor.idf1 > 0.95 and f.floor.mota > 0.95
    assert f.floor.switches <= 3
    assert all(s.mota > 0.95 for s in f.cameras.values())


@pytest.mark.parametrize(("jitter", "drop"), [(0.0, 0.0), (0.02, 0.05)])
def test_zone_visit_dwell_and_the_heatmap_meet_the_issues_targets(
    jitter: float, drop: float
) -> None:
    f = figures(jitter, drop)
    assert f.true_visits >= 20
    assert f.visits_found >= 0.95 * f.true_visits
    assert f.dwell_within_1s >= 0.95
    assert f.heatmap_r >= 0.95


def test_the_standard_packs_run_on_the_adapters_events_as_on_the_simulators() -> None:
    reference = Reference.of(LAYOUT)

    def metrics(events: list[ev.Event]) -> dict[str, list[float]]:
        engine = Engine(load_rules(PACKS, reference), lateness_s=2.0)
        raw = sorted((e for e in events if not e.derived), key=lambda e: e.at)
        out = engine.process(raw)
        out.extend(engine.advance(LAYOUT.store.id, raw[-1].at.timestamp() + 86_400))
        assert not out.errors and not out.late
        found: dict[str, list[float]] = {}
        for d in out.derived:
            if isinstance(d, ev.Metric):
                found.setdefault(d.data.name, []).append(d.data.value)
        found["heatmap.tiles"] = [float(isinstance(d, ev.HeatmapTiles)) for d in out.derived]
        return found

    truth = metrics(filmed().run.events)
    ours = metrics(adapted().events)
    assert sum(ours["footfall"]) == sum(truth["footfall"]) >= 6
    assert len(ours["zone_visit_s"]) >= 0.9 * len(truth["zone_visit_s"])
    waits = [sorted(w for w in m["queue_wait_s"] if w >= 10.0) for m in (truth, ours)]
    assert len(waits[0]) == len(waits[1]) >= 3  # shorter ones are steps across the queue
    assert all(abs(a - b) <= 1.0 for a, b in zip(*waits, strict=True))
    assert sum(ours["heatmap.tiles"]) > 0


def test_the_same_boxes_give_the_same_events_subjects_and_ids() -> None:
    def once() -> list[ev.Event]:
        floor = StoreFloor(LAYOUT, filmed().origin)
        out: list[ev.Event] = []
        for camera, frame, t, xyxy, scores in bench().detections(filmed(), 0.0, 0.0, 2):
            if t > 90.0:
                break
            out += floor.frame(camera, frame, t, xyxy, scores)
        return out + floor.close()

    first, again = once(), once()
    assert [e.id for e in first] == [e.id for e in again] and len(first) > 100
    assert {e.subject for e in first} == {e.subject for e in again}
    assert [e.at for e in first] == sorted(e.at for e in first)


def test_frames_may_interleave_across_cameras_and_bad_input_is_refused() -> None:
    floor = StoreFloor(LAYOUT, filmed().origin, cameras=["cam-front-west", "cam-back-west"])
    floor.frame("cam-back-west", 0, 0.0, [], [])
    floor.frame("cam-back-west", 1, 1 / 15, [], [])
    floor.frame("cam-front-west", 0, 0.0, [], [])  # behind the other camera: still fine
    assert floor.stats.late_sightings == 0
    with pytest.raises(KeyError, match="cam-front-east"):
        floor.frame("cam-front-east", 0, 0.0, [], [])
    with pytest.raises(ValueError, match="door_m"):
        FloorSettings(handoff=HandoffSettings(door_m=1.0), events=EventSettings(door_m=2.0))
    with pytest.raises(ValueError, match="hold_s"):
        FloorSettings(handoff=HandoffSettings(door_s=5.0))
