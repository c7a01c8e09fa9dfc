"""Frame sources: a video file, a folder of images, a camera or a network stream, through
OpenCV, each giving ``Frame`` values at the rate the layout asks for.

Time comes from the source, not from the machine reading it. A file's frames are placed
by their position in the file (the container's timestamps, else frame number and frame
rate) after a start time the caller gives, so processing a file twice, or on another
machine, gives the same times and therefore the same events. A live source has no start
time of its own: its first frame is placed at the wall clock when it connects, and the
frames after it by the stream's own timestamps (RTSP and camera drivers carry real ones),
or by their arrival where the stream has none (an HTTP MJPEG camera).

The layout's rate (``Camera.detect_interval_s``) picks frames on that same clock: the
first frame at or after each multiple of the interval, so the frames picked from a file
do not depend on how fast it is read. Frames not picked are grabbed but not decoded.

Everything is bounded: the size of an image (before it is decoded), the number of files
in a folder, how long a stream may take to answer or to send the next frame, and the
waits between reconnections.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from adapters.detection import Frame
from core.layout import Camera

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_FOLDER_FILES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "Backoff",
    "FrameSource",
    "ImageFolder",
    "LiveSource",
    "SourceError",
    "VideoFile",
    "open_source",
    "source_for_camera",
]

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest frame accepted, checked before decoding (an 8K frame is 33 Mpx)."""
MAX_IMAGE_BYTES = 256 * 2**20
"""Largest image file in a folder source."""
MAX_FOLDER_FILES = 1_000_000
"""Most image files one folder source lists (a day at 10 frames/s is 864,000)."""
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp"})

Clock = Literal["stream", "arrival"]


class SourceError(Exception):
    """A source that cannot be opened or read; the message names it and says why."""


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts to reach a live source: ``first_s``, then ``factor`` times
    longer each time up to ``max_s``; after ``attempts`` failures in a row (None: never)
    the source gives up. A connection that delivered frames starts the waits again."""

    first_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    attempts: int | None = None

    def delays(self) -> Iterator[float]:
        """The wait after each failed attempt; ends after ``attempts`` failures."""
        delay = self.first_s
        n = 0
        while self.attempts is None or n < self.attempts:
            n += 1
            yield min(delay, self.max_s)
            delay *= self.factor


class _Sampler:
    """Picks frames on the source's clock: the first at or after each multiple of the
    interval. Anchored at zero, so the picks do not drift with the frames' jitter."""

    def __init__(self, interval_s: float | None) -> None:
        if interval_s is not None and not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s}")
        self.interval = interval_s
        self.due_s = 0.0

    def take(self, offset_s: float) -> bool:
        if self.interval is None:
            return True
        eps = 1e-6  # a frame's timestamp in ms, rounded, still lands on its multiple
        if offset_s + eps < self.due_s:
            return False
        self.due_s = (math.floor(offset_s / self.interval + eps) + 1) * self.interval
        return True


class FrameSource(ABC):
    """Frames from one source, in order; iterate once, then ``close`` (or use ``with``).

    ``live``: frames come at the source's pace whether or not they are taken (a camera,
    a stream), so a reader that falls behind must drop some; a file's wait."""

    name: str
    live: bool = False

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    @abstractmethod
    def close(self) -> None: ...

    def interrupt(self) -> None:
        """Ask the source, from another thread, to end its iteration at the next chance
        (a live source: no more reconnecting or waiting). A file ends by itself."""
        return

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_size(name: str, width: int, height: int, where: str = "") -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise SourceError(
            f"{name}{where}: frames of {width}x{height} pixels are larger than the "
            f"{MAX_IMAGE_PIXELS:,} pixels accepted"
        )


def _check_expected(name: str, image: np.ndarray, size: tuple[int, int] | None, n: int) -> None:
    if size is not None and (image.shape[1], image.shape[0]) != size:
        raise SourceError(
            f"{name}: frame {n} is {image.shape[1]}x{image.shape[0]} pixels, but the camera's "
            f"calibration is for {size[0]}x{size[1]}"
        )


def _utc(start: datetime) -> datetime:
    if start.tzinfo is None:
        raise ValueError(f"start time {start.isoformat()} has no time zone")
    return start.astimezone(UTC)


class VideoFile(FrameSource):
    """A video file, read with OpenCV's FFmpeg backend; times from its position in the file."""

    def __init__(
        self,
        path: str | Path,
        *,
        start: datetime,
        interval_s: float | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.start = _utc(start)
        self.sampler = _Sampler(interval_s)
        self.size = size
        if not self.path.is_file():
            raise SourceError(f"{self.name}: no such file")
        self.cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(
                f"{self.name}: not a video OpenCV can read (not a video file, or a codec this "
                "OpenCV build lacks)"
            )
        self.fps = self.cap.get(cv2.CAP_PROP_FPS)
        width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_size(self.name, width, height)

    def __iter__(self) -> Iterator[Frame]:
        cap = self.cap
        frame_s = 1 / self.fps if 0 < self.fps <= 1000 else None
        number = 0
        last_s = -math.inf
        while cap.grab():
            number += 1
            pos_s = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
            if pos_s > last_s or (number == 1 and pos_s >= 0):
                offset = pos_s  # the container's timestamp
            elif frame_s is not None:
                offset = max(last_s, 0.0) + frame_s  # no usable timestamp: count frames
            else:
                raise SourceError(f"{self.name}: frame {number} has no timestamp and no frame rate")
            last_s = offset
            if not self.sampler.take(offset):
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                raise SourceError(f"{self.name}: frame {number} cannot be decoded")
            _check_expected(self.name, image, self.size, number)
            yield Frame(
                image=image,
                number=number,
                offset_s=offset,
                at=self.start + timedelta(seconds=offset),
                source=self.name,
            )
        if number == 0:
            raise SourceError(f"{self.name}: the video has no frames OpenCV can read")

    def close(self) -> None:
        self.cap.release()


def _natural(name: str) -> list[str | int]:
    """'frame2.png' before 'frame10.png', as a person numbers files."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class ImageFolder(FrameSource):
    """The images in a folder, in natural name order, one frame each at ``fps``."""

    def __init__(
        self,
        path: str | Path,
        *,
        start: datetime,
        fps: float,
        interval_s: float | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.start = _utc(start)
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.fps = fps
        self.sampler = _Sampler(interval_s)
        self.size = size
        if not self.path.is_dir():
            raise SourceError(f"{self.name}: no such folder")
        names = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                    names.append(entry.name)
                    if len(names) > MAX_FOLDER_FILES:
                        raise SourceError(
                            f"{self.name}: more than {MAX_FOLDER_FILES:,} images in one "
                            "folder; split it"
                        )
        if not names:
            raise SourceError(
                f"{self.name}: no images in the folder (looked for "
                f"{', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self.files = [self.path / n for n in sorted(names, key=_natural)]

    def close(self) -> None:
        pass  # each image is opened and closed as it is read

    def __iter__(self) -> Iterator[Frame]:
        for number, file in enumerate(self.files, start=1):
            offset = (number - 1) / self.fps
            if not self.sampler.take(offset):
                continue
            image = self.read(file)
            _check_expected(str(file), image, self.size, number)
            yield Frame(
                image=image,
                number=number,
                offset_s=offset,
                at=self.start + timedelta(seconds=offset),
                source=self.name,
            )

    @staticmethod
    def read(file: Path) -> np.ndarray:
        """One image, its size checked from its header before it is decoded."""
        nbytes = file.stat().st_size
        if nbytes > MAX_IMAGE_BYTES:
            raise SourceError(
                f"{file}: {nbytes:,} bytes, more than the {MAX_IMAGE_BYTES:,} accepted for an image"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
                with Image.open(file) as header:
                    width, height = header.size
        except Image.DecompressionBombError:
            raise SourceError(
                f"{file}: an image larger than the {MAX_IMAGE_PIXELS:,} pixels accepted"
            ) from None
        except (UnidentifiedImageError, OSError) as exc:
            raise SourceError(f"{file}: not an image ({exc})") from None
        _check_size(str(file), width, height)
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"{file}: OpenCV cannot decode this image")
        return image


def _display(target: str | int) -> str:
    """A source's name for logs and errors: a URL without its user name and password."""
    if isinstance(target, int):
        return f"camera {target}"
    parts = urlsplit(target)
    if parts.username is None and parts.password is None:
        return target
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


class _Timeline:
    """Frame numbers and times of a live source across its connections: numbers count on,
    times only go forward, offsets count from the first frame ever."""

    def __init__(self) -> None:
        self.frames = 0
        self.origin: datetime | None = None
        self.last: datetime | None = None

    def anchor(self, now: datetime) -> datetime:
        """Where a new connection's first frame goes: now, but never before the last."""
        return now if self.last is None or now > self.last else self.last

    def next(self, at: datetime) -> tuple[int, datetime, float]:
        if self.last is not None and at <= self.last:
            at = self.last + timedelta(microseconds=1)
        self.frames += 1
        self.last = at
        if self.origin is None:
            self.origin = at
        return self.frames, at, (at - self.origin).total_seconds()


class LiveSource(FrameSource):
    """A camera (an index) or a network stream (a URL) that may drop and come back.

    A failed connection or a dropped stream is logged, and the source tries again after
    the ``backoff`` waits; frame numbers and times carry on across reconnections. Opening
    and reading each give up after ``timeout_s``, so a stream that stops answering counts
    as dropped instead of hanging the adapter. ``interrupt`` (from another thread) ends
    the iteration once the read under way returns, and cuts a wait short.
    """

    live = True

    def __init__(
        self,
        target: str | int,
        *,
        interval_s: float | None = None,
        size: tuple[int, int] | None = None,
        timeout_s: float = 10.0,
        backoff: Backoff = Backoff(),
        clock: Clock | None = None,
        sleep: Callable[[float], object] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not (0 < timeout_s <= 3600):
            raise ValueError(f"timeout_s must be in (0, 3600], got {timeout_s}")
        self.target = target
        self.name = _display(target)
        self.sampler = _Sampler(interval_s)
        self.size = size
        self.timeout_ms = round(timeout_s * 1000)
        self.backoff = backoff
        if clock is None:
            # HTTP cameras send MJPEG, which has no timestamps (FFmpeg makes up 25 frames/s).
            http = isinstance(target, str) and urlsplit(target).scheme in ("http", "https")
            clock = "arrival" if http else "stream"
        self.clock = clock
        self._halt = threading.Event()
        self.sleep = sleep or self._halt.wait  # a wait that ``interrupt`` cuts short
        self.now = now
        self.cap: cv2.VideoCapture | None = None

    def connect(self) -> cv2.VideoCapture | None:
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                self.timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                self.timeout_ms,
            ]
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        try:
            _check_size(self.name, width, height)
        except SourceError:
            cap.release()
            raise
        return cap

    def __iter__(self) -> Iterator[Frame]:
        timeline = _Timeline()
        delays = self.backoff.delays()
        failures = 0
        while not self._halt.is_set():
            cap = self.connect()
            if cap is None:
                failures += 1
                delay = next(delays, None)
                if delay is None:
                    raise SourceError(
                        f"{self.name}: cannot connect ({failures} attempts in a row failed)"
                    )
                log.warning(
                    "source unreachable, retrying",
                    extra={"source": self.name, "attempt": failures, "retry_in_s": delay},
                )
                self.sleep(delay)
                continue
            if failures or timeline.frames:
                log.info(
                    "source connected",
                    extra={
                        "source": self.name,
                        "attempts": failures + 1,
                        "frames_so_far": timeline.frames,
                    },
                )
            self.cap = cap
            before = timeline.frames
            try:
                yield from self._connection(cap, timeline)
            finally:
                self.close()  # also when the reader stops early
            if self._halt.is_set():
                return
            if timeline.frames > before:
                delays = self.backoff.delays()  # it worked: start the waits again
                failures = 0
            failures += 1
            delay = next(delays, None)
            log.warning(
                "source dropped",
                extra={"source": self.name, "frames_so_far": timeline.frames, "retry_in_s": delay},
            )
            if delay is None:
                raise SourceError(
                    f"{self.name}: the stream dropped and {failures} attempts in a row failed"
                )
            self.sleep(delay)

    def _connection(self, cap: cv2.VideoCapture, timeline: _Timeline) -> Iterator[Frame]:
        """The frames of one connection, until the stream ends, drops or times out."""
        anchor = timeline.anchor(self.now())
        began = time.monotonic()
        first_ms: float | None = None
        last_ms = -math.inf
        while not self._halt.is_set() and self._grab(cap):
            since_s = time.monotonic() - began
            if self.clock == "stream":
                ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                if first_ms is None:
                    first_ms = last_ms = ms
                    since_s = 0.0
                elif ms > last_ms:  # else no usable timestamp: the arrival time stands in
                    since_s = (ms - first_ms) / 1000
                    last_ms = ms
            number, at, offset = timeline.next(anchor + timedelta(seconds=since_s))
            if not self.sampler.take(offset):
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue  # a corrupt frame in a live stream: the next one will do
            _check_expected(self.name, image, self.size, number)
            yield Frame(image=image, number=number, offset_s=offset, at=at, source=self.name)

    def _grab(self, cap: cv2.VideoCapture) -> bool:
        try:
            return bool(cap.grab())
        except cv2.error:
            return False  # some backends raise where others return False: both are a drop

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def interrupt(self) -> None:
        self._halt.set()


def open_source(
    spec: str | int | Path,
    *,
    start: datetime | None = None,
    fps: float | None = None,
    interval_s: float | None = None,
    size: tuple[int, int] | None = None,
    timeout_s: float = 10.0,
    backoff: Backoff = Backoff(),
) -> FrameSource:
    """The source ``spec`` names: a camera index (``0`` or ``"0"``), a stream URL
    (``rtsp://``, ``http://``, ...), a folder of images, or a video file.

    Files and folders need ``start``, the time their first frame was taken; a folder
    also needs ``fps``. ``interval_s`` is the layout's processing interval, ``size``
    the (width, height) the camera's calibration is for.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return LiveSource(
            int(spec), interval_s=interval_s, size=size, timeout_s=timeout_s, backoff=backoff
        )
    if isinstance(spec, str) and urlsplit(spec).scheme.lower() in STREAM_SCHEMES:
        return LiveSource(
            spec, interval_s=interval_s, size=size, timeout_s=timeout_s, backoff=backoff
        )
    path = Path(spec)
    if start is None:
        raise SourceError(
            f"{path}: a file has no clock of its own; give the time its first frame was taken"
        )
    if path.is_dir():
        if fps is None:
            raise SourceError(f"{path}: a folder of images needs a frame rate")
        return ImageFolder(path, start=start, fps=fps, interval_s=interval_s, size=size)
    return VideoFile(path, start=start, interval_s=interval_s, size=size)


def source_for_camera(
    camera: Camera,
    spec: str | int | Path,
    *,
    start: datetime | None = None,
    timeout_s: float = 10.0,
    backoff: Backoff = Backoff(),
    calibrated: bool = True,
) -> FrameSource:
    """``open_source`` with the layout's camera: its processing rate, its frame size
    (unless not ``calibrated``: a face camera needs no floor), and its frame rate for a
    folder of images."""
    every_frame = camera.detect.fps is None and camera.detect.interval_s is None
    return open_source(
        spec,
        start=start,
        fps=camera.fps,
        interval_s=None if every_frame else camera.detect_interval_s,
        size=(camera.image.width, camera.image.height) if calibrated else None,
        timeout_s=timeout_s,
        backoff=backoff,
    )
