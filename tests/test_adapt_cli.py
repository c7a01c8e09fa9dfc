"""``aisle adapt`` end to end: a rendered video of the convenience store through MOG2, the
tracker, the floor and the outbox into a real nats-server; the same video again adds
nothing; ``--annotate`` writes a video frame for frame; mistakes end with exit code 2."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from adapters.cli import DEFAULT_START, _line, start_of
from adapters.pipeline import AdaptProgress
from core import events as ev
from core.cli import _load_plugins, app
from core.config import Settings
from core.layout import Layout, load_layout
from core.runtime import open_log
from simulator.day import simulate
from simulator.render import RenderOptions, render_camera
from tests.conftest import server_url, set_up, unique_prefix
from tests.streamkit import LiveCamera, jpegs

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
CAMERA = "cam-front-west"  # the door and the queue, 1280x720 at 15 frames/s
FRAMES = 300  # 20 s: five shoppers come in
runner = CliRunner()
_load_plugins()


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(LAYOUT)


def render(corner: Layout, camera: str, folder: Path, frames: int) -> Path:
    start = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo(corner.store.timezone))
    run = simulate(corner, start, hours=1 / 60, shoppers=12, seed=2)
    people = itertools.islice(run.people(corner.camera(camera).fps), frames)
    stats = render_camera(
        corner, camera, people, folder / f"{camera}.mp4", folder / f"{camera}.gt.txt",
        RenderOptions(seed=2),
    )  # fmt: skip
    assert stats.video_path is not None and stats.frames == frames
    return stats.video_path


@pytest.fixture(scope="module")
def video(corner: Layout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(corner, CAMERA, tmp_path_factory.mktemp("adapt"), FRAMES)


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return set_up(
        {
            "AISLE_NATS_URL": server_url("embedded", request),
            "AISLE_PREFIX": unique_prefix(),
            "AISLE_DATA_DIR": str(tmp_path / "data"),
        }
    )


def adapt(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["adapt", "--layout", str(LAYOUT), *args], env=env)
    return result.exit_code, result.output


def in_log(env: dict[str, str], store: str = "corner-01") -> list[ev.Event]:
    async def read() -> list[ev.Event]:
        async with open_log(Settings.from_env(env), read_only=True) as log:
            found = [r.event async for r in log.replay(store=store)]
            found += [r.event async for r in log.replay(store=store, types=["position.samples"])]
            return found

    return asyncio.run(read())


@pytest.mark.integration
def test_a_rendered_video_becomes_entries_zone_visits_and_positions_in_the_log_once(
    env: dict[str, str], video: Path, tmp_path: Path
) -> None:
    code, output = adapt(env, "--camera", CAMERA, "--source", str(video))
    assert code == 0, output
    first = in_log(env)
    kinds = Counter(e.type for e in first)
    assert kinds["shopper.entered"] >= 3, kinds  # five come in; the door is at the edge
    assert kinds["zone.entered"] >= 3 and kinds["zone.exited"] >= 1, kinds
    assert kinds["position.samples"] >= 10 and kinds["store.heartbeat"] >= 19, kinds
    assert all(e.source == CAMERA for e in first), "one camera's events are named after it"
    visits = [e for e in first if e.type in ("shopper.entered", "zone.entered", "zone.exited")]
    assert all(e.subject.startswith("v-") and len(e.subject) == 18 for e in visits)
    samples = [e for e in first if isinstance(e, ev.PositionSamples)]
    assert all(e.subject == "floor" for e in samples)
    entered = {e.subject for e in first if e.type == "shopper.entered"}
    assert entered & {s.track for e in samples for s in e.data.samples}
    start = datetime(*DEFAULT_START, tzinfo=ZoneInfo("Europe/Amsterdam"))
    assert min(e.at for e in first) == start.astimezone(UTC), "no --start, no time in the name"
    assert (tmp_path / "data" / "outbox" / f"corner-01.{CAMERA}.sqlite").exists()
    assert f"{len(first):,} new" in output.replace("\n", " ")

    again, output = adapt(env, "--camera", CAMERA, "--source", str(video))
    assert again == 0, output
    assert "0 new" in output, "the outbox remembers what it published"

    elsewhere = {**env, "AISLE_DATA_DIR": str(tmp_path / "another")}  # a fresh outbox
    third, output = adapt(elsewhere, "--camera", CAMERA, "--source", str(video))
    assert third == 0, output
    assert sorted(e.id for e in in_log(env)) == sorted(e.id for e in first), "the same ids"


@pytest.mark.integration
def test_annotate_writes_every_processed_frame_with_the_tracks_drawn(
    env: dict[str, str], video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "annotated.mp4"
    start = "2026-11-28T09:30:00Z"
    code, output = adapt(
        env, "--camera", CAMERA, "--source", str(video), "--annotate", str(out), "--start", start
    )
    assert code == 0, output
    assert min(e.at for e in in_log(env)) == datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == FRAMES
    assert frames[0].shape == (720, 1280, 3)
    original = cv2.VideoCapture(str(video))
    for _ in range(FRAMES):
        ok, plain = original.read()
    original.release()
    changed = cv2.absdiff(frames[-1], plain).max(axis=2) > 60
    assert changed.mean() > 0.005, "boxes, labels, lines and zones drawn over the frame"


def test_a_start_time_comes_from_the_option_then_the_file_name_then_the_default() -> None:
    zone = "Europe/Berlin"
    berlin = ZoneInfo(zone)
    assert start_of("a.mp4", "2026-11-28T09:00", zone)[0] == datetime(
        2026, 11, 28, 9, tzinfo=berlin
    )
    at, why = start_of("/v/cam-a_20261128T101500Z.mp4", None, zone)
    assert at == datetime(2026, 11, 28, 10, 15, tzinfo=UTC) and why == "the file's name"
    at, _ = start_of("2026-11-28T10-15-00.mp4", None, zone)
    assert at == datetime(2026, 11, 28, 10, 15, tzinfo=berlin)
    at, why = start_of("cam-a.mp4", None, zone)
    assert at == datetime(*DEFAULT_START, tzinfo=berlin) and "default" in why


# -- mistakes: exit code 2 and the reason, before any server is asked --------------------------

NO_SERVER = {"AISLE_NATS_URL": "nats://127.0.0.1:1"}


def test_a_layout_that_does_not_load_is_refused_at_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = LAYOUT.read_text(encoding="utf-8").replace("kind: overhead", "kind: sideways", 1)
    bad.write_text(text, encoding="utf-8")
    line = next(n for n, s in enumerate(text.splitlines(), 1) if "kind: sideways" in s)
    result = runner.invoke(
        app, ["adapt", "--layout", str(bad), "--camera", CAMERA, "--source", "x.mp4"],
        env=NO_SERVER,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"{bad}:{line}:" in result.output.replace("\n", "")


def test_an_unknown_camera_is_refused_with_the_one_meant(tmp_path: Path) -> None:
    code, output = adapt(NO_SERVER, "--camera", "cam-frnt-west", "--source", "x.mp4")
    assert code == 2, output
    assert "did you mean 'cam-front-west'?" in output.replace("\n", " ")


def test_a_source_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    code, output = adapt(NO_SERVER, "--camera", CAMERA, "--source", str(tmp_path / "none.mp4"))
    assert code == 2 and "no such file" in output, output
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    code, output = adapt(NO_SERVER, "--camera", CAMERA, "--source", str(text))
    assert code == 2 and "not a video" in output, output


@pytest.mark.parametrize(
    ("detector", "option"), [("yolo", "--weights"), ("det-file", "--detections")]
)
def test_a_detector_that_needs_a_model_file_is_refused_without_it(
    detector: str, option: str
) -> None:
    code, output = adapt(NO_SERVER, "--camera", CAMERA, "--source", "x.mp4", "--detector", detector)
    assert code == 2 and f"needs {option}" in output, output


def test_all_cameras_need_a_source_each(video: Path) -> None:
    code, output = adapt(NO_SERVER, "--all", "--source", f"{CAMERA}={video}")
    assert code == 2, output
    assert "no --source for camera(s) cam-front-east" in output.replace("\n", " ")
    code, output = adapt(NO_SERVER, "--all", "--source", f"{video.parent}/{{camera}}.mp4")
    assert code == 2, output
    assert f"{video.parent}/cam-front-east.mp4: no such file" in output.replace("\n", ""), output
    code, output = adapt(NO_SERVER, "--all", "--source", f"cam-frnt-west={video}")
    assert code == 2 and "did you mean 'cam-front-west'?" in output.replace("\n", " "), output


@pytest.mark.integration
def test_all_cameras_in_one_process_hand_shoppers_over_under_one_source(
    env: dict[str, str], corner: Layout, tmp_path: Path
) -> None:
    frames = 150  # 10 s of each camera
    for cam in corner.cameras:
        render(corner, cam.id, tmp_path / "render", frames)
    (tmp_path / "render" / "cam-back-east.mp4").rename(tmp_path / "elsewhere.mp4")
    out = tmp_path / "all.mp4"
    code, output = adapt(
        env, "--all", "--source", f"{tmp_path}/render/{{camera}}.mp4",  # what aisle render writes
        "--source", f"cam-back-east={tmp_path / 'elsewhere.mp4'}",  # one of them, named
        "--annotate", str(out),
    )  # fmt: skip
    assert code == 0, output
    said = f"cam-back-east: {frames} frames (mog2) from {tmp_path / 'elsewhere.mp4'}"
    assert said in output.replace("\n", ""), output
    events = in_log(env)
    assert {e.source for e in events} == {"fusion"}
    assert Counter(e.type for e in events)["shopper.entered"] >= 1
    assert (tmp_path / "data" / "outbox" / "corner-01.sqlite").exists()
    for cam in corner.cameras:
        cap = cv2.VideoCapture(str(tmp_path / f"all.{cam.id}.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == frames, cam.id
        cap.release()


def test_check_draws_the_floor_over_a_frame_and_reports_the_calibration_error(
    video: Path, tmp_path: Path
) -> None:
    """A calibration pixel moved by 3 px (within the loader's tolerance) shows in the
    reprojection errors; nothing is published (no server is reachable)."""
    text = LAYOUT.read_text(encoding="utf-8")
    moved = text.replace("{image: [457.2, 495.9]", "{image: [460.2, 495.9]")
    assert moved != text
    layout = tmp_path / "moved.yaml"
    layout.write_text(moved, encoding="utf-8")
    png = tmp_path / "check.png"
    args = ["--check", "--camera", CAMERA, "--source", str(video), "--annotate", str(png)]
    result = runner.invoke(app, ["adapt", "--layout", str(layout), *args], env=NO_SERVER)
    assert result.exit_code == 0, result.output
    worst = re.search(r"largest (\d+\.\d) cm \(point (\d)\)", result.output.replace("\n", " "))
    assert worst is not None and float(worst[1]) > 0.0, result.output
    image = cv2.imread(str(png))
    assert image is not None and image.shape == (720, 1280, 3)
    plain = cv2.VideoCapture(str(video)).read()[1]
    assert (cv2.absdiff(image, plain).max(axis=2) > 60).mean() > 0.005, "the floor drawn"
    exact = runner.invoke(app, ["adapt", "--layout", str(LAYOUT), *args], env=NO_SERVER)
    assert "largest 0.0 cm" in exact.output.replace("\n", " "), exact.output


# -- every detector through the command ---------------------------------------------------


def refused(result: Result, *says: str) -> str:
    """A mistake: exit code 2, the reason on one line, and no traceback."""
    flat = result.output.replace("\n", "")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), "ended by the command, not by a crash"
    assert "Traceback" not in result.output
    for said in says:
        assert said in flat, result.output
    return flat


@pytest.fixture(scope="module")
def yolo_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adapters.yolo import untrained_yolo

    return untrained_yolo(tmp_path_factory.mktemp("yolo") / "untrained.pt")


@pytest.mark.integration
def test_yolo_weights_run_through_the_command_frame_by_frame(
    env: dict[str, str], corner: Layout, yolo_pt: Path, tmp_path: Path
) -> None:
    """Ultralytics' model built from its YAML config (untrained: its boxes mean nothing),
    through every stage to the log."""
    clip = render(corner, CAMERA, tmp_path, 30)
    code, output = adapt(
        env, "--camera", CAMERA, "--source", str(clip), "--detector", "yolo", "--weights",
        str(yolo_pt),
    )  # fmt: skip
    assert code == 0, output
    assert f"{CAMERA}: 30 frames (yolo)" in output, output
    assert any(e.type == "store.heartbeat" for e in in_log(env))


@pytest.mark.integration
def test_an_exported_onnx_model_runs_through_the_command_in_the_adapters_own_session(
    env: dict[str, str], corner: Layout, yolo_pt: Path, tmp_path: Path
) -> None:
    """``yolo export format=onnx`` then ``--weights model.onnx``: the 16:9 camera's frames
    letterboxed into the 4:3 export, through every stage to the log."""
    from adapters.yolo import export_yolo

    onnx = export_yolo(yolo_pt, "onnx", (480, 640))
    clip = render(corner, CAMERA, tmp_path, 30)
    code, output = adapt(
        env, "--camera", CAMERA, "--source", str(clip), "--detector", "yolo", "--weights",
        str(onnx),
    )  # fmt: skip
    assert code == 0, output
    assert f"{CAMERA}: 30 frames (yolo)" in output, output
    assert any(e.type == "store.heartbeat" for e in in_log(env))


@pytest.mark.integration
def test_a_det_txt_through_the_command_finds_the_shoppers_it_describes(
    env: dict[str, str], video: Path, tmp_path: Path
) -> None:
    """The renderer's ground truth as an external detector's det.txt: every box exact."""
    det = tmp_path / "det.txt"
    rows = [line.split(",") for line in video.with_suffix(".gt.txt").read_text().splitlines()]
    det.write_text("".join(f"{r[0]},-1,{r[2]},{r[3]},{r[4]},{r[5]},0.9\n" for r in rows))
    code, output = adapt(
        env, "--camera", CAMERA, "--source", str(video), "--detector", "det-file",
        "--detections", str(det),
    )  # fmt: skip
    assert code == 0, output
    assert f"{CAMERA}: {FRAMES} frames (det-file)" in output
    kinds = Counter(e.type for e in in_log(env))
    assert kinds["shopper.entered"] >= 3 and kinds["zone.entered"] >= 3, kinds


def test_weights_that_are_missing_broken_or_of_another_kind_are_refused_with_the_path(
    video: Path, tmp_path: Path
) -> None:
    from ultralytics import YOLO

    classifier = tmp_path / "classifier.pt"
    YOLO("yolo11n-cls.yaml").save(str(classifier))
    broken = tmp_path / "broken.pt"
    broken.write_text("not a pickle")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    cases = {
        tmp_path / "none.pt": "none.pt: no such file",
        broken: "broken.pt: Ultralytics cannot load it",
        classifier: "classifier.pt: a 'classify' model; a detection model is needed",
        engine: "model.engine: unsupported YOLO weights '.engine'",
    }
    for weights, says in cases.items():
        args = ["--camera", CAMERA, "--source", str(video), "--detector", "yolo"]
        result = runner.invoke(
            app, ["adapt", "--layout", str(LAYOUT), *args, "--weights", str(weights)],
            env=NO_SERVER,
        )  # fmt: skip
        refused(result, "--weights:", says)


def test_a_det_txt_with_a_malformed_line_is_refused_at_that_line(
    video: Path, tmp_path: Path
) -> None:
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,10,40,80,0.9\n2,-1,12,10,40,80,0.8\n3,-1,14,10,forty,80,0.7\n")
    args = ["--camera", CAMERA, "--source", str(video), "--detector", "det-file"]
    result = runner.invoke(
        app, ["adapt", "--layout", str(LAYOUT), *args, "--detections", str(det)], env=NO_SERVER
    )
    refused(result, f"--detections: {det}:3: 'forty' is not a number")
    for wrong, says in [
        (["--weights", str(det)], "the det-file detector takes none (a det.txt is given with"),
        (["--detections", str(det), "--detector", "yolo"], "--detections: only for --detector"),
    ]:
        result = runner.invoke(
            app, ["adapt", "--layout", str(LAYOUT), *args, *wrong], env=NO_SERVER
        )
        refused(result, says)


def test_a_camera_or_a_source_the_command_cannot_use_ends_it_without_a_traceback(
    video: Path, tmp_path: Path
) -> None:
    base = ["adapt", "--layout", str(LAYOUT)]
    refused(
        runner.invoke(
            app, [*base, "--camera", "cam-nowhere", "--source", str(video)], env=NO_SERVER
        ),
        "has no camera 'cam-nowhere'",
    )
    refused(
        runner.invoke(app, [*base, "--all", "--source", f"cam-nowhere={video}"], env=NO_SERVER),
        "--source: store 'corner-01' has no camera 'cam-nowhere'",
    )
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    refused(
        runner.invoke(app, [*base, "--camera", CAMERA, "--source", str(text)], env=NO_SERVER),
        f"--source: {text}: not a video OpenCV can read",
    )
    refused(
        runner.invoke(app, [*base, "--camera", CAMERA, "--source", str(tmp_path)], env=NO_SERVER),
        f"--source: {tmp_path}: no images in the folder",
    )


# -- every camera of the store from real sources of each kind ---------------------------------

AISLE = Path(sys.executable).parent / "aisle"


def frames_of(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    out = []
    while (got := cap.read())[0]:
        out.append(got[1])
    cap.release()
    return out


def wait_for(path: Path, says: list[str], proc: subprocess.Popen[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while not all(s in (text := path.read_text()) for s in says):
        assert proc.poll() is None, text
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    return text


def heartbeats_while_running(
    env: dict[str, str], proc: subprocess.Popen[str], at_least: int, timeout_s: float
) -> int:
    """How many heartbeats the log holds once it holds ``at_least``, the process still up."""
    deadline = time.monotonic() + timeout_s
    while (n := Counter(e.type for e in in_log(env))["store.heartbeat"]) < at_least:
        assert proc.poll() is None, f"the adapter ended with {n} heartbeats in the log"
        assert time.monotonic() < deadline, f"{n} heartbeats in the log after {timeout_s} s"
        time.sleep(0.5)
    return n


@pytest.mark.integration
def test_all_cameras_from_a_file_a_folder_and_a_live_stream_run_until_stopped(
    env: dict[str, str], corner: Layout, tmp_path: Path
) -> None:
    """Two video files, a folder of images and an MJPEG camera on a loopback port, in one
    process: the files and the folder are read to their end while the live camera goes
    on; Ctrl-C then stops it, what was made is published, and the command ends cleanly."""
    n = 45
    folder = tmp_path / "front-east"
    folder.mkdir()
    for k, image in enumerate(frames_of(render(corner, "cam-front-east", tmp_path, n)), 1):
        cv2.imwrite(str(folder / f"frame{k}.jpg"), image)
    live = jpegs(frames_of(render(corner, "cam-back-west", tmp_path, n)))
    sources = {
        "cam-front-west": str(render(corner, "cam-front-west", tmp_path, n)),
        "cam-front-east": str(folder),
        "cam-back-east": str(render(corner, "cam-back-east", tmp_path, n)),
    }
    stderr = tmp_path / "stderr.txt"
    with LiveCamera(live, fps=15) as camera, stderr.open("w") as sink:
        sources["cam-back-west"] = camera.url
        start = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()  # the files: now
        args = [str(AISLE), "adapt", "--layout", str(LAYOUT), "--all", "--start", start]
        for cam, spec in sources.items():
            args += ["--source", f"{cam}={spec}"]
        proc = subprocess.Popen(
            args, env={**os.environ, **env}, cwd=tmp_path, stdout=subprocess.PIPE, stderr=sink,
            text=True,
        )  # fmt: skip
        try:
            ended = [f"source ended camera={c}" for c in sources if c != "cam-back-west"]
            wait_for(stderr, ended, proc, 240)
            # The live camera alone now keeps the store's clock going: its heartbeats
            # reach the log while it runs (each held hold_s behind the newest frame).
            beats = heartbeats_while_running(env, proc, 3, 120)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    said = stderr.read_text()
    assert proc.returncode == 0, out + said
    assert "SIGINT: reading stops" in said
    for cam in ("cam-front-west", "cam-front-east", "cam-back-east"):
        assert f"{cam}: {n} frames (mog2)" in out, out
    live_frames = re.search(r"cam-back-west: (\d+) frames \(mog2\) from (\S+)", out)
    assert live_frames is not None and int(live_frames[1]) > 0, out
    assert live_frames[2].rstrip(",") == camera.url, out
    assert "stopped before the end of the input" in out.replace("\n", " ")
    events = in_log(env)
    assert Counter(e.type for e in events)["store.heartbeat"] >= beats >= 3
    assert {e.source for e in events} == {"fusion"}


# -- the outbox: where it is, how much it holds, and what it does when full ---------------------


@pytest.fixture(scope="module")
def short(corner: Layout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(corner, CAMERA, tmp_path_factory.mktemp("short"), 150)


def fresh(env: dict[str, str], tmp_path: Path, name: str, **more: str) -> dict[str, str]:
    """Another run's streams (set up) and data folder, on the same server."""
    return set_up(
        {**env, "AISLE_PREFIX": unique_prefix(), "AISLE_DATA_DIR": str(tmp_path / name), **more}
    )


@pytest.mark.integration
def test_a_tiny_outbox_holds_the_adapter_back_says_it_is_full_and_loses_nothing(
    env: dict[str, str], short: Path, tmp_path: Path
) -> None:
    code, output = adapt(env, "--camera", CAMERA, "--source", str(short))
    assert code == 0, output
    made = sorted(e.id for e in in_log(env))
    boxes = tmp_path / "boxes"
    tiny = fresh(env, tmp_path, "tiny", AISLE_OUTBOX_MAX_EVENTS="2", AISLE_OUTBOX_DIR=str(boxes))
    code, output = adapt(tiny, "--camera", CAMERA, "--source", str(short))
    assert code == 0, output
    flat = output.replace("\n", " ")
    assert "is full" in flat and "the limits are 2 events" in flat, output
    assert sorted(e.id for e in in_log(tiny)) == made, "every event, through a 2-event outbox"
    assert (boxes / f"corner-01.{CAMERA}.sqlite").exists(), "AISLE_OUTBOX_DIR"


@pytest.mark.integration
def test_events_larger_than_the_whole_outbox_are_refused_named_and_the_command_fails(
    env: dict[str, str], short: Path, tmp_path: Path
) -> None:
    code, output = adapt(env, "--camera", CAMERA, "--source", str(short))
    assert code == 0, output
    sizes = {e.id: len(ev.encode(e)) for e in in_log(env)}
    bound = sorted(sizes.values())[len(sizes) // 2]
    fits = {i for i, n in sizes.items() if n <= bound}
    big = set(sizes) - fits
    assert 0 < len(big) < len(sizes)
    box = tmp_path / "mine.sqlite"
    other = fresh(env, tmp_path, "bounded")
    result = runner.invoke(
        app,
        ["adapt", "--layout", str(LAYOUT), "--camera", CAMERA, "--source", str(short),
         "--outbox", str(box), "--outbox-max-bytes", str(bound)],
        env=other,
    )  # fmt: skip
    flat = result.output.replace("\n", " ")
    assert result.exit_code == 1, result.output
    assert f"{len(big):,} events refused" in flat, result.output
    assert all(f"event={i}" in flat for i in big), "each refused event is named in the log"
    assert {e.id for e in in_log(other)} == fits, "the others are all published"
    assert box.exists(), "--outbox"


def test_the_progress_line_shows_frames_dropped_a_full_outbox_and_refused_events() -> None:
    p = AdaptProgress()
    p.frames["cam-a"] = 1200
    p.dropped["cam-a"] = 37
    p.refused["position.samples"] = 2
    p.waiting = True
    line = _line(p).plain
    assert "1,200 frames" in line and "37 frames dropped" in line
    assert "2 events REFUSED" in line and "outbox FULL: waiting for the log" in line
    assert "dropped" not in _line(AdaptProgress()).plain


@pytest.mark.integration
async def test_while_the_outbox_is_full_the_progress_says_so_and_work_resumes_after(
    corner: Layout, short: Path, tmp_path: Path
) -> None:
    """The log away and a 3-event outbox: the adapter is held (the progress says so)
    until the server comes, then every event goes."""
    from adapters.background import BackgroundSubtraction
    from adapters.pipeline import CameraInput, StoreAdapter, run_adapter
    from adapters.sources import source_for_camera
    from core.config import LogConfig
    from core.natsd import EmbeddedNats
    from core.outbox import Outbox, OutboxConfig
    from tests.outboxkit import opener

    camera = corner.camera(CAMERA)
    start = datetime(*DEFAULT_START, tzinfo=ZoneInfo(corner.store.timezone))
    source = source_for_camera(camera, short, start=start)
    adapter = StoreAdapter(corner, [CameraInput(camera, source, BackgroundSubtraction())], start)
    server = EmbeddedNats(tmp_path / "nats")
    seen: list[tuple[bool, int]] = []

    def progress(p: AdaptProgress) -> None:
        seen.append((p.waiting, p.total_frames))
        if p.waiting and server.process is None:
            server.start()  # the log comes back once the adapter is seen held

    config = LogConfig(prefix="held", publish_timeout_s=1.0)
    box = OutboxConfig(max_events=3, retry_max_s=0.2)
    try:
        async with Outbox.open(tmp_path / "o.db", opener(server.url, config), box) as outbox:
            done = await asyncio.wait_for(run_adapter(adapter, outbox, progress), 300)
    finally:
        server.stop()
    held = [frames for waiting, frames in seen if waiting]
    assert held, "the progress said the outbox was full"
    assert held[0] < done.total_frames == 150, "held mid-run, and then every frame"
    assert done.outbox is not None and done.outbox.pending == 0
    assert done.outbox.published == sum(done.events.values()) == done.new
    assert not seen[-1][0]
