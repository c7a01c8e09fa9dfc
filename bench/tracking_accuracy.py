"""Tracking accuracy on real pedestrians: aisle's tracker and its peers, side by side.

    .venv/bin/python bench/tracking_accuracy.py [--data ../shared/data/mot/TUD-Campus]

Every tracker is fed the same real detections (``det.txt``, MOT15's public Faster R-CNN
boxes) frame by frame and scored against ``gt.txt`` at IoU 0.5 with py-motmetrics. The
peers run with their defaults; aisle's rows say what differs. The last two columns count
a vertical line at x = 320 (bottom-centre anchors, left to right = in) with aisle's
``LineCounter`` over each tracker's tracks; the ground truth's own count heads the table.

supervision removed its ByteTrack in 0.31 (it moved to the ``trackers`` package); where the
installed supervision lacks it, its row shows the figures recorded with supervision 0.30.9
in the data's README, marked as recorded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import numpy as np
import supervision as sv
from trackers import ByteTrackTracker, SORTTracker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.crossings import LineCounter  # noqa: E402
from adapters.track_scoring import MotScore, read_mot, rows_of, score  # noqa: E402
from adapters.tracking import CameraTracker, Tracked, TrackerSettings, instants  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "mot" / "TUD-Campus"
FPS = 25.0  # TUD-Campus's frame rate (MOT15 seqinfo)
LINE_X = 320.0
LINE_BAND_PX = 10.0

SUPERVISION_RECORDED = MotScore(mota=0.596, idf1=0.666, switches=-1, false_positives=-1, misses=-1)
"""supervision 0.30.9's ByteTrack (defaults) on the same detections, from the data's README."""


class Row(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    note: str
    score: MotScore | None  # None for the ground truth itself
    ins: int | None
    outs: int | None


def frames(det: np.ndarray) -> Iterable[tuple[int, np.ndarray, np.ndarray]]:
    """Each frame of a detection file in order, empty ones included: (frame, xyxy, scores)."""
    for frame in range(1, int(det[:, 0].max()) + 1):
        d = det[det[:, 0] == frame]
        xyxy = np.c_[d[:, 2], d[:, 3], d[:, 2] + d[:, 4], d[:, 3] + d[:, 5]]
        yield frame, xyxy, d[:, 6]


def line_counter() -> LineCounter:
    # Drawn top to bottom in image coordinates (y down), the inside x > 320 is its "right".
    return LineCounter(
        "x320",
        (LINE_X, 0.0),
        (LINE_X, 480.0),
        "right",
        band=LINE_BAND_PX,
        handover_distance=60.0,
        handover_s=1.0,
    )


def count(rows: np.ndarray) -> tuple[int, int]:
    """The line's (in, out) from MOTChallenge rows, fed frame by frame in time order."""
    counter = line_counter()
    for frame in np.unique(rows[:, 0]).tolist():
        r = rows[rows[:, 0] == frame]
        counter.update(frame / FPS, {int(t[1]): (t[2] + t[4] / 2, t[3] + t[5]) for t in r})
    return counter.ins, counter.outs


def aisle(det: np.ndarray, settings: TrackerSettings) -> tuple[np.ndarray, tuple[int, int]]:
    """aisle's tracker on the detections: its rows, and the line counted as it runs."""
    tracker, counter = CameraTracker(settings), line_counter()
    tracked: list[Tracked] = []
    for frame, xyxy, scores in frames(det):
        out = tracker.update(frame, frame / FPS, xyxy, scores)
        tracked.extend(out)
        for at, points in instants(out):
            counter.update(at, points)
    return rows_of(tracked), (counter.ins, counter.outs)


def peer(det: np.ndarray, update: Callable[[sv.Detections], sv.Detections]) -> np.ndarray:
    """Another tracker's confirmed boxes as MOTChallenge rows."""
    rows = []
    for frame, xyxy, scores in frames(det):
        out = update(sv.Detections(xyxy=xyxy, confidence=scores, class_id=np.zeros(len(xyxy), int)))
        ids = out.tracker_id if out.tracker_id is not None else []
        for box, track in zip(out.xyxy, ids, strict=True):
            if track >= 0:
                rows.append((frame, track + 1, box[0], box[1], box[2] - box[0], box[3] - box[1], 1))
    return np.array(rows, dtype=float).reshape(-1, 7)


def compare(data: Path = DATA) -> list[Row]:
    """Every tracker's row, the ground truth's line count first."""
    truth, det = read_mot(data / "gt.txt"), read_mot(data / "det.txt")
    ins, outs = count(truth)
    rows = [Row(name="ground truth (gt.txt)", note="", score=None, ins=ins, outs=outs)]

    def add(name: str, note: str, hyp: np.ndarray, counts: tuple[int, int] | None = None) -> None:
        ins, outs = counts if counts is not None else count(hyp)
        rows.append(Row(name=name, note=note, score=score(truth, hyp), ins=ins, outs=outs))

    add("reference tracker (test.txt)", "motmetrics' test output", read_mot(data / "test.txt"))
    if hasattr(sv, "ByteTrack"):
        tracker = sv.ByteTrack()
        add(
            "supervision ByteTrack",
            f"{sv.__version__}, defaults",
            peer(det, tracker.update_with_detections),
        )
    else:
        rows.append(
            Row(
                name="supervision ByteTrack",
                note=f"0.30.9 recorded; not in {sv.__version__}",
                score=SUPERVISION_RECORDED,
                ins=None,
                outs=None,
            )
        )
    add("trackers ByteTrack", "defaults", peer(det, ByteTrackTracker().update))
    add("trackers SORT", "defaults", peer(det, SORTTracker().update))
    tuned = TrackerSettings(fps=FPS)
    untuned = msgspec.structs.replace(tuned, high_score=0.6, min_iou=0.1)
    hyp, counts = aisle(det, untuned)
    add("aisle, ByteTrack's defaults", "+ birth frames + gaps", hyp, counts)
    hyp, counts = aisle(det, msgspec.structs.replace(tuned, max_gap_s=0.0))
    add("aisle, no gap filling", "tuned ByteTrack + birth frames", hyp, counts)
    hyp, counts = aisle(det, tuned)
    add("aisle", "tuned ByteTrack + birth frames + gaps", hyp, counts)
    return rows


def table(rows: list[Row]) -> str:
    def cell(value: int | None, width: int) -> str:
        return f"{'-' if value is None or value < 0 else value:>{width}}"

    head = (
        f"{'tracker':30} {'settings':38} {'MOTA':>6} {'IDF1':>6} "
        f"{'IDsw':>5} {'FP':>4} {'miss':>5} {'in':>3} {'out':>3}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r.score
        if s is None:
            figures = f"{'':6} {'':6} {'':5} {'':4} {'':5}"
        else:
            figures = (
                f"{s.mota:6.3f} {s.idf1:6.3f} "
                f"{cell(s.switches, 5)} {cell(s.false_positives, 4)} {cell(s.misses, 5)}"
            )
        lines.append(f"{r.name:30} {r.note:38} {figures} {cell(r.ins, 3)} {cell(r.outs, 3)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a MOTChallenge sequence folder")
    args = parser.parse_args()
    print("TUD-Campus: det.txt through each tracker, scored against gt.txt at IoU 0.5")
    print(f"line x = {LINE_X:g} px, band {LINE_BAND_PX:g} px, feet anchors, left to right = in")
    print(table(compare(args.data)))


if __name__ == "__main__":
    main()
