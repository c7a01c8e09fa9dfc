"""Precomputed detections in MOTChallenge ``det.txt`` form, replayed as a detector.

Any detector outside aisle (a DeepStream pipeline, a camera's own analytics, a benchmark's
public detections) can feed it by writing one line per box:

    frame, id, x, y, w, h, score[, x3d, y3d, z3d]

``frame`` counts from 1, ``id`` is -1 for detections (it is ignored), ``x, y`` is the
box's top-left pixel and ``w, h`` its size. The file is read whole, once, and checked line
by line: a line that is not 7 to 10 numbers, a frame below 1, a box with no area or a
value that is not finite is refused with its line number.

Scores: MOTChallenge's detectors disagree (Faster R-CNN and SDP give probabilities, DPM an
SVM margin). A file whose scores all lie in [0, 1] is kept as it is; otherwise every score
goes through the logistic function, which keeps their order and puts 0 at 0.5.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import supervision as sv

from adapters.detection import Frame, people

__all__ = ["MAX_DET_BYTES", "DetFile", "DetFileError"]

MAX_DET_BYTES = 512 * 2**20
"""Largest det.txt read (MOT20's largest public detection file is well under a tenth)."""
_MAX_LINE = 1024


class DetFileError(ValueError):
    """A det.txt that cannot be read; the message names the file and the line."""


class DetFile:
    """A ``Detector`` that returns, for each frame, the file's boxes with its number."""

    def __init__(self, path: str | Path, *, min_score: float = 0.0) -> None:
        self.path = Path(path)
        self.min_score = min_score
        frames, boxes, scores = _read(self.path)
        if len(scores) and (scores.min() < 0 or scores.max() > 1):
            scores = 1 / (1 + np.exp(-scores))
            self.rescaled = True
        else:
            self.rescaled = False
        order = np.argsort(frames, kind="stable")  # file order within a frame
        self._frames = frames[order]
        self._boxes = boxes[order]
        self._scores = scores[order]

    def __len__(self) -> int:
        """How many detections the file holds."""
        return len(self._scores)

    @property
    def frames(self) -> tuple[int, ...]:
        """The frame numbers that have at least one detection, in order."""
        return tuple(int(f) for f in np.unique(self._frames))

    def at(self, number: int, size: tuple[int, int] | None = None) -> sv.Detections:
        """The detections of frame ``number`` (from 1), clipped to ``size`` if given."""
        lo, hi = np.searchsorted(self._frames, [number, number + 1])
        scores = self._scores[lo:hi]
        keep = scores >= self.min_score
        return people(self._boxes[lo:hi][keep], scores[keep], size=size)

    def detect(self, frame: Frame) -> sv.Detections:
        return self.at(frame.number, frame.size)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DetFileError(f"{path}: no such file") from None
    if size > MAX_DET_BYTES:
        raise DetFileError(
            f"{path}: {size:,} bytes, more than the {MAX_DET_BYTES:,} a detection file may have"
        )
    frames: list[int] = []
    rows: list[tuple[float, float, float, float, float]] = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if len(raw) > _MAX_LINE:
                raise DetFileError(f"{path}:{n}: a line longer than {_MAX_LINE} bytes")
            try:
                line = raw.decode("ascii").strip()
            except UnicodeDecodeError:
                raise DetFileError(f"{path}:{n}: not a text line of numbers") from None
            if not line or line.startswith("#"):
                continue
            frame, row = _parse(path, n, line)
            frames.append(frame)
            rows.append(row)
    data = np.array(rows, dtype=np.float64).reshape(-1, 5)
    x, y, w, h, s = data.T
    return (
        np.array(frames, dtype=np.int64),
        np.column_stack([x, y, x + w, y + h]),
        s,
    )


def _parse(path: Path, n: int, line: str) -> tuple[int, tuple[float, float, float, float, float]]:
    parts = line.split(",")
    if not 7 <= len(parts) <= 10:
        raise DetFileError(
            f"{path}:{n}: expected 7 to 10 comma-separated numbers "
            "(frame, id, x, y, w, h, score[, x, y, z]), got "
            f"{len(parts)}"
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not _is_number(p))
        raise DetFileError(f"{path}:{n}: {bad.strip()!r} is not a number") from None
    if not all(math.isfinite(v) for v in values[:7]):
        raise DetFileError(f"{path}:{n}: the first 7 values must be finite numbers")
    frame, _, x, y, w, h, score = values[:7]
    if frame != int(frame) or frame < 1:
        raise DetFileError(f"{path}:{n}: frame must be a whole number from 1, got {parts[0]}")
    if w <= 0 or h <= 0:
        raise DetFileError(f"{path}:{n}: a box needs a positive width and height, got {w} x {h}")
    if max(abs(x), abs(y), w, h) > 1e6:
        raise DetFileError(f"{path}:{n}: box coordinates beyond a million pixels")
    return int(frame), (x, y, w, h, score)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
