"""The end-to-end check of the eyes: a simulated span filmed, the adapters run on the film,
the standard packs run on both.

``film`` simulates the store and renders every camera (``simulator/render.py``) into a
folder, with each camera's MOTChallenge ground truth; a folder already holding the film of
the same request is reused. ``check_video`` then, against the log:

1. publishes the simulator's true events under the store ``<store>-<key>-truth``;
2. runs the ``aisle adapt --all`` pipeline in process (``adapters/pipeline.py``: sources,
   detector threads, tracking, the floor, the hand-off, the outbox) on the rendered videos,
   publishing under ``<store>-<key>-video-<detector>``;
3. reads each store back as the engine service applies it (``core.log.read_arrived``) and
   runs the rule packs on it, as a QA scenario does.

The two runs have stores of their own, named after the request (``key``), so true and
adapter events never mix, and running the same request again adds nothing to the log
(deterministic ids on both sides). Comparing them is ``simulator/eyes/report.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np

from adapters.detection import Detector
from adapters.floor_events import EventSettings
from adapters.pipeline import AdaptProgress, CameraInput, StoreAdapter, run_adapter
from adapters.sources import source_for_camera
from adapters.store_floor import FloorSettings
from adapters.track_scoring import read_mot
from adapters.tracking import Tracked, TrackerSettings
from core import events as ev
from core.access import Role
from core.config import Settings
from core.jetstream import JetStreamLog
from core.layout import Camera, Layout
from core.log import publish_in_order, read_arrived
from core.outbox import Outbox
from core.runtime import embedded_or_configured, log_factory, open_log
from rules.loader import load_rules
from rules.reference import Reference
from rules.service.partition import ServiceConfig
from simulator.day import Run, simulate
from simulator.render import RenderOptions, render_camera

__all__ = [
    "DETECTORS",
    "Checked",
    "Film",
    "Request",
    "VideoError",
    "at_fps",
    "check_video",
    "film",
    "renamed",
]

DETECTORS = ("mog2", "knn", "hog")
"""The detectors the check can run: those that need no file of their own."""
MAX_HOURS = 24.0
MAX_SHOPPERS = 100_000
MANIFEST = "film.json"


class VideoError(Exception):
    """A request the check cannot run (exit code 2 in the command), with the reason."""


@dataclass(frozen=True)
class Request:
    """What to simulate and film: the store, its span, the visitors, the seed."""

    layout: Layout
    start: datetime
    hours: float
    shoppers: int
    seed: int
    packs: tuple[Path, ...]
    detector: str = "mog2"

    def __post_init__(self) -> None:
        if not 0 < self.hours <= MAX_HOURS:
            raise VideoError(f"--hours: {self.hours:g} is not in (0, {MAX_HOURS:g}]")
        if not 1 <= self.shoppers <= MAX_SHOPPERS:
            raise VideoError(f"--shoppers: {self.shoppers} is not in [1, {MAX_SHOPPERS}]")
        if self.detector not in DETECTORS:
            raise VideoError(f"--detector: {self.detector!r} is not one of {', '.join(DETECTORS)}")
        if not self.layout.cameras:
            raise VideoError(f"store {self.layout.store.id}: the layout has no cameras to film")

    @property
    def key(self) -> str:
        """What the film depends on, hashed: the same key, the same video and truth."""
        h = hashlib.sha256(msgspec.json.encode(self.layout))
        h.update(
            json.dumps(
                [self.start.isoformat(), self.hours, self.shoppers, self.seed, RenderOptions()],
                default=repr,
            ).encode()
        )
        return h.hexdigest()[:10]

    def store(self, side: str) -> str:
        """The store id of one side of the check: ``truth``, or ``video`` (the adapters',
        named after the detector too, so that two detectors' events never mix)."""
        name = f"{side}-{self.detector}" if side == "video" else side
        return f"{self.layout.store.id[:40]}-{self.key}-{name}"


def at_fps(layout: Layout, fps: float | None) -> Layout:
    """The layout with every camera filming at ``fps`` (None: as it is): a cheaper film
    for a long span, at the price of what a lower frame rate costs the trackers."""
    if fps is None:
        return layout
    if not 0 < fps <= 240:
        raise VideoError(f"--fps: {fps:g} is not in (0, 240]")
    cameras = [msgspec.structs.replace(c, fps=fps) for c in layout.cameras]
    return msgspec.structs.replace(layout, cameras=cameras)


def renamed(layout: Layout, store_id: str) -> Layout:
    """The layout under another store id (the same floor, cameras and catalogue)."""
    return msgspec.structs.replace(layout, store=msgspec.structs.replace(layout.store, id=store_id))


@dataclass
class Film:
    """A simulated span filmed by every camera: the true run, when its video starts (the
    first arrival), and each camera's video and ground truth."""

    request: Request
    run: Run
    origin: datetime
    videos: dict[str, Path]
    truth: dict[str, Path]
    frames: dict[str, int]
    reused: bool

    @property
    def crossings(self) -> int:
        return sum(isinstance(e, ev.ShopperEntered | ev.ShopperExited) for e in self.run.events)


def _simulate(request: Request) -> Run:
    layout = renamed(request.layout, request.store("truth"))
    return simulate(
        layout,
        request.start,
        hours=request.hours,
        shoppers=request.shoppers,
        seed=request.seed,
        packs=list(request.packs),
    )


def _render_one(request: Request, camera: str, folder: Path) -> tuple[str, str, int]:
    """One camera's video and ground truth (in a process of its own: the run is simulated
    again there, the same for the same request)."""
    run = _simulate(request)
    fps = request.layout.camera(camera).fps
    stats = render_camera(
        request.layout,
        camera,
        run.people(fps),
        folder / f"{camera}.mp4",
        folder / f"{camera}.gt.txt",
        RenderOptions(seed=request.seed),
    )
    assert stats.video_path is not None
    return camera, stats.video_path.name, stats.frames


def film(
    request: Request,
    folder: Path,
    workers: int | None = None,
    on_camera: Callable[[str, int], None] = lambda camera, frames: None,
) -> Film:
    """Simulate and render every camera into ``folder`` (``workers`` processes, default
    one per core), or reuse the film there if it is of the same request."""
    run = _simulate(request)
    with_path = [v.start for v, t in zip(run.visitors, run.truth, strict=True) if t.path]
    if not with_path:
        raise VideoError(
            f"no visitor in {request.hours:g} h from {request.start.isoformat()}: "
            "nothing to film (more --hours or --shoppers)"
        )
    origin = min(with_path)
    cameras = [c.id for c in request.layout.cameras]
    manifest = folder / MANIFEST
    try:
        held = json.loads(manifest.read_text())
    except (OSError, ValueError):
        held = None
    if (
        isinstance(held, dict)
        and held.get("key") == request.key
        and all((folder / held["videos"].get(c, "-")).is_file() for c in cameras)
        and all((folder / f"{c}.gt.txt").is_file() for c in cameras)
    ):
        videos = {c: folder / held["videos"][c] for c in cameras}
        frames = {c: int(held["frames"][c]) for c in cameras}
        reused = True
    else:
        folder.mkdir(parents=True, exist_ok=True)
        manifest.unlink(missing_ok=True)
        videos, frames = {}, {}
        n = max(1, min(len(cameras), workers or os.cpu_count() or 1))
        with ProcessPoolExecutor(n) as pool:
            jobs = [pool.submit(_render_one, request, c, folder) for c in cameras]
            for job in jobs:
                camera, name, count = job.result()
                videos[camera], frames[camera] = folder / name, count
                on_camera(camera, count)
        held = {
            "key": request.key,
            "store": request.layout.store.id,
            "start": request.start.isoformat(),
            "hours": request.hours,
            "shoppers": request.shoppers,
            "seed": request.seed,
            "videos": {c: p.name for c, p in videos.items()},
            "frames": frames,
        }
        manifest.write_text(json.dumps(held, indent=1) + "\n")
        reused = False
    truth = {c: folder / f"{c}.gt.txt" for c in cameras}
    return Film(request, run, origin, videos, truth, frames, reused)


@dataclass
class Side:
    """One side of the check as the packs saw it: the raw events the log holds for its
    store (in the service's order) and what the packs derived from them."""

    store: str
    layout: Layout
    inputs: list[ev.Event]
    derived: list[ev.Event]
    rule_errors: list[str]
    published: int


@dataclass
class Checked:
    """Both sides of one check, and what the adapters' trackers made of each camera."""

    film: Film
    truth: Side
    video: Side
    tracked: dict[str, list[Tracked]]
    progress: AdaptProgress
    seconds: float
    """Wall-clock seconds the adapters took over the film."""
    camera_truth: dict[str, np.ndarray] = field(default_factory=dict)
    """Each camera's ground-truth rows (frame, id, x, y, w, h, 1), from the film."""


def _detector(kind: str, camera: Camera) -> tuple[Detector, TrackerSettings]:
    from adapters.cli import TRACKING, DetectorKind

    if kind == "hog":
        from adapters.hog import HogPeople

        return HogPeople(), TRACKING[DetectorKind.hog]
    from adapters.background import BackgroundSubtraction

    detector = BackgroundSubtraction.for_camera(camera, kind)  # type: ignore[arg-type]
    return detector, TRACKING[DetectorKind(kind)]


async def _adapt(
    settings: Settings,
    the: Film,
    tracked: dict[str, list[Tracked]],
    on_progress: Callable[[AdaptProgress], None],
) -> AdaptProgress:
    """``aisle adapt --all`` over the film, in process, into the video store."""
    request = the.request
    layout = renamed(request.layout, request.store("video"))
    inputs = []
    tracking = TrackerSettings()
    for camera in layout.cameras:
        detector, tracking = _detector(request.detector, camera)
        source = source_for_camera(camera, str(the.videos[camera.id]), start=the.origin)
        inputs.append(CameraInput(camera=camera, source=source, detector=detector))
    floor = FloorSettings(tracker=tracking, events=EventSettings())

    def keep(camera: str, ts: list[Tracked]) -> None:
        tracked[camera].extend(ts)

    adapter = StoreAdapter(layout, inputs, the.origin, floor, on_tracked=keep)
    try:
        async with embedded_or_configured(settings) as url:
            new_log = log_factory(settings, url, name="aisle-simulate-video", role=Role.ADAPTER)
            path = settings.outboxes / f"{layout.store.id}.sqlite"
            path.parent.mkdir(parents=True, exist_ok=True)
            config = replace(settings.outbox, duplicate_window_s=settings.log.duplicate_window_s)
            outbox = Outbox.open(path, new_log, config)
            async with outbox:
                return await run_adapter(adapter, outbox, on_progress)
    finally:
        adapter.release()


async def _side(
    log: JetStreamLog, layout: Layout, packs: Sequence[Path], run: Run | None, published: int
) -> Side:
    """A store's events as the log holds them, through the packs as the service runs them;
    every window closed a day after the last event, as a QA scenario closes them."""
    sid = layout.store.id
    inputs = await read_arrived(log, sid)
    reference = Reference.of(layout, members=run.members if run else {})
    engine = ServiceConfig("simulate-video").engine(load_rules(list(packs), reference))
    out = engine.process(inputs)
    if inputs:
        last = max(e.at for e in inputs)
        out.extend(engine.advance(sid, last.timestamp() + 24 * 3600))
    errors = [f"{e.rule}: {e.message}" for e in out.errors]
    return Side(sid, layout, list(inputs), list(out.derived), errors, published)


async def check_video(
    settings: Settings,
    the: Film,
    on_progress: Callable[[AdaptProgress], None] = lambda p: None,
) -> Checked:
    """Publish the truth, run the adapters over the film, and the packs over both."""
    request = the.request
    async with open_log(
        settings, name="aisle-simulate-video", role=Role.ADAPTER, create=True
    ) as log:
        await publish_in_order(log, the.run.events)
    tracked: dict[str, list[Tracked]] = {c.id: [] for c in request.layout.cameras}
    began = time.perf_counter()
    progress = await _adapt(settings, the, tracked, on_progress)
    seconds = time.perf_counter() - began
    async with open_log(settings, name="aisle-simulate-video", read_only=True) as log:
        truth = await _side(
            log,
            renamed(request.layout, request.store("truth")),
            request.packs,
            the.run,
            len(the.run.events),
        )
        video = await _side(
            log,
            renamed(request.layout, request.store("video")),
            request.packs,
            None,
            sum(progress.events.values()),
        )
    camera_truth = {
        c: read_mot(p) if p.stat().st_size else np.zeros((0, 7)) for c, p in the.truth.items()
    }
    return Checked(the, truth, video, tracked, progress, seconds, camera_truth)
