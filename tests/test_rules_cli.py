"""``aisle rules test | explain | schema``, as a rule author runs them."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.layout import load_layout
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from tests.conftest import server_url, unique_prefix

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
_load_plugins()


def test_the_standard_pack_tests_pass() -> None:
    result = runner.invoke(app, ["rules", "test", str(ROOT / "rules" / "packs")])
    assert result.exit_code == 0, result.output
    assert " 0 failed, 0 files in error" in result.output
    assert result.output.count("PASS") >= 70


def test_a_wrong_expectation_fails_with_a_readable_diff(tmp_path: Path) -> None:
    test = tmp_path / "wrong_test.yaml"
    test.write_text(
        f"""packs: [{ROOT / "rules" / "packs" / "carts.yaml"}]
layout: {ROOT / "examples" / "stores" / "convenience.yaml"}
tests:
  - name: the price is wrong on purpose
    events:
      - 10s item.picked v1 sku=cola-500ml shelf=fridge-drinks
      - 40s zone.entered v1 zone=exit-gate
    expect:
      - {{at: 40s, type: receipt.issued, data: {{total_cents: 100}}}}
"""
    )
    result = runner.invoke(app, ["rules", "test", str(test)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "the price is wrong on purpose" in result.output
    assert '- expected: 40s receipt.issued  {"total_cents":100}' in result.output
    assert '"total_cents":179' in result.output and "+ got:" in result.output


def test_rules_test_on_a_pack_says_it_is_a_pack_not_a_test_file() -> None:
    pack = ROOT / "docs" / "examples" / "count.yaml"
    result = runner.invoke(app, ["rules", "test", str(pack)])
    assert result.exit_code == 1
    assert f"{pack}:1:1: this is a rule pack, not a test file" in result.output, result.output
    assert "aisle rules check" in result.output


def test_rules_check_on_a_test_file_says_it_is_a_test_file_not_a_pack() -> None:
    test = ROOT / "docs" / "examples" / "count_test.yaml"
    result = runner.invoke(app, ["rules", "check", str(test)])
    assert result.exit_code == 1
    assert f"{test}:1:1: this is a rule test file, not a pack" in result.output, result.output
    assert "aisle rules test" in result.output


def test_rules_check_on_the_glob_a_person_types_checks_the_packs_and_skips_the_tests() -> None:
    """`aisle rules check rules/packs/*.yaml` failed on the packs' own test files."""
    named = sorted((ROOT / "rules" / "packs").glob("*.yaml"))
    layout = ROOT / "examples" / "stores" / "convenience.yaml"
    result = runner.invoke(app, ["rules", "check", *map(str, named), "--layout", str(layout)])
    assert result.exit_code == 0, result.output
    packs = [p for p in named if not p.name.endswith("_test.yaml")]
    assert f"ok {len(packs)} packs" in result.stdout
    skipped = [line for line in result.stderr.splitlines() if "a rule test file" in line]
    assert len(skipped) == len(named) - len(packs) and "aisle rules test" in skipped[0]


def test_schema_is_json_schema_for_editors() -> None:
    result = runner.invoke(app, ["rules", "schema"])
    schema = json.loads(result.stdout)
    assert schema["title"] == "aisle rule pack"
    assert (ROOT / "rules" / "pack.schema.json").read_text().strip() == json.dumps(
        {k: v for k, v in schema.items()}, indent=2
    )


@pytest.fixture(params=["system", "embedded"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"AISLE_NATS_URL": server_url(request.param, request), "AISLE_PREFIX": unique_prefix()}


def test_explain_walks_a_receipt_back_to_the_picks(env: dict[str, str]) -> None:
    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    base = {"store": "corner-01", "source": "cam-1", "subject": "v-7"}
    raw = [
        ev.new(
            ev.ItemPicked, at=t0, data=ev.ItemData(sku="cola-500ml", shelf="fridge-drinks"), **base
        ),
        ev.new(
            ev.ZoneEntered,
            at=t0 + timedelta(seconds=30),
            data=ev.ZoneData(zone="exit-gate"),
            **base,
        ),
    ]
    packs = [ROOT / "rules" / "packs" / "carts.yaml"]
    derived = Engine(load_rules(packs, Reference.of(layout))).process(raw).derived
    receipt = next(d for d in derived if isinstance(d, ev.ReceiptIssued))

    async def publish() -> None:
        log = await JetStreamLog.open(
            await connect(env["AISLE_NATS_URL"]), LogConfig(prefix=env["AISLE_PREFIX"])
        )
        await log.publish_many([*raw, *derived])
        await log.close()

    asyncio.run(publish())
    result = runner.invoke(app, ["rules", "explain", receipt.id, "--store", "corner-01"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "receipt.issued v-7" in lines[0] and "[rule carts.cart version 1.2.0]" in lines[0]
    assert any("cart.item_added" in line and "carts.cart" in line for line in lines)
    assert any("item.picked" in line and "[raw]" in line for line in lines)
    assert any("zone.entered" in line and "[raw]" in line for line in lines)
    missing = runner.invoke(app, ["rules", "explain", "nope"], env=env)
    assert missing.exit_code == 1 and "no event nope" in missing.output


def test_explain_prints_hostile_event_text_as_text(env: dict[str, str]) -> None:
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    hostile = "[/] \x1b[31mred\x1b[0m \u202eevil"
    picked = ev.new(
        ev.ItemPicked,
        at=t0,
        store="corner-01",
        source=hostile,
        subject=hostile,
        data=ev.ItemData(sku="cola-500ml", shelf="fridge-drinks"),
    )

    async def publish() -> None:
        log = await JetStreamLog.open(
            await connect(env["AISLE_NATS_URL"]), LogConfig(prefix=env["AISLE_PREFIX"])
        )
        await log.publish(picked)
        await log.close()

    asyncio.run(publish())
    result = runner.invoke(app, ["rules", "explain", picked.id, "--store", "corner-01"], env=env)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output
    assert "item.picked [/] \\x1b[31mred\\x1b[0m \\u202eevil" in result.output


def test_an_unquoted_time_in_a_tests_expect_is_read_as_a_time_not_a_traceback(
    tmp_path: Path,
) -> None:
    """YAML reads `at: 2026-11-28T09:00:05Z` as a time: it crashed with an AttributeError."""
    shutil.copy(ROOT / "docs" / "examples" / "count.yaml", tmp_path / "count.yaml")
    test = tmp_path / "count_test.yaml"
    test.write_text(
        "packs: [count.yaml]\n"
        "tests:\n"
        "  - name: unquoted\n"
        "    events: []\n"
        "    expect:\n"
        "      - {at: 2026-11-28T09:00:05Z, type: alert.raised}\n"
        "    absent:\n"
        "      - {at: [1], type: alert.raised}\n"
    )
    result = runner.invoke(app, ["rules", "test", str(test)])
    assert (result.exit_code == 1 and result.exception is None) or isinstance(
        result.exception, SystemExit
    ), result.output
    assert f"{test}:8:14: expected event's time: [1] is not a duration" in " ".join(
        result.output.split()
    ), result.output
    test.write_text(test.read_text().split("    absent:")[0])
    failed = runner.invoke(app, ["rules", "test", str(test)])
    assert "alert.raised: expected 1, got 0" in failed.output
    assert "5s alert.raised" in failed.output, "the time read, as an offset from the start"
