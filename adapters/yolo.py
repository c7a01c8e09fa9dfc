"""People from an Ultralytics YOLO model, on the CPU, from weights the user gives.

``YoloDetector`` loads a PyTorch ``.pt`` through Ultralytics' own predictor (its letterbox,
non-maximum suppression and scaling of boxes back to frame pixels), with PyTorch held to
the threads given. An exported ``.onnx`` (ONNX Runtime) or OpenVINO folder
(``*_openvino_model/``) runs in a session of the adapter's own (``adapters/yolo_runtime.py``),
made for a CPU shared with decoding and tracking, with the same letterbox and decoding
done there; the exported formats exist for speed on a CPU: ``export_yolo`` writes them, at
a fixed input size that should match the cameras' aspect (``bench/vision_fps.py``
measures the speeds).

Nothing is fetched: Ultralytics is told it is offline and must not pip-install what it
misses (every package it would want is a dependency of the ``yolo`` extra), and a path that
does not exist is refused here, before Ultralytics would take a bare name such as
``yolo11n.pt`` for one of its own releases to download. torch and Ultralytics are imported
on first use (and not at all for an exported model), so ``import adapters`` stays light
for the detectors that do not need them.

A ``.pt`` file is a pickle: load only weights you trust.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import supervision as sv

from adapters.detection import Frame, people
from adapters.yolo_runtime import (
    HINTS,
    PRECISIONS,
    ExportedModel,
    ExportError,
    Hint,
    Precision,
    available_cores,
    decode,
    letterbox,
    load_exported,
)

if TYPE_CHECKING:
    from ultralytics import YOLO

__all__ = ["MAX_IMGSZ", "MIN_IMGSZ", "YoloDetector", "YoloError", "export_yolo", "untrained_yolo"]

MIN_IMGSZ = 32
MAX_IMGSZ = 1920
"""Bounds of the network's input side, pixels: frames are letterboxed down (or up) to it."""

MAX_DETECTIONS = 1000
"""Bound of ``max_det``: a frame has not more people than this."""

MAX_THREADS = 256
"""Bound of ``threads``."""

ExportFormat = Literal["onnx", "openvino"]

_STRIDE = 32  # every YOLO input side is a multiple of the coarsest feature map's stride


class YoloError(ValueError):
    """Weights or settings that a YOLO detector cannot use, said with the path or the value."""


def _ultralytics() -> type[YOLO]:
    """Import Ultralytics offline and without run-time installs (its environment switches,
    read once at its import; a caller's own setting wins)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    from ultralytics import YOLO

    return YOLO


def _format(path: Path) -> str:
    """Which of the supported formats ``path`` holds, or a ``YoloError`` saying why none."""
    if not path.exists():
        raise YoloError(f"{path}: no such YOLO weights file or folder")
    if path.is_dir():
        if not any(path.glob("*.xml")):
            raise YoloError(
                f"{path}: a folder, but not an OpenVINO model (no .xml file in it); "
                "give a .pt, an .onnx or an OpenVINO folder"
            )
        if not path.name.endswith("_openvino_model"):
            raise YoloError(
                f"{path}: an OpenVINO folder must be named *_openvino_model, "
                "as Ultralytics exports it"
            )
        return "openvino"
    suffix = path.suffix.lower()
    if suffix in (".pt", ".onnx"):
        return suffix[1:]
    raise YoloError(
        f"{path}: unsupported YOLO weights {suffix or '(no suffix)'!r}; "
        "give a .pt, an .onnx or an OpenVINO folder (*_openvino_model)"
    )


def _imgsz(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of the network input, checked against the bounds and the stride."""
    sides = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        raise YoloError(f"imgsz must be one side or (height, width) in pixels, got {imgsz!r}")
    for side in sides:
        if not MIN_IMGSZ <= side <= MAX_IMGSZ or side % _STRIDE:
            raise YoloError(
                f"imgsz {side} must be a multiple of {_STRIDE} "
                f"from {MIN_IMGSZ} to {MAX_IMGSZ} pixels"
            )
    return sides[0], sides[1]


def _unit(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise YoloError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


class YoloDetector:
    """A ``Detector`` (see ``adapters.detection``) running a YOLO detection model.

    ``confidence`` is the least score kept, ``iou`` the overlap above which non-maximum
    suppression drops the lower-scored of two person boxes, ``imgsz`` the network input
    (one side, or (height, width)) for a ``.pt``; an exported model has the fixed input it
    was exported with, and an ``imgsz`` that differs from it is refused. Only the class
    named ``person`` is kept, whatever its index in the model.

    ``threads``: the CPU threads inference may use (default: the cores this process may run
    on); for a ``.pt`` PyTorch's, which are the whole process's. ``precision`` and ``hint``
    are OpenVINO's (``f32`` computes as PyTorch does; ``bf16`` is faster on a CPU that has
    it, with scores a little apart; ``throughput`` suits many cameras on one model).
    Cameras given the same exported model share one session.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str],
        *,
        confidence: float = 0.25,
        iou: float = 0.7,
        imgsz: int | Sequence[int] | None = None,
        max_det: int = 300,
        threads: int | None = None,
        precision: Precision = "f32",
        hint: Hint = "latency",
    ) -> None:
        self.weights = Path(weights)
        self.format = _format(self.weights)
        self.confidence = _unit("confidence", confidence)
        self.iou = _unit("iou", iou)
        if not 1 <= max_det <= MAX_DETECTIONS:
            raise YoloError(f"max_det must be from 1 to {MAX_DETECTIONS}, got {max_det}")
        self.max_det = max_det
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise YoloError(f"threads must be from 1 to {MAX_THREADS}, got {threads}")
        self.threads = threads or available_cores()
        if precision not in PRECISIONS:
            raise YoloError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if hint not in HINTS:
            raise YoloError(f"hint must be one of {', '.join(HINTS)}, got {hint!r}")
        asked = None if imgsz is None else _imgsz(imgsz)
        self._session: ExportedModel | None = None
        if self.format == "pt":
            names = self._load_pt()
            self.imgsz = asked or (640, 640)
        else:
            try:
                self._session = load_exported(
                    self.weights, self.format, threads=self.threads, precision=precision, hint=hint
                )
            except ExportError as e:
                raise YoloError(str(e)) from e
            meta = self._session.metadata
            if meta.task != "detect":
                raise YoloError(
                    f"{self.weights}: a {meta.task!r} model; a detection model is needed"
                )
            self.imgsz = meta.imgsz
            if asked is not None and asked != self.imgsz:
                raise YoloError(
                    f"{self.weights}: exported for input {self.imgsz[0]}x{self.imgsz[1]} "
                    f"(height x width), imgsz {asked[0]}x{asked[1]} was asked; "
                    "export again at that size, or leave imgsz out"
                )
            names = meta.names
        persons = [k for k, v in names.items() if v == "person"]
        if not persons:
            raise YoloError(f"{self.weights}: no class named 'person' among {len(names)} classes")
        self.person_class = persons[0]

    def _load_pt(self) -> dict[int, str]:
        """Load a ``.pt`` through Ultralytics, PyTorch held to ``threads``; its class names."""
        import torch

        torch.set_num_threads(self.threads)
        YOLO = _ultralytics()
        try:
            self._model = YOLO(str(self.weights))
        except Exception as e:  # a corrupt file, a foreign pickle, a model of another library
            raise YoloError(f"{self.weights}: Ultralytics cannot load it: {e}") from e
        if self._model.task != "detect":
            raise YoloError(
                f"{self.weights}: a {self._model.task!r} model; a detection model is needed"
            )
        return dict(self._model.names)

    def detect(self, frame: Frame) -> sv.Detections:
        """The people in ``frame``: boxes in the frame's pixels, scores at least
        ``confidence``, at most ``max_det``."""
        return self.detect_image(frame.image)

    def detect_image(self, image: np.ndarray) -> sv.Detections:
        """``detect`` on a bare BGR image (height, width, 3), for callers without a source."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise YoloError(
                f"a frame must be a BGR image of uint8, shape (height, width, 3); "
                f"got {image.dtype} {image.shape}"
            )
        size = (image.shape[1], image.shape[0])
        if self._session is not None:
            blob, box = letterbox(image, self.imgsz)
            xyxy, scores = decode(
                self._session.infer(blob),
                self.person_class,
                box,
                size,
                confidence=self.confidence,
                iou=self.iou,
                max_det=self.max_det,
                end_to_end=self._session.metadata.end_to_end,
            )
            return people(xyxy, scores, size=size)
        result = self._predict(image, imgsz=self.imgsz, classes=[self.person_class])
        boxes = result.boxes
        return people(boxes.xyxy.numpy(), boxes.conf.numpy(), size=size)

    @property
    def settings(self) -> str:
        """How inference runs, for a log line or a benchmark's table."""
        if self._session is not None:
            return self._session.settings
        return f"PyTorch through Ultralytics, {self.threads} threads"

    def _predict(self, image: np.ndarray, imgsz: tuple[int, int] | None, **options: Any) -> Any:
        """One image through Ultralytics' predictor, on the CPU (its ``Results``)."""
        args: dict[str, Any] = {
            "conf": self.confidence,
            "iou": self.iou,
            "max_det": self.max_det,
            "device": "cpu",
            "verbose": False,
            **options,
        }
        if imgsz is not None:
            args["imgsz"] = list(imgsz)
        return self._model.predict(image, **args)[0]


def export_yolo(
    weights: str | os.PathLike[str],
    format: ExportFormat,
    imgsz: int | Sequence[int] = 640,
) -> Path:
    """Export ``.pt`` weights to ONNX or OpenVINO beside them, at a fixed input of
    ``imgsz`` (one side, or (height, width): (480, 640) fits 4:3 cameras without padding),
    and return the path of the export (an ``.onnx`` file or a ``*_openvino_model`` folder)."""
    path = Path(weights)
    if _format(path) != "pt":
        raise YoloError(f"{path}: only .pt weights can be exported")
    if format not in ("onnx", "openvino"):
        raise YoloError(f"export format must be 'onnx' or 'openvino', got {format!r}")
    size = list(_imgsz(imgsz))
    YOLO = _ultralytics()
    model = YOLO(str(path))
    out = model.export(format=format, imgsz=size, device="cpu", simplify=True, dynamic=False)
    return Path(out)


def untrained_yolo(
    path: str | os.PathLike[str],
    config: str = "yolo11n.yaml",
    seed: int = 0,
) -> Path:
    """Save to ``path`` (a ``.pt``) a detection model that Ultralytics builds from one of its
    own YAML configs, with COCO's class names, for tests and speed measurements: nothing is
    downloaded, so its boxes mean nothing about people.

    As built, such a model scores every place alike (its activations fade through the
    untrained layers), which would leave nothing for a test to tell apart. Its batch norms
    therefore take their statistics from the two photos Ultralytics ships, and its class
    biases favour ``person``: the scores then vary with the image, over a few dozen classes
    with person the most frequent, while the weights stay random (seeded by ``seed``).
    """
    import cv2
    import torch

    YOLO = _ultralytics()
    from ultralytics.utils import ASSETS, ROOT, YAML

    out = Path(path)
    if out.suffix != ".pt":
        raise YoloError(f"{out}: an untrained model is saved as a .pt file")
    torch.manual_seed(seed)
    model = YOLO(config)
    if model.task != "detect":
        raise YoloError(f"{config}: a {model.task!r} model; a detection model is needed")
    net = model.model
    net.names = YAML.load(ROOT / "cfg/datasets/coco.yaml")["names"]
    photos = []
    for name in ("bus.jpg", "zidane.jpg"):
        rgb = cv2.resize(cv2.imread(str(ASSETS / name)), (640, 640))[:, :, ::-1]
        photos.append(torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0).float())
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.reset_running_stats()
                layer.momentum = None  # a plain mean over the calibration batch
        net.train()
        net(torch.stack(photos))
        net.eval()
        for branch in net.model[-1].cv3:  # the last layer of each scale's class branch
            branch[-1].bias.fill_(-5.0)
            branch[-1].bias[0] = -1.0
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out
