"""``aisle shelfcam``: recorded shelf-camera video to picks and put-backs in the log.

Each ``--video CAMERA=FILE`` is read frame by frame by the camera's shelf watch
(``adapters/shelfcam.py``: MediaPipe hands in the slots, each facing's look before and
after); the floor's position samples and entries of that time come from the log (read
as the viewer role), and the picks, put-backs and review items go through an outbox as
the adapter role, as ``aisle shelf`` does, so a re-run over the same video publishes
nothing twice. A slot with a weight sensor is left to ``aisle shelf`` unless
``--weighed`` says otherwise: both would charge one pick twice. A mistake on the
command line ends it with exit code 2 and the reason; events the outbox had to refuse
end it with exit code 1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import typer
from rich.markup import escape

from adapters.attribution import Positions
from adapters.cli import CommandError, _logging, _suggest, err, layout_of, out, outbox_to_log
from adapters.shelfcam import ShelfReading, ShelfWatch, watch_video
from adapters.shelfcam_events import CameraEvents
from core import events as ev
from core.access import Role
from core.cli import run
from core.config import Settings
from core.layout import Layout
from core.outbox import OutboxError, OutboxFull, OutboxStatus
from core.runtime import open_log

__all__ = ["ShelfcamPlan", "ShelfcamProgress", "register"]

MARGIN_S = 10.0  # floor positions read this far either side of a video


@dataclass
class ShelfcamPlan:
    """What the command line asks for, checked before anything is connected."""

    layout: Layout
    videos: list[tuple[str, Path, datetime]] = field(default_factory=list)  # camera, file, start
    positions_from: datetime | None = None  # arrival time; None: an hour ago
    no_positions: bool = False
    weighed: bool = False
    outbox_file: Path | None = None


@dataclass
class ShelfcamProgress:
    frames: int = 0
    reaches: Counter[str] = field(default_factory=Counter)  # action -> reaches read
    positions: int = 0  # position frames read
    skipped: int = 0  # readings of weighed slots, left to aisle shelf
    events: Counter[str] = field(default_factory=Counter)
    new: int = 0
    refused: int = 0
    outbox: OutboxStatus | None = None


def _when(option: str, text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not an ISO date and time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def plan(
    layout_file: Path,
    videos: list[str],
    start: str | None,
    positions_from: str | None,
    no_positions: bool,
    weighed: bool,
) -> ShelfcamPlan:
    layout = layout_of(layout_file)
    known = [c.id for c in layout.shelf_cameras]
    if not known:
        raise CommandError(f"--layout: store {layout.store.id!r} has no shelf camera")
    if not videos:
        raise CommandError("--video: CAMERA=FILE, a shelf camera of the layout and its video")
    if start is None:
        raise CommandError("--start: when each video's first frame was taken (ISO, UTC)")
    first = _when("--start", start)
    the = ShelfcamPlan(layout, no_positions=no_positions, weighed=weighed)
    for spec in videos:
        camera, sep, name = spec.partition("=")
        if not sep or not name:
            raise CommandError(f"--video: {spec!r} is not CAMERA=FILE")
        if camera not in known:
            raise CommandError(
                f"--video: {camera!r} is no shelf camera of store {layout.store.id!r}"
                f"{_suggest(camera, known)}; it has {', '.join(known)}"
            )
        path = Path(name)
        if not path.is_file():
            raise CommandError(f"--video: {name}: no such file")
        the.videos.append((camera, path, first))
    if positions_from is not None:
        the.positions_from = _when("--positions-from", positions_from)
    return the


def _frames(path: Path, stop: threading.Event, progress: ShelfcamProgress) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CommandError(f"--video: {path}: OpenCV cannot read it")
    try:
        while not stop.is_set():
            ok, frame = cap.read()
            if not ok:
                return
            progress.frames += 1
            yield frame
    finally:
        cap.release()


def _duration_s(path: Path, fps: float) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        return float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) / fps
    finally:
        cap.release()


async def _floor(
    settings: Settings, the: ShelfcamPlan, progress: ShelfcamProgress
) -> tuple[list[ev.PositionSamples], list[ev.ShopperEntered]]:
    """The store's position frames within the videos' time (and a margin) and its entries."""
    if the.no_positions:
        return [], []
    spans = []
    for camera, path, start in the.videos:
        fps = the.layout.shelf_camera(camera).fps
        margin = timedelta(seconds=MARGIN_S)
        spans.append((start - margin, start + timedelta(seconds=_duration_s(path, fps)) + margin))
    since = the.positions_from or datetime.now(UTC) - timedelta(hours=1)
    frames: list[ev.PositionSamples] = []
    entries: list[ev.ShopperEntered] = []
    async with open_log(
        settings, name="aisle-shelfcam-floor", role=Role.VIEWER, read_only=True
    ) as viewer:
        for kind in ("position.samples", "shopper.entered"):  # two streams: two reads
            async for record in viewer.replay(
                store=the.layout.store.id, types=[kind], from_time=since
            ):
                e = record.event
                if isinstance(e, ev.ShopperEntered):
                    entries.append(e)
                elif isinstance(e, ev.PositionSamples) and any(a <= e.at <= b for a, b in spans):
                    frames.append(e)
    frames.sort(key=lambda e: e.at)
    progress.positions = len(frames)
    return frames, entries


def _read(
    the: ShelfcamPlan,
    frames: list[ev.PositionSamples],
    stop: threading.Event,
    progress: ShelfcamProgress,
) -> list[ShelfReading]:
    """Every video through its camera's shelf watch (the heavy part: run in a thread)."""
    positions = Positions(keep_s=24 * 3600, per_subject=100_000)
    for f in frames:
        positions.add(f.at, ((s.track, s.x, s.y) for s in f.data.samples))
    got: list[ShelfReading] = []
    for camera, path, start in the.videos:
        watch = ShelfWatch(the.layout, camera)
        try:
            got += watch_video(watch, _frames(path, stop, progress), start, positions)
        finally:
            watch.finder.close()
    return got


async def shelfcam(
    settings: Settings, the: ShelfcamPlan, stop: threading.Event
) -> ShelfcamProgress:
    """Run the plan against the configured log; what it did."""
    progress = ShelfcamProgress()
    store = the.layout.store.id
    frames, entries = await _floor(settings, the, progress)
    got = await asyncio.to_thread(_read, the, frames, stop, progress)
    cams = CameraEvents(store)
    for e in entries:
        cams.entered(e)
    weighed = {(sh.id, sl.sku) for sh in the.layout.shelves for sl in sh.slots if sl.sensor}
    made: list[ev.Event] = []
    for r in sorted(got, key=lambda r: r.started):
        progress.reaches[r.action] += 1
        if not the.weighed and (r.shelf, r.sku) in weighed:
            progress.skipped += 1
            continue
        made += cams.reading(r)
    path = the.outbox_file or settings.outboxes / f"{store}.shelfcam.sqlite"
    config = replace(settings.outbox, duplicate_window_s=settings.log.duplicate_window_s)
    async with AsyncExitStack() as stack:
        outbox = await stack.enter_async_context(outbox_to_log(settings, path, config))
        for e in made:
            progress.events[e.type] += 1
        if made:
            try:
                progress.new += await outbox.put(made, wait=True)
            except (OutboxFull, ValueError) as exc:
                progress.refused += len(made)
                err.print(f"[red]error:[/] the outbox refused the events: {escape(str(exc))}")
        await outbox.flush()
        progress.outbox = outbox.status()
    return progress


def _summary(p: ShelfcamProgress, took: float) -> None:
    reaches = ", ".join(f"{a} {n:,}" for a, n in sorted(p.reaches.items()))
    kinds = ", ".join(f"{t} {n:,}" for t, n in sorted(p.events.items()))
    box = p.outbox
    sent = f"{box.published:,} published, {box.pending:,} waiting" if box else "none published"
    left = f", {p.skipped:,} on weighed slots left to aisle shelf" if p.skipped else ""
    out.print(
        f"frames: {p.frames:,} read; position frames: {p.positions:,}; reaches: "
        f"{sum(p.reaches.values()):,} ({reaches or 'none'}){left}; events: "
        f"{sum(p.events.values()):,} made ({kinds or 'none'}), {p.new:,} new, {sent}; "
        f"in {took:.1f} s",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    @app.command("shelfcam")
    def shelfcam_command(
        layout_file: Annotated[Path, typer.Option("--layout", help="Store layout file.")],
        video: Annotated[
            list[str] | None,
            typer.Option(
                "--video",
                help="CAMERA=FILE: a shelf camera of the layout and its recorded video; "
                "several allowed.",
            ),
        ] = None,
        start: Annotated[
            str | None,
            typer.Option(
                "--start",
                help="When the videos' first frame was taken (ISO, UTC without an offset).",
            ),
        ] = None,
        positions_from: Annotated[
            str | None,
            typer.Option(
                "--positions-from",
                help="Read the floor's positions and entries stored from this time on (ISO, "
                "UTC without an offset; default: an hour ago).",
            ),
        ] = None,
        no_positions: Annotated[
            bool,
            typer.Option(
                "--no-positions",
                help="Do not read the floor: every change goes to review (nobody near).",
            ),
        ] = False,
        weighed: Annotated[
            bool,
            typer.Option(
                "--weighed",
                help="Publish the reaches at weighed slots too (default: aisle shelf's).",
            ),
        ] = False,
        outbox: Annotated[
            Path | None,
            typer.Option(
                "--outbox",
                help="The outbox file (default: AISLE_OUTBOX_DIR, else the data folder's "
                "outbox/, then STORE.shelfcam.sqlite).",
            ),
        ] = None,
    ) -> None:
        """Turn recorded shelf-camera video into picks and put-backs in the log: hands in
        the slots (MediaPipe), the facings' look before and after, the shopper whose arm
        it was from the floor's positions; what is not sure goes to review
        (shelf.unresolved)."""
        try:
            the = plan(layout_file, video or [], start, positions_from, no_positions, weighed)
        except CommandError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        the.outbox_file = outbox
        undo = _logging()
        began = time.monotonic()
        stop = threading.Event()

        async def go(settings: Settings) -> ShelfcamProgress:
            return await shelfcam(settings, the, stop)

        try:
            result = run(go, retry=False)
        except (CommandError, OutboxError, OSError) as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            stop.set()
            raise
        finally:
            undo()
        _summary(result, time.monotonic() - began)
        if result.refused:
            err.print(f"[red]error:[/] {result.refused:,} events refused by the outbox")
            raise typer.Exit(1)
