"""``aisle simulate --video`` end to end: the example convenience store filmed by its four
cameras, the adapters on the film, the standard packs on both sides, against a real
nats-server; the report and the JUnit file, a missed target failing, the film reused, and
the requests it cannot run refused before anything runs.

The span is as short as a test allows (two visitors, the cameras at 5 frames/s): what the
adapters reach is measured by ``bench/video_accuracy.py``, not here.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.config import Settings
from core.layout import load_layout
from core.log import read_arrived
from core.natsd import EmbeddedNats
from core.runtime import open_log
from simulator.day import standard_packs
from simulator.eyes.report import TargetError, Targets, parse_targets
from simulator.eyes.video import Request, at_fps, film
from tests.conftest import unique_prefix

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
ARGS = ["--hours", "0.01", "--shoppers", "2", "--fps", "5", "--seed", "4"]
OPENS = "2026-11-28T12:00"
runner = CliRunner()
_load_plugins()

pytestmark = pytest.mark.integration


@dataclass
class Ran:
    env: dict[str, str]
    film: Path
    junit: Path
    output: str
    exit_code: int


@pytest.fixture(scope="module")
def ran(embedded_nats: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """One run, with one target no film can meet (a heatmap correlated at r = 1)."""
    tmp = tmp_path_factory.mktemp("video")
    env = {
        "AISLE_NATS_URL": embedded_nats.url,
        "AISLE_PREFIX": unique_prefix(),
        "AISLE_DATA_DIR": str(tmp / "data"),
    }
    junit = tmp / "out" / "junit.xml"
    args = ["simulate", "--video", *ARGS, "--opens", OPENS, "--video-dir", str(tmp / "film")]
    args += ["--junit", str(junit), "--target", "heatmap_r=1"]
    result = runner.invoke(app, args, env=env, terminal_width=160)
    print(result.output)
    return Ran(env, tmp / "film", junit, result.output, result.exit_code)


def _stores(output: str) -> tuple[str, str]:
    found = re.search(r"store (\S+) \(truth\) and\s+(\S+) \(adapters", output)
    assert found, output
    return found.group(1), found.group(2)


def _table(output: str) -> dict[str, list[str]]:
    """The report's rows by metric: truth, adapters, difference, target, result (a cell
    folded over several lines joined again)."""
    rows: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells[-1] or last is None:
            last = cells
            rows[cells[0]] = cells
        else:
            for k, c in enumerate(cells):
                last[k] = f"{last[k]} {c}".strip()
    return {" ".join(cells[0].split()): cells[1:] for cells in rows.values()}


def _row(output: str, metric: str) -> list[str]:
    table = _table(output)
    assert metric in table, sorted(table)
    return table[metric]


async def _held(env: dict[str, str], store: str) -> list[ev.Event]:
    async with open_log(Settings.from_env(env), read_only=True) as log:
        return list(await read_arrived(log, store))


def test_the_report_sets_what_the_packs_make_of_the_adapters_beside_the_truth(ran: Ran) -> None:
    truth_store, video_store = _stores(ran.output)
    truth = asyncio.run(_held(ran.env, truth_store))
    video = asyncio.run(_held(ran.env, video_store))
    # Two stores of their own: the simulator's events in one, the adapters' in the other.
    assert {e.source for e in video} == {"fusion"}
    assert "fusion" not in {e.source for e in truth}
    assert not {e.id for e in truth} & {e.id for e in video}
    entries = Counter(type(e) for e in truth)[ev.ShopperEntered]
    assert entries >= 2

    footfall = _row(ran.output, "footfall (traffic pack)")
    assert footfall[0] == str(entries)  # the truth's, as the packs counted it
    assert footfall[1] == str(Counter(type(e) for e in video)[ev.ShopperEntered])
    assert footfall[4] in {"PASS", "FAIL"}
    for metric in (
        "entries (paired within 2 s)",
        "exits (paired within 2 s)",
        "zone visits (traffic pack)",
        "zone visit dwell, mean",
        "zone visit dwell within 1 s",
        "queue waits of 10 s or more",
        "queue wait, mean",
        "heatmap cell dwell (heatmap pack, day)",
        "rule errors",
    ):
        assert _row(ran.output, metric)[-1] in {"PASS", "FAIL"}, metric
    assert _row(ran.output, "passers-by")[-1] == "SKIP"
    assert "no camera films them" in " ".join(ran.output.split())
    for camera in ("cam-front-west", "cam-front-east", "cam-back-west", "cam-back-east"):
        assert camera in ran.output
    assert "cross-camera id switches" in ran.output


def test_a_missed_target_fails_in_the_table_the_junit_file_and_the_exit_code(ran: Ran) -> None:
    heatmap = _row(ran.output, "heatmap cell dwell (heatmap pack, day)")
    assert heatmap[3] == "r ≥ 1" and heatmap[4] == "FAIL"
    assert ran.exit_code == 1

    root = ET.parse(ran.junit).getroot()
    (suite,) = root.findall("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert len(cases) == int(suite.get("tests", "0")) >= 15
    failed = [n for n, c in cases.items() if c.find("failure") is not None]
    skipped = [n for n, c in cases.items() if c.find("skipped") is not None]
    assert suite.get("failures") == root.get("failures") == str(len(failed))
    assert skipped == ["passers-by", "capture rate (traffic pack)"]
    failure = cases["heatmap cell dwell (heatmap pack, day)"].find("failure")
    assert failure is not None and "target ≥ 1" in failure.get("message", "")
    # the same verdicts as the table's
    table = _table(ran.output)
    assert sorted(table) == sorted(cases)
    for name, case in cases.items():
        shown = table[name][-1]
        if case.find("failure") is not None:
            assert shown == "FAIL", name
        elif case.find("skipped") is None and shown != "reported":
            assert shown == "PASS", name
    summary = re.search(r"(\d+) metrics: (\d+) passed, (\d+) failed, (\d+) skipped", ran.output)
    assert summary and int(summary.group(3)) == len(failed)


def test_the_film_of_the_same_request_is_reused(ran: Ran) -> None:
    layout = load_layout(LAYOUT)
    request = Request(
        layout=at_fps(layout, 5.0),
        start=datetime.fromisoformat(OPENS).replace(tzinfo=ZoneInfo(layout.store.timezone)),
        hours=0.01,
        shoppers=2,
        seed=4,
        packs=tuple(standard_packs()),
    )
    videos = sorted(ran.film.glob("*.mp4"))
    assert len(videos) == 4
    before = {p: p.stat().st_mtime_ns for p in videos}
    again = film(request, ran.film)
    assert again.reused and {p: p.stat().st_mtime_ns for p in videos} == before
    assert sum(again.frames.values()) > 0
    other = Request(**{**request.__dict__, "seed": 5})
    assert other.key != request.key  # another request is another film (and other stores)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video", "--stores", "2"], "not with --video"),
        (["--video", "--realtime"], "not with --video"),
        (["--video", "--target", "nope=1"], "no target 'nope'"),
        (["--video", "--target", "heatmap_r=2"], "not in [-1, 1]"),
        (["--video", "--target", "mean_s"], "NAME=VALUE"),
        (["--video", "--detector", "yolo"], "not one of mog2"),
        (["--video", "--hours", "100"], "not in (0, 24]"),
        (["--video", "--fps", "0"], "not in (0, 240]"),
        (["--video", "--shoppers", "0"], "not in [1, 100000]"),
        (["--junit", "x.xml"], "only with --video"),
    ],
)
def test_a_request_the_check_cannot_run_is_refused_before_anything_runs(
    args: list[str], message: str, tmp_path: Path
) -> None:
    env = {"AISLE_NATS_URL": "nats://127.0.0.1:1", "AISLE_DATA_DIR": str(tmp_path)}
    result = runner.invoke(app, ["simulate", *args], env=env, terminal_width=200)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "video").exists()


def test_targets_are_read_by_name_over_the_defaults() -> None:
    t = parse_targets(["heatmap_r=0.9", "count_pct = 10"])
    assert t.heatmap_r == 0.9 and t.count_pct == 10.0
    assert t.crossings_right == Targets().crossings_right
    with pytest.raises(TargetError, match="crossings_right"):
        parse_targets(["crossings_right=1.5"])
    with pytest.raises(TargetError, match="not a number"):
        parse_targets(["mean_s=soon"])
