"""One store's cameras from frames to the outbox: what ``aisle adapt`` runs.

Per camera a frame source, a detector and, if asked, an annotated video; for the store
one ``StoreFloor`` (tracking, the floor, the hand-off, the events). Each camera is read
and its people detected in threads of its own (``adapters/feeds.py``): a live camera
never waits for the others and drops its oldest frames when the work falls behind
(counted, logged); files are read in time order across cameras, nothing dropped, so a
file gives the same events on every run. The tracking and the floor run in one worker
thread, a frame at a time, so that the event loop stays free to publish; the events go
to an outbox, which publishes them to the log and keeps them on disk while the log is
away. An outbox that is full holds the adapter back (files wait, live cameras drop
frames); an event that could never fit is refused, logged and counted, never dropped
silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from adapters.detection import Detector
from adapters.drawing import AnnotatedVideo
from adapters.feeds import DEPTH, Feeds
from adapters.sources import FrameSource
from adapters.store_floor import FloorSettings, StoreFloor
from adapters.tracking import Tracked
from core import events as ev
from core.layout import Camera, Layout
from core.outbox import Outbox, OutboxFull, OutboxStatus

__all__ = ["AdaptProgress", "CameraInput", "StoreAdapter", "run_adapter"]

log = logging.getLogger(__name__)

_BATCH_FRAMES = 32  # frames stepped in one trip to the worker thread, at most
_BATCH_S = 0.1  # and seconds: the progress shown is this recent


@dataclass
class CameraInput:
    """One camera's part: where its frames come from, what finds people in them, and
    where its annotated video goes (None: nowhere)."""

    camera: Camera
    source: FrameSource
    detector: Detector
    annotate: Path | None = None


@dataclass
class AdaptProgress:
    """What the progress line and the summary show."""

    frames: Counter[str] = field(default_factory=Counter)  # processed, per camera
    people: dict[str, int] = field(default_factory=dict)  # tracked in each camera's last frame
    events: Counter[str] = field(default_factory=Counter)  # made, per type
    new: int = 0  # put into the outbox for the first time (the rest it had already)
    dropped: Counter[str] = field(default_factory=Counter)  # live frames, per camera
    refused: Counter[str] = field(default_factory=Counter)  # events, per type
    waiting: bool = False  # for room in a full outbox
    stopped: bool = False  # the input was stopped before it ended
    began: float = field(default_factory=time.monotonic)
    outbox: OutboxStatus | None = None

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    @property
    def fps(self) -> float:
        took = time.monotonic() - self.began
        return self.total_frames / took if took > 0 else 0.0

    @property
    def tracks(self) -> int:
        return sum(self.people.values())


class StoreAdapter:
    """The synchronous part: the next frame of the store in, the events it releases out.

    ``origin`` is the event time of source time zero: every frame is placed at its
    ``at`` less the origin, so cameras started at different times share one clock.
    ``depth``: frames each camera's queues hold (``adapters/feeds.py``). ``on_tracked``
    sees each camera's tracker output as it comes (the accuracy checks score it).
    """

    def __init__(
        self,
        layout: Layout,
        inputs: list[CameraInput],
        origin: datetime,
        settings: FloorSettings | None = None,
        depth: int = DEPTH,
        on_tracked: Callable[[str, list[Tracked]], None] | None = None,
    ) -> None:
        self.layout = layout
        self._also_tracked = on_tracked
        self.inputs = {i.camera.id: i for i in inputs}
        self.origin = origin
        self.progress = AdaptProgress()
        self._tracked: dict[str, list[Tracked]] = {}
        self.floor = StoreFloor(
            layout, origin, settings, cameras=list(self.inputs), on_tracked=self._on_tracked
        )
        self._videos: dict[str, AnnotatedVideo] = {}
        self.written: dict[str, tuple[Path, int]] = {}
        """The annotated videos finished: path and frames, per camera."""
        self.feeds = Feeds(
            {c: i.source for c, i in self.inputs.items()},
            {c: i.detector for c, i in self.inputs.items()},
            depth,
        )
        self._closed = False

    def open_videos(self) -> None:
        """Open the annotated videos asked for (at each camera's processing rate)."""
        for cam_id, i in self.inputs.items():
            if i.annotate is not None:
                rate = 1.0 / i.camera.detect_interval_s
                self._videos[cam_id] = AnnotatedVideo(self.layout, i.camera, i.annotate, rate)

    def _on_tracked(self, camera: str, tracked: list[Tracked]) -> None:
        self._tracked[camera] = tracked
        if self._also_tracked is not None:
            self._also_tracked(camera, tracked)

    def step(self) -> list[ev.Event] | None:
        """Work on the next frame of any camera; None once every source has ended or
        ``stop`` was called (then ``close``)."""
        item = self.feeds.next()
        self.count_drops()
        if item is None:
            return None
        cam_id, frame, people = item.camera, item.frame, item.people
        seconds = (frame.at - self.origin).total_seconds()
        self._tracked[cam_id] = []
        out = self.floor.frame(cam_id, frame.number, seconds, people.xyxy, people.confidence)
        now = [t for t in self._tracked[cam_id] if t.frame == frame.number and not t.late]
        self.progress.frames[cam_id] += 1
        self.progress.people[cam_id] = len(now)
        video = self._videos.get(cam_id)
        if video is not None:
            video.write(frame, now)
        self._count(out)
        return out

    def count_drops(self) -> None:
        """The live frames dropped so far, into the progress (from any thread)."""
        self.progress.dropped = Counter(self.feeds.dropped)

    def stop(self) -> None:
        """Stop reading (from any thread: a signal handler's): ``step`` returns None, and
        ``close`` leaves the floor's open visits open, so that the same file run again
        goes on to the same events as a run that was never stopped."""
        self.progress.stopped = True
        self.feeds.stop(wait=False)

    def close(self) -> list[ev.Event]:
        """The end of the input: the events still held, and the videos and sources closed.
        After ``stop``, nothing: the visits under way are not ended by a stop."""
        if self._closed:
            return []
        self._closed = True
        out = [] if self.progress.stopped else self.floor.close()
        self._count(out)
        self.release()
        return out

    def release(self) -> None:
        """Stop the feeds (their threads close the sources) and finish the videos; also
        after a failure, and more than once."""
        self.feeds.stop()
        self.count_drops()
        for cam_id, video in self._videos.items():
            video.close()
            self.written[cam_id] = (video.path, video.frames)
        self._videos.clear()

    def _count(self, events: list[ev.Event]) -> None:
        for e in events:
            self.progress.events[e.type] += 1


async def run_adapter(
    adapter: StoreAdapter,
    outbox: Outbox,
    on_progress: Callable[[AdaptProgress], None] = lambda p: None,
) -> AdaptProgress:
    """Every frame of every source through ``adapter`` into ``outbox``, then wait until
    the log has confirmed every event (the outbox keeps them on disk until then)."""
    progress = adapter.progress

    def show() -> None:
        adapter.count_drops()
        progress.outbox = outbox.status()
        on_progress(progress)

    try:
        while True:
            events, ended = await asyncio.to_thread(_steps, adapter)
            await _put(outbox, events, progress, show)
            show()
            if ended:
                break
        await _put(outbox, adapter.close(), progress, show)
    finally:
        adapter.release()
    flushing = asyncio.create_task(outbox.flush())
    while not flushing.done():
        show()
        await asyncio.wait({flushing}, timeout=0.25)
    await flushing
    show()
    return progress


def _steps(adapter: StoreAdapter) -> tuple[list[ev.Event], bool]:
    """Frames through ``adapter`` in the worker thread until one makes events, or for
    ``_BATCH_FRAMES`` frames or ``_BATCH_S`` seconds; and whether the sources ended.

    One trip to the worker thread and back a frame cost a store of many cameras more than
    its tracking (the event loop woken through its pipe each time, with every camera's
    threads after the GIL); events still go out as soon as a frame makes them."""
    deadline = time.monotonic() + _BATCH_S
    for _ in range(_BATCH_FRAMES):
        events = adapter.step()
        if events is None:
            return [], True
        if events or time.monotonic() >= deadline:
            return events, False
    return [], False


async def _put(
    outbox: Outbox, events: list[ev.Event], progress: AdaptProgress, show: Callable[[], None]
) -> None:
    """``events`` into the outbox, waiting for room while it is full (shown as such); a
    lot larger than the whole outbox is put in halves, and an event that can never fit
    (larger than ``max_bytes`` or ``max_event_bytes``) is refused: logged, counted."""
    if not events:
        return
    full = outbox.status().full  # puts held for room so far: one more if this one is
    putting = asyncio.ensure_future(outbox.put(events, wait=True))
    try:
        while not putting.done():
            await asyncio.wait({putting}, timeout=0.25)
            if not putting.done():
                progress.waiting = outbox.status().full > full
                show()
    finally:
        putting.cancel()  # only if still waiting (a second Ctrl-C): nothing of it stored
        progress.waiting = False
    try:
        progress.new += putting.result()
        return
    except (OutboxFull, ValueError) as exc:
        if len(events) > 1:
            half = len(events) // 2
            await _put(outbox, events[:half], progress, show)
            await _put(outbox, events[half:], progress, show)
            return
        why = str(exc)
    (event,) = events
    progress.refused[event.type] += 1
    log.error(
        "event refused: it can never fit in the outbox",
        extra={"event": event.id, "type": event.type, "why": why},
    )
