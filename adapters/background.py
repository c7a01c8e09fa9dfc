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
- the person's size where it stands: with the camera's calibration (``person``, the
  projector's model of a standing person) the pieces of one body (a head apart from its
  shoulders, legs cut off by a gap in the mask) are joined when together they fit one
  person better than apart, a blob is split only when its parts fit people better than
  the whole does, and a piece too small to be a person there is dropped: a fixed pixel
  size is wrong for an overhead camera, under which a person is half as large at the
  nadir as at the image's edge;
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
from adapters.projector import Projector
from core.layout import Camera

__all__ = ["BackgroundSubtraction", "BlobLimits"]

_FOREGROUND = 255  # MOG2 and KNN: 255 foreground, 127 shadow, 0 background
_SHADOW = 127
_HISTORY = 500  # only sets OpenCV's default learning rate, which detect() always overrides
_BACKGROUND_RATIO = 0.9  # OpenCV's default for both subtractors
_MIN_PART = 0.25  # the smallest share of a split blob that counts as a person of its own
_WARMUP = 25  # frames that build the model at a fast rate before still_s takes over
_PIECE = 0.1  # the smallest piece of a body, as a share of a person's box there, kept to join
_GAP = 0.25  # how far apart two pieces of one body may be, as a share of a person's box side
_SLACK = 0.05  # how much worse than its better piece a union may fit one person and be joined
_POOR = 0.5  # a fit below which a blob is not one person as it stands...
_CROWD = 1.5  # ...when its box is also this many times a person's box there
_WHOLE = 0.3  # the smallest share of a person's box there that a blob's box may be


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
        person: Projector | None = None,
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
        (0, 1] (1: the full frame); ``person``: the camera's projector, whose model of a
        standing person sizes the blobs where they are (joining, splitting, the smallest
        person), or None for ``limits`` alone."""
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
        self.person = person
        self.level_every = level_every
        self.mask: np.ndarray | None = None  # the last foreground mask (at ``scale``)
        self.level: float | None = None  # the background's brightness
        self.frames = 0
        self.global_run = 0  # frames in a row that changed almost everywhere

    @classmethod
    def for_camera(
        cls, camera: Camera, method: Literal["mog2", "knn"] = "mog2"
    ) -> BackgroundSubtraction:
        """The detector for a layout's camera: blobs sized by its calibration where it
        can model a standing person (mounted above head height), by pixels otherwise."""
        try:
            person = Projector(camera)
        except ValueError:
            person = None
        return cls(method, person=person)

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
        if self.person is not None:
            return self._sized(frame, self.person, n, labels, stats)
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

    def _sized(
        self, frame: Frame, person: Projector, n: int, labels: np.ndarray, stats: np.ndarray
    ) -> sv.Detections:
        """The blobs as people by the calibrated size of a person where each one is."""
        pieces: list[_Piece] = []
        speck = _PIECE * person.smallest_area() * self.scale**2
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < speck:
                continue
            whole = _Piece.of(person, (x, y, w, h), area, self.scale)
            if self.split is not None and area >= 4 * speck:
                blob = (labels[y : y + h, x : x + w] == i).astype(np.uint8)
                # Too large for one person there: two people pressed together may share a
                # thick middle and have one core; try the blob's pixels in two or three
                # clusters too.
                crowd = whole.fit < _POOR and _area(whole.box) > _CROWD * _area(whole.model)
                ways = [_split(blob, self.split)]
                if crowd:
                    ways += [_clusters(blob, k) for k in (2, 3)]
                for way in ways:
                    parts = [
                        _Piece.of(person, (x + bx, y + by, bw, bh), a, self.scale)
                        for bx, by, bw, bh, a in way
                    ]
                    if len(parts) > 1 and min(p.fit for p in parts) > whole.fit:
                        pieces += parts
                        break
                else:
                    pieces.append(whole)
                continue
            pieces.append(whole)
        pieces = _joined(person, pieces)
        kept = [
            p
            for p in pieces
            if _area(p.box) >= _WHOLE * _area(p.model)
            and min(_w(p.box), _h(p.box)) >= self.limits.min_side
        ]
        xyxy = np.array([p.box for p in kept], dtype=np.float64).reshape(-1, 4)
        fill = np.array([p.area / max(_area(p.box), 1.0) for p in kept], dtype=np.float64)
        return people(xyxy, fill.clip(0, 1), size=frame.size)


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class _Piece:
    """A blob or a part of one, in the full frame's pixels, with how well it fits the
    calibrated person standing where it is (IoU with that person's box)."""

    box: Box
    area: float
    model: Box
    fit: float

    @classmethod
    def of(
        cls, person: Projector, xywh: tuple[int, int, int, int], area: float, scale: float
    ) -> _Piece:
        x, y, w, h = xywh
        box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
        return cls.fitted(person, box, area / scale**2)

    @classmethod
    def fitted(cls, person: Projector, box: Box, area: float) -> _Piece:
        model = person.box_of(*person.foot(box))
        return cls(box, area, model, _iou(box, model))


def _joined(person: Projector, pieces: list[_Piece]) -> list[_Piece]:
    """Pieces joined two at a time, the best first, while a union fits one person better
    than its worse piece and about as well as its better one (a head and its shoulders, a
    body cut by a gap); two people side by side fit one person worse than either does."""
    pieces = list(pieces)
    while len(pieces) > 1:
        best: tuple[float, int, int, _Piece] | None = None
        for i in range(len(pieces)):
            for j in range(i + 1, len(pieces)):
                a, b = pieces[i], pieces[j]
                reach = _GAP * max(_w(a.model), _h(a.model), _w(b.model), _h(b.model))
                if _gap(a.box, b.box) > reach:
                    continue
                box = (
                    min(a.box[0], b.box[0]),
                    min(a.box[1], b.box[1]),
                    max(a.box[2], b.box[2]),
                    max(a.box[3], b.box[3]),
                )
                union = _Piece.fitted(person, box, a.area + b.area)
                gain = union.fit - max(a.fit, b.fit)
                if union.fit <= min(a.fit, b.fit) or gain < -_SLACK:
                    continue
                if best is None or gain > best[0]:
                    best = (gain, i, j, union)
        if best is None:
            break
        _, i, j, union = best
        pieces = [p for k, p in enumerate(pieces) if k not in (i, j)] + [union]
    return pieces


def _w(b: Box) -> float:
    return b[2] - b[0]


def _h(b: Box) -> float:
    return b[3] - b[1]


def _area(b: Box) -> float:
    return max(_w(b), 0.0) * max(_h(b), 0.0)


def _gap(a: Box, b: Box) -> float:
    """The distance between two boxes (0 where they touch or overlap)."""
    dx = max(a[0] - b[2], b[0] - a[2], 0.0)
    dy = max(a[1] - b[3], b[1] - a[3], 0.0)
    return max(dx, dy)


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


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


def _clusters(blob: np.ndarray, k: int) -> list[tuple[int, int, int, int, int]]:
    """A blob's pixels in ``k`` groups by position (OpenCV's k-means, fixed seeds by
    kmeans++ from a fixed RNG state so that a frame gives the same boxes every run)."""
    ys, xs = np.nonzero(blob)
    if len(xs) < 2 * k:
        h, w = blob.shape
        return [(0, 0, w, h, len(xs))]
    points = np.column_stack([xs, ys]).astype(np.float32)
    cv2.setRNGSeed(k)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, _ = cv2.kmeans(points, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    parts = []
    for j in range(k):
        px, py = xs[labels[:, 0] == j], ys[labels[:, 0] == j]
        if len(px) == 0:
            continue
        x0, y0 = int(px.min()), int(py.min())
        parts.append((x0, y0, int(px.max()) - x0 + 1, int(py.max()) - y0 + 1, len(px)))
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
