"""``aisle adapt`` end to end: a rendered video of the convenience store through MOG2, the
tracker, the floor and the outbox into a real nats-server; the same video again adds
nothing; ``--annotate`` writes a video frame for frame; mistakes end with exit code 2."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import pytest
from typer.testing import CliRunner

from adapters.cli import DEFAULT_START, start_of
from core import events as ev
from core.cli import _load_plugins, app
from core.config import Settings
from core.layout import Layout, load_layout
from core.runtime import open_log
from simulator.day import simulate
from simulator.render import RenderOptions, render_camera
from tests.conftest import server_url, unique_prefix

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
CAMERA = "cam-front-west"  # the door and the queue, 1280x720 at 15 frames/s
FRAMES = 300  # 20 s: five shoppers come in
runner = CliRunner()
_load_plugins()


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(LAYOUT)


def _render(corner: Layout, camera: str, folder: Path, frames: int) -> Path:
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
    return _render(corner, CAMERA, tmp_path_factory.mktemp("adapt"), FRAMES)


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return {
        "AISLE_NATS_URL": server_url("embedded", request),
        "AISLE_PREFIX": unique_prefix(),
        "AISLE_DATA_DIR": str(tmp_path / "data"),
    }


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


@pytest.mark.parametrize("detector", ["yolo", "det-file"])
def test_a_detector_that_needs_weights_is_refused_without_them(detector: str) -> None:
    code, output = adapt(NO_SERVER, "--camera", CAMERA, "--source", "x.mp4", "--detector", detector)
    assert code == 2 and "needs --weights" in output, output


def test_all_cameras_need_a_source_each(video: Path) -> None:
    code, output = adapt(NO_SERVER, "--all", "--source", f"{CAMERA}={video}")
    assert code == 2, output
    assert "no --source for camera(s) cam-front-east" in output.replace("\n", " ")
    code, output = adapt(NO_SERVER, "--all", "--source", f"cam-frnt-west={video}")
    assert code == 2 and "did you mean 'cam-front-west'?" in output.replace("\n", " "), output


@pytest.mark.integration
def test_all_cameras_in_one_process_hand_shoppers_over_under_one_source(
    env: dict[str, str], corner: Layout, tmp_path: Path
) -> None:
    frames = 150  # 10 s of each camera
    sources = [f"{cam.id}={_render(corner, cam.id, tmp_path, frames)}" for cam in corner.cameras]
    out = tmp_path / "all.mp4"
    code, output = adapt(
        env, "--all", *itertools.chain.from_iterable(("--source", s) for s in sources),
        "--annotate", str(out),
    )  # fmt: skip
    assert code == 0, output
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
    """A calibration pixel moved by 6 px (within the loader's tolerance) shows in the
    reprojection errors; nothing is published (no server is reachable)."""
    text = LAYOUT.read_text(encoding="utf-8")
    moved = text.replace("{image: [241.7, 106.1]", "{image: [247.7, 106.1]")
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
