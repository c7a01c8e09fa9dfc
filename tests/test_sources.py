"""Frame sources: a rendered video read twice, the layout's rate, image folders, files that
are not what they claim, and a live HTTP MJPEG stream that refuses, drops and comes back.

The live stream is served by a small MJPEG server in the test, on a loopback port, and
read by OpenCV's FFmpeg backend exactly as an IP camera would be. Waits between attempts
go through an injected ``sleep`` that records them, so no test waits for a backoff.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from adapters import Backoff, Frame, SourceError, open_source, source_for_camera
from adapters.sources import MAX_IMAGE_PIXELS, ImageFolder, LiveSource
from core.layout import Layout, load_layout, load_layout_text
from simulator.day import simulate
from simulator.render import RenderOptions, RenderStats, render_camera

STORES = Path(__file__).resolve().parent.parent / "examples" / "stores"
START = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
CAMERA = "cam-front-west"  # 1280x720 at 15 frames/s
FRAMES = 45


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(STORES / "convenience.yaml")


@pytest.fixture(scope="module")
def video(corner: Layout, tmp_path_factory: pytest.TempPathFactory) -> RenderStats:
    """Three seconds of the convenience store's front camera, rendered by the simulator."""
    out = tmp_path_factory.mktemp("render")
    start = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo(corner.store.timezone))
    run = simulate(corner, start, hours=1 / 60, shoppers=12, seed=2)
    cam = corner.camera(CAMERA)
    people = itertools.islice(run.people(cam.fps), 200, 200 + FRAMES)  # people in view
    return render_camera(
        corner, CAMERA, people, out / "front.mp4", out / "front.gt.txt", RenderOptions(seed=2)
    )


def with_detect(layout: Layout, detect: str) -> Layout:
    """The layout with the front camera's ``detect`` setting replaced, loaded again."""
    text = (STORES / "convenience.yaml").read_text(encoding="utf-8")
    marker = "  - id: cam-front-west  # front, door and aisle 1\n"
    assert text.count(marker) == 1
    text = text.replace(marker, marker + f"    detect: {detect}\n")
    return load_layout_text(text, "convenience.yaml")


# -- files ---------------------------------------------------------------------------------


def test_a_rendered_video_read_twice_gives_the_same_frames_at_the_same_times(
    video: RenderStats,
) -> None:
    def read() -> list[Frame]:
        with open_source(video.video_path, start=START) as source:
            return list(source)

    first, second = read(), read()
    assert len(first) == len(second) == FRAMES == video.frames
    assert [f.number for f in first] == list(range(1, FRAMES + 1))
    assert [f.at for f in first] == [f.at for f in second]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second, strict=True))
    # Frame n sits at (n - 1) / 15 s after the start given, whatever the clock said.
    for f in first:
        assert f.offset_s == pytest.approx((f.number - 1) / 15, abs=1e-6)
        assert f.at == START + timedelta(seconds=f.offset_s)
    assert first[0].image.shape == (720, 1280, 3)
    assert first[0].source == str(video.video_path)


def test_a_file_needs_the_time_its_first_frame_was_taken(video: RenderStats) -> None:
    with pytest.raises(SourceError, match="give the time its first frame was taken"):
        open_source(video.video_path)
    with pytest.raises(ValueError, match="no time zone"):
        open_source(video.video_path, start=datetime(2026, 11, 28, 11, 0))


@pytest.mark.parametrize(
    ("detect", "numbers"),
    [
        ("{fps: 5}", list(range(1, FRAMES + 1, 3))),  # every third frame of 15 a second
        ("{fps: 10}", [n for n in range(1, FRAMES + 1) if n % 3 != 2]),  # two of every three
        ("{interval_s: 1}", [1, 16, 31]),  # one frame a second
        ("{fps: 15}", list(range(1, FRAMES + 1))),
    ],
)
def test_the_layouts_detect_rate_picks_frames_on_the_files_own_clock(
    corner: Layout, video: RenderStats, detect: str, numbers: list[int]
) -> None:
    camera = with_detect(corner, detect).camera(CAMERA)
    with source_for_camera(camera, video.video_path, start=START) as source:
        frames = list(source)
    assert [f.number for f in frames] == numbers
    assert [f.offset_s for f in frames] == pytest.approx([(n - 1) / 15 for n in numbers])


def test_a_frame_of_another_size_than_the_calibration_is_refused(
    corner: Layout, video: RenderStats
) -> None:
    with (
        open_source(video.video_path, start=START, size=(640, 480)) as source,
        pytest.raises(
            SourceError, match="frame 1 is 1280x720 pixels, but the camera's calibration"
        ),
    ):
        next(iter(source))


def test_a_file_that_is_not_a_video_is_refused_naming_it(tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("these are not the frames you are looking for\n" * 100)
    with pytest.raises(SourceError, match=r"notes\.mp4: not a video OpenCV can read"):
        open_source(notes, start=START)
    with pytest.raises(SourceError, match=r"missing\.mp4: no such file"):
        open_source(tmp_path / "missing.mp4", start=START)


# -- folders -------------------------------------------------------------------------------


@pytest.fixture
def folder(video: RenderStats, tmp_path: Path) -> Path:
    """The rendered frames 1 to 12 as PNG files named frame1.png ... frame12.png."""
    cap = cv2.VideoCapture(str(video.video_path))
    for n in range(1, 13):
        ok, image = cap.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"frame{n}.png"), image)
    cap.release()
    (tmp_path / "notes.txt").write_text("not an image, and not read")
    return tmp_path


def test_a_folder_of_images_is_read_in_natural_order_at_the_cameras_rate(
    corner: Layout, folder: Path, video: RenderStats
) -> None:
    camera = corner.camera(CAMERA)
    with source_for_camera(camera, folder, start=START) as source:
        frames = list(source)
    assert [f.number for f in frames] == list(range(1, 13))  # frame2 before frame10
    assert [f.offset_s for f in frames] == pytest.approx([n / 15 for n in range(12)])
    with open_source(video.video_path, start=START) as source:
        decoded = [f.image for f in itertools.islice(source, 12)]
    assert all(np.array_equal(f.image, d) for f, d in zip(frames, decoded, strict=True))
    rated = with_detect(corner, "{fps: 5}").camera(CAMERA)
    with source_for_camera(rated, folder, start=START) as source:
        assert [f.number for f in source] == [1, 4, 7, 10]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``, with next to no pixel data behind
    it: decoding it would allocate the whole image, reading its header costs nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 30000])
def test_a_huge_image_in_a_folder_is_refused_before_it_is_decoded(
    tmp_path: Path, side: int
) -> None:
    assert side * side > MAX_IMAGE_PIXELS
    (tmp_path / "huge.png").write_bytes(png_header(side, side))
    source = ImageFolder(tmp_path, start=START, fps=10)
    with pytest.raises(SourceError, match=r"huge\.png: .*larger than the 67,108,864 pixels"):
        next(iter(source))


def test_a_broken_image_in_a_folder_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "0001.jpg").write_bytes(b"JFIF? no: a text file with a picture's name")
    with pytest.raises(SourceError, match=r"0001\.jpg: not an image"):
        next(iter(open_source(tmp_path, start=START, fps=10)))


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(SourceError, match="no images in the folder"):
        open_source(tmp_path, start=START, fps=10)
    with pytest.raises(SourceError, match="needs a frame rate"):
        open_source(tmp_path, start=START)


# -- live streams --------------------------------------------------------------------------


class MjpegCamera:
    """An IP camera on a loopback port: each connection gets the next ``plan`` step, either
    an HTTP status (a refusal) or a number of MJPEG frames after which it hangs up."""

    def __init__(self, plan: list[int | str]) -> None:
        self.plan = list(plan)
        self.connections = 0
        self.sent = 0
        frames = []
        for k in range(8):  # real content: a gradient that moves, not a blank image
            image = np.zeros((120, 160, 3), np.uint8)
            image[:, :, 1] = (np.arange(160) * 1.5 + 20 * k).astype(np.uint8)
            cv2.circle(image, (20 + 15 * k, 60), 12, (40, 40, 220), -1)
            frames.append(cv2.imencode(".jpg", image)[1].tobytes())
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.connections += 1
                step = camera.plan.pop(0) if camera.plan else "503"
                if isinstance(step, str):
                    self.send_error(int(step))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for _ in range(step):
                    jpeg = frames[camera.sent % len(frames)]
                    camera.sent += 1
                    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                    self.wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MjpegCamera:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    """The wall clock a live source reads at each connection, and the waits it asks for."""

    def __init__(self) -> None:
        self.t = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
        self.waits: list[float] = []

    def now(self) -> datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.t += timedelta(seconds=seconds)


def live(url: str, clock: Clock, attempts: int | None = 5, **kw: object) -> LiveSource:
    return LiveSource(
        url,
        timeout_s=5,
        backoff=Backoff(first_s=0.5, factor=2, max_s=4, attempts=attempts),
        sleep=clock.sleep,
        now=clock.now,
        **kw,  # type: ignore[arg-type]
    )


def test_a_stream_that_drops_reconnects_says_so_and_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    with MjpegCamera([5, 5, 5]) as camera, caplog.at_level(logging.INFO, "adapters.sources"):
        source = live(camera.url, clock)
        frames = list(itertools.islice(source, 15))
        source.close()
    assert camera.connections == 3
    assert [f.number for f in frames] == list(range(1, 16))
    assert all(f.image.shape == (120, 160, 3) and f.image.std() > 10 for f in frames)
    times = [f.at for f in frames]
    assert times == sorted(times) and len(set(times)) == 15  # forward only, across drops
    assert clock.waits == [0.5, 0.5]  # a connection that delivered starts the waits again
    dropped = [r for r in caplog.records if r.getMessage() == "source dropped"]
    assert [(r.source, r.frames_so_far, r.retry_in_s) for r in dropped] == [  # type: ignore[attr-defined]
        (camera.url, 5, 0.5),
        (camera.url, 10, 0.5),
    ]
    assert sum(r.getMessage() == "source connected" for r in caplog.records) == 2


def test_a_stream_that_refuses_is_retried_with_growing_waits_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    with MjpegCamera(["503", "503", "404", 3]) as camera:
        source = live(camera.url, clock)
        frames = list(itertools.islice(source, 3))
        source.close()
    assert [f.number for f in frames] == [1, 2, 3]
    assert clock.waits == [0.5, 1.0, 2.0]
    assert camera.connections == 4

    clock = Clock()
    caplog.clear()
    with MjpegCamera(["503"] * 10) as camera, caplog.at_level(logging.WARNING):
        source = live(camera.url, clock, attempts=6)
        with pytest.raises(SourceError, match="cannot connect"):
            next(iter(source))
    assert clock.waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # capped at max_s
    assert camera.connections == 7
    retries = [r for r in caplog.records if r.getMessage() == "source unreachable, retrying"]
    assert [r.attempt for r in retries] == [1, 2, 3, 4, 5, 6]  # type: ignore[attr-defined]


def test_a_stream_that_never_answers_times_out_instead_of_hanging() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections, never says a word
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/video.mjpg"
    clock = Clock()
    try:
        source = LiveSource(
            url, timeout_s=1, backoff=Backoff(attempts=1), sleep=clock.sleep, now=clock.now
        )
        with pytest.raises(SourceError, match="cannot connect"):
            next(iter(source))
    finally:
        silent.close()
    assert clock.waits == [0.5]


def test_a_live_streams_times_start_at_the_clock_and_follow_the_layouts_rate() -> None:
    clock = Clock()
    with MjpegCamera([40]) as camera:
        source = LiveSource(
            camera.url, clock="stream", interval_s=0.2, sleep=clock.sleep, now=clock.now
        )
        frames = list(itertools.islice(source, 4))
        source.close()
    # MJPEG has no timestamps: FFmpeg numbers its frames at 25 a second, 5 per 0.2 s.
    assert [f.number for f in frames] == [1, 6, 11, 16]
    assert frames[0].at == clock.t
    assert [f.offset_s for f in frames] == pytest.approx([0, 0.2, 0.4, 0.6])


def test_a_stream_url_with_a_password_is_named_without_it() -> None:
    source = LiveSource("rtsp://admin:s3cret@127.0.0.1:8554/cam1")
    assert source.name == "rtsp://127.0.0.1:8554/cam1"
    assert "s3cret" not in source.name


def test_open_source_tells_cameras_streams_folders_and_files_apart(
    video: RenderStats, tmp_path: Path
) -> None:
    assert isinstance(open_source(0), LiveSource) and open_source("2").name == "camera 2"
    assert isinstance(open_source("rtsp://127.0.0.1:8554/x"), LiveSource)
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1])
    assert isinstance(open_source(tmp_path, start=START, fps=1), ImageFolder)
    assert open_source(video.video_path, start=START).name == str(video.video_path)


def test_backoff_waits_grow_and_are_bounded() -> None:
    waits: Iterator[float] = Backoff(first_s=0.5, factor=2, max_s=4, attempts=7).delays()
    assert list(waits) == [0.5, 1, 2, 4, 4, 4, 4]
    assert list(itertools.islice(Backoff().delays(), 10))[-1] == 30  # forever, capped
