"""Faces in a frame and their descriptors: dlib's face detector, its five-point landmarks
and its ResNet face descriptor, from the model files the ``face-recognition-models``
package ships (nothing is fetched at run time).

A descriptor is 128 numbers; two photos of one person lie close (Euclidean distance),
two people far apart. Descriptors live only in memory, here and in the matcher: the
enrolment store keeps them encrypted (``adapters.members``) and nothing else keeps them.
A frame's faces that match no one are dropped with the frame.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "DESCRIPTOR_SIZE",
    "MAX_FACES",
    "MIN_FACE_PX",
    "Face",
    "FaceDetector",
    "FaceFinder",
    "FacesUnavailable",
]

DESCRIPTOR_SIZE = 128
MAX_FACES = 32
"""Faces described per frame at most (the largest first): a crowd at a door is bounded."""
MIN_FACE_PX = 40
"""A face narrower than this is too small for a descriptor to be trusted."""
MAX_SIDE_PX = 4096


class FacesUnavailable(RuntimeError):
    """dlib or the model files are not installed: say which package to install."""


class FaceDetector(StrEnum):
    DLIB = "dlib"  # dlib's HOG frontal face detector: the landmarks model was trained on its boxes
    OPENCV = "opencv"  # OpenCV's Haar cascade (cv2.data), faster, more false faces


@dataclass(frozen=True, slots=True)
class Face:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 pixels
    descriptor: npt.NDArray[np.float32]  # DESCRIPTOR_SIZE numbers; never stored as is


def _models() -> Path:
    """The folder of ``face-recognition-models``' files, found without importing the
    package (its ``__init__`` needs ``pkg_resources``, which new setuptools drop)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacesUnavailable(
            "the face descriptor needs the face-recognition-models package: "
            "pip install 'aisle[faces]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceFinder:
    """Faces and their descriptors in BGR frames, the likeliest face first. Loading the
    models takes a moment: make one per process and reuse it."""

    def __init__(
        self,
        detector: FaceDetector = FaceDetector.DLIB,
        upsample: int = 1,
        max_faces: int = MAX_FACES,
        min_score: float = 0.3,
    ) -> None:
        try:
            import dlib
        except ImportError:
            raise FacesUnavailable(
                "face matching needs dlib: pip install 'aisle[faces]' (the dlib-bin wheel)"
            ) from None
        models = _models()
        files = {
            "landmarks": models / "shape_predictor_5_face_landmarks.dat",
            "descriptor": models / "dlib_face_recognition_resnet_model_v1.dat",
        }
        for what, path in files.items():
            if not path.is_file():
                raise FacesUnavailable(f"the {what} model is missing: {path}")
        if not 0 <= upsample <= 2:
            raise ValueError(f"upsample {upsample}: 0, 1 or 2 (each doubles the image)")
        self.detector = detector
        self.upsample = upsample
        self.max_faces = max_faces
        self.min_score = min_score  # dlib's detector: above its own 0, fewer false faces
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(str(files["landmarks"]))
        self._descriptor = dlib.face_recognition_model_v1(str(files["descriptor"]))
        if detector is FaceDetector.DLIB:
            self._hog = dlib.get_frontal_face_detector()
        else:
            cascade = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
            self._cascade = cv2.CascadeClassifier(str(cascade))

    def find(self, image: npt.NDArray[np.uint8]) -> list[Face]:
        """The faces in a BGR image, the largest first, each with its descriptor."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"a BGR image of uint8 is needed, not {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if max(h, w) > MAX_SIDE_PX:
            raise ValueError(f"an image of {w}x{h} is larger than {MAX_SIDE_PX} px a side")
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        boxes = self._boxes(rgb)
        faces = []
        for x1, y1, x2, y2 in boxes[: self.max_faces]:
            rect = self._dlib.rectangle(x1, y1, x2, y2)
            shape = self._landmarks(rgb, rect)
            vector = self._descriptor.compute_face_descriptor(rgb, shape)
            faces.append(Face((x1, y1, x2, y2), np.asarray(vector, dtype=np.float32)))
        return faces

    def boxes(self, image: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        """Where the faces of a BGR image are, the likeliest first, without describing them."""
        return self._boxes(np.ascontiguousarray(image[:, :, ::-1]))

    def _boxes(self, rgb: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        """The faces' boxes, the likeliest first (dlib's score; OpenCV's: the largest)."""
        h, w = rgb.shape[:2]
        if self.detector is FaceDetector.DLIB:
            rects, scores, _ = self._hog.run(rgb, self.upsample, self.min_score)
            ranked = sorted(zip(scores, rects, strict=True), key=lambda p: -p[0])
            found = [(r.left(), r.top(), r.right(), r.bottom()) for _, r in ranked]
        else:
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            found = [
                (int(x), int(y), int(x + s), int(y + t))
                for x, y, s, t in self._cascade.detectMultiScale(
                    gray, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE_PX, MIN_FACE_PX)
                )
            ]
            found.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return [
            (max(0, x1), max(0, y1), min(w - 1, x2), min(h - 1, y2))
            for x1, y1, x2, y2 in found
            if x2 - x1 >= MIN_FACE_PX and y2 > y1
        ]
