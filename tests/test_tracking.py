"""Per-camera tracking: real pedestrians scored against ground truth, and the tracker's contract."""

from __future__ import annotations

from functools import cache
from types import ModuleType

import numpy as np
import pytest

from adapters.track_scoring import read_mot, score
from adapters.tracking import CameraTracker, Tracked, TrackerSettings, bottom_centre
from tests.benchkit import load_bench
from tests.datakit import needs

TUD, needs_tud = needs("mot/TUD-Campus")


@cache
def bench() -> ModuleType:
    """bench/tracking_accuracy.py, whose side-by-side table these tests hold to account."""
    return load_bench("tracking_accuracy")


@cache
def rows() -> dict[str, object]:
    return {r.name: r for r in bench().compare(TUD)}


@needs_tud
def test_the_scorer_reproduces_the_reference_trackers_published_figures() -> None:
    got = score(read_mot(TUD / "gt.txt"), read_mot(TUD / "test.txt"))
    assert (round(got.mota, 4), round(got.idf1, 4)) == (0.5265, 0.5577)


@needs_tud
def test_on_tud_campus_aisles_tracker_beats_the_reference_and_every_peer() -> None:
    table = rows()
    ours = table["aisle"].score
    peers = [
        table[name].score
        for name in (
            "reference tracker (test.txt)",
            "supervision ByteTrack",
            "trackers ByteTrack",
            "trackers SORT",
        )
    ]
    print("\n" + bench().table(list(table.values())))
    for peer in peers:
        assert ours.mota > peer.mota
        assert ours.idf1 > peer.idf1


@needs_tud
def test_on_tud_campus_the_line_counted_from_tracks_matches_the_ground_truth_both_ways() -> None:
    table = rows()
    truth = table["ground truth (gt.txt)"]
    ours = table["aisle"]
    assert (truth.ins, truth.outs) == (4, 1)
    assert (ours.ins, ours.outs) == (truth.ins, truth.outs)


def box_at(x: float) -> tuple[float, float, float, float]:
    return (x, 100.0, x + 40.0, 200.0)


def run(
    tracker: CameraTracker, frames: list[list[tuple[float, float, float, float]]], fps: float = 10
) -> list[Tracked]:
    out: list[Tracked] = []
    for i, boxes in enumerate(frames, start=1):
        out += tracker.update(i, i / fps, np.array(boxes).reshape(-1, 4), [0.9] * len(boxes))
    return out


def test_a_tracks_frames_before_its_id_are_emitted_late_under_that_id() -> None:
    out = run(CameraTracker(TrackerSettings(fps=10)), [[box_at(10 + 5 * i)] for i in range(4)])
    assert [(t.frame, t.track, t.late) for t in out] == [
        (1, 0, True),
        (2, 0, False),
        (3, 0, False),
        (4, 0, False),
    ]
    assert out[0].box == box_at(10)


def test_a_short_gap_in_a_track_is_filled_by_interpolation_and_a_long_one_is_not() -> None:
    def path(gap: range) -> list[list[tuple[float, float, float, float]]]:
        return [[] if i in gap else [box_at(10 + 4 * i)] for i in range(12)]

    settings = TrackerSettings(fps=10, max_gap_s=0.3)
    short = run(CameraTracker(settings), path(range(4, 6)))
    assert sorted(t.frame for t in short) == list(range(1, 13))
    filled = [t for t in short if t.frame in (5, 6)]
    assert all(t.late and t.track == 0 for t in filled)
    assert filled[0].box == pytest.approx(box_at(10 + 4 * 4))
    long = run(CameraTracker(settings), path(range(4, 8)))
    assert sorted(t.frame for t in long) == [1, 2, 3, 4, 9, 10, 11, 12]


def test_each_tracks_boxes_come_out_in_time_order() -> None:
    out = run(CameraTracker(), [[box_at(10 + 4 * i)] if i % 3 else [] for i in range(20)])
    for track in {t.track for t in out}:
        times = [t.at for t in out if t.track == track]
        assert times == sorted(times) and len(set(times)) == len(times)


@needs_tud
def test_the_same_detections_give_the_same_tracks() -> None:
    det = read_mot(TUD / "det.txt")
    outputs = []
    for _ in range(2):
        tracker = CameraTracker(TrackerSettings(fps=25))
        outputs.append(
            [
                t
                for frame, xyxy, s in bench().frames(det)
                for t in tracker.update(frame, frame / 25, xyxy, s)
            ]
        )
    assert outputs[0] == outputs[1]


def test_the_feet_are_the_middle_of_the_boxs_lower_edge() -> None:
    assert bottom_centre((10.0, 20.0, 50.0, 120.0)) == (30.0, 120.0)


@pytest.mark.parametrize(
    ("frames", "boxes", "scores", "message"),
    [
        ([(2, 0.2), (2, 0.3)], [], [], "frames must increase"),
        ([(2, 0.2), (3, 0.2)], [], [], "frames must increase"),
        ([(1, float("nan"))], [], [], "not a finite number of seconds"),
        ([(1, 0.1)], [box_at(0)], [], "1 boxes but 0 scores"),
        ([(1, 0.1)], [(10, 10, 5, 20)], [0.9], "x1 <= x2"),
        ([(1, 0.1)], [(0, 0, float("inf"), 9)], [0.9], "not a finite number"),
        ([(1, 0.1)], [box_at(0)] * 1001, [0.9] * 1001, "more than 1000"),
    ],
)
def test_a_bad_frame_is_refused_with_what_was_wrong(
    frames: list[tuple[int, float]],
    boxes: list[tuple[float, float, float, float]],
    scores: list[float],
    message: str,
) -> None:
    tracker = CameraTracker()
    *before, (frame, at) = frames
    for f, t in before:
        tracker.update(f, t, np.empty((0, 4)), [])
    with pytest.raises(ValueError, match=message):
        tracker.update(frame, at, np.array(boxes, dtype=float).reshape(-1, 4), scores)


@pytest.mark.parametrize(
    ("field", "value"), [("fps", 0.0), ("min_iou", 1.5), ("confirm_frames", 0), ("max_gap_s", -1)]
)
def test_a_bad_tracker_setting_is_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"tracker setting {field}"):
        TrackerSettings(**{field: value})
