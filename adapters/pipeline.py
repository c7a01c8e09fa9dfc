"""One store's cameras from frames to the outbox: what ``aisle adapt`` runs.

Per camera a frame source, a detector and, if asked, an annotated video; for the store
one ``StoreFloor`` (tracking, the floor, the hand-off, the events). The cameras' frames
are taken in time order across cameras (each source gives its own in order), so the
hand-off sees the store as it happened; the events go to an outbox, which publishes them
to the log and keeps them on disk while the log is away.

The frame work (decoding, detection, tracking) runs in a worker thread, one frame at a
time, so that the event loop stays free to publish while the next frame is worked on.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from adapters.detection import Detector, Frame
from adapters.drawing import AnnotatedVideo
from adapters.sources import FrameSource
from adapters.store_floor import FloorSettings, StoreFloor
from adapters.tracking import Tracked
from core import events as ev
from core.layout import Camera, Layout
from core.outbox import Outbox, OutboxStatus

__all__ = ["AdaptProgress", "CameraInput", "StoreAdapter", "run_adapter"]


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
    """

    def __init__(
        self,
        layout: Layout,
        inputs: list[CameraInput],
        origin: datetime,
        settings: FloorSettings | None = None,
    ) -> None:
        self.layout = layout
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
        self._frames = self._merged()
        self._closed = False

    def open_videos(self) -> None:
        """Open the annotated videos asked for (at each camera's processing rate)."""
        for cam_id, i in self.inputs.items():
            if i.annotate is not None:
                rate = 1.0 / i.camera.detect_interval_s
                self._videos[cam_id] = AnnotatedVideo(self.layout, i.camera, i.annotate, rate)

    def _merged(self) -> Iterator[tuple[str, Frame]]:
        def tagged(cam_id: str, source: FrameSource) -> Iterator[tuple[datetime, str, Frame]]:
            for frame in source:
                yield frame.at, cam_id, frame

        streams = [tagged(c, i.source) for c, i in self.inputs.items()]
        for _, cam_id, frame in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
            yield cam_id, frame

    def _on_tracked(self, camera: str, tracked: list[Tracked]) -> None:
        self._tracked[camera] = tracked

    def step(self) -> list[ev.Event] | None:
        """Work on the next frame of any camera; None once every source has ended (then
        ``close``)."""
        item = next(self._frames, None)
        if item is None:
            return None
        cam_id, frame = item
        people = self.inputs[cam_id].detector.detect(frame)
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

    def close(self) -> list[ev.Event]:
        """The end of the input: the events still held, and the videos and sources closed."""
        if self._closed:
            return []
        self._closed = True
        out = self.floor.close()
        self._count(out)
        self.release()
        return out

    def release(self) -> None:
        """Close the sources and finish the videos (also after a failure)."""
        for cam_id, video in self._videos.items():
            video.close()
            self.written[cam_id] = (video.path, video.frames)
        self._videos.clear()
        for i in self.inputs.values():
            i.source.close()

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
    try:
        while (events := await asyncio.to_thread(adapter.step)) is not None:
            if events:
                progress.new += await outbox.put(events, wait=True)
            progress.outbox = outbox.status()
            on_progress(progress)
        progress.new += await outbox.put(adapter.close(), wait=True)
    finally:
        adapter.release()
    flushing = asyncio.create_task(outbox.flush())
    while not flushing.done():
        progress.outbox = outbox.status()
        on_progress(progress)
        await asyncio.wait({flushing}, timeout=0.25)
    await flushing
    progress.outbox = outbox.status()
    on_progress(progress)
    return progress
