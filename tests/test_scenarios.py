"""QA scenarios through the real pipeline: the library passes, a wrong expectation fails
readably (report, JUnit, exit code), and a broken scenario file is refused at its line."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.config import Settings
from core.jetstream import JetStreamLog
from core.yamlsource import load_yaml
from simulator.day import standard_packs
from simulator.scenario import (
    load_scenario,
    run_files,
    run_scenario,
    scenario_files,
    stage,
)
from simulator.scenario_report import check
from simulator.shoppers import Persona
from tests.conftest import scratch_log, server_url, unique_prefix
from tests.enginekit import derived_ids, running, settled
from tests.test_shoppers import packs_with

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "examples" / "scenarios"
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
runner = CliRunner()
_load_plugins()

pytestmark = pytest.mark.integration


@pytest.fixture
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"AISLE_NATS_URL": server_url("embedded", request), "AISLE_PREFIX": unique_prefix()}


def test_the_library_passes_with_the_standard_packs(env: dict[str, str]) -> None:
    files = scenario_files([LIBRARY])
    assert len(files) >= 15
    settings = Settings.from_env(env)
    results = asyncio.run(run_files(settings, [load_scenario(f) for f in files], standard_packs()))
    failed = [(r.name, c) for r in results for c in r.checks if not c.ok]
    assert not failed, failed
    assert all(r.checks for r in results), "every scenario expects something"
    assert all(r.outcome.inputs for r in results), "every scenario went through the log"

    packs = {d.rule.id.split(".")[0] for r in results for d in r.outcome.derived}
    assert packs >= {p.stem for p in standard_packs()}, "every standard pack derived something"


def test_the_library_covers_every_persona() -> None:
    seen: set[str] = set()
    for f in scenario_files([LIBRARY]):
        data = load_yaml(f).data
        for s in data.get("shoppers") or ():
            seen.add("staff" if s.get("staff") else s.get("persona", "mission"))
    assert seen == {p.value for p in Persona}


def _scenario(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text.replace("LAYOUT", str(LAYOUT)))
    return path


WRONG = """\
scenario: wrong-on-purpose
layout: LAYOUT
start: 2026-11-28T10:00
shoppers:
  - id: v1
    steps: [enter, {go: fridge-drinks}, {take: cola-500ml}, {queue: 5s}, pay, leave]
expect:
  receipts:
    - {cart: v1, lines: {cola-500ml: 2}}
  alerts:
    must:
      - {alert: hesitation, subject: v1}
    must_not:
      - {alert: "*"}
  metrics:
    - {name: footfall, value: 1}
    - {name: footfall, value: 3, tolerance: 1}
"""


def test_a_bad_file_in_a_batch_is_reported_as_an_error_and_the_rest_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    """One malformed file stopped the batch and wrote no JUnit, leaving a stale one."""
    good = WRONG.replace("cola-500ml: 2", "cola-500ml: 1").split("  alerts:")[0]
    _scenario(tmp_path, "a_good.yaml", good)
    _scenario(tmp_path, "b_bad.yaml", "scenario: bad\nlayout: LAYOUT\nshoppers: 7\n")
    junit = tmp_path / "junit.xml"
    junit.write_text("<stale/>")
    result = runner.invoke(app, ["scenario", "run", str(tmp_path), "--junit", str(junit)], env=env)
    assert result.exit_code == 2, result.output
    assert "PASS receipt of cart v1" in result.output
    assert "1 file(s) not valid scenarios, not run" in result.output
    root = ET.parse(junit).getroot()
    assert (root.get("errors"), root.get("failures")) == ("1", "0")
    (bad,) = [s for s in root if s.get("errors") == "1"]
    assert bad.get("name", "").endswith("b_bad.yaml") and bad.find("testcase/error") is not None


def test_a_folder_runs_its_subfolders_scenarios_and_leaves_out_other_yaml(
    tmp_path: Path,
) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    one = _scenario(tmp_path / "a", "one.yaml", WRONG)
    two = _scenario(tmp_path / "a" / "deep", "two.yaml", WRONG)
    (tmp_path / "a" / "store.yaml").write_text(LAYOUT.read_text())  # a layout beside them
    assert scenario_files([tmp_path]) == [two, one]  # path order: a/deep/ before a/one


def test_an_alert_no_loaded_pack_raises_fails_rather_than_passing_unseen(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A misspelt name under must_not never fires, so it passed and tested nothing."""
    text = WRONG.split("  alerts:")[0] + (
        "  alerts:\n    must_not:\n      - {alert: hesitaton}\n      - {alert: hesitation}\n"
    )
    path = _scenario(tmp_path, "typo.yaml", text.replace("cola-500ml: 2", "cola-500ml: 1"))
    result = runner.invoke(app, ["scenario", "run", str(path)], env=env)
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert (
        "FAIL alert hesitaton must not fire: expected an alert a loaded pack raises, "
        "got no loaded pack raises 'hesitaton' (did you mean 'hesitation'?)"
    ) in out, out
    assert "PASS alert hesitation must not fire: none" in out


def test_a_wrong_expectation_fails_with_a_readable_report(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = _scenario(tmp_path, "wrong.yaml", WRONG)
    junit = tmp_path / "out" / "junit.xml"
    result = runner.invoke(app, ["scenario", "run", str(path), "--junit", str(junit)], env=env)
    assert result.exit_code == 1, result.output
    out = result.output
    assert f"FAIL receipt of cart v1: expected cola-500ml×2, got cola-500ml×1  [{path}:9]" in out, (
        out
    )
    assert "FAIL alert hesitation for v1 must fire: expected at least 1, got 0" in out
    assert f"[{path}:12]" in out
    assert "PASS any alert must not fire: none" in out
    assert "PASS metric footfall (last): 1" in out
    assert "FAIL metric footfall (last): expected 3 ± 1, got 1" in out
    assert "1 scenario, 5 expectations: 2 passed, 3 failed (in 1 scenario)" in out

    suites = ET.parse(junit).getroot()
    assert suites.tag == "testsuites"
    assert (suites.get("tests"), suites.get("failures")) == ("5", "3")
    (suite,) = suites
    assert suite.get("name") == str(path) and suite.get("failures") == "3"
    props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert props["wrong-on-purpose.noise_seed"] == "1", props  # what reproduces the run
    assert props["wrong-on-purpose.store"].startswith("corner-01"), props
    cases = suite.findall("testcase")
    assert len(cases) == 5 and {c.get("classname") for c in cases} == {"wrong-on-purpose"}
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert [f.get("message") for f in failures] == [
        "expected cola-500ml×2, got cola-500ml×1",
        "expected at least 1, got 0; alerts raised: none",
        "expected 3 ± 1, got 1",
    ]
    assert [c.get("line") for c in cases] == ["9", "12", "14", "16", "17"]


def test_a_rerun_publishes_nothing_and_reports_the_same(env: dict[str, str]) -> None:
    files = [str(LIBRARY / "hesitant_alert.yaml"), str(LIBRARY / "passersby_capture_rate.yaml")]
    first = runner.invoke(app, ["scenario", "run", *files], env=env)
    again = runner.invoke(app, ["scenario", "run", *files], env=env)
    assert first.exit_code == again.exit_code == 0, first.output + again.output
    assert re.findall(r"\((\d+) new to the log\)", again.output) == ["0", "0"]
    assert "(0 new" not in first.output

    def steady(text: str) -> str:
        return re.sub(r"\(\d+ new to the log\)|[\d.]+ s$", "", text, flags=re.M)

    assert steady(first.output) == steady(again.output)
    stores = re.findall(r"in store (corner-01-[0-9a-f]{10})", first.output)
    assert len(set(stores)) == 2, "each scenario has a store of its own"


# Seed 28 delivers the pick 2.5 s late, with nothing but position samples in between (the
# test checks it): in event-time order it is in time; in the order the service applies the
# log (by arrival) the samples that came before it have moved the store's clock more than
# the lateness past it.
LATE_PICK = """\
scenario: late-pick
layout: LAYOUT
start: 2026-11-28T10:00
hours: 0.25
shoppers:
  - id: v1
    steps: [enter, {go: fridge-drinks}, {take: cola-500ml}, {wait: 20s}, {queue: 5s}, pay, leave]
noise: {late_s: 3, late_fraction: 0.1}
seed: 28
lateness: 0.5s
expect:
  receipts:
    - {cart: v1, lines: {}}
"""


async def _as_delivered(log: JetStreamLog, events: list[ev.Event], pause_s: float = 0.05) -> None:
    """Publish in delivery order, pausing at each new second of event time: the log stamps an
    event delivered late after what was delivered before it, as a store's log does live."""
    newest, batch = float("-inf"), []
    for e in events:
        if e.at.timestamp() >= newest + 1 and batch:
            await log.publish_many(batch)
            batch = []
            await asyncio.sleep(pause_s)
        newest = max(newest, int(e.at.timestamp()))
        batch.append(e)
    await log.publish_many(batch)


@pytest.fixture
async def log(request: pytest.FixtureRequest) -> AsyncIterator[JetStreamLog]:
    async with scratch_log(server_url("embedded", request)) as log:
        yield log


async def test_a_scenario_derives_what_the_engine_service_derives_from_its_log(
    log: JetStreamLog, tmp_path: Path
) -> None:
    sc = load_scenario(_scenario(tmp_path, "late.yaml", LATE_PICK))
    staged = stage(sc, standard_packs())
    store = staged.store.layout.store.id
    i, pick = next((i, e) for i, e in enumerate(staged.delivered) if isinstance(e, ev.ItemPicked))
    before = staged.delivered[i - 1]
    assert isinstance(before, ev.PositionSamples) and before.at - pick.at >= timedelta(seconds=2)
    await _as_delivered(log, staged.delivered)
    async with running(log, stores=(store,), lateness_s=sc.lateness_s) as worker:
        await settled(log, [store])
        late = sum(s.value for s in worker.metrics.late.collect()[0].samples if
                   s.name.endswith("_total") and s.labels["store"] == store)  # fmt: skip
    service = await derived_ids(log, store)

    outcome = await run_scenario(log, sc, standard_packs())
    assert outcome.store == store and outcome.late == late > 0
    until_closed = outcome.derived[: len(outcome.derived) - outcome.closed]
    assert [d.id for d in until_closed] == service
    assert outcome.new == outcome.closed, "the service had derived all the rest"
    assert pick in outcome.inputs, "the pick is in the log"
    assert not [d for d in outcome.derived if isinstance(d, ev.CartItemAdded)], "and late"
    assert all(check(x, outcome).ok for x in sc.expectations)


TRUTH_FOLLOWS = """\
scenario: truth-follows-the-pack
layout: LAYOUT
start: 2026-11-28T10:00
shoppers:
  - id: long
    persona: queue_waiter
    steps: [enter, {go: fridge-drinks}, {take: cola-500ml}, {queue: 120s}, pay, leave]
  - id: short
    at: 10s
    steps: [enter, {go: fridge-drinks}, {take: water-still-500ml}, {queue: 40s}, pay, leave]
  - id: twice
    at: 20s
    steps: [enter, {go: g2-east}, {take: red-wine-750ml}, {put_back: red-wine-750ml},
            {take: red-wine-750ml}, {put_back: red-wine-750ml}, {queue: 5s}, pay, leave]
  - id: thrice
    persona: hesitant
    at: 30s
    steps: [enter, {go: g2-east}, {take: red-wine-750ml}, {put_back: red-wine-750ml},
            {take: red-wine-750ml}, {put_back: red-wine-750ml}, {take: red-wine-750ml},
            {put_back: red-wine-750ml}, {take: red-wine-750ml}, {queue: 5s}, pay, leave]
expect:
  receipts: exact
  alerts: {truth: true}
"""


@pytest.mark.parametrize(
    ("params", "due"),
    [
        ({}, {("long", "queue_wait_long"), ("thrice", "hesitation")}),
        ({"queue_wait": "200s"}, {("thrice", "hesitation")}),
        (
            {"queue_wait": "30s", "hesitation_count": 2},
            {
                ("long", "queue_wait_long"),
                ("short", "queue_wait_long"),
                ("twice", "hesitation"),
                ("thrice", "hesitation"),
            },
        ),
    ],
)
def test_a_scenario_expects_the_alerts_its_packs_parameters_make_due(
    env: dict[str, str],
    tmp_path: Path,
    params: dict[str, str | int],
    due: set[tuple[str, str]],
) -> None:
    sc = load_scenario(_scenario(tmp_path, "truth.yaml", TRUTH_FOLLOWS))
    packs = packs_with(tmp_path / "packs", **params)
    (result,) = asyncio.run(run_files(Settings.from_env(env), [sc], packs))
    assert result.outcome.truth_alerts == due
    assert result.checks and all(c.ok for c in result.checks), result.checks


HEAD = """\
scenario: broken
layout: LAYOUT
start: 2026-11-28T10:00
"""


@pytest.mark.parametrize(
    ("body", "line", "col", "message"),
    [
        (
            "shoppers:\n  - id: v1\n    steps:\n      - enter\n      - go: fridge-drinkz\n",
            8,
            13,
            "unknown shelf or zone 'fridge-drinkz' (did you mean 'fridge-drinks'?)",
        ),
        (
            "shoppers:\n  - id: v1\n    steps: [enter, {take: cola-5000ml}]\n",
            6,
            27,
            "unknown SKU 'cola-5000ml'",
        ),
        (
            "shoppers:\n  - id: v1\n    steps: [enter, {take: cola-500ml from g1-west}]\n",
            6,
            27,
            "shelf g1-west holds no cola-500ml",
        ),
        (
            "shoppers:\n  - id: v1\n    steps: [enter, {put_back: cola-500ml on g9}]\n",
            6,
            31,
            "unknown shelf 'g9'",
        ),
        (
            "shoppers:\n  - id: v1\n    steps: [enter, {go: aisle-9}]\n",
            6,
            25,
            "unknown shelf or zone 'aisle-9'",
        ),
        (
            "shoppers:\n  - id: v1\n    steps: [enter, {go: stock-room}]\n",
            6,
            25,
            "stock-room is staff only",
        ),
        (
            "shoppers:\n  - id: v1\n    persona: shoplifter\n",
            6,
            14,
            "unknown persona 'shoplifter': one of mission, browser",
        ),
        (
            "shoppers:\n  - id: v1\n    steps:\n      - enter\n      - wait: 20 seconds\n",
            8,
            15,
            "'20 seconds' is not a duration",
        ),
        ("shoppers:\n  - {id: v1, at: 2h}\n", 5, 18, "2h is after the scenario's end"),
        ("shoppers:\n  - id: v1\n    steps: [enter, walk]\n", 6, 20, "unknown step 'walk'"),
        ("crowd: {shoppers: 3, mix: {mission: 1, robber: 1}}\n", 4, 40, "unknown field 'robber'"),
        ("noise: loud\n", 4, 8, "noise is off, default, or a mapping of knobs"),
        ("lateness: 6s\n", 4, 11, "a lateness of 6s, which the engine refuses: --max-future"),
        ("noise: {late_s: 9}\n", 4, 8, "a lateness of 9s, which the engine refuses"),
    ],
)
def test_an_invalid_scenario_is_refused_at_its_line(
    tmp_path: Path, body: str, line: int, col: int, message: str
) -> None:
    path = _scenario(tmp_path, "broken.yaml", HEAD + body + "expect: {receipts: exact}\n")
    result = runner.invoke(app, ["scenario", "run", str(path)], env={"AISLE_NATS_URL": "x"})
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}:{col}: {message}" in result.output


@pytest.mark.parametrize(
    ("expect", "line", "message"),
    [
        ("expect:\n  reciepts: exact\n", 5, "unknown field 'reciepts'"),
        ("expect:\n  receipts: exakt\n", 5, "receipts: exact, {within: 0.99} or a list"),
        ("expect:\n  receipts: {within: 1.5}\n", 5, "expected float <= 1.0"),
        ("expect:\n  alerts:\n    must: [{alert: '*'}]\n", 6, "'*' only in must_not"),
        ("expect:\n  events: [{type: item.stolen, count: 1}]\n", 5, "unknown event type"),
        ("expect:\n  metrics: [{name: footfall}]\n", 5, "missing required field 'value'"),
        ("expect:\n  heatmap: [{at: [1, 2]}]\n", 5, "a heatmap expectation is"),
    ],
)
def test_an_unknown_expectation_is_refused_at_its_line(
    tmp_path: Path, expect: str, line: int, message: str
) -> None:
    path = _scenario(tmp_path, "broken.yaml", HEAD + expect)
    result = runner.invoke(app, ["scenario", "run", str(path)], env={"AISLE_NATS_URL": "x"})
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}:" in result.output and message in result.output, result.output


def test_a_scenario_with_several_problems_reports_them_all_in_one_run(tmp_path: Path) -> None:
    body = (
        "heartbeat: 500ms\n"
        "shoppers:\n"
        "  - id: v1\n"
        "    steps: [enter, {take: cola-5000ml}]\n"
        "  - id: v2\n"
        "    persona: shoplifter\n"
        "  - {id: v3, at: 2h}\n"
        "expect:\n"
        "  reciepts: exact\n"
        "  events: [{type: item.stolen, count: 1}]\n"
    )
    path = _scenario(tmp_path, "broken.yaml", HEAD + body)
    result = runner.invoke(app, ["scenario", "run", str(path)], env={"AISLE_NATS_URL": "x"})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(str(path))]
    places = [tuple(int(n) for n in line[len(str(path)) + 1 :].split(":")[:2]) for line in lines]
    assert places == [(4, 12), (7, 27), (9, 14), (10, 18), (12, 3), (13, 19)], result.output


def test_every_problem_of_one_shopper_is_reported_its_persona_and_each_step(
    tmp_path: Path,
) -> None:
    body = (
        "shoppers:\n"
        "  - id: v1\n"
        "    persona: shoplifter\n"
        "    steps:\n"
        "      - enter\n"
        "      - go: fridge-mealz\n"
        "      - wait: 5 seconds\n"
        "      - take: chicken-sandwhich\n"
        "expect: {receipts: exact}\n"
    )
    path = _scenario(tmp_path, "broken.yaml", HEAD + body)
    result = runner.invoke(app, ["scenario", "run", str(path)], env={"AISLE_NATS_URL": "x"})
    assert result.exit_code == 2, result.output
    assert f"{path}:6:14: unknown persona 'shoplifter'" in result.output, result.output
    assert f"{path}:9:13: unknown shelf or zone 'fridge-mealz'" in result.output
    assert f"{path}:10:15: '5 seconds' is not a duration" in result.output
    assert f"{path}:11:15: unknown SKU 'chicken-sandwhich'" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"scenario: caf\xe9\n", "1:14: not UTF-8"),
        ("scenario: " + "[" * 20_000 + "]" * 20_000 + "\n", "1:111: nested more than 100"),
    ],
)
def test_a_scenario_not_utf8_or_nested_too_deep_is_refused_at_its_place(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = runner.invoke(app, ["scenario", "run", str(path)], env={"AISLE_NATS_URL": "x"})
    assert result.exit_code == 2, result.output
    assert f"{path}:{message}" in result.output, result.output


def test_the_documented_example_is_a_valid_scenario(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    examples = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "scenario:" in b]
    assert examples
    for i, text in enumerate(examples):
        text = text.replace("../stores/convenience.yaml", "LAYOUT")
        sc = load_scenario(_scenario(tmp_path, f"doc{i}.yaml", text))
        assert sc.visitors and sc.expectations


def test_packs_are_files_or_folders_and_a_set_that_runs_nothing_or_is_invalid_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    """``--packs file.yaml`` ran no pack at all (a file globbed as a folder), so every
    receipt was missing; an invalid pack ended in a traceback."""
    scenario = str(LIBRARY / "age_restricted.yaml")
    carts = str(ROOT / "rules" / "packs" / "carts.yaml")
    one = runner.invoke(app, ["scenario", "run", scenario, "--packs", carts], env=env)
    assert one.exit_code == 0, one.output
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text('pack: bad\nversion: "1.0.0"\nrules:\n  - id: x\n    bogus: 1\n')
    for packs, said in (
        (str(empty), "no rule packs in"),
        (str(tmp_path / "nosuch.yaml"), "no such pack file"),
        (str(bad), f"{bad}:5:5: unknown field 'bogus'"),
    ):
        result = runner.invoke(app, ["scenario", "run", scenario, "--packs", packs], env=env)
        assert result.exit_code == 2, result.output
        assert said in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
