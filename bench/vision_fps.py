"""Frames per second at 640x480 on this CPU: each person detector, the whole adapter with
each, and a large store's cameras in real time, side by side in one run.

    nice .venv/bin/python bench/vision_fps.py [--weights yolo11n.pt] [--frames 150] \\
        [--adapter-frames 150] [--capacity-s 60] [--parts detectors,adapter,capacity,faces] \\
        [--detector adapters.some_module:SomeDetector ...] [--only onnx]

**Detectors.** The frames are a rendered walk through the example convenience store
(``cam-front-west``, six people), brought to 640x480, or the first frames of ``--video``.
YOLO runs from one set of weights: PyTorch (through Ultralytics), and exported at 480x640
(the frame, without letterbox padding, as the PyTorch path's own letterbox gives it) to
ONNX Runtime and to OpenVINO (f32 and bf16), each in the adapter's own session
(``adapters/yolo_runtime.py``). Without ``--weights`` the model is yolo11n built untrained
from Ultralytics' YAML: the same network and the same work per frame as trained weights,
except non-maximum suppression, which sees other candidate boxes from random weights (the
mean number of boxes kept per frame is printed for that reason; ``--confidence`` sets the
threshold). The OpenCV detectors (MOG2 background subtraction, HOG) run with their
defaults beside them; any other detector joins with ``--detector module:Class`` (a class
built without arguments that follows ``adapters.detection.Detector``). Each detector runs
in a process of its own (thread pools that spin after their work would slow one another
in one process), and the processes take the frames in turns of ``--block`` frames, in
order, so that stateful detectors see a video and a load from elsewhere on the machine
falls on all alike. Ratios are to the PyTorch path, in frames/s and in CPU time a frame.

**The whole adapter.** One door camera of the large example store (``cam-A1`` of
``supermarket.yaml``: 640x480, 10 frames/s, every frame detected), a rendered clip of
people walking under it, read from the file (decoded), detected, tracked, projected onto
the floor, turned into events and published through the outbox to a real nats-server
that this script starts; each detector in a process of its own, one after the other.

**Capacity.** The large example store (64 cameras: 6 at a door or the gates detected at
10 frames/s, 58 at one frame every 4 s) on this machine with MOG2, for ``--capacity-s``
seconds of real time: each camera is a live source that delivers its rendered clip at
10 frames/s by the wall clock, decoding every frame as a stream must, in a loop; the
adapter (``aisle adapt --all``'s pipeline: per-camera reader and detector threads, the
store's tracking, floor and hand-off, the outbox, nats-server) takes what it can. It is in
real time when it processes the frames the layout asks for as they come: the frames
processed a second against those required, the frames dropped because the adapter was
behind, and how late the detections came after their frames were due.

**Hands.** A shelf camera of the example store (``shelfcam-g1-east``, 640x480, 15
frames/s): a rendered clip of eight reaches, two of them at once, read back from the file;
MediaPipe hands (``adapters/shelfcam.py``) at model complexity 0 and 1: the time a frame,
the hands found against the arms drawn, and the whole shelf watch (hands, the slots' looks,
the reaches) a frame.

**Faces.** The entrance camera's face match (``adapters/faces.py``) on real photos in
640x480 frames: the faces found, the time to find them, and the time to describe each.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.detection import Detector, Frame  # noqa: E402
from adapters.sources import FrameSource  # noqa: E402
from bench.stamp import print_stamp  # noqa: E402

WIDTH, HEIGHT = 640, 480
STORES = ROOT / "examples" / "stores"
LARGE = STORES / "supermarket.yaml"
DOOR_CAMERA = "cam-A1"
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PARTS = ("detectors", "adapter", "capacity", "faces", "hands")

OPENCV_DETECTORS: list[tuple[str, str]] = [
    # (label, "module:Class"), each built with its defaults
    ("OpenCV MOG2", "adapters.background:BackgroundSubtraction"),
    ("OpenCV HOG", "adapters.hog:HogPeople"),
]
EXPORTS = [  # (label, format, OpenVINO precision)
    ("YOLO ONNX Runtime", "onnx", "f32"),
    ("YOLO OpenVINO f32", "openvino", "f32"),
    ("YOLO OpenVINO bf16", "openvino", "bf16"),
]
TRACKING = {"OpenCV MOG2": "mog2", "OpenCV HOG": "hog"}  # the rest: YOLO's settings


@dataclass(frozen=True)
class Spec:
    """How a worker builds its detector: a YOLO model (``weights``) or a class by name."""

    label: str
    weights: Path | None = None
    confidence: float = 0.25
    precision: str = "f32"
    cls: str = ""  # "module:Class", built without arguments

    def build(self) -> Detector:
        if self.weights is not None:
            from adapters.yolo import YoloDetector

            return YoloDetector(
                self.weights,
                confidence=self.confidence,
                precision=self.precision,  # type: ignore[arg-type]
            )
        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(module), name)()


@dataclass
class Tally:
    """One detector's measurements, frame by frame."""

    wall: list[float] = field(default_factory=list)  # seconds per frame
    cpu: list[float] = field(default_factory=list)  # its process's CPU seconds, all threads
    boxes: int = 0


# -- the detectors alone -----------------------------------------------------------------------


def worker(spec: Spec, frames_file: Path, conn: Connection) -> None:
    """Build the detector, then run the frames asked for, one block at a time, and send back
    (wall s, CPU s, boxes) per frame."""
    try:
        detector = spec.build()
        images = np.load(frames_file)
        conn.send(("ready", getattr(detector, "settings", "")))
        while (block := conn.recv()) is not None:
            out = []
            for i in range(*block):
                frame = Frame(
                    image=images[i], number=i + 1, offset_s=i / 15, at=START, source="bench"
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
        if not (isinstance(answer, tuple) and answer[0] == "ready"):
            print(f"  {spec.label}: {answer}")
            process.join()
            continue
        if answer[1]:
            print(f"  {spec.label}: {answer[1]}")
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


def report_detectors(tallies: dict[str, Tally]) -> None:
    print(
        f"\n{'detector':20} {'frames/s':>9} {'ms/frame p50':>13} {'p95':>6} "
        f"{'CPU ms/frame':>13} {'boxes/frame':>12} {'x PyTorch fps':>14} {'x PyTorch CPU':>14}"
    )
    fps = {label: len(t.wall) / sum(t.wall) for label, t in tallies.items()}
    cpu = {label: 1000 * sum(t.cpu) / len(t.cpu) for label, t in tallies.items()}
    base = "YOLO PyTorch"
    for label, t in tallies.items():
        k = len(t.wall)
        p50, p95 = (1000 * x for x in np.percentile(t.wall, [50, 95]))
        ratio = ratio_cpu = ""
        if base in fps:
            ratio = f"{fps[label] / fps[base]:.2f}x"
            ratio_cpu = f"{cpu[base] / cpu[label]:.2f}x" if cpu[label] > 0 else "-"
        print(
            f"{label:20} {fps[label]:9.1f} {p50:13.1f} {p95:6.1f} "
            f"{cpu[label]:13.1f} {t.boxes / k:12.1f} {ratio:>14} {ratio_cpu:>14}"
        )
    if base in fps:
        for label, _, _ in EXPORTS:
            if label in fps:
                r = fps[label] / fps[base]
                verdict = "met" if r >= 2 else "MISSED"
                print(f"{label} / PyTorch: {r:.2f}x frames/s (target: at least 2x): {verdict}")


# -- the whole adapter, one camera ---------------------------------------------------------------


def opener(url: str, prefix: str):
    """Fresh logs on connections of their own, as the outbox wants them."""
    from core.config import LogConfig
    from core.jetstream import JetStreamLog, connect

    config = LogConfig(prefix=prefix)

    async def open_():
        nc = await connect(url, name="vision-fps", reconnect=False, timeout_s=5.0)
        return await JetStreamLog.open(nc, config)

    return open_


def floor_settings(label: str, source: str):
    from adapters.cli import TRACKING as BY_KIND
    from adapters.cli import DetectorKind
    from adapters.floor_events import EventSettings
    from adapters.store_floor import FloorSettings
    from adapters.tracking import TrackerSettings

    kind = TRACKING.get(label)
    tracker = BY_KIND[DetectorKind(kind)] if kind else TrackerSettings()
    return FloorSettings(tracker=tracker, events=EventSettings(source=source))


async def publish_all(adapter, outbox_file: Path, url: str, prefix: str):
    from adapters.pipeline import run_adapter
    from core.outbox import Outbox, OutboxConfig

    async with Outbox.open(outbox_file, opener(url, prefix), OutboxConfig()) as outbox:
        return await run_adapter(adapter, outbox)


def adapter_worker(spec: Spec, video: Path, url: str, prefix: str, workdir: Path, conn) -> None:
    """The door camera's clip through the whole adapter with ``spec``'s detector; sends
    (frames, wall s, CPU s, events made, events published)."""
    try:
        from adapters.pipeline import CameraInput, StoreAdapter
        from adapters.sources import source_for_camera
        from core.layout import load_layout

        layout = load_layout(LARGE)
        camera = layout.camera(DOOR_CAMERA)
        built = spec.build()
        first = cv2.VideoCapture(str(video)).read()[1]
        built.detect(Frame(image=first, number=1, offset_s=0, at=START, source="warm-up"))
        detector = Timed(built)
        source = source_for_camera(camera, video, start=START)
        adapter = StoreAdapter(
            layout,
            [CameraInput(camera, source, detector)],
            START,
            floor_settings(spec.label, camera.id),
        )
        wall, cpu = time.perf_counter(), time.process_time()
        done = asyncio.run(publish_all(adapter, workdir / f"{prefix}.outbox", url, prefix))
        took, used = time.perf_counter() - wall, time.process_time() - cpu
        box = done.outbox
        published = box.published if box is not None else 0
        frames = done.total_frames
        events = sum(done.events.values())
        conn.send((frames, took, used, events, published, detector.boxes / max(frames, 1)))
    except Exception as e:
        conn.send(f"failed: {type(e).__name__}: {e}")


def whole_adapter(specs: list[Spec], video: Path, url: str, workdir: Path) -> None:
    context = mp.get_context("spawn")
    print(
        f"\n{'whole adapter':20} {'frames/s':>9} {'CPU ms/frame':>13} {'events':>7} "
        f"{'published':>10} {'boxes/frame':>12} {'x PyTorch fps':>14}"
    )
    base = None
    for k, spec in enumerate(specs):
        parent, child = context.Pipe()
        args = (spec, video, url, f"fps{os.getpid()}x{k}", workdir, child)
        process = context.Process(target=adapter_worker, args=args, daemon=True)
        process.start()
        answer = parent.recv()
        process.join(timeout=60)
        if isinstance(answer, str):
            print(f"{spec.label:20} {answer}")
            continue
        frames, took, used, events, published, boxes = answer
        fps = frames / took
        if spec.label == "YOLO PyTorch":
            base = fps
        ratio = f"{fps / base:.2f}x" if base else ""
        print(
            f"{spec.label:20} {fps:9.1f} {1000 * used / frames:13.1f} {events:7d} "
            f"{published:10d} {boxes:12.1f} {ratio:>14}",
            flush=True,
        )


# -- rendered clips ------------------------------------------------------------------------------


def walkers(camera, n: int, frames: int, seed: int) -> Iterator[tuple[float, list]]:
    """``n`` people walking at a steady pace in straight lines under ``camera``, turning at
    the edges of its view (about 7 m x 5.5 m of floor), ``frames`` frames at its rate."""
    from simulator.render import Person

    rng = np.random.default_rng(seed)
    cx, cy = camera.position[0], camera.position[1]
    lo = np.array([cx - 3.4, cy - 2.5])
    hi = np.array([cx + 3.4, cy + 2.5])
    pos = rng.uniform(lo, hi, (n, 2))
    angle = rng.uniform(0, 2 * math.pi, n)
    speed = rng.uniform(0.8, 1.4, n)
    vel = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]
    heights = rng.uniform(1.55, 1.95, n)
    dt = 1 / camera.fps
    for k in range(frames):
        yield (
            k * dt,
            [
                Person(f"{camera.id}-{i}", float(x), float(y), float(h))
                for i, ((x, y), h) in enumerate(zip(pos, heights, strict=True))
            ],
        )
        pos += vel * dt
        out = (pos < lo) | (pos > hi)
        vel[out] *= -1
        pos = np.clip(pos, lo, hi)


def people_confidence(weights: Path, clip: Path, people: int, frames: int = 10) -> float:
    """The score threshold at which ``weights`` keep about ``people`` person boxes a frame
    on ``clip`` (the median over its first ``frames`` frames of the people-th best score):
    an untrained model's boxes are noise, and the tracking, the floor and the events after
    the detector should have as many of them to follow as there are people."""
    from adapters.yolo import YoloDetector

    detector = YoloDetector(weights, confidence=0.01, max_det=1000)
    capture = cv2.VideoCapture(str(clip))
    scores = []
    for _ in range(frames):
        ok, image = capture.read()
        if not ok:
            break
        found = np.sort(detector.detect_image(image).confidence)[::-1]
        scores.append(float(found[people - 1]) if len(found) >= people else 0.01)
    capture.release()
    return float(np.median(scores))


def render_clip(layout, camera_id: str, people: int, frames: int, out: Path, seed: int) -> Path:
    from simulator.render import RenderOptions, render_camera

    camera = layout.camera(camera_id)
    stats = render_camera(
        layout, camera_id, walkers(camera, people, frames, seed), out, out.with_suffix(".gt.txt"),
        RenderOptions(seed=seed),
    )  # fmt: skip
    assert stats.video_path is not None
    return stats.video_path


# -- capacity: a large store in real time -----------------------------------------------------


class PacedClip(FrameSource):
    """A live camera played from a clip: frames at the camera's rate by the wall clock,
    looped, each decoded as a stream's must be; the frames the layout's rate picks are
    given (anchored at the source's zero, as ``adapters/sources.py`` picks them), until
    ``until`` (monotonic seconds). Records how late each given frame was read.

    Not ``paced``: the same frames as fast as they are taken, as a file's (nothing
    dropped), to measure how much faster than real time the store's work can go."""

    def __init__(self, clip: Path, camera, t0: float, until: float, paced: bool = True) -> None:
        self.live = paced
        self.name = f"{camera.id} (paced {clip.name})"
        self.clip = clip
        self.fps = camera.fps
        every = camera.detect.fps is None and camera.detect.interval_s is None
        self.interval = None if every else camera.detect_interval_s
        self.t0, self.until = t0, until
        self.halt = threading.Event()
        self.given = 0
        self.late: list[float] = []  # seconds behind the frame's due time, at reading

    def __iter__(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.clip))
        n, due = 0, 0.0
        try:
            while not self.halt.is_set():
                offset = n / self.fps
                at = self.t0 + offset
                if at >= self.until:
                    return
                wait = at - time.monotonic()
                if self.live and wait > 0 and self.halt.wait(wait):
                    return
                if not cap.grab():
                    cap.release()
                    cap = cv2.VideoCapture(str(self.clip))
                    if not cap.grab():
                        raise RuntimeError(f"{self.clip}: no frames")
                n += 1
                if self.interval is not None and offset + 1e-6 < due:
                    continue
                if self.interval is not None:
                    due = (math.floor(offset / self.interval + 1e-6) + 1) * self.interval
                ok, image = cap.retrieve()
                if not ok:
                    raise RuntimeError(f"{self.clip}: a frame could not be decoded")
                self.late.append(time.monotonic() - at)
                self.given += 1
                yield Frame(
                    image=image,
                    number=n,
                    offset_s=offset,
                    at=START + timedelta(seconds=offset),
                    source=self.name,
                )
        finally:
            cap.release()

    def close(self) -> None:
        self.halt.set()

    def interrupt(self) -> None:
        self.halt.set()


class Timed:
    """A detector that counts the boxes it gives and notes, for each frame, how late its
    people were found after the frame was due (the wall-clock time at which the camera
    delivered it, for a paced source)."""

    def __init__(self, inner: Detector, t0: float = 0.0) -> None:
        self.inner, self.t0 = inner, t0
        self.late: list[float] = []
        self.boxes = 0

    def detect(self, frame: Frame):
        found = self.inner.detect(frame)
        self.late.append(time.monotonic() - (self.t0 + frame.offset_s))
        self.boxes += len(found)
        return found


def capacity_worker(
    clips: dict[str, str], seconds: float, url: str, workdir: Path, paced: bool, conn
) -> None:
    try:
        from adapters.background import BackgroundSubtraction
        from adapters.pipeline import CameraInput, StoreAdapter
        from core.layout import load_layout

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # FFmpeg's lock notice
        layout = load_layout(LARGE)
        t0 = time.monotonic() + 2.0  # every camera starts together, as with --all
        until = t0 + seconds
        inputs, sources, timed = [], {}, {}
        for camera in layout.cameras:
            sources[camera.id] = PacedClip(Path(clips[camera.id]), camera, t0, until, paced)
            timed[camera.id] = Timed(BackgroundSubtraction("mog2"), t0)
            inputs.append(CameraInput(camera, sources[camera.id], timed[camera.id]))
        adapter = StoreAdapter(layout, inputs, START, floor_settings("OpenCV MOG2", "floor"))
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic()
        prefix = "capacity" if paced else "unpaced"
        done = asyncio.run(publish_all(adapter, workdir / f"{prefix}.outbox", url, prefix))
        took = time.monotonic() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rows = []
        for camera in layout.cameras:
            src, det = sources[camera.id], timed[camera.id]
            rows.append(
                (
                    camera.id,
                    1.0 / camera.detect_interval_s,
                    src.given,
                    done.frames[camera.id],
                    done.dropped.get(camera.id, 0),
                    det.late,
                    max(src.late, default=0.0),
                )
            )
        box = done.outbox
        conn.send((rows, took, cpu, sum(done.events.values()), box.published if box else 0))
    except Exception as e:
        import traceback

        conn.send(f"failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")


def run_capacity(clips: dict[str, Path], seconds: float, url: str, workdir: Path, paced: bool):
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    args = ({k: str(v) for k, v in clips.items()}, seconds, url, workdir, paced, child)
    process = context.Process(target=capacity_worker, args=args, daemon=True)
    process.start()
    answer = parent.recv()
    process.join(timeout=120)
    return answer


def headroom(clips: dict[str, Path], seconds: float, url: str, workdir: Path) -> None:
    """The same store's frames as fast as the adapter takes them: how many times real time."""
    answer = run_capacity(clips, seconds, url, workdir, paced=False)
    if isinstance(answer, str):
        print(f"as fast as it goes: {answer}")
        return
    rows, took, cpu, events, published = answer
    processed = sum(r[3] for r in rows)
    print(
        f"as fast as it goes (the same {seconds:.0f} s of the 64 cameras, nothing dropped): "
        f"{processed} frames in {took:.1f} s = {seconds / took:.2f}x real time; "
        f"CPU {cpu:.1f} s = {cpu / seconds:.2f} cores for each second of the store; "
        f"{events} events, {published} published"
    )


def capacity(clips: dict[str, Path], seconds: float, url: str, workdir: Path) -> None:
    answer = run_capacity(clips, seconds, url, workdir, paced=True)
    if isinstance(answer, str):
        print(f"capacity: {answer}")
        return
    rows, took, cpu, events, published = answer
    required = sum(rate for _, rate, *_ in rows)
    print(
        f"\ncapacity: {len(rows)} cameras of {LARGE.name}, MOG2, {seconds:.0f} s of real time "
        f"(the run took {took:.1f} s with the outbox's flush)"
    )
    print(
        f"{'cameras':28} {'required/s':>10} {'given/s':>8} {'processed/s':>11} {'dropped':>8} "
        f"{'late p50':>9} {'p95':>6} {'max':>6} {'read late max':>14}"
    )
    groups = {
        "door and gates (10 frames/s)": [r for r in rows if r[1] > 1],
        "the rest (a frame every 4 s)": [r for r in rows if r[1] <= 1],
        "all": rows,
    }
    met = True
    for name, group in groups.items():
        n_req = sum(r[1] for r in group)
        given = sum(r[2] for r in group) / seconds
        processed = sum(r[3] for r in group) / seconds
        dropped = sum(r[4] for r in group)
        late = np.concatenate([np.asarray(r[5]) for r in group]) if group else np.zeros(1)
        p50, p95, worst = (float(x) for x in np.percentile(late, [50, 95, 100]))
        read_late = max(r[6] for r in group)
        print(
            f"{name:28} {n_req:10.2f} {given:8.2f} {processed:11.2f} {dropped:8d} "
            f"{p50:9.3f} {p95:6.3f} {worst:6.3f} {read_late:14.3f}"
        )
        if name == "all":
            met = processed >= 0.99 * n_req and dropped == 0 and worst < 1.0
    print(
        f"process CPU: {cpu:.1f} s in {took:.1f} s = {cpu / took:.2f} of {os.cpu_count()} cores; "
        f"{events} events made, {published} published to nats-server"
    )
    print(
        f"target: {required:.1f} frames/s processed in real time (at least 99% of them, none "
        f"dropped, each detected within 1 s of its frame): {'met' if met else 'MISSED'}"
    )


# -- the run -------------------------------------------------------------------------------------


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

    layout = load_layout(STORES / "convenience.yaml")
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
    parser.add_argument("--video", type=Path, help="take the detectors' frames from this video")
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
    parser.add_argument(
        "--adapter-frames", type=int, default=150,
        help="frames of the door camera's clip through the whole adapter, per detector",
    )  # fmt: skip
    parser.add_argument(
        "--capacity-s", type=float, default=60.0, help="seconds of real time for the capacity"
    )
    parser.add_argument(
        "--people", type=int, default=4, help="people walking under each camera in the clips"
    )
    parser.add_argument(
        "--clips", type=Path,
        help="keep the capacity's rendered clips in this folder and use those found there "
        "(the same clips for runs to compare; rendering them takes minutes)",
    )  # fmt: skip
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"which parts to run, of {','.join(PARTS)}"
    )
    parser.add_argument("--face-rounds", type=int, default=10, help="frames timed per face case")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= set(PARTS):
        parser.error(f"--parts: {', '.join(sorted(parts - set(PARTS)))}: not one of {PARTS}")

    print_stamp()
    print(versions())

    with tempfile.TemporaryDirectory(prefix="vision-fps-") as tmp:
        workdir = Path(tmp)
        if args.confidence is None:
            args.confidence = 0.25 if args.weights else 0.5
        specs: list[Spec] = [Spec(label, cls=cls) for label, cls in OPENCV_DETECTORS]
        specs += [Spec(cls, cls=cls) for cls in args.detector]
        if parts & {"detectors", "adapter"}:
            from adapters.yolo import export_yolo, untrained_yolo

            if args.weights:
                weights = workdir / args.weights.name
                shutil.copy(args.weights, weights)  # the exports go beside it, here
                named = str(args.weights)
            else:
                weights = untrained_yolo(workdir / "yolo11n-untrained.pt")
                named = "yolo11n built untrained from Ultralytics' YAML"
            print(f"YOLO weights: {named}; confidence {args.confidence}")
            specs.append(Spec("YOLO PyTorch", weights, args.confidence))
            exported: dict[str, Path] = {}
            for label, fmt, precision in EXPORTS:
                if args.only and args.only.lower() not in label.lower():
                    continue
                if fmt not in exported:
                    t = time.perf_counter()
                    exported[fmt] = export_yolo(weights, fmt, (HEIGHT, WIDTH))  # type: ignore[arg-type]
                    print(f"  exported to {fmt} in {time.perf_counter() - t:.1f} s")
                specs.append(Spec(label, exported[fmt], args.confidence, precision))
        specs = [s for s in specs if not args.only or args.only.lower() in s.label.lower()]

        if "detectors" in parts:
            n = args.warmup + args.frames
            images = video_frames(args.video, n) if args.video else rendered_frames(n, workdir)
            n = len(images)
            frames_file = workdir / "frames.npy"
            np.save(frames_file, np.stack(images))
            source = args.video or "a rendered walk, cam-front-west of the convenience store"
            print(f"\ndetectors: {n} frames of {WIDTH}x{HEIGHT} from {source}")
            print(f"load average before: {load_average()}", flush=True)
            tallies = measure(specs, frames_file, n, args.warmup, args.block)
            print(f"load average after: {load_average()}")
            report_detectors(tallies)

        if parts & {"adapter", "capacity"}:
            from core.layout import load_layout
            from core.natsd import EmbeddedNats

            layout = load_layout(LARGE)
            with EmbeddedNats(workdir / "nats") as server:
                if "adapter" in parts:
                    clip = render_clip(
                        layout, DOOR_CAMERA, args.people, args.adapter_frames,
                        workdir / "door.mp4", seed=1,
                    )  # fmt: skip
                    print(
                        f"\nwhole adapter: {args.adapter_frames} frames of {DOOR_CAMERA} "
                        f"({WIDTH}x{HEIGHT}, {args.people} people walking), to nats-server"
                    )
                    on_clip = specs
                    if not args.weights and any(s.weights for s in specs):
                        # untrained: a threshold that keeps about as many boxes as people
                        conf = people_confidence(weights, clip, args.people)
                        print(f"YOLO confidence {conf:.3f} here: {args.people} boxes a frame")
                        on_clip = [replace(s, confidence=conf) if s.weights else s for s in specs]
                    print(f"load average before: {load_average()}", flush=True)
                    whole_adapter(on_clip, clip, server.url, workdir)
                    print(f"load average after: {load_average()}")
                if "capacity" in parts:
                    t = time.perf_counter()
                    folder = args.clips or workdir
                    folder.mkdir(parents=True, exist_ok=True)
                    clips = {}
                    for k, c in enumerate(layout.cameras):
                        clip = folder / f"{c.id}.mp4"
                        clips[c.id] = clip if clip.exists() else render_clip(
                            layout, c.id, args.people, 100, clip, seed=k
                        )  # fmt: skip
                    print(
                        f"\n{len(clips)} clips of 10 s ({args.people} people walking under each "
                        f"camera) in {folder}, rendered or found in {time.perf_counter() - t:.0f} s"
                    )
                    print(f"load average before: {load_average()}", flush=True)
                    capacity(clips, args.capacity_s, server.url, workdir)
                    print(f"load average between: {load_average()}", flush=True)
                    headroom(clips, args.capacity_s, server.url, workdir)
                    print(f"load average after: {load_average()}")

        if "faces" in parts:
            faces(args.face_rounds)
        if "hands" in parts:
            hands(workdir)


def faces(rounds: int) -> None:
    """The entrance camera's face match at 640x480 on real photos (scikit-image's
    astronaut, matplotlib's Grace Hopper): faces found a frame, the time to find them, and
    the time to describe each (dlib's landmarks and ResNet descriptor), per face detector."""
    import matplotlib
    import skimage.data

    from adapters.faces import FaceDetector, FaceFinder

    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    hopper = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    one = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    one[:, 64 : 64 + 512] = astronaut[16 : 16 + HEIGHT]
    two = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    two[80:400, :320] = cv2.resize(astronaut, (320, 320))
    two[80:400, 320:] = cv2.resize(hopper[:512], (320, 320))
    print(f"\nfaces: {WIDTH}x{HEIGHT} frames, {rounds} rounds each")
    print(f"load average before: {load_average()}", flush=True)
    print(f"{'detector':<10} {'frame':<10} {'faces':>5} {'find ms':>8} {'describe ms/face':>17}")
    for detector in FaceDetector:
        finder = FaceFinder(detector)
        for name, frame in (("one face", one), ("two faces", two)):
            found = len(finder.find(frame))  # warm
            t = time.perf_counter()
            for _ in range(rounds):
                finder.boxes(frame)
            find = (time.perf_counter() - t) / rounds
            t = time.perf_counter()
            for _ in range(rounds):
                finder.find(frame)
            total = (time.perf_counter() - t) / rounds
            per_face = (total - find) / found if found else float("nan")
            print(
                f"{detector.value:<10} {name:<10} {found:>5} {find * 1000:>8.0f} "
                f"{per_face * 1000:>17.0f}"
            )
    print(f"load average after: {load_average()}")


def hands(workdir: Path) -> None:
    """MediaPipe hands on a rendered shelf-camera clip: ms a frame, hands found a frame
    against the arms drawn, per model complexity; then the whole shelf watch a frame."""
    from datetime import UTC, datetime

    from adapters.shelfcam import HandFinder, ShelfWatch, protobuf_compat

    protobuf_compat()
    import mediapipe

    from core.layout import load_layout
    from simulator.shelfcam import Reach, render_shelf_camera

    layout = load_layout(STORES / "convenience.yaml")
    cam_id = "shelfcam-g1-east"
    skus = [v.sku for v in layout.shelf_camera(cam_id).slots]
    spots = [(3.1, 3.2), (3.1, 4.05), (3.1, 4.8), (3.1, 5.3)]
    reaches = [
        Reach(f"v-{k}", skus[k % 4], 0.5 + 1.1 * k, "picked" if k % 2 else "none", spots[k % 4])
        for k in range(6)
    ] + [
        Reach("v-6", skus[0], 8.0, "none", spots[0]),
        Reach("v-7", skus[2], 8.2, "none", spots[2]),
    ]
    video = workdir / "shelf.avi"
    truth = render_shelf_camera(layout, cam_id, reaches, video, seed=1)
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    drawn = sum(sum(t.first <= f <= t.last for t in truth) for f in range(len(frames)))
    print(
        f"\nhands: mediapipe {mediapipe.__version__}, {cam_id}, {len(frames)} frames 640x480, "
        f"{drawn} arm-frames drawn"
    )
    print(f"load average before: {load_average()}", flush=True)
    print(f"{'model':<14} {'ms/frame':>9} {'hands found':>12} {'of drawn':>9}")
    for complexity in (0, 1):
        finder = HandFinder(model_complexity=complexity)
        finder.find(frames[0])  # warm
        t = time.perf_counter()
        found = sum(len(finder.find(f)) for f in frames)
        ms = (time.perf_counter() - t) / len(frames) * 1000
        finder.close()
        print(f"{'complexity ' + str(complexity):<14} {ms:>9.1f} {found:>12} {found / drawn:>9.2f}")
    watch = ShelfWatch(layout, cam_id)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t = time.perf_counter()
    ended = sum(len(watch.feed(f, t0)) for f in frames)
    ms = (time.perf_counter() - t) / len(frames) * 1000
    print(f"shelf watch (complexity 1): {ms:.1f} ms/frame, {ended} reaches of {len(truth)}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
