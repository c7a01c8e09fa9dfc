"""Vision adapters: pixels in, people on the floor out (see ``docs/adapters.md``).

A frame source gives timed frames at the layout's rate; a detector finds the people in
each frame as ``supervision.Detections``; what follows (tracking, the floor, events) reads
those. The names below are the package's public surface; the modules behind them hold
the details.
"""

from adapters.background import BackgroundSubtraction, BlobLimits
from adapters.detection import PERSON, Detector, Frame, people
from adapters.detfile import DetFile, DetFileError
from adapters.hog import HogPeople
from adapters.sources import (
    Backoff,
    FrameSource,
    SourceError,
    open_source,
    source_for_camera,
)
from adapters.yolo import YoloDetector, YoloError

__all__ = [
    "PERSON",
    "BackgroundSubtraction",
    "Backoff",
    "BlobLimits",
    "DetFile",
    "DetFileError",
    "Detector",
    "Frame",
    "FrameSource",
    "HogPeople",
    "SourceError",
    "YoloDetector",
    "YoloError",
    "open_source",
    "people",
    "source_for_camera",
]
