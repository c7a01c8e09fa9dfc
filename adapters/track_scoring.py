"""Tracking accuracy against MOTChallenge ground truth, scored by py-motmetrics.

MOTChallenge files are CSV rows ``frame, id, x, y, w, h, score, ...`` in pixels with
(x, y) the top-left corner; detection files carry -1 as the id. motmetrics is a
development dependency (the tests and ``bench/``), so it is imported only when scoring.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from adapters.tracking import Tracked

__all__ = ["MAX_ROWS", "FloorRow", "MotScore", "read_mot", "rows_of", "score", "score_floor"]

MAX_ROWS = 10_000_000
"""Most rows a MOTChallenge file may hold here (a day of one busy camera is far fewer)."""


class MotScore(msgspec.Struct, frozen=True, kw_only=True):
    """The CLEAR and identity figures of one tracker's output on one sequence."""

    mota: float
    idf1: float
    switches: int
    false_positives: int
    misses: int


def read_mot(path: Path, max_rows: int = MAX_ROWS) -> np.ndarray:
    """A MOTChallenge file's first seven columns, as an (N, 7) float array."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2, max_rows=max_rows + 1, usecols=range(7))
    if len(rows) > max_rows:
        raise ValueError(f"{path}: more than {max_rows} rows")
    if len(rows) and (rows[:, 0] < 0).any():
        raise ValueError(f"{path}: a frame number (column 1) is negative")
    return rows


def rows_of(tracked: Iterable[Tracked]) -> np.ndarray:
    """Tracker output as MOTChallenge rows (ids start at 1 there, at 0 in ByteTrack)."""
    rows = [
        (t.frame, t.track + 1, t.box[0], t.box[1], t.box[2] - t.box[0], t.box[3] - t.box[1], 1.0)
        for t in tracked
    ]
    return np.array(rows, dtype=float).reshape(-1, 7)


def score(truth: np.ndarray, hypothesis: np.ndarray, min_iou: float = 0.5) -> MotScore:
    """MOTA and IDF1 of ``hypothesis`` against ``truth``, boxes paired at IoU >= ``min_iou``.

    Distances use motmetrics' own box IoU: its ``iou_matrix`` calls ``np.asfarray``, which
    NumPy 2 removed, so the matrix is formed here the same way (1 - IoU, NaN past the gate).
    """
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    frames = np.union1d(truth[:, 0], hypothesis[:, 0]).astype(int)
    for frame in frames.tolist():
        t = truth[truth[:, 0] == frame]
        h = hypothesis[hypothesis[:, 0] == frame]
        if len(t) and len(h):
            dist = 1.0 - mm.distances.boxiou(t[:, None, 2:6], h[None, :, 2:6])
            dist = np.where(dist > 1.0 - min_iou, np.nan, dist)
        else:
            dist = np.empty((len(t), len(h)))
        acc.update(t[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(), dist, frameid=frame)
    return _score(acc)


FloorRow = tuple[int, str, float, float]
"""One person at one instant on the floor: frame, id, x, y (metres)."""


def score_floor(
    truth: Iterable[FloorRow], hypothesis: Iterable[FloorRow], max_m: float = 0.75
) -> MotScore:
    """MOTA and IDF1 on the floor: points paired within ``max_m`` metres, frame by frame.

    Across cameras this is what the hand-off adds or loses: an id switch here is a person
    whose subject changed (a camera track joined to the wrong fused track, or none).
    """
    import motmetrics as mm

    by_frame: dict[int, tuple[list[FloorRow], list[FloorRow]]] = {}
    for row in truth:
        by_frame.setdefault(row[0], ([], []))[0].append(row)
    for row in hypothesis:
        by_frame.setdefault(row[0], ([], []))[1].append(row)
    acc = mm.MOTAccumulator(auto_id=False)
    numbers: dict[tuple[int, str], int] = {}  # motmetrics takes numeric ids only

    def number(side: int, name: str) -> int:
        return numbers.setdefault((side, name), len(numbers) + 1)

    for frame in sorted(by_frame):
        t, h = by_frame[frame]
        a = np.array([r[2:] for r in t], dtype=float).reshape(-1, 2)
        b = np.array([r[2:] for r in h], dtype=float).reshape(-1, 2)
        dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        dist = np.where(dist > max_m * max_m, np.nan, dist)
        truth_ids = [number(0, r[1]) for r in t]
        acc.update(truth_ids, [number(1, r[1]) for r in h], dist, frameid=frame)
    return _score(acc)


def _score(acc: Any) -> MotScore:
    """The figures of a filled ``motmetrics.MOTAccumulator``."""
    import motmetrics as mm

    metrics = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses"]
    summary = mm.metrics.create().compute(acc, metrics=metrics, name="score").iloc[0]
    return MotScore(
        mota=float(summary["mota"]),
        idf1=float(summary["idf1"]),
        switches=int(summary["num_switches"]),
        false_positives=int(summary["num_false_positives"]),
        misses=int(summary["num_misses"]),
    )
