"""Camera feeds: each camera read and detected in threads of its own, on real sources (a
video file and a folder of images through OpenCV, live MJPEG streams on loopback ports).
Files come in time order across cameras, the same on every run, nothing dropped however
slow the detector; a live camera whose detector is behind drops its oldest frames,
counted and logged, and holds no other camera back; one that stops sending holds up
no one."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from adapters.detection import Frame, people
from adapters.feeds import DEPTH, Feeds
from adapters.sources import (
    Backoff,
    FrameSource,
    ImageFolder,
    LiveSource,
    SourceError,
    VideoFile,
)
from tests.streamkit import LiveCamera, jpegs

START = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


def scene(k: int, width: int = 160, height: int = 120) -> np.ndarray:
    """A frame with something in it that moves (not a blank image)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 1] = (np.arange(width) * 1.5 + 7 * k).astype(np.uint8)
    cv2.circle(image, (10 + (5 * k) % (width - 20), height // 2), 10, (40, 40, 220), -1)
    return image


class Slow:
    """A detector that takes ``delay_s`` a frame and finds no one; it notes the frames."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.seen: list[int] = []

    def detect(self, frame: Frame) -> sv.Detections:
        time.sleep(self.delay_s)
        self.seen.append(frame.number)
        return people(np.zeros((0, 4)), np.zeros(0), size=frame.size)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames at 10 frames/s, written by OpenCV."""
    path = tmp_path_factory.mktemp("feeds") / "cam-a.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for k in range(40):
        writer.write(scene(k))
    writer.release()
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 images, to be read at 6 frames/s."""
    path = tmp_path_factory.mktemp("frames")
    for k in range(25):
        cv2.imwrite(str(path / f"frame{k + 1}.png"), scene(3 * k))
    return path


def files(video: Path, folder: Path) -> dict[str, FrameSource]:
    return {
        "cam-a": VideoFile(video, start=START),
        "cam-b": ImageFolder(folder, start=START + timedelta(seconds=0.55), fps=6),
    }


def expected(video: Path, folder: Path) -> list[tuple[str, int]]:
    """Each source read on its own, merged by time and then camera id."""

    def tagged(cam: str, source: FrameSource) -> list[tuple[datetime, str, int]]:
        with source:
            return [(f.at, cam, f.number) for f in source]

    streams = [tagged(c, s) for c, s in files(video, folder).items()]
    return [(cam, n) for _, cam, n in heapq.merge(*streams)]


def test_files_come_in_time_order_across_cameras_whole_and_the_same_on_every_run(
    video: Path, folder: Path
) -> None:
    want = expected(video, folder)
    assert len(want) == 40 + 25
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(want))
    assert switches > 20, "the cameras' frames interleave"
    for delays in [(0.0, 0.0), (0.02, 0.0), (0.0, 0.03)]:  # a slow detector, on either
        detectors = {"cam-a": Slow(delays[0]), "cam-b": Slow(delays[1])}
        feeds = Feeds(files(video, folder), detectors, depth=2)
        got = [(d.camera, d.frame.number) for d in feeds]
        feeds.stop()
        assert got == want, delays
        assert feeds.dropped == {"cam-a": 0, "cam-b": 0}
        assert all(not t.is_alive() for f in feeds.feeds for t in f.threads)


def live(url: str, timeout_s: float = 5.0) -> LiveSource:
    return LiveSource(url, timeout_s=timeout_s, backoff=Backoff(first_s=0.1, attempts=3))


def test_a_live_camera_whose_detector_is_behind_drops_its_oldest_frames_and_holds_no_one_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = jpegs([scene(k) for k in range(10)])
    with (
        LiveCamera(frames, fps=25) as slow_camera,
        LiveCamera(frames, fps=25) as quick_camera,
        caplog.at_level(logging.WARNING, "adapters.feeds"),
    ):
        detectors = {"slow": Slow(0.25), "quick": Slow(0.0)}
        feeds = Feeds({"slow": live(slow_camera.url), "quick": live(quick_camera.url)}, detectors)
        taken: dict[str, list[Frame]] = {"slow": [], "quick": []}
        began = time.monotonic()
        while time.monotonic() - began < 3.0:
            d = feeds.next()
            assert d is not None
            taken[d.camera].append(d.frame)
        lag = datetime.now(UTC) - taken["slow"][-1].at
        feeds.stop()
        sent = slow_camera.sent
    assert len(taken["quick"]) > 3 * len(taken["slow"]) > 0, {c: len(f) for c, f in taken.items()}
    assert feeds.dropped["slow"] > 0 and feeds.dropped["quick"] < feeds.dropped["slow"]
    numbers = [f.number for f in taken["slow"]]
    assert numbers == sorted(numbers) and numbers[-1] - numbers[0] > len(numbers), "gaps: drops"
    assert feeds.dropped["slow"] + len(detectors["slow"].seen) <= sent
    # Without dropping, the slow camera's frames would be older every second (25 a second
    # come, 4 a second are detected); with it, what is worked on stays recent.
    assert lag < timedelta(seconds=2.5), lag
    drops = [r for r in caplog.records if r.getMessage().startswith("frames dropped")]
    assert "slow" in {r.camera for r in drops}  # type: ignore[attr-defined]
    assert all(r.queue == DEPTH for r in drops)  # type: ignore[attr-defined]


def test_a_live_camera_that_stops_sending_holds_up_neither_files_nor_other_cameras(
    video: Path,
) -> None:
    frames = jpegs([scene(k) for k in range(10)])
    with LiveCamera(frames, hang=True) as hung, LiveCamera(frames, fps=25) as running:
        sources: dict[str, FrameSource] = {
            "file": VideoFile(video, start=datetime.now(UTC)),
            "hung": live(hung.url, timeout_s=30.0),
            "running": live(running.url),
        }
        feeds = Feeds(sources, {c: Slow() for c in sources})
        counts = {"file": 0, "hung": 0, "running": 0}
        began = time.monotonic()
        while counts["file"] < 40 or counts["running"] < 20:
            d = feeds.next()
            assert d is not None
            counts[d.camera] += 1
            assert time.monotonic() - began < 20, counts
        took = time.monotonic() - began
        stopping = time.monotonic()
        feeds.stop()
        stopped = time.monotonic() - stopping
    assert counts["hung"] == 0 and took < 15, (counts, took)
    assert stopped < 5, "stop does not wait out the hung stream's 30 s read timeout"


def test_a_source_that_fails_mid_way_is_raised_after_the_frames_before_it(
    video: Path, folder: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "frames"
    broken.mkdir()
    for k in range(6):
        cv2.imwrite(str(broken / f"{k + 1}.png"), scene(k))
    (broken / "4.png").write_bytes(b"not an image")
    sources: dict[str, FrameSource] = {
        "cam-a": VideoFile(video, start=START),
        "cam-b": ImageFolder(broken, start=START, fps=1),
    }
    feeds = Feeds(sources, {c: Slow() for c in sources})
    got: list[tuple[str, int]] = []
    with pytest.raises(SourceError, match=r"4\.png: not an image"):
        while (d := feeds.next()) is not None:
            got.append((d.camera, d.frame.number))
    feeds.stop()
    assert [n for c, n in got if c == "cam-b"] == [1, 2, 3]


def test_stop_from_another_thread_ends_the_wait_for_a_live_frame() -> None:
    frames = jpegs([scene(k) for k in range(10)])
    with LiveCamera(frames, hang=True) as hung:
        feeds = Feeds({"hung": live(hung.url, timeout_s=30.0)}, {"hung": Slow()})
        threading.Timer(0.5, feeds.stop, kwargs={"wait": False}).start()
        began = time.monotonic()
        assert feeds.next() is None
        assert time.monotonic() - began < 5
        feeds.stop()
