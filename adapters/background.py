"""People as what moves against the empty store: OpenCV background subtraction, for fixed
overhead cameras.

A fixed camera over a floor sees the same floor all day; whatever differs from the
background model it learns (MOG2 or KNN, both in OpenCV) is a person, a trolley, or light.
What this module adds is the part that makes blobs into person boxes:

- shadows: both subtractors mark pixels that are a darker copy of the background as
  shadow (grey 127) rather than foreground (255); only 255 is kept, so a shopper's shadow
  does not widen the box or join two shoppers;
- brightness: each frame is scaled to the background's brightness first (exposure and
  lighting change the whole image by a factor), so a slow drift or a flicker does not
  turn the floor into foreground;
- morphology: an opening removes speckle (sensor noise, compression), a closing joins a
  body's parts (head, shoulders, arms) into one blob;
- touching people: a blob with two thick cores (two bodies) is split between them;
- blob filtering: person sizes and shapes in pixels (``BlobLimits``), so a dropped glove
  is not a person;
- standing still: the learning rate is set from ``still_s`` and the frames' own times, so
  a shopper waiting in a queue stays foreground for that long at any frame rate;
- global change: a frame in which most of the image differs (lights switched, the camera
  bumped) gives no people and is not learned; if it lasts, the model starts again;
- scale: the model and the blobs work on the frame shrunk by ``scale`` (half size by
  default: a quarter of the pixels, so about a quarter of the work a frame, which is what
  lets one machine keep up with a store's many cameras), and the boxes are scaled back; a
  person on an overhead camera is tens of pixels across, which half size keeps, while
  the pixel sizes (``BlobLimits``, the morphology) stay in the full frame's pixels.

Confidence is the share of the box the blob fills, in [0, 1]: a compact blob is more likely
one person than a sparse one spanning several.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import supervision as sv

from adapters.detection import Frame, people

__all__ = ["BackgroundSubtraction", "BlobLimits"]

_FOREGROUND = 255  # MOG2 and KNN: 255 foreground, 127 shadow, 0 background
_SHADOW = 127
_HISTORY = 500  # only sets OpenCV's default learning rate, which detect() always overrides
_BACKGROUND_RATIO = 0.9  # OpenCV's default for both subtractors
_MIN_PART = 0.25  # the smallest share of a split blob that counts as a person of its own
_WARMUP = 25  # frames that build the model at a fast rate before still_s takes over


@dataclass(frozen=True)
class BlobLimits:
    """What a person's blob may look like, in pixels of this camera's image.

    ``aspect`` is width over height. The defaults are loose enough for the example stores'
    overhead cameras (640x480 from 4.5 m, 1280x720 from 3.2 m); a camera that sees people
    much smaller or larger needs its own.
    """

    min_area: float = 1500.0
    max_area: float = 250_000.0
    min_aspect: float = 0.2
    max_aspect: float = 5.0
    min_side: float = 20.0  # shorter side of the box, pixels


class BackgroundSubtraction:
    """A ``Detector`` for a fixed camera: background model, shadows out, blobs to boxes.

    One instance per camera, fed that camera's frames in order: the model is its state.
    """

    def __init__(
        self,
        method: Literal["mog2", "knn"] = "mog2",
        *,
        still_s: float = 120.0,
        threshold: float | None = None,
        shadows: bool = True,
        limits: BlobLimits = BlobLimits(),
        open_px: int = 3,
        close_px: int = 15,
        max_changed: float = 0.5,
        relearn_after: int = 25,
        level_every: int = 50,
        split: float | None = 0.6,
        scale: float = 0.5,
    ) -> None:
        """``still_s``: seconds a person may stand still before fading into the
        background, on the frames' clock; ``threshold``: the subtractor's own (MOG2:
        squared Mahalanobis distance, default 64 here, as OpenCV's 16 takes video
        compression noise for people; KNN: squared distance, default 400);
        ``max_changed``: the share of the image above which a frame is a global change,
        ``relearn_after``: how many such frames in a row make the model start again;
        ``level_every``: frames between measurements of the background's brightness;
        ``split``: how thick (a share of the blob's thickest point) a core must be to
        count as a body when splitting touching people, or None not to split;
        ``scale``: the share of the frame's width and height the model works at, in
        (0, 1] (1: the full frame)."""
        if method == "mog2":
            self.model: cv2.BackgroundSubtractor = cv2.createBackgroundSubtractorMOG2(
                history=_HISTORY,
                varThreshold=64.0 if threshold is None else threshold,
                detectShadows=shadows,
            )
        elif method == "knn":
            self.model = cv2.createBackgroundSubtractorKNN(
                history=_HISTORY,
                dist2Threshold=400.0 if threshold is None else threshold,
                detectShadows=shadows,
            )
        else:
            raise ValueError(f"unknown background subtraction method {method!r}: mog2 or knn")
        if not (0 < max_changed <= 1):
            raise ValueError(f"max_changed must be in (0, 1], got {max_changed}")
        if not (0 < scale <= 1):
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if not (still_s > 0):
            raise ValueError(f"still_s must be a positive number of seconds, got {still_s}")
        self.method = method
        self.still_s = still_s
        self.last_offset: float | None = None
        self.frame_s: float | None = None  # seconds between frames, smoothed
        self.scale = scale
        self.limits = limits
        self.max_changed = max_changed
        self.open = _kernel(open_px, scale)
        self.close = _kernel(close_px, scale)
        self.relearn_after = relearn_after
        self.split = split
        self.level_every = level_every
        self.mask: np.ndarray | None = None  # the last foreground mask (at ``scale``)
        self.level: float | None = None  # the background's brightness
        self.frames = 0
        self.global_run = 0  # frames in a row that changed almost everywhere

    def compensate(self, image: np.ndarray) -> np.ndarray:
        """The frame scaled to the background's brightness.

        Exposure and lighting change brightness over the whole image by a factor; without
        this, a slow drift makes the model learn faster than people stand still, and a
        flicker turns the whole image into foreground. The median of a small copy is
        robust to the people in it.
        """
        self.frames += 1
        level = _level(image)
        if self.level is None:
            self.level = level
        elif self.frames % self.level_every == 0:
            self.level = _level(self.model.getBackgroundImage())
        gain = self.level / max(level, 1.0)
        if abs(gain - 1) < 0.01:
            return image
        return cv2.convertScaleAbs(image, alpha=gain)

    def learning_rate(self, offset_s: float) -> float:
        """The model's learning rate that makes a still person part of the background after
        ``still_s`` seconds at the rate frames actually come (a person is background once
        the floor's weight in the mixture decays below the background ratio). The first
        frames learn faster, as OpenCV's own schedule does, to build the model."""
        if self.last_offset is not None and offset_s > self.last_offset:
            step = offset_s - self.last_offset
            self.frame_s = step if self.frame_s is None else 0.9 * self.frame_s + 0.1 * step
        self.last_offset = offset_s
        frames = self.still_s / (self.frame_s or 1 / 15)
        steady = 1 - _BACKGROUND_RATIO ** (1 / max(frames, 1.0))
        return max(steady, 1 / (2 * self.frames)) if self.frames <= _WARMUP else steady

    def shrink(self, image: np.ndarray) -> np.ndarray:
        """The frame at the model's scale (area averaging, which also smooths the
        compression noise a pixel-sized subtractor would take for movement)."""
        if self.scale == 1:
            return image
        return cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)

    def detect(self, frame: Frame) -> sv.Detections:
        image = self.compensate(self.shrink(frame.image))
        if self.global_run >= self.relearn_after:
            # The scene itself changed (the camera moved, the lights changed for good).
            raw = self.model.apply(image, learningRate=1.0)
            self.global_run = 0
        else:
            rate = 0.0 if self.global_run else self.learning_rate(frame.offset_s)
            raw = self.model.apply(image, learningRate=rate)
        changed = cv2.countNonZero(raw) / raw.size
        if changed > self.max_changed:
            self.global_run += 1
            self.mask = np.zeros_like(raw)
            return people(np.empty((0, 4)), [])
        self.global_run = 0
        _, mask = cv2.threshold(raw, _SHADOW, _FOREGROUND, cv2.THRESH_BINARY)
        if self.open is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.open)
        if self.close is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.close)
        self.mask = mask
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes: list[tuple[float, float, float, float, float]] = []  # x, y, w, h, area
        lim = self.limits
        min_area = lim.min_area * self.scale**2  # in the shrunk mask's pixels
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < min_area:
                continue
            if self.split is not None and area >= 2 * min_area:
                blob = (labels[y : y + h, x : x + w] == i).astype(np.uint8)
                boxes += [
                    (x + bx, y + by, bw, bh, a) for bx, by, bw, bh, a in _split(blob, self.split)
                ]
            else:
                boxes.append((x, y, w, h, area))
        b = np.array(boxes, dtype=np.float64).reshape(-1, 5)
        x, y, w, h = (b[:, :4] / self.scale).T  # back in the full frame's pixels
        area = b[:, 4] / self.scale**2
        aspect = w / np.maximum(h, 1)
        keep = (
            (area >= lim.min_area)
            & (area <= lim.max_area)
            & (aspect >= lim.min_aspect)
            & (aspect <= lim.max_aspect)
            & (np.minimum(w, h) >= lim.min_side)
        )
        xyxy = np.column_stack([x, y, x + w, y + h])[keep]
        fill = (area / np.maximum(w * h, 1))[keep]
        return people(xyxy, fill.clip(0, 1), size=frame.size)


def _split(blob: np.ndarray, core: float) -> list[tuple[int, int, int, int, int]]:
    """One blob as one or more people: the thick cores of the blob (where it is at least
    ``core`` times as far from its edge as its thickest point) are bodies; two cores are
    two people touching, and every pixel of the blob goes to the nearest core."""
    dist = cv2.distanceTransform(blob, cv2.DIST_L2, 3)
    cores = (dist >= core * float(dist.max())).astype(np.uint8)
    n, _ = cv2.connectedComponents(cores, connectivity=8)
    if n <= 2:
        h, w = blob.shape
        return [(0, 0, w, h, int(cv2.countNonZero(blob)))]
    _, nearest = cv2.distanceTransformWithLabels(
        1 - cores, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP
    )
    nearest[blob == 0] = 0
    parts = []
    for k in np.unique(nearest):
        if k == 0:
            continue
        part = (nearest == k).astype(np.uint8)
        x, y, w, h = cv2.boundingRect(part)
        parts.append((x, y, w, h, int(cv2.countNonZero(part))))
    total = sum(p[4] for p in parts)
    if min(p[4] for p in parts) < _MIN_PART * total:
        h, w = blob.shape
        return [(0, 0, w, h, total)]  # a limb or a head, not a second person
    return parts


def _level(image: np.ndarray) -> float:
    small = cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return float(np.median(grey))


def _kernel(px: int, scale: float) -> np.ndarray | None:
    """An ellipse ``px`` pixels of the full frame across, at ``scale`` (an odd size, so
    that it is centred; at least 3 where ``px`` asks for one, so that a scaled-down
    opening still removes speckle)."""
    if px < 0:
        raise ValueError(f"a morphology size must be >= 0 pixels, got {px}")
    if px <= 1:
        return None
    size = max(3, 2 * round((px * scale - 1) / 2) + 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
