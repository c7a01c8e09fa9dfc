"""The entrance camera's face adapter: frames in, ``face.matched`` events of enrolled
members out, at the pace ``adapters.pipeline.run_adapter`` takes them into an outbox.

A frame is read, its faces found and matched, and then dropped: nothing of it is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from adapters.detection import Frame
from adapters.face_match import FaceMatcher
from adapters.faces import FaceFinder
from adapters.pipeline import AdaptProgress
from adapters.sources import FrameSource
from core import events as ev

__all__ = ["EntranceAdapter"]


class EntranceAdapter:
    """One camera's source through the face finder and the matcher."""

    def __init__(
        self, camera: str, source: FrameSource, finder: FaceFinder, matcher: FaceMatcher
    ) -> None:
        self.camera = camera
        self.source = source
        self.finder = finder
        self.matcher = matcher
        self.progress = AdaptProgress()
        self._frames: Iterator[Frame] = iter(source)
        self._stop = threading.Event()
        self._released = False

    def step(self) -> list[ev.Event] | None:
        """The next frame's events; None once the source ended or ``stop`` was called."""
        if self._stop.is_set():
            return None
        frame = next(self._frames, None)
        if frame is None:
            return None
        out: list[ev.Event] = list(self.matcher.frame(frame.at, self.finder.find(frame.image)))
        self.progress.frames[self.camera] += 1
        for e in out:
            self.progress.events[e.type] += 1
        return out

    def stop(self) -> None:
        """From any thread (a signal handler's): no more frames."""
        self.progress.stopped = True
        self._stop.set()
        self.source.interrupt()

    def count_drops(self) -> None:
        """A face adapter takes frames as they come; a live source skips what it missed."""

    def close(self) -> list[ev.Event]:
        self.release()
        return []

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.source.close()
