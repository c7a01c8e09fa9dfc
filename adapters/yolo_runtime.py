"""Exported YOLO models run by sessions the adapter owns: ONNX Runtime and OpenVINO.

Ultralytics' predictor runs an exported model with each runtime's defaults, which suit a
machine that does nothing else: ONNX Runtime's threads spin while they wait for work, and
OpenVINO computes in bfloat16 on a CPU that has it. A store's machine decodes, tracks and
publishes beside the detector, so the sessions here are made for a shared CPU: a fixed
number of threads (the cores given), no spinning, every graph optimisation; OpenVINO with
a latency or throughput hint and the precision asked for (f32 unless told otherwise).

Around the session, the work Ultralytics' predictor did: the letterbox (the frame scaled to
fit the network's input, the rest filled with grey 114), and the decoding of the raw
output (one column per anchor: box centre, size and a score per class; or, for models
exported end to end, boxes already suppressed) into person boxes in the frame's pixels,
with non-maximum suppression by OpenCV. A box is a person when ``person`` is its best
class, as in Ultralytics, so the boxes agree with the ``.pt`` path's.

The class names, the input size and the task come from the metadata Ultralytics writes
into every export (the ONNX model's properties, ``metadata.yaml`` beside an OpenVINO
model); a model without them is refused, since its person class could not be known.
"""

from __future__ import annotations

import ast
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import yaml

__all__ = [
    "HINTS",
    "PRECISIONS",
    "ExportError",
    "ExportedModel",
    "Letterbox",
    "Precision",
    "available_cores",
    "decode",
    "letterbox",
    "load_exported",
]

Precision = Literal["f32", "bf16", "f16"]
Hint = Literal["latency", "throughput"]
PRECISIONS: tuple[str, ...] = ("f32", "bf16", "f16")
HINTS: tuple[str, ...] = ("latency", "throughput")

PAD_VALUE = 114  # Ultralytics' letterbox grey
MAX_CANDIDATES = 30_000  # boxes handed to suppression at most (Ultralytics' max_nms)


class ExportError(ValueError):
    """An exported model that cannot be used here, said with its path."""


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was brought to the network's input: scaled by ``gain``, then padded by
    ``left`` and ``top`` pixels (and the rest on the other sides)."""

    gain: float
    left: int
    top: int


def letterbox(image: npt.NDArray[np.uint8], size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """``image`` (BGR, height x width x 3) as the network's input of ``size`` (height,
    width): an NCHW float32 tensor of RGB in [0, 1], scaled to fit and centred on grey, the
    way Ultralytics' ``LetterBox`` does it (so the boxes agree with its)."""
    h, w = image.shape[:2]
    th, tw = size
    gain = min(th / h, tw / w)
    nw, nh = round(w * gain), round(h * gain)
    if (nw, nh) != (w, h):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (tw - nw) / 2, (th - nh) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
    blob = cv2.dnn.blobFromImage(image, scalefactor=1 / 255, swapRB=True)
    return blob, Letterbox(gain, left, top)


def decode(
    output: np.ndarray,
    person: int,
    box: Letterbox,
    frame: tuple[int, int],
    *,
    confidence: float,
    iou: float,
    max_det: int,
    end_to_end: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (n x 4, x1 y1 x2 y2 in the frame's pixels, clipped to ``frame``'s
    (width, height)) and their scores, best first, from one image's raw output.

    A raw output is (4 + classes, anchors): centre x, centre y, width, height in input
    pixels, then each class's score. An anchor is a candidate when ``person`` is its best
    class and its score exceeds ``confidence``; candidates overlapping a better one by more
    than ``iou`` are suppressed. An end-to-end output is (boxes, 6): x1 y1 x2 y2, score,
    class, already suppressed by the network.
    """
    out = np.asarray(output, dtype=np.float32)
    if end_to_end:
        keep = (out[:, 5] == person) & (out[:, 4] > confidence)
        xyxy, scores = out[keep, :4].copy(), out[keep, 4].copy()
        order = np.argsort(-scores, kind="stable")[:max_det]
        xyxy, scores = xyxy[order], scores[order]
    else:
        classes = out[4:]
        scores = classes[person]
        candidate = scores > confidence
        if candidate.any():
            candidate[candidate] = scores[candidate] >= classes[:, candidate].max(axis=0)
        idx = np.flatnonzero(candidate)
        if len(idx) > MAX_CANDIDATES:
            idx = idx[np.argsort(-scores[idx], kind="stable")[:MAX_CANDIDATES]]
        cx, cy, bw, bh = out[:4, idx]
        scores = scores[idx]
        xywh = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), confidence, iou, top_k=max_det)
        kept = np.asarray(kept, dtype=int).reshape(-1)[:max_det]
        xywh, scores = xywh[kept], scores[kept]
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    xyxy[:, [0, 2]] -= box.left
    xyxy[:, [1, 3]] -= box.top
    xyxy /= box.gain
    w, h = frame
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
    return xyxy.astype(np.float32), scores.astype(np.float32)


@dataclass(frozen=True)
class Metadata:
    """What Ultralytics writes into an export: the class names, the input and the task."""

    names: dict[int, str]
    imgsz: tuple[int, int]
    task: str
    end_to_end: bool


def _metadata(raw: dict[str, Any], path: Path) -> Metadata:
    """The export's metadata from its properties (strings in ONNX, YAML values beside an
    OpenVINO model); names, imgsz and task are required."""

    def value(key: str) -> Any:
        v = raw.get(key)
        if isinstance(v, str):
            try:
                return ast.literal_eval(v)  # literals only: nothing is run
            except (ValueError, SyntaxError):
                return v
        return v

    names, imgsz, task = value("names"), value("imgsz"), raw.get("task")
    if not isinstance(names, dict) or not isinstance(imgsz, list | tuple) or not task:
        raise ExportError(
            f"{path}: no Ultralytics metadata (class names, input size, task) in the model; "
            "export it with Ultralytics (`yolo export format=onnx` or `format=openvino`)"
        )
    if len(imgsz) != 2 or not all(isinstance(s, int) and s > 0 for s in imgsz):
        raise ExportError(f"{path}: the metadata's input size {imgsz!r} is not (height, width)")
    e2e = value("end2end")
    return Metadata(
        names={int(k): str(v) for k, v in names.items()},
        imgsz=(int(imgsz[0]), int(imgsz[1])),
        task=str(task),
        end_to_end=bool(e2e) if isinstance(e2e, bool) else str(e2e).lower() == "true",
    )


class ExportedModel(ABC):
    """One exported model loaded into a session; ``infer`` takes an NCHW input and gives
    the raw output of the first image. Safe to call from several threads at once."""

    format: str
    metadata: Metadata
    settings: str  # how the session was made, for a log line or a benchmark's table

    @abstractmethod
    def infer(self, blob: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeModel(ExportedModel):
    """An ``.onnx`` file in an ONNX Runtime session for a shared CPU."""

    format = "onnx"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads that wait for work sleep instead of spinning: the cores are shared with
        # decoding and tracking (and, in a store, other cameras' detectors).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # a corrupt or foreign file: ONNX Runtime's own exceptions
            raise ExportError(f"{path}: ONNX Runtime cannot load it: {e}") from e
        self.metadata = _metadata(self._session.get_modelmeta().custom_metadata_map, path)
        self._input = self._session.get_inputs()[0].name
        self.settings = f"ONNX Runtime, {threads} threads, no spinning, all optimisations"

    def infer(self, blob: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: blob})[0][0]


class OpenVinoModel(ExportedModel):
    """An OpenVINO folder (``*_openvino_model``) compiled for the CPU."""

    format = "openvino"

    def __init__(self, path: Path, threads: int, precision: Precision, hint: Hint) -> None:
        import openvino as ov

        xml = sorted(path.glob("*.xml"))
        meta_file = path / "metadata.yaml"
        if not xml:
            raise ExportError(f"{path}: no OpenVINO model (.xml) in the folder")
        try:
            raw = yaml.safe_load(meta_file.read_text()) if meta_file.exists() else {}
        except yaml.YAMLError as e:
            raise ExportError(f"{meta_file}: not YAML: {e}") from e
        self.metadata = _metadata(raw if isinstance(raw, dict) else {}, path)
        config = {
            "PERFORMANCE_HINT": hint.upper(),
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": precision,
            "NUM_STREAMS": 1,
        }
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(xml[0]), "CPU", config)
        except Exception as e:  # OpenVINO's own exceptions: a corrupt or foreign model
            raise ExportError(f"{path}: OpenVINO cannot load it: {e}") from e
        self._local = threading.local()  # an infer request per calling thread
        self.settings = f"OpenVINO, {threads} threads, {precision}, {hint} hint"

    def infer(self, blob: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return np.array(request.infer({0: blob})[0][0])


_loaded: dict[tuple[str, str, int, str, str], ExportedModel] = {}
_lock = threading.Lock()


def load_exported(
    path: Path,
    format: str,
    *,
    threads: int | None = None,
    precision: Precision = "f32",
    hint: Hint = "latency",
) -> ExportedModel:
    """The session for ``path``, made once per process and setting: a store's cameras that
    use one model share one session (and its threads) rather than load it each."""
    n = threads or available_cores()
    key = (str(path.resolve()), format, n, precision, hint)
    with _lock:
        model = _loaded.get(key)
        if model is None:
            if format == "onnx":
                model = OnnxRuntimeModel(path, n)
            elif format == "openvino":
                model = OpenVinoModel(path, n, precision, hint)
            else:
                raise ExportError(f"{path}: {format!r} is not an exported format here")
            _loaded[key] = model
        return model
