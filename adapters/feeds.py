"""Each camera's frames read, and its people found, in threads of its own, so that a slow
camera or a slow detector never holds the others back.

Per camera two threads with a bounded queue after each: a reader takes frames from the
source, a detector finds the people in them; the adapter takes the detected frames of
every camera in time order (``Feeds.next``).

A live source (a camera, a stream) cannot wait: when its reader's queue is full the
oldest frame waiting is dropped, counted and logged, so the stream is always read at its
own pace (rather than piling up in the network stack and the decoder, to be processed
late) and what is worked on is recent. A camera whose detector is slow drops frames; the
other cameras do not notice. A stream that stops answering holds up no one: its frames
are taken when they come.

A file can wait: its threads block when their queues are full, nothing is dropped, and
the frames of every camera are taken in the same order on every run (time, then camera
id, each file's head waited for), so that the events are the same too. Reading and
detecting in their own threads still lets a file's decoding overlap with the other work
(OpenCV and the detectors release the GIL).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import supervision as sv

from adapters.detection import Detector, Frame
from adapters.sources import FrameSource

__all__ = ["DEPTH", "Detected", "Feed", "Feeds"]

log = logging.getLogger(__name__)

DEPTH = 2
"""Frames each of a camera's two queues holds: a live camera's frames wait at most this
many deep before detection, and a camera holds at most ``2 * DEPTH + 2`` frames in
memory (the queues, and one each being read and detected), which a store of many
cameras read from files all holds at once."""
_DROPS_EVERY_S = 10.0  # a camera that keeps dropping is logged at most this often
_JOIN_S = 2.0  # how long ``stop`` waits for the threads (a stream may be mid-read)


@dataclass(frozen=True, slots=True)
class Detected:
    """One camera frame and the people found in it."""

    camera: str
    frame: Frame
    people: sv.Detections


class Feed:
    """One camera's reader and detector threads and their queues (``Feeds`` runs them)."""

    def __init__(
        self, camera: str, source: FrameSource, detector: Detector, feeds: Feeds, depth: int
    ) -> None:
        self.camera = camera
        self.source = source
        self.detector = detector
        self.live = bool(getattr(source, "live", False))
        self.depth = depth
        self._feeds = feeds
        self._lock = feeds.lock
        # This feed's two threads wait on a condition of their own (on the feeds' one
        # lock): with a single condition for all, every frame of every camera woke every
        # thread of the store (two a camera) to find it had nothing to do.
        self.wake = threading.Condition(feeds.lock)
        self.raw: deque[Frame] = deque()
        self.ready: deque[Detected] = deque()
        self.read = 0  # frames the source gave
        self.dropped = 0  # of those, dropped because the detector was behind
        self.reading = True
        self.done = False  # no more frames will come into ``ready``
        self.error: BaseException | None = None
        self._logged_drops = 0
        self._drops_at = -_DROPS_EVERY_S
        self.threads = [
            threading.Thread(target=self._read, name=f"read {camera}", daemon=True),
            threading.Thread(target=self._detect, name=f"detect {camera}", daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _read(self) -> None:
        """Frames from the source into ``raw``: a live source drops the oldest when full,
        a file waits. The source is closed here, in the thread that reads it."""
        frames = iter(self.source)
        try:
            for frame in frames:
                with self._lock:
                    if self._feeds.stopping:
                        break
                    self.read += 1
                    if self.live:
                        if len(self.raw) >= self.depth:
                            self.raw.popleft()
                            self.dropped += 1
                            self._report_drops()
                    else:
                        while len(self.raw) >= self.depth and not self._feeds.stopping:
                            self.wake.wait()
                        if self._feeds.stopping:
                            break
                    self.raw.append(frame)
                    self.wake.notify_all()
        except BaseException as exc:  # raised in the adapter's thread by Feeds.next
            with self._lock:
                self.error = exc
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # a generator's cleanup runs now, in this thread
            self.source.close()
            with self._lock:
                self.reading = False
                self.wake.notify_all()
            if not self._feeds.stopping and self.error is None:
                log.info(
                    "source ended",
                    extra={"camera": self.camera, "source": self.source.name, "frames": self.read},
                )

    def _report_drops(self) -> None:
        now = time.monotonic()
        if now - self._drops_at < _DROPS_EVERY_S:
            return
        log.warning(
            "frames dropped: the adapter is behind this camera",
            extra={
                "camera": self.camera,
                "dropped": self.dropped - self._logged_drops,
                "dropped_total": self.dropped,
                "frames_read": self.read,
                "queue": self.depth,
            },
        )
        self._logged_drops = self.dropped
        self._drops_at = now

    def _detect(self) -> None:
        """Frames from ``raw``, with their people, into ``ready``; waits when it is full
        (a live source's frames are dropped before detection, in ``raw``)."""
        try:
            while True:
                with self._lock:
                    while not self.raw and self.reading and not self._feeds.stopping:
                        self.wake.wait()
                    if self._feeds.stopping or not self.raw:
                        return
                    frame = self.raw.popleft()
                    self.wake.notify_all()  # room for the reader
                people = self.detector.detect(frame)
                with self._lock:
                    while len(self.ready) >= self.depth and not self._feeds.stopping:
                        self.wake.wait()
                    if self._feeds.stopping:
                        return
                    self.ready.append(Detected(self.camera, frame, people))
                    self._feeds.cond.notify_all()
        except BaseException as exc:  # raised in the adapter's thread by Feeds.next
            with self._lock:
                self.error = exc  # about an earlier frame than a reader's error: it wins
        finally:
            with self._lock:
                self.done = True
                self._feeds.cond.notify_all()


class Feeds:
    """Every camera's feed, and their detected frames in time order.

    ``sources`` and ``detectors`` by camera id. The threads start at the first ``next``;
    from then on the sources belong to them (each is closed by its reader). ``stop`` ends
    them: ``next`` then returns None, and the frames still queued are not processed.
    """

    def __init__(
        self,
        sources: Mapping[str, FrameSource],
        detectors: Mapping[str, Detector],
        depth: int = DEPTH,
    ) -> None:
        if depth < 1:
            raise ValueError(f"a feed's queue holds at least 1 frame, not {depth}")
        if any(getattr(s, "live", False) for s in sources.values()):
            # OpenCV puts a lock of its own around every FFmpeg open, for FFmpeg releases
            # before 4 that could not open two inputs at once: one camera that hangs while
            # connecting would hold up every other camera's (re)connection for its whole
            # timeout. The FFmpeg OpenCV ships opens concurrently; OpenCV reads this
            # at each open (and warns, once an open, that its lock is off).
            os.environ.setdefault("OPENCV_FFMPEG_IS_THREAD_SAFE", "1")
        self.lock = threading.RLock()  # every feed's state, and the queues
        self.cond = threading.Condition(self.lock)  # the adapter's thread waits on it
        self.stopping = False
        self.started = False
        self.feeds = [
            Feed(cam, sources[cam], detectors[cam], self, depth) for cam in sorted(sources)
        ]

    def __iter__(self) -> Iterator[Detected]:
        while (item := self.next()) is not None:
            yield item

    def next(self) -> Detected | None:
        """The next detected frame of any camera: the earliest at the head of the queues,
        every file's head waited for, a live camera's taken if it is there; None when
        every feed has ended, or after ``stop``. A feed's failure (its source's or its
        detector's) is raised here once the frames before it are taken."""
        with self.cond:
            if not self.started:
                self.started = True
                for f in self.feeds:
                    f.start()
            while True:
                if self.stopping:
                    return None
                for f in self.feeds:
                    if f.done and not f.ready and f.error is not None:
                        raise f.error
                if any(not f.live and not f.ready and not f.done for f in self.feeds):
                    self.cond.wait()  # a file's next frame may be the earliest
                    continue
                heads = [f for f in self.feeds if f.ready]
                if heads:
                    first = min(heads, key=lambda f: (f.ready[0].frame.at, f.camera))
                    item = first.ready.popleft()
                    first.wake.notify_all()  # room in its queue
                    return item
                if all(f.done for f in self.feeds):
                    return None
                self.cond.wait()  # live cameras only, none with a frame yet

    def stop(self, wait: bool = True) -> None:
        """End the threads; with ``wait``, return once they have ended or ``_JOIN_S`` has
        passed (a stream may be in the middle of a read: its reader ends, and closes it,
        when the read returns). Without it (a signal handler's), return at once."""
        with self.lock:
            self.stopping = True
            self.cond.notify_all()
            for f in self.feeds:
                f.wake.notify_all()
        for f in self.feeds:
            f.source.interrupt()  # a live source stops reconnecting
        if not wait:
            return
        if not self.started:
            for f in self.feeds:
                f.source.close()
            return
        deadline = time.monotonic() + _JOIN_S
        for f in self.feeds:
            for t in f.threads:
                if t is not threading.current_thread():
                    t.join(max(0.0, deadline - time.monotonic()))
        busy = [f.camera for f in self.feeds if any(t.is_alive() for t in f.threads)]
        if busy:
            log.info("sources still in a read, left to end by themselves", extra={"cameras": busy})

    @property
    def dropped(self) -> dict[str, int]:
        """Frames dropped so far, by camera (live sources only)."""
        return {f.camera: f.dropped for f in self.feeds}
