"""Frames per second of each person detector at 640x480 on this CPU, side by side in one run.

    .venv/bin/python bench/vision_fps.py [--weights yolo11n.pt] [--frames 150] \\
        [--detector adapters.some_module:SomeDetector ...] [--only onnx]

The frames are a rendered walk through the example convenience store (``cam-front-west``,
six people), brought to 640x480, or the first frames of ``--video``. YOLO runs three ways
from one set of weights: PyTorch, ONNX Runtime and OpenVINO, the last two exported at
480x640 (the frame, without letterbox padding, as the PyTorch path's own letterbox gives
it). Without ``--weights`` the model is yolo11n built untrained from Ultralytics' YAML:
the same network and the same work per frame as trained weights, except non-maximum
suppression, which sees other candidate boxes from random weights (the mean number of boxes
kept per frame is printed for that reason; ``--confidence`` sets the threshold).

Any other detector joins with ``--detector module:Class`` (a class built without
arguments that follows ``adapters.detection.Detector``); the OpenCV detectors (MOG2, HOG)
are listed in ``OPENCV_DETECTORS`` below and join by themselves once they exist.
Detectors with state (a background model) see the frames in order, from the first. The
detectors take the frames in rounds, so a load from elsewhere on the machine falls on all
alike; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.detection import Detector, Frame  # noqa: E402
from adapters.yolo import YoloDetector, export_yolo, untrained_yolo  # noqa: E402

WIDTH, HEIGHT = 640, 480

OPENCV_DETECTORS: list[tuple[str, str]] = [
    # (label, "module:Class"): the hook for the OpenCV detectors of the same issue. A name
    # that does not import yet is skipped with a note, so this list can be filled before
    # they land (e.g. ("MOG2", "adapters.background:BackgroundDetector")).
]


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "-uno") else "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"Python {platform.python_version()}"]
    for package in ("torch", "ultralytics-opencv-headless", "onnxruntime", "openvino"):
        try:
            out.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            out.append(f"{package} missing")
    out.append(f"OpenCV {cv2.__version__}")
    return ", ".join(out)


def rendered_frames(n: int, workdir: Path) -> list[np.ndarray]:
    from core.layout import load_layout
    from simulator.render import Person, RenderOptions, render_camera

    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    start = [(1.2, 1.3), (2.5, 1.9), (2.2, 1.0), (3.0, 1.4), (1.5, 2.0), (1.0, 1.0)]
    fps = layout.camera("cam-front-west").fps

    def walk():
        for i in range(n):
            t = i / fps
            yield t, [Person(f"p{k}", x + 0.3 * t, y + 0.1 * t) for k, (x, y) in enumerate(start)]

    stats = render_camera(
        layout, "cam-front-west", walk(), workdir / "walk.mp4", workdir / "walk.gt.txt",
        RenderOptions(),
    )  # fmt: skip
    return video_frames(stats.video_path, n)


def video_frames(path: Path, n: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(image, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
    capture.release()
    if not frames:
        raise SystemExit(f"{path}: no frames could be read")
    return frames


def as_frames(images: list[np.ndarray]) -> list[Frame]:
    start = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    return [
        Frame(image=image, number=i + 1, offset_s=i / 15, at=start, source="bench")
        for i, image in enumerate(images)
    ]


def load(spec: str) -> Callable[[], Detector]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class Tally:
    """One detector's measurements, frame by frame."""

    detector: Detector
    wall: list[float] = field(default_factory=list)  # seconds per frame
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per frame, all threads
    boxes: int = 0

    def run(self, frame: Frame, count: bool) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        found = self.detector.detect(frame)
        if count:
            self.wall.append(time.perf_counter() - wall)
            self.cpu.append(time.process_time() - cpu)
            self.boxes += len(found)


def measure(detectors: dict[str, Detector], frames: list[Frame], warmup: int) -> dict[str, Tally]:
    """Every detector on every frame, in rounds (frame 1 through each, then frame 2...), so
    that a load from elsewhere on the machine falls on all alike; the first ``warmup``
    frames are not counted."""
    tallies = {label: Tally(d) for label, d in detectors.items()}
    for i, frame in enumerate(frames):
        for tally in tallies.values():
            tally.run(frame, count=i >= warmup)
    return tallies


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="YOLO .pt weights (default: untrained)")
    parser.add_argument("--frames", type=int, default=150, help="frames measured per detector")
    parser.add_argument("--warmup", type=int, default=10, help="frames run first, not counted")
    parser.add_argument("--video", type=Path, help="take the frames from this video instead")
    parser.add_argument(
        "--confidence", type=float,
        help="YOLO score threshold (default: 0.25 for --weights; 0.5 untrained, which keeps "
        "about as many boxes as there are people in the rendered walk)",
    )  # fmt: skip
    parser.add_argument(
        "--detector", action="append", default=[], metavar="MODULE:CLASS",
        help="another detector to measure (repeatable)",
    )  # fmt: skip
    parser.add_argument("--only", help="measure only detectors whose label contains this")
    args = parser.parse_args()

    print(f"vision_fps: commit {commit()}")
    print(f"machine: {machine()}")
    print(f"{versions()}; torch threads: {torch_threads()}")

    with tempfile.TemporaryDirectory(prefix="vision-fps-") as tmp:
        workdir = Path(tmp)
        n = args.warmup + args.frames
        images = video_frames(args.video, n) if args.video else rendered_frames(n, workdir)
        frames = as_frames(images)
        source = args.video or "a rendered walk, cam-front-west of the convenience store"
        print(f"frames: {len(frames)} of {WIDTH}x{HEIGHT} from {source}")

        if args.confidence is None:
            args.confidence = 0.25 if args.weights else 0.5
        if args.weights:
            weights = workdir / args.weights.name
            shutil.copy(args.weights, weights)  # the exports go beside it, here
            named = str(args.weights)
        else:
            weights = untrained_yolo(workdir / "yolo11n-untrained.pt")
            named = "yolo11n built untrained from Ultralytics' YAML"
        print(f"YOLO weights: {named}; confidence {args.confidence}")

        detectors: list[tuple[str, Callable[[], Detector]]] = []
        for label, spec in [*OPENCV_DETECTORS, *((s, s) for s in args.detector)]:
            try:
                detectors.append((label, load(spec)))
            except (ImportError, AttributeError) as e:
                print(f"  {label}: skipped, {spec} does not import ({e})")
        exports: dict[str, Path] = {"pt": weights}
        for fmt in ("onnx", "openvino"):
            if args.only and args.only not in f"YOLO {fmt}":
                continue
            t = time.perf_counter()
            exports[fmt] = export_yolo(weights, fmt, (HEIGHT, WIDTH))  # type: ignore[arg-type]
            print(f"  exported to {fmt} in {time.perf_counter() - t:.1f} s")
        labels = {"pt": "YOLO PyTorch", "onnx": "YOLO ONNX Runtime", "openvino": "YOLO OpenVINO"}
        for fmt, path in exports.items():
            detectors.append(
                (labels[fmt], lambda p=path: YoloDetector(p, confidence=args.confidence))
            )

        chosen = {
            label: build()
            for label, build in detectors
            if not args.only or args.only.lower() in label.lower()
        }
        print(f"load average before: {load_average()}")
        tallies = measure(chosen, frames, args.warmup)
        print(f"load average after: {load_average()}")
        print(
            f"\n{'detector':20} {'frames/s':>9} {'ms/frame p50':>13} {'p95':>6} "
            f"{'CPU ms/frame':>13} {'boxes/frame':>12}"
        )
        results: dict[str, float] = {}
        for label, t in tallies.items():
            n = len(t.wall)
            results[label] = n / sum(t.wall)
            p50, p95 = (1000 * x for x in np.percentile(t.wall, [50, 95]))
            cpu = 1000 * sum(t.cpu) / n
            print(
                f"{label:20} {results[label]:9.1f} {p50:13.1f} {p95:6.1f} {cpu:13.1f} "
                f"{t.boxes / n:12.1f}"
            )

        base = results.get("YOLO PyTorch")
        if base:
            for label in ("YOLO ONNX Runtime", "YOLO OpenVINO"):
                if label in results:
                    print(f"{label} / PyTorch: {results[label] / base:.2f}x (target: at least 2x)")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
