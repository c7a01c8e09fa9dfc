"""The detector interface: a frame in, the people in it out, as boxes with scores.

Every detector (background subtraction, HOG, YOLO, precomputed ``det.txt``) implements
``Detector`` and returns ``supervision.Detections``, the exchange type of the field's own
tools: the ``trackers`` package tracks it, supervision's zones and annotators read it. The
conventions below are what every detector promises and what the tracker may rely on:

- ``xyxy``: float32, shape (n, 4), pixels in the frame's image, x1 < x2 and y1 < y2,
  clipped to the image; the top-left pixel's corner is (0, 0);
- ``confidence``: float32, shape (n,), in [0, 1], higher is surer (a detector whose raw
  score is not a probability maps it monotonically into [0, 1] and says how);
- ``class_id``: int, shape (n,), all ``PERSON`` (0, COCO's person);
- nothing else is required; a detector may add per-box columns to ``data``.

``people()`` builds such a value from arrays and checks it, so each detector says only
what it found.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import supervision as sv
from msgspec import Struct

__all__ = ["PERSON", "Detector", "Frame", "people"]

PERSON = 0
"""The class id of a person (COCO's numbering, which YOLO models use too)."""


class Frame(Struct, frozen=True, kw_only=True):
    """One image from a source, with where it sits in the source and in event time.

    ``number`` counts the source's frames from 1 (MOTChallenge's numbering), including
    frames the layout's rate skipped, so a ``det.txt`` or a ground-truth file written for
    the source lines up with it. ``at`` is derived from the source's own position, never
    from the wall clock for a file, so reading a file twice gives the same times.
    """

    image: npt.NDArray[np.uint8]  # BGR, shape (height, width, 3)
    number: int  # the source's frame number, from 1
    offset_s: float  # seconds from the start of the source (file position or stream time)
    at: datetime  # event time: the source's start time plus offset_s, UTC
    source: str  # what it came from (a file name, a camera index, a URL without password)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


@runtime_checkable
class Detector(Protocol):
    """Finds people in one frame. A detector may keep state between frames (a background
    model does), so one instance serves one camera, with frames in order."""

    def detect(self, frame: Frame) -> sv.Detections:
        """The people in ``frame``, following the conventions of this module."""
        ...


def people(
    xyxy: npt.ArrayLike,
    confidence: npt.ArrayLike,
    size: tuple[int, int] | None = None,
) -> sv.Detections:
    """Person detections from boxes (n x 4, x1 y1 x2 y2 pixels) and scores (n, in [0, 1]).

    With ``size`` (width, height) the boxes are clipped to the image, and boxes that are
    left empty are dropped. Raises ``ValueError`` on arrays of the wrong shape or on
    scores outside [0, 1], which would mean a detector broke its promise.
    """
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(confidence, dtype=np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    if not np.all(np.isfinite(boxes)):
        raise ValueError("a box has a coordinate that is not a finite number")
    if len(scores) and not (np.all(scores >= 0) and np.all(scores <= 1)):
        raise ValueError(f"scores must lie in [0, 1], got {scores.min()} to {scores.max()}")
    if size is not None:
        w, h = size
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if size is None and not np.all(keep):
        raise ValueError("a box has x2 <= x1 or y2 <= y1")
    boxes, scores = boxes[keep], scores[keep]
    return sv.Detections(
        xyxy=boxes,
        confidence=scores,
        class_id=np.full(len(boxes), PERSON, dtype=int),
    )
