"""``aisle adapt``: a store's cameras to events in the log.

One camera (``--camera ID --source FILE|URL``) or every camera of the store in one
process (``--all --source CAM=FILE|URL ...``, with the hand-off across cameras). Events
go through an outbox under the data folder, so that a log that is away loses nothing and
a re-run over the same video publishes nothing twice. Everything wrong with the command
line (a layout that does not load, a camera the layout lacks, a source that does not
open, a detector without its weights or with weights it cannot use) ends it with exit
code 2 and the reason; events the outbox had to refuse end it with exit code 1. Ctrl-C
(or SIGTERM) stops reading, sends what was made and ends; a second one leaves what is
not sent in the outbox, for the next run.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import cv2
import typer
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from adapters.detection import Detector
from adapters.detfile import DetFileError
from adapters.floor_events import EventSettings
from adapters.pipeline import AdaptProgress, CameraInput, StoreAdapter, run_adapter
from adapters.sources import STREAM_SCHEMES, SourceError, source_for_camera
from adapters.store_floor import FloorSettings
from adapters.tracking import TrackerSettings
from adapters.yolo import YoloError
from core.access import Role
from core.cli import run
from core.config import OutboxConfig, Settings
from core.console import Console
from core.jetstream import Unreachable
from core.layout import Camera, Layout, LayoutError, load_layout
from core.logs import TextFormatter
from core.outbox import Outbox, OutboxError
from core.runtime import embedded_or_configured, log_factory, open_log

__all__ = ["DEFAULT_START", "register", "start_of"]

log = logging.getLogger(__name__)
out = Console()
err = Console(stderr=True)

DEFAULT_START = (2026, 11, 28, 12, 0)
"""When a file's first frame was taken, store time, if neither ``--start`` nor the file's
name says: the time ``aisle render`` films from."""

_STAMP = re.compile(
    r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[T_ -]?(\d{2})[:h-]?(\d{2})[:m-]?(\d{2})(Z)?(?!\d)"
)


class DetectorKind(StrEnum):
    mog2 = "mog2"
    knn = "knn"
    hog = "hog"
    yolo = "yolo"
    det_file = "det-file"


# The detectors' scores mean different things, so each needs its own thresholds for starting
# a track: background subtraction's is the share of its box the blob fills (a walking
# person fills 0.3 to 0.8 of it), HOG's the logistic of the SVM margin from its own floor of
# 0.5; YOLO's and a det.txt's are a detector's usual confidence, ByteTrack's defaults' scale.
TRACKING = {
    DetectorKind.mog2: TrackerSettings(start_score=0.3, high_score=0.5),
    DetectorKind.knn: TrackerSettings(start_score=0.3, high_score=0.5),
    DetectorKind.hog: TrackerSettings(start_score=0.5, high_score=0.7),
}


CAMERA_FIELD = "{camera}"
"""In a ``--source`` of ``--all``, stands for each camera's id: ``render/{camera}.mp4``."""


class CommandError(Exception):
    """A mistake on the command line or in its inputs: exit code 2, with this message."""


def layout_of(path: Path) -> Layout:
    """The ``--layout`` file's layout, or a ``CommandError`` that says why not."""
    try:
        return load_layout(path)
    except LayoutError as exc:
        raise CommandError(f"the layout does not load:\n{exc}") from None
    except OSError as exc:
        raise CommandError(f"--layout: {exc}") from None


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _camera(layout: Layout, camera_id: str, where: str) -> Camera:
    known = [c.id for c in layout.cameras]
    if camera_id not in known:
        raise CommandError(
            f"{where}: store {layout.store.id!r} has no camera {camera_id!r}"
            f"{_suggest(camera_id, known)}; its cameras: {', '.join(known) or 'none'}"
        )
    return layout.camera(camera_id)


def _is_live(spec: str) -> bool:
    return spec.isdigit() or urlsplit(spec).scheme.lower() in STREAM_SCHEMES


def start_of(spec: str, given: str | None, timezone: str) -> tuple[datetime, str]:
    """When a file source's first frame was taken, and where that came from: ``--start``
    (ISO; without an offset, store time), else a date and time in the file's name
    (``cam-a_20261128T120000.mp4``, ``2026-11-28T12-00-00Z.mp4``), else ``DEFAULT_START``.
    Never the file's dates on disk: a copy of the file must give the same events."""
    zone = ZoneInfo(timezone)
    if given is not None:
        try:
            at = datetime.fromisoformat(given.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(f"--start: {given!r} is not an ISO date and time") from None
        return (at if at.tzinfo else at.replace(tzinfo=zone)), "--start"
    m = _STAMP.search(Path(spec).name)
    if m:
        y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
        with suppress(ValueError):
            at = datetime(y, mo, d, h, mi, s, tzinfo=UTC if m.group(7) else zone)
            return at, "the file's name"
    return datetime(*DEFAULT_START, tzinfo=zone), "the default (no --start, no time in the name)"


def _detector(kind: DetectorKind, model: str | None, camera: Camera, every: bool) -> Detector:
    """The detector for one camera; ``model`` is its ``--weights`` (yolo) or its
    ``--detections`` (det-file)."""
    for_camera = f" (camera {camera.id})" if every else ""
    # Imported here: a YOLO model pulls in PyTorch, which the other detectors do not need.
    try:
        if kind in (DetectorKind.mog2, DetectorKind.knn):
            from adapters.background import BackgroundSubtraction

            return BackgroundSubtraction.for_camera(camera, kind.value)  # type: ignore[arg-type]
        if kind is DetectorKind.hog:
            from adapters.hog import HogPeople

            return HogPeople()
        assert model is not None
        option = "--weights" if kind is DetectorKind.yolo else "--detections"
        if not Path(model).exists():
            raise CommandError(f"{option}: {model}: no such file{for_camera}")
        if kind is DetectorKind.yolo:
            from adapters.yolo import YoloDetector

            try:
                return YoloDetector(model)
            except YoloError as exc:
                raise CommandError(f"--weights: {exc}{for_camera}") from None
        from adapters.detfile import DetFile, DetFileError

        try:
            return DetFile(model)
        except DetFileError as exc:
            raise CommandError(f"--detections: {exc}{for_camera}") from None
    except (ValueError, OSError) as exc:
        raise CommandError(f"--detector {kind.value} for camera {camera.id}: {exc}") from None


def _per_camera(
    values: list[str], layout: Layout, option: str, *, each: bool
) -> tuple[dict[str, str], str | None]:
    """``CAMERA=VALUE`` pairs, and the one plain value (for every camera), if allowed."""
    named: dict[str, str] = {}
    plain: str | None = None
    for value in values:
        cam, sep, rest = value.partition("=")
        if sep and cam in {c.id for c in layout.cameras}:
            if cam in named:
                raise CommandError(f"{option}: camera {cam!r} given twice")
            named[cam] = rest
        elif sep and not _is_live(value) and "/" not in cam:
            _camera(layout, cam, option)  # raises, with "did you mean"
        elif each:
            raise CommandError(f"{option}: {value!r}: with --all, give CAMERA=SOURCE")
        elif plain is not None:
            raise CommandError(f"{option}: given twice ({plain!r} and {value!r})")
        else:
            plain = value
    return named, plain


@dataclass
class Plan:
    """What the command line asks for, checked, before anything is connected."""

    layout: Layout
    inputs: list[CameraInput]
    origin: datetime
    outbox: str  # the outbox's file name in the outbox folder
    notes: list[str]
    detector: DetectorKind
    outbox_file: Path | None = None  # --outbox: this file instead
    max_events: int | None = None  # --outbox-max-events, over the settings'
    max_bytes: int | None = None  # --outbox-max-bytes, over the settings'
    owned: bool = False  # an adapter runs the sources: it closes them

    def close(self) -> None:
        """Close the sources (once an adapter runs them, its feeds do)."""
        for i in self.inputs:
            i.source.close()


def _models(
    detector: DetectorKind,
    weights: list[str],
    detections: list[str],
    layout: Layout,
    cameras: list[Camera],
    every: bool,
) -> tuple[dict[str, str], str | None]:
    """Each camera's model file (``--weights`` for yolo, ``--detections`` for det-file)."""
    if detector is not DetectorKind.yolo and weights:
        hint = (
            " (a det.txt is given with --detections)" if detector is DetectorKind.det_file else ""
        )
        raise CommandError(f"--weights: the {detector.value} detector takes none{hint}")
    if detector is not DetectorKind.det_file and detections:
        raise CommandError(f"--detections: only for --detector det-file, not {detector.value}")
    if detector is DetectorKind.yolo:
        option, given, what = "--weights", weights, "a model file (.pt, .onnx, OpenVINO folder)"
    elif detector is DetectorKind.det_file:
        option, given, what = "--detections", detections, "a MOTChallenge det.txt"
    else:
        return {}, None
    named, plain = _per_camera(given, layout, option, each=False)
    if detector is DetectorKind.det_file and every and plain is not None:
        raise CommandError(f"{option}: with --all, a det.txt per camera (CAMERA=FILE)")
    for cam in cameras:
        if cam.id not in named and plain is None:
            raise CommandError(
                f"--detector {detector.value} needs {option} ({what})"
                + (f" for camera {cam.id}" if every else "")
            )
    return named, plain


def plan(
    layout_file: Path,
    camera: str | None,
    every: bool,
    sources: list[str],
    detector: DetectorKind,
    weights: list[str],
    annotate: Path | None,
    start: str | None,
    detections: list[str] | None = None,
) -> Plan:
    layout = layout_of(layout_file)
    if every == (camera is not None):
        raise CommandError("give either --camera ID or --all")
    if not sources:
        raise CommandError("--source: where the frames come from (a file, a folder, a URL)")
    if every:
        patterns = [s for s in sources if CAMERA_FIELD in s]
        if len(patterns) > 1:
            raise CommandError(f"--source: one pattern with {CAMERA_FIELD}, not {len(patterns)}")
        named, _ = _per_camera(
            [s for s in sources if CAMERA_FIELD not in s], layout, "--source", each=True
        )
        cameras = list(layout.cameras)
        if patterns:  # every camera not named, by the pattern
            for c in cameras:
                named.setdefault(c.id, patterns[0].replace(CAMERA_FIELD, c.id))
        missing = [c.id for c in cameras if c.id not in named]
        if missing:
            raise CommandError(
                f"--all: no --source for camera(s) {', '.join(missing)} (give --source "
                f"CAMERA=FILE|URL for each, or one pattern such as 'render/{CAMERA_FIELD}.mp4')"
            )
        by_camera = named
    else:
        assert camera is not None
        cam = _camera(layout, camera, "--camera")
        if len(sources) > 1:
            raise CommandError("--source: one source with --camera (several with --all)")
        cameras = [cam]
        by_camera = {cam.id: sources[0]}
    m_named, m_plain = _models(detector, weights, detections or [], layout, cameras, every)

    notes: list[str] = []
    starts: dict[str, datetime | None] = {}
    for cam in cameras:
        spec = by_camera[cam.id]
        if _is_live(spec):
            starts[cam.id] = None
            continue
        at, why = start_of(spec, start, layout.store.timezone)
        starts[cam.id] = at
        if why != "--start":
            notes.append(f"{cam.id}: first frame at {at.isoformat()}, from {why}")
    files = [s for s in starts.values() if s is not None]
    origin = min(files) if files else datetime.now(UTC)
    if len(files) < len(starts):  # a live source's frames are placed by the clock
        origin = min(origin, datetime.now(UTC))

    inputs: list[CameraInput] = []
    try:
        for cam in cameras:
            spec = by_camera[cam.id]
            source = source_for_camera(cam, spec, start=starts[cam.id])
            try:
                found = _detector(detector, m_named.get(cam.id, m_plain), cam, every)
            except BaseException:
                source.close()
                raise
            inputs.append(
                CameraInput(
                    camera=cam,
                    source=source,
                    detector=found,
                    annotate=_annotated(annotate, cam.id, every),
                )
            )
    except (SourceError, CommandError) as exc:
        for i in inputs:
            i.source.close()
        if isinstance(exc, SourceError):
            raise CommandError(f"--source: {exc}") from None
        raise
    name = layout.store.id if every else f"{layout.store.id}.{cameras[0].id}"
    return Plan(layout, inputs, origin, f"{name}.sqlite", notes, detector)


def _annotated(path: Path | None, camera: str, every: bool) -> Path | None:
    """One video per camera: with --all, the camera's id before the suffix."""
    if path is None or not every:
        return path
    return path.with_name(f"{path.stem}.{camera}{path.suffix or '.mp4'}")


def _line(p: AdaptProgress) -> Text:
    box = p.outbox
    depth = f"{box.pending:,}" if box else "0"
    published = f"{box.published:,}" if box else "0"
    state = ""
    if p.waiting:
        state = "  (outbox FULL: waiting for the log)"
    elif box is not None and not box.connected and box.pending:
        state = "  (log away: kept on disk)"
    dropped = sum(p.dropped.values())
    refused = sum(p.refused.values())
    return Text(
        f"{p.total_frames:,} frames  {p.fps:5.1f} frames/s  {p.tracks} tracked  "
        f"{sum(p.events.values()):,} events  {published} published  outbox {depth}"
        + (f"  {dropped:,} frames dropped" if dropped else "")
        + (f"  {refused:,} events REFUSED" if refused else "")
        + state
    )


class _ToConsole(logging.Handler):
    """Log lines on stderr through the console, so that they print above the live
    progress line instead of through it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # a log line must never end the command
            self.handleError(record)


def _logging() -> Callable[[], None]:
    """What the command says in the log while it runs (the sources' drops and
    reconnections, the feeds' dropped frames, the outbox's outages and full buffer), and
    how to undo it."""
    root = logging.getLogger()
    handler = _ToConsole()
    handler.setLevel(logging.INFO)
    handler.addFilter(_shown)
    saved = root.level
    root.addHandler(handler)
    root.setLevel(min(saved, logging.INFO) if saved else logging.INFO)
    # OpenCV's and FFmpeg's own warnings about the sources are the sources' log lines'.
    opencv = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(saved)
        cv2.utils.logging.setLogLevel(opencv)

    return undo


def _shown(record: logging.LogRecord) -> bool:
    """The adapters' and the outbox's lines from INFO, the runtime's warnings (the
    embedded server, permissions), everyone's errors. Not the client's line at each
    attempt to reconnect (core.jetstream's, four a second): the outbox says when the log
    is away and when it is back."""
    name = record.name
    if name.startswith(("adapters.", "core.outbox")):
        return True
    return record.levelno >= (logging.WARNING if name == "core.runtime" else logging.ERROR)


def _outbox(settings: Settings, the: Plan) -> tuple[Path, OutboxConfig]:
    """The outbox's file and limits: the command line's, else the settings' (env)."""
    path = the.outbox_file or settings.outboxes / the.outbox
    config = replace(
        settings.outbox,
        duplicate_window_s=settings.log.duplicate_window_s,
        max_events=the.max_events or settings.outbox.max_events,
        max_bytes=the.max_bytes or settings.outbox.max_bytes,
    )
    return path, config


async def adapt(settings: Settings, the: Plan) -> tuple[AdaptProgress, dict[str, tuple[Path, int]]]:
    """Run the plan; what it did, and the annotated videos written (path, frames)."""
    tracking = TRACKING.get(the.detector, TrackerSettings())
    # One camera's process names its events after the camera, so that the processes of a
    # store's several cameras never make one event id; --all's are the fusion's.
    source = the.inputs[0].camera.id if len(the.inputs) == 1 else EventSettings().source
    floor = FloorSettings(tracker=tracking, events=EventSettings(source=source))
    adapter = StoreAdapter(the.layout, the.inputs, the.origin, floor)
    the.owned = True
    try:
        adapter.open_videos()
    except RuntimeError as exc:  # OpenCV cannot write the video there
        adapter.release()
        raise CommandError(f"--annotate: {exc}") from None
    path, config = _outbox(settings, the)
    live = Live(_line(AdaptProgress()), console=err, transient=True, auto_refresh=False)
    shown = 0.0

    def progress(p: AdaptProgress) -> None:
        nonlocal shown
        now = time.monotonic()
        if err.is_terminal and now - shown >= 0.25:
            live.update(_line(p), refresh=True)
            shown = now
        elif not err.is_terminal and now - shown >= 10:  # a log: a line now and then
            err.print(_line(p), soft_wrap=True)
            shown = now

    try:
        async with outbox_to_log(settings, path, config) as outbox:
            if err.is_terminal:
                live.start()
            try:
                with stop_on_signals(adapter):
                    return await run_adapter(adapter, outbox, progress), adapter.written
            finally:
                live.stop()
    finally:
        adapter.release()


@asynccontextmanager
async def outbox_to_log(
    settings: Settings, path: Path, config: OutboxConfig
) -> AsyncIterator[Outbox]:
    """An adapter's outbox, sending to the log as the adapter role; the log may be away
    (a configured server): the outbox keeps the events until it answers."""
    async with AsyncExitStack() as stack:
        try:  # the streams, made sure of (and the embedded server kept up meanwhile)
            await stack.enter_async_context(
                open_log(settings, name="aisle-adapt", role=Role.ADAPTER)
            )
        except Unreachable as exc:
            if not settings.nats_url:
                raise
            # A camera does not wait for the log: the outbox keeps what it sees, and
            # its connections make the streams once the server answers.
            log.warning("the log is away: the events wait in the outbox (%s)", exc)
        url = await stack.enter_async_context(embedded_or_configured(settings))
        new_log = log_factory(settings, url, name="aisle-adapt", role=Role.ADAPTER)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            outbox = Outbox.open(path, new_log, config)
        except (OutboxError, OSError) as exc:
            raise CommandError(f"the outbox: {exc}") from None
        async with outbox:
            yield outbox


class Stoppable(Protocol):
    def stop(self) -> None: ...


@contextmanager
def stop_on_signals(adapter: Stoppable) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM stops reading: what was made is sent and the command
    ends; the handler then steps aside, so a second one interrupts the sending (what is
    not sent stays in the outbox)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        for s in installed:
            loop.remove_signal_handler(s)
        installed.clear()
        log.warning(
            "%s: reading stops; the events made are sent (again to leave them in the "
            "outbox for the next run)",
            signum.name,
        )
        adapter.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for s in installed:
            loop.remove_signal_handler(s)


def _summary(the: Plan, p: AdaptProgress, adapter_videos: dict[str, tuple[Path, int]]) -> None:
    took = time.monotonic() - p.began
    for i in the.inputs:
        cam = i.camera.id
        video = adapter_videos.get(cam)
        made = f", annotated -> {video[0]} ({video[1]:,} frames)" if video else ""
        dropped = f", {p.dropped[cam]:,} dropped (the adapter was behind)" if p.dropped[cam] else ""
        out.print(
            f"{escape(cam)}: {p.frames[cam]:,} frames ({the.detector.value}) from "
            f"{escape(i.source.name)}{dropped}{escape(made)}",
            highlight=False,
        )
    kinds = ", ".join(f"{t} {n:,}" for t, n in sorted(p.events.items()))
    box = p.outbox
    sent = (
        f"{box.published:,} published ({box.duplicates:,} the log had), {box.pending:,} waiting"
        if box
        else "none published"
    )
    out.print(
        f"events: {sum(p.events.values()):,} made ({kinds or 'none'}); {p.new:,} new, "
        f"{sent}; {p.total_frames:,} frames in {took:.1f} s ({p.fps:.1f} frames/s)",
        highlight=False,
    )
    if p.stopped:
        out.print(
            "stopped before the end of the input: the visits under way were left open "
            "(the same files run again go on to the same events)",
            highlight=False,
        )


def check(the: Plan, image_path: Path) -> None:
    """Draw the floor grid, zones, lines and calibration points over the camera's first
    frame into ``image_path``, and print each calibration point's reprojection error."""
    import cv2
    import numpy as np

    from adapters.drawing import FloorOverlay

    (i,) = the.inputs
    cam = i.camera
    try:
        frame = next(iter(i.source), None)
    except SourceError as exc:
        raise CommandError(f"--source: {exc}") from None
    finally:
        i.source.close()
    if frame is None:
        raise CommandError(f"--source: {i.source.name} gave no frame")
    overlay = FloorOverlay(the.layout, cam)
    image = overlay.calibration(overlay.zones(overlay.grid(frame.image.copy())))
    image_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(image_path), image):
        raise CommandError(f"--annotate: OpenCV cannot write an image to {image_path}")
    errors = cam.reprojection_errors()
    for j, (point, e) in enumerate(zip(cam.calibration.points, errors, strict=True)):
        out.print(
            f"point {j + 1}: pixel ({point.image[0]:g}, {point.image[1]:g}) -> floor "
            f"({point.floor[0]:g}, {point.floor[1]:g}) m: reprojects {e * 100:.1f} cm away",
            highlight=False,
        )
    out.print(
        f"{cam.id}: reprojection error mean {float(np.mean(errors)) * 100:.1f} cm, "
        f"largest {float(np.max(errors)) * 100:.1f} cm (point {int(np.argmax(errors)) + 1}); "
        f"frame {frame.number} with the floor drawn -> {image_path}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    from adapters import shelf_cli, shelfcam_cli  # the weight shelves and shelf cameras

    shelf_cli.register(app)
    shelfcam_cli.register(app)

    @app.command("adapt")
    def adapt_command(
        layout_file: Annotated[Path, typer.Option("--layout", help="Store layout file.")],
        camera: Annotated[
            str | None, typer.Option("--camera", help="The camera the source films.")
        ] = None,
        every: Annotated[
            bool,
            typer.Option("--all", help="Every camera of the store, with the hand-off."),
        ] = False,
        source: Annotated[
            list[str] | None,
            typer.Option(
                "--source",
                help="A video file, a folder of images, a camera index or a stream URL; "
                "with --all, CAMERA=SOURCE for each camera, or a pattern in which "
                "{camera} stands for each camera's id (render/{camera}.mp4).",
            ),
        ] = None,
        detector: Annotated[
            DetectorKind, typer.Option("--detector", help="What finds people in the frames.")
        ] = DetectorKind.mog2,
        weights: Annotated[
            list[str] | None,
            typer.Option(
                "--weights",
                help="yolo: the model (.pt, .onnx, OpenVINO folder); with --all, one for "
                "every camera or CAMERA=PATH.",
            ),
        ] = None,
        detections: Annotated[
            list[str] | None,
            typer.Option(
                "--detections",
                help="det-file: the MOTChallenge det.txt (with --all, CAMERA=PATH each).",
            ),
        ] = None,
        outbox: Annotated[
            Path | None,
            typer.Option(
                "--outbox",
                help="The outbox file (default: AISLE_OUTBOX_DIR, else the data folder's "
                "outbox/, then STORE[.CAMERA].sqlite).",
            ),
        ] = None,
        outbox_max_events: Annotated[
            int | None,
            typer.Option(
                "--outbox-max-events",
                min=1,
                help="Events the outbox may hold for the log (AISLE_OUTBOX_MAX_EVENTS).",
            ),
        ] = None,
        outbox_max_bytes: Annotated[
            int | None,
            typer.Option(
                "--outbox-max-bytes",
                min=1,
                help="Their size in bytes, at most (AISLE_OUTBOX_MAX_BYTES).",
            ),
        ] = None,
        annotate: Annotated[
            Path | None,
            typer.Option(
                "--annotate",
                help="Write a video of boxes, track ids, lines and zones (with --all, "
                "one per camera: NAME.CAMERA.mp4).",
            ),
        ] = None,
        start: Annotated[
            str | None,
            typer.Option(
                "--start",
                help="When a file's first frame was taken (ISO; store time without an "
                "offset). Default: a time in the file's name, else 2026-11-28T12:00.",
            ),
        ] = None,
        check_only: Annotated[
            bool,
            typer.Option(
                "--check",
                help="Check the camera's calibration: draw the floor grid, zones and "
                "calibration points over its first frame (into --annotate, default "
                "CAMERA.check.png) and print the reprojection errors; nothing is published.",
            ),
        ] = False,
    ) -> None:
        """Turn a store's camera video into events in the log: detect, track, project to
        the floor, hand off across cameras, publish through an outbox."""
        try:
            if check_only and every:
                raise CommandError("--check: one camera at a time (--camera ID)")
            video = None if check_only else annotate
            the = plan(
                layout_file, camera, every, source or [], detector, weights or [], video, start,
                detections or [],
            )  # fmt: skip
            if check_only:
                check(the, annotate or Path(f"{camera}.check.png"))
                return
        except CommandError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        the.outbox_file = outbox
        the.max_events = outbox_max_events
        the.max_bytes = outbox_max_bytes
        for note in the.notes:
            err.print(f"note: {escape(note)}", soft_wrap=True, highlight=False)
        undo = _logging()
        try:
            result, videos = run(lambda settings: adapt(settings, the))
        except (CommandError, SourceError, OutboxError, YoloError, DetFileError) as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        finally:
            undo()
            if not the.owned:
                the.close()
        _summary(the, result, videos)
        refused = sum(result.refused.values())
        if refused:
            kinds = ", ".join(f"{t} {n:,}" for t, n in sorted(result.refused.items()))
            err.print(
                f"[red]error:[/] {refused:,} events refused, each larger than the outbox "
                f"holds ({kinds}); the log names each (raise AISLE_OUTBOX_MAX_BYTES or "
                "--outbox-max-bytes)",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(1)
