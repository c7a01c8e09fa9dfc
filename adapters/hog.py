"""People as upright figures: OpenCV's HOG people detector, for angled cameras.

The Dalal–Triggs detector that OpenCV ships (``cv2.HOGDescriptor_getDefaultPeopleDetector``)
slides a 64 x 128 window over an image pyramid and scores each place with a linear SVM
trained on standing pedestrians. It needs no model file and no GPU, and it finds people
who stand upright and are at least 128 pixels tall in the image (the window's height), so
it suits a camera that looks along the floor, not one that looks down on heads. People
smaller than that are found only if the image is enlarged first (``upscale``).

What this module adds:

- overlapping windows around one person are merged by non-maximum suppression;
- the window has margins around the person it was trained on, so its box is trimmed to
  the figure (``tighten``), which is what a ground-truth box, and a foot point, refer to;
- the SVM's margin, unbounded, becomes a confidence in [0, 1] through the logistic
  function: 0.5 at the decision boundary, higher the surer.
"""

from __future__ import annotations

import cv2
import numpy as np
import supervision as sv

from adapters.detection import Frame, people

__all__ = ["HogPeople"]

# The 64 x 128 training windows hold a person about 40 px wide and 96 px tall, centred.
_WIDTH_SHARE = 0.55
_HEIGHT_SHARE = 0.8


class HogPeople:
    """A ``Detector`` with OpenCV's default HOG people detector. It keeps no state
    between frames, so one instance may serve several cameras."""

    def __init__(
        self,
        *,
        min_score: float = 0.5,
        nms_iou: float = 0.45,
        win_stride: int = 8,
        scale: float = 1.05,
        upscale: float = 1.0,
        tighten: bool = True,
    ) -> None:
        """``min_score``: the lowest confidence kept (0.5 is the SVM's own boundary);
        ``nms_iou``: overlap above which the weaker of two boxes is dropped;
        ``win_stride``: pixels between windows (4 finds more, at 4 times the cost);
        ``scale``: step between pyramid levels; ``upscale``: enlarge frames by this
        factor first, for people under 128 px tall; ``tighten``: trim boxes to the figure."""
        if not (0 <= min_score < 1):
            raise ValueError(f"min_score must be in [0, 1), got {min_score}")
        if not (0 < nms_iou <= 1):
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if win_stride < 1 or 8 % win_stride:
            raise ValueError(f"win_stride must divide the 8 px cell size, got {win_stride}")
        if not (1 < scale <= 2):
            raise ValueError(f"scale must be in (1, 2], got {scale}")
        if not (0.25 <= upscale <= 4):
            raise ValueError(f"upscale must be in [0.25, 4], got {upscale}")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.stride = (win_stride, win_stride)
        self.scale = scale
        self.upscale = upscale
        self.tighten = tighten
        # The SVM margin at min_score: windows below it are dropped inside OpenCV.
        self.hit_threshold = float(np.log(min_score / (1 - min_score))) if min_score else -10.0

    def detect(self, frame: Frame) -> sv.Detections:
        image = frame.image
        if self.upscale != 1.0:
            image = cv2.resize(image, None, fx=self.upscale, fy=self.upscale)
        rects, margins = self.hog.detectMultiScale(
            image,
            hitThreshold=self.hit_threshold,
            winStride=self.stride,
            padding=(8, 8),
            scale=self.scale,
            groupThreshold=0,  # no OpenCV grouping: NMS below keeps the best box
        )
        if len(rects) == 0:
            return people(np.empty((0, 4)), [])
        xywh = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / self.upscale
        x, y, w, h = xywh.T
        if self.tighten:
            x, w = x + w * (1 - _WIDTH_SHARE) / 2, w * _WIDTH_SHARE
            y, h = y + h * (1 - _HEIGHT_SHARE) / 2, h * _HEIGHT_SHARE
        scores = 1 / (1 + np.exp(-np.asarray(margins, dtype=np.float64).reshape(-1)))
        found = people(np.column_stack([x, y, x + w, y + h]), scores, size=frame.size)
        return found.with_nms(threshold=self.nms_iou, class_agnostic=True)
