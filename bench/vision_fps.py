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

The OpenCV detectors (MOG2 background subtraction, HOG) run with their defaults beside
them; any other detector joins with ``--detector module:Class`` (a class built without
arguments that follows ``adapters.detection.Detector``).

Each detector runs in a process of its own: PyTorch's OpenMP threads, ONNX Runtime's and
OpenVINO's thread pools each spin a while after their work, and in one process they slow
one another. The processes take the frames in turns of ``--block`` frames (one detector
at a time, so they do not compete), in order from the first frame, so that stateful
detectors (a background model) see a video, and so that a load from elsewhere on the
machine falls on all alike; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.detection import Detector, Frame  # noqa: E402

WIDTH, HEIGHT = 640, 480

OPENCV_DETECTORS: list[tuple[str, str]] = [
    # (label, "module:Class"), each built with its defaults
    ("OpenCV MOG2", "adapters.background:BackgroundSubtraction"),
    ("OpenCV HOG", "adapters.hog:HogPeople"),
]


@dataclass(frozen=True)
class Spec:
    """How a worker builds its detector: a YOLO model (``weights``) or a class by name."""

    label: str
    weights: Path | None = None
    confidence: float = 0.25
    cls: str = ""  # "module:Class", built without arguments

    def build(self) -> Detector:
        if self.weights is not None:
            from adapters.yolo import YoloDetector

            return YoloDetector(self.weights, confidence=self.confidence)
        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(module), name)()


@dataclass
class Tally:
    """One detector's measurements, frame by frame."""

    wall: list[float] = field(default_factory=list)  # seconds per frame
    cpu: list[float] = field(default_factory=list)  # its process's CPU seconds, all threads
    boxes: int = 0


def worker(spec: Spec, frames_file: Path, conn: Connection) -> None:
    """Build the detector, then run the frames asked for, one block at a time, and send back
    (wall s, CPU s, boxes) per frame."""
    try:
        detector = spec.build()
        images = np.load(frames_file)
        start = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
        conn.send("ready")
        while (block := conn.recv()) is not None:
            out = []
            for i in range(*block):
                frame = Frame(
                    image=images[i], number=i + 1, offset_s=i / 15, at=start, source="bench"
                )
                wall, cpu = time.perf_counter(), time.process_time()
                found = detector.detect(frame)
                out.append((time.perf_counter() - wall, time.process_time() - cpu, len(found)))
            conn.send(out)
    except Exception as e:
        conn.send(f"failed: {type(e).__name__}: {e}")


def measure(specs: list[Spec], frames_file: Path, n: int, warmup: int, block: int):
    """Every detector on every frame, in turns of ``block`` frames; the first ``warmup``
    frames are not counted. Detectors that fail to start are reported and left out."""
    context = mp.get_context("spawn")
    running: dict[str, tuple[mp.process.BaseProcess, Connection]] = {}
    for spec in specs:
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(spec, frames_file, child), daemon=True)
        process.start()
        answer = parent.recv()
        if answer != "ready":
            print(f"  {spec.label}: {answer}")
            process.join()
            continue
        running[spec.label] = (process, parent)
    tallies = {label: Tally() for label in running}
    try:
        for first in range(0, n, block):
            for label, (_, conn) in running.items():
                conn.send((first, min(first + block, n)))
                answer = conn.recv()
                if isinstance(answer, str):
                    raise SystemExit(f"{label}: {answer}")
                for k, (wall, cpu, boxes) in enumerate(answer):
                    if first + k >= warmup:
                        tallies[label].wall.append(wall)
                        tallies[label].cpu.append(cpu)
                        tallies[label].boxes += boxes
    finally:
        for process, conn in running.values():
            conn.send(None)
            process.join(timeout=30)
    return tallies


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
    for package in ("torch", "ultralytics", "opencv-python", "onnxruntime", "openvino"):
        try:
            out.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            out.append(f"{package} missing")
    out.append(f"OpenCV {cv2.__version__}")
    return ", ".join(out)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="YOLO .pt weights (default: untrained)")
    parser.add_argument("--frames", type=int, default=150, help="frames measured per detector")
    parser.add_argument("--warmup", type=int, default=10, help="frames run first, not counted")
    parser.add_argument("--block", type=int, default=10, help="frames per detector per turn")
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

    from adapters.yolo import export_yolo, untrained_yolo

    print(f"vision_fps: commit {commit()}")
    print(f"machine: {machine()}")
    print(versions())

    with tempfile.TemporaryDirectory(prefix="vision-fps-") as tmp:
        workdir = Path(tmp)
        n = args.warmup + args.frames
        images = video_frames(args.video, n) if args.video else rendered_frames(n, workdir)
        n = len(images)
        frames_file = workdir / "frames.npy"
        np.save(frames_file, np.stack(images))
        source = args.video or "a rendered walk, cam-front-west of the convenience store"
        print(f"frames: {n} of {WIDTH}x{HEIGHT} from {source}")

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

        specs = [Spec(label, cls=cls) for label, cls in OPENCV_DETECTORS]
        specs += [Spec(cls, cls=cls) for cls in args.detector]
        specs.append(Spec("YOLO PyTorch", weights, args.confidence))
        for fmt, label in (("onnx", "YOLO ONNX Runtime"), ("openvino", "YOLO OpenVINO")):
            if args.only and args.only.lower() not in label.lower():
                continue
            t = time.perf_counter()
            path = export_yolo(weights, fmt, (HEIGHT, WIDTH))  # type: ignore[arg-type]
            print(f"  exported to {fmt} in {time.perf_counter() - t:.1f} s")
            specs.append(Spec(label, path, args.confidence))
        specs = [s for s in specs if not args.only or args.only.lower() in s.label.lower()]

        print(f"load average before: {load_average()}", flush=True)
        tallies = measure(specs, frames_file, n, args.warmup, args.block)
        print(f"load average after: {load_average()}")

    print(
        f"\n{'detector':20} {'frames/s':>9} {'ms/frame p50':>13} {'p95':>6} "
        f"{'CPU ms/frame':>13} {'boxes/frame':>12}"
    )
    results: dict[str, float] = {}
    for label, t in tallies.items():
        k = len(t.wall)
        results[label] = k / sum(t.wall)
        p50, p95 = (1000 * x for x in np.percentile(t.wall, [50, 95]))
        print(
            f"{label:20} {results[label]:9.1f} {p50:13.1f} {p95:6.1f} "
            f"{1000 * sum(t.cpu) / k:13.1f} {t.boxes / k:12.1f}"
        )
    base = results.get("YOLO PyTorch")
    for label in ("YOLO ONNX Runtime", "YOLO OpenVINO"):
        if base and label in results:
            print(f"{label} / PyTorch: {results[label] / base:.2f}x (target: at least 2x)")


if __name__ == "__main__":
    main()
