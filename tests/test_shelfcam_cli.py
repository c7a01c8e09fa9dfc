"""``aisle shelfcam`` end to end against a real nats-server: a simulated slice of a day
in the log with one pick left out, the shelf camera's rendered video of that pick read
by the command, and the log's receipts are the true ones; run again, nothing new; a
camera the layout does not have ends it with exit code 2."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from adapters.shelfcam import protobuf_compat
from core import events as ev
from core.cli import _load_plugins, app
from core.config import Settings
from core.layout import Layout, load_layout
from core.log import publish_in_order
from core.runtime import open_log
from simulator.day import simulate
from simulator.shelfcam import reaches_from_events, render_shelf_camera
from tests.conftest import server_url, set_up, unique_prefix
from tests.test_shelf_cli import business, receipts

protobuf_compat()
pytest.importorskip("mediapipe")

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
START = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
CAM = "shelfcam-g1-east"
runner = CliRunner()
_load_plugins()

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(LAYOUT)


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return set_up(
        {
            "AISLE_NATS_URL": server_url("embedded", request),
            "AISLE_PREFIX": unique_prefix(),
            "AISLE_DATA_DIR": str(tmp_path / "data"),
        }
    )


def shelfcam(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["shelfcam", "--layout", str(LAYOUT), *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_a_filmed_pick_becomes_the_true_receipt_and_again_adds_nothing(
    env: dict[str, str], corner: Layout, tmp_path: Path
) -> None:
    run = simulate(corner, START, hours=0.5, shoppers=20, seed=1)
    shelf = corner.shelf_camera(CAM).shelf
    filmed = next(e for e in run.events if isinstance(e, ev.ItemPicked) and e.data.shelf == shelf)
    floor = [e for e in run.events if e.id != filmed.id]

    async def publish() -> None:
        async with open_log(Settings.from_env(env)) as log:
            await publish_in_order(log, floor)

    since = datetime.now(UTC) - timedelta(seconds=1)
    asyncio.run(publish())
    first = filmed.at - timedelta(seconds=2)  # the video's first frame
    moves = [e for e in run.events if not isinstance(e, ev.ItemPicked | ev.ItemPutBack)]
    reaches = reaches_from_events(corner, CAM, [*moves, filmed], first)
    video = tmp_path / "shelf.avi"
    render_shelf_camera(corner, CAM, reaches, video, seed=5)
    args = ("--video", f"{CAM}={video}", "--start", first.astimezone(UTC).isoformat(),
            "--positions-from", since.isoformat())  # fmt: skip
    code, output = shelfcam(env, *args)
    assert code == 0, output
    text = " ".join(output.split())
    assert "item.picked 1" in text and "1 new" in text, text
    log_events = business(env)
    (pick,) = [e for e in log_events if e.source == CAM]
    assert isinstance(pick, ev.ItemPicked) and pick.subject == filmed.subject
    assert (pick.data.sku, pick.data.shelf, pick.data.qty) == (
        filmed.data.sku, filmed.data.shelf, filmed.data.qty,
    )  # fmt: skip
    assert receipts(corner, log_events, run) == run.receipts()

    again, output = shelfcam(env, *args)
    assert again == 0, output
    assert " 0 new" in " ".join(output.split()), "the outbox remembers what it published"
    assert Counter(e.id for e in business(env)) == Counter(e.id for e in log_events)


def test_a_camera_the_layout_does_not_have_is_a_command_line_mistake(
    env: dict[str, str], tmp_path: Path
) -> None:
    video = tmp_path / "v.avi"
    video.write_bytes(b"")
    code, output = shelfcam(
        env, "--video", f"shelfcam-g1-eats={video}", "--start", "2026-11-28T11:00:00"
    )
    assert code == 2
    assert "did you mean 'shelfcam-g1-east'" in " ".join(output.split())
    code, output = shelfcam(env, "--video", f"{'shelfcam-g1-east'}={video}")
    assert code == 2 and "--start" in output
