"""The ``aisle`` command, run as a user runs it (Typer's runner, real NATS servers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from typer.testing import CliRunner

from core import events as ev
from core.access import Role
from core.cli import _load_plugins, app
from core.config import LogConfig, NatsAuth
from core.jetstream import BucketMismatch, JetStreamLog, connect
from core.layout import load_layout
from simulator.demo import _report
from tests.conftest import server_url, unique_prefix
from tests.test_log import visit

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
AISLE = str(Path(sys.executable).parent / "aisle")
_load_plugins()


@pytest.fixture(params=["system", "embedded"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"AISLE_NATS_URL": server_url(request.param, request), "AISLE_PREFIX": unique_prefix()}


def _publish(env: dict[str, str], events: list) -> None:  # type: ignore[type-arg]
    async def go() -> None:
        nc = await connect(env["AISLE_NATS_URL"])
        log = await JetStreamLog.open(nc, LogConfig(prefix=env["AISLE_PREFIX"]))
        await log.publish_many(events)
        await log.close()

    asyncio.run(go())


def test_layout_check_passes_the_examples() -> None:
    files = sorted(str(p) for p in (ROOT / "examples" / "stores").glob("*.yaml"))
    result = runner.invoke(app, ["layout", "check", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len(files) == 2


def test_layout_check_gives_the_line_of_a_broken_layout(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "stores" / "convenience.yaml").read_text().splitlines()
    line = next(i for i, s in enumerate(text) if "zone: sf-drinks" in s)
    text[line] = text[line].replace("sf-drinks", "sf-nowhere")
    broken = tmp_path / "broken.yaml"
    broken.write_text("\n".join(text))
    result = runner.invoke(app, ["layout", "check", str(broken)])
    assert result.exit_code == 1
    assert f"broken.yaml:{line + 1}:" in result.output
    assert "sf-nowhere" in result.output
    as_json = runner.invoke(app, ["layout", "check", "--json", str(broken)])
    assert json.loads(as_json.stdout)[0]["line"] == line + 1


def test_log_replay_info_and_deadletters(env: dict[str, str]) -> None:
    _publish(env, visit("s1", "v-1") + visit("s2", "v-2"))
    replay = runner.invoke(app, ["log", "replay", "--store", "s2", "--json"], env=env)
    assert replay.exit_code == 0, replay.output
    lines = [json.loads(x) for x in replay.stdout.splitlines()]
    assert [x["store"] for x in lines] == ["s2"] * 5
    assert [x["type"] for x in lines][:2] == ["shopper.entered", "item.picked"]

    typo = runner.invoke(app, ["log", "replay", "--store", "s9"], env=env)
    assert typo.exit_code == 0 and "no events of store 's9'; stores in the log: s1, s2" in (
        typo.output
    )

    picked = runner.invoke(app, ["log", "replay", "-t", "item.picked", "--from", "3"], env=env)
    assert picked.exit_code == 0
    assert picked.stdout.count("item.picked") == 3  # one of s1's two is before seq 3
    # Times in UTC, and marked so: scenarios and layouts speak store time.
    assert all(
        re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z ", x)
        for x in picked.stdout.splitlines()
        if "item.picked" in x
    ), picked.stdout

    info = runner.invoke(app, ["log", "info", "--json"], env=env)
    assert info.exit_code == 0, info.output
    stats = {s["name"]: s for s in json.loads(info.stdout)}
    assert stats[f"{env['AISLE_PREFIX'].upper()}_EVENTS"]["messages"] == 10


def test_replay_with_a_limit_stops_cleanly(env: dict[str, str]) -> None:
    """It once left its consumer's cleanup to run after the connection had drained: a
    "Task exception was never retrieved" traceback at every ``--limit``."""
    _publish(env, visit("s1", "v-1"))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "aisle"), "log", "replay", "--limit", "1", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "exception" not in done.stderr, done.stderr


def _stream_limits(env: dict[str, str], **limits: int) -> tuple[int, int]:
    """Set ``limits`` on the events stream (as an operator would); its (max_bytes, max_msgs)."""

    async def go() -> tuple[int, int]:
        nc = await connect(env["AISLE_NATS_URL"])
        js = nc.jetstream()
        name = f"{env['AISLE_PREFIX'].upper()}_EVENTS"
        config = (await js.stream_info(name)).config
        if limits:
            await js.update_stream(config.evolve(**limits))
            config = (await js.stream_info(name)).config
        await nc.close()
        return int(config.max_bytes or 0), int(config.max_msgs or 0)

    return asyncio.run(go())


def test_log_info_keeps_an_operators_stream_limits_and_names_the_difference(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    _publish(env, visit("s1", "v-1"))
    assert _stream_limits(env, max_bytes=5_000_000, max_msgs=500) == (5_000_000, 500)
    for command in (["log", "info"], ["log", "replay"], ["log", "deadletters"]):
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 0, result.output
        assert _stream_limits(env) == (5_000_000, 500), command
    assert "max_bytes 5,000,000 (aisle's: unlimited)" in caplog.text
    assert "max_msgs 500 (aisle's: unlimited)" in caplog.text

    shown = runner.invoke(app, ["log", "configure"], env=env)
    assert shown.exit_code == 0, shown.output
    assert re.search(r"max_bytes +│ 5,000,000 +│ unlimited", shown.stdout)
    assert _stream_limits(env) == (5_000_000, 500)
    applied = runner.invoke(app, ["log", "configure", "--apply"], env=env)
    assert applied.exit_code == 0, applied.output
    assert _stream_limits(env) == (-1, -1)
    assert "aisle's settings" in runner.invoke(app, ["log", "configure"], env=env).stdout


def test_retention_comes_from_the_environment_and_log_configure_applies_a_change(
    env: dict[str, str],
) -> None:
    from core.config import ConfigError, Settings

    short = {**env, "AISLE_RETENTION_SAMPLES": "2h", "AISLE_RETENTION_EVENTS": "400d"}
    made = runner.invoke(app, ["log", "configure", "--apply"], env=short)
    assert made.exit_code == 0, made.output

    def ages() -> dict[str, float]:
        stem = env["AISLE_PREFIX"].upper()
        found = _stream_configs(env, env["AISLE_PREFIX"])
        return {name.removeprefix(stem + "_"): c.max_age or 0.0 for name, c in found.items()}

    assert ages() == {
        "EVENTS": 400 * 86400.0, "SAMPLES": 7200.0, "DEADLETTER": 30 * 86400.0,
    }  # fmt: skip
    longer = {**short, "AISLE_RETENTION_SAMPLES": "3d"}
    shown = runner.invoke(app, ["log", "configure"], env=longer)
    assert re.search(r"max_age +│ 2 h +│ 3 d", shown.stdout), shown.output
    assert runner.invoke(app, ["log", "configure", "--apply"], env=longer).exit_code == 0
    assert ages()["SAMPLES"] == 3 * 86400.0
    with pytest.raises(ConfigError, match="AISLE_RETENTION_EVENTS='a year'"):
        Settings.from_env({"AISLE_RETENTION_EVENTS": "a year"})


def _leases(env: dict[str, str], ttl_s: float, *, exists: bool = False) -> str:
    """The lease bucket asked for with ``ttl_s``, as a worker asks: "ok" or the refusal
    (``exists``: whether it was there before)."""

    async def go() -> str:
        nc = await connect(env["AISLE_NATS_URL"])
        log = await JetStreamLog.open(nc, LogConfig(prefix=env["AISLE_PREFIX"]))
        try:
            there = await log.set_bucket_ttl("engine_leases", ttl_s, apply=False)
            assert (there != "no bucket yet") == exists, there
            await log.key_value("engine_leases", ttl_s=ttl_s)
            return "ok"
        except BucketMismatch as exc:
            return str(exc)
        finally:
            await nc.close()

    return asyncio.run(go())


def test_a_lease_time_other_than_the_buckets_is_refused_and_log_configure_changes_it(
    env: dict[str, str],
) -> None:
    _publish(env, visit("s1", "v-1"))
    status = runner.invoke(app, ["rules", "status"], env=env)  # the natural first check
    assert status.exit_code == 0, status.output
    assert _leases(env, 6) == "ok", "status made no bucket: the first worker makes it, with 6 s"
    refused = _leases(env, 30, exists=True)
    assert "keeps its entries for 6 s, but 30 s is asked for" in refused
    assert "aisle log configure --lease-ttl 30 --apply" in refused
    shown = runner.invoke(app, ["log", "configure", "--lease-ttl", "30"], env=env)
    assert re.search(r"lease time +│ 6 s +│ 30 s", shown.stdout), shown.output
    assert "keeps its entries for 6 s" in _leases(env, 30, exists=True), "shown, not changed"
    applied = runner.invoke(app, ["log", "configure", "--lease-ttl", "30", "--apply"], env=env)
    assert applied.exit_code == 0, applied.output
    assert _leases(env, 30, exists=True) == "ok"
    assert "for 30 s, but 6 s" in _leases(env, 6, exists=True)


def _stream_configs(env: dict[str, str], prefix: str) -> dict[str, Any]:
    """The deployment's streams that exist, by name (asked by name: a server with many
    streams lists them a page at a time)."""

    async def go() -> dict[str, Any]:
        nc = await connect(env["AISLE_NATS_URL"])
        config, found = LogConfig(prefix=prefix), {}
        try:
            for name in (config.events_stream, config.samples_stream, config.deadletter_stream):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    found[name] = (await nc.jetstream().stream_info(name)).config
            return found
        finally:
            await nc.close()

    return asyncio.run(go())


def _streams_of(env: dict[str, str], prefix: str) -> list[str]:
    return sorted(_stream_configs(env, prefix))


def test_a_mistyped_prefix_is_refused_naming_the_deployments_and_makes_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    _publish(env, visit("s1", "v-1"))  # the real deployment
    typo = {**env, "AISLE_PREFIX": env["AISLE_PREFIX"] + "x", "AISLE_DATA_DIR": str(tmp_path)}
    pack = Path(__file__).resolve().parent.parent / "rules" / "packs" / "carts.yaml"
    for command in (
        ["log", "info"],
        ["log", "tail"],
        ["rules", "status"],
        ["rules", "deploy", str(pack)],
        ["engine", "run"],
        ["projections", "run"],
    ):  # a process each: a command that did not refuse would follow the log for good
        result = subprocess.run(
            [AISLE, *command],
            env={**os.environ, **typo},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        said = " ".join(result.stderr.split())
        assert f"no aisle deployment with prefix '{typo['AISLE_PREFIX']}'" in said, command
        assert env["AISLE_PREFIX"] in said.split("deployments on this server are:")[1], command
        assert "Traceback" not in result.stderr
        assert _streams_of(env, typo["AISLE_PREFIX"]) == [], f"{command} made a deployment"

    shown = runner.invoke(app, ["log", "configure"], env=typo)
    assert shown.exit_code == 0 and "missing" in shown.stdout, shown.output
    assert _streams_of(env, typo["AISLE_PREFIX"]) == [], "configure without --apply only shows"
    made = runner.invoke(app, ["log", "configure", "--apply"], env=typo)
    assert made.exit_code == 0, made.output
    assert len(_streams_of(env, typo["AISLE_PREFIX"])) == 3
    assert runner.invoke(app, ["log", "info"], env=typo).exit_code == 0


HOSTILE = "[/] [bold]loud[/bold] \x1b[31mred\x1b[0m \u202eevil"


def test_replay_deadletters_and_info_print_hostile_event_text_as_text(env: dict[str, str]) -> None:
    from datetime import UTC, datetime

    from core import events as ev
    from core.log import Rejected

    at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    picked = ev.new(
        ev.ItemPicked,
        store="s1",
        at=at,
        source=HOSTILE,
        subject=HOSTILE,
        data=ev.ItemData(sku="[/][bold]x", shelf="A1"),  # control characters: refused
    )
    _publish(env, [picked])

    async def refuse() -> None:
        nc = await connect(env["AISLE_NATS_URL"])
        log = await JetStreamLog.open(nc, LogConfig(prefix=env["AISLE_PREFIX"]))
        bad = json.dumps({"store": "s1", "type": "item.picked", "subject": HOSTILE}).encode()
        with pytest.raises(Rejected):
            await log.publish_raw(bad, source=HOSTILE)
        await nc.publish(f"{env['AISLE_PREFIX']}.[/].item.picked", b"{}")  # around the log
        await log.close()

    asyncio.run(refuse())
    for command in (["log", "replay"], ["log", "deadletters"], ["log", "info"]):
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 0, (command, result.output)
        assert "\x1b" not in result.output and "\u202e" not in result.output, command
        assert "[/]" in result.output, command
    replay = " ".join(runner.invoke(app, ["log", "replay"], env=env).stdout.split())  # unwrapped
    assert "[/] [bold]loud[/bold] \\x1b[31mred\\x1b[0m \\u202eevil" in replay
    assert "sku=[/][bold]x" in replay
    as_json = runner.invoke(app, ["log", "replay", "--json"], env=env).stdout
    assert [json.loads(x)["subject"] for x in as_json.splitlines()] == [HOSTILE]
    dead = runner.invoke(app, ["log", "deadletters", "--json"], env=env)
    assert dead.exit_code == 0, dead.output
    letters = [json.loads(x) for x in dead.stdout.splitlines()]
    assert [(x["store"], x["source"]) for x in letters] == [("s1", HOSTILE)]
    assert letters[0]["seq"] >= 1 and letters[0]["field"] and letters[0]["reason"]
    assert json.loads(letters[0]["payload"])["subject"] == HOSTILE


def test_tail_prints_hostile_event_text_as_text(env: dict[str, str]) -> None:
    import os
    import subprocess
    import sys
    import time
    from datetime import UTC, datetime

    from core import events as ev

    aisle = Path(sys.executable).parent / "aisle"
    tail = subprocess.Popen(
        [str(aisle), "log", "tail"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert tail.stdout is not None
    os.set_blocking(tail.stdout.fileno(), False)
    shown = b""
    try:
        at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
        for i in range(80):  # until the tail, started meanwhile, has printed one
            picked = ev.new(
                ev.ItemPicked,
                store="s1",
                at=at,
                source="cam-1",
                subject=f"{HOSTILE} {i}",
                data=ev.ItemData(sku="[/]", shelf="A1"),
            )
            _publish(env, [picked])
            time.sleep(0.25)
            shown += tail.stdout.read() or b""
            if b"item.picked" in shown:
                break
    finally:
        tail.terminate()
        tail.wait(timeout=10)
    assert b"item.picked" in shown, "the tail printed what came"
    text = shown.decode()
    assert "\x1b" not in text and "\u202e" not in text
    assert "[/] [bold]loud[/bold] \\x1b[31mred" in " ".join(text.split())


def test_unknown_type_is_refused_with_the_known_ones(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["log", "replay", "--type", "item.stolen"], env=env)
    assert result.exit_code == 2
    assert "item.stolen" in result.output
    assert "item.picked" in result.output


def test_demo_runs_end_to_end_on_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AISLE_NATS_URL", raising=False)
    # The server forgets ids after a second: a rerun must find them in the log itself.
    env = {"AISLE_NATS_URL": "", "AISLE_DUPLICATE_WINDOW_S": "1"}
    result = runner.invoke(app, ["demo", "--shoppers", "12"], env=env)
    assert result.exit_code == 0, result.output
    assert "embedded nats-server" in result.output
    assert "dead letter 1" in result.output
    derived = re.search(r"derived ([\d,]+) events from ([\d,]+) \(([\d,]+) new", result.output)
    assert derived and int(derived.group(1).replace(",", "")) > 100
    assert derived.group(1) == derived.group(3), "a first run publishes every derived event"
    assert re.search(r"new to the log\);\s+0\s+late,\s+0\s+rule", result.output), "nothing late"
    assert re.search(r"receipts \((\d+)\)", result.output)
    assert "footfall" in result.output and "busiest heatmap cells" in result.output
    for kpi in (
        "store conversion",
        "came in a group",
        "left with nothing",
        "items picked that were bought",
        "visits per opted-in member",
    ):
        assert kpi in result.output, kpi
    cells = re.findall(r"│ (-?\d+\.\d), (-?\d+\.\d) +│ (\d+) +│ (\d+) s", result.output)
    assert len(cells) == 5, "the day's five busiest cells"
    dwell = [int(c[3]) for c in cells]
    assert dwell == sorted(dwell, reverse=True) and dwell[0] > 0
    assert (tmp_path / ".aisle" / "jetstream").is_dir()
    time.sleep(1.5)
    again = runner.invoke(app, ["demo", "--shoppers", "12"], env=env)
    assert "(0 new" in again.output, again.output
    assert f"derived {derived.group(1)} events" in again.output
    assert re.search(r"\(0 new to the log\)", again.output), "a replay publishes nothing new"


def test_the_demo_shows_each_zones_conversion_over_the_day_not_its_last_hour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    layout = load_layout(
        Path(__file__).resolve().parent.parent / "examples/stores/convenience.yaml"
    )
    rule = ev.RuleRef(id="traffic.zone_visit", version="1")
    hour = ev.RuleRef(id="traffic.zone_conversion", version="1")

    def metric(
        ref: ev.RuleRef, name: str, subject: str, h: int, value: float, **labels: str
    ) -> ev.Metric:
        at = datetime(2026, 11, 28, 9 + h, 30, tzinfo=UTC)
        data = ev.MetricData(name=name, value=value, labels=labels)
        cause = [f"{name}-{subject}-{h}"]
        return ev.derive(
            ev.Metric,
            rule=ref,
            caused_by=cause,
            store="corner-01",
            at=at,
            subject=subject,
            data=data,
        )

    took = ["yes", "no", "no", "no"]  # 09:00-10:00: 1 of 4; 10:00-11:00: 1 of 1
    derived = [
        metric(rule, "zone_visit_s", f"v{i}/sf-dairy", 0, 20, zone="sf-dairy", took=t)
        for i, t in enumerate(took)
    ]
    derived.append(metric(hour, "zone_conversion", "sf-dairy", 0, 0.25, zone="sf-dairy"))
    derived.append(metric(rule, "zone_visit_s", "v9/sf-dairy", 1, 20, zone="sf-dairy", took="yes"))
    derived.append(metric(hour, "zone_conversion", "sf-dairy", 1, 1.0, zone="sf-dairy"))
    _report(layout, derived)
    row = next(line for line in capsys.readouterr().out.splitlines() if "sf-dairy" in line)
    assert "40%" in row and "5 visitors" in row, row


def test_simulate_publishes_a_chain_and_writes_the_truth(
    env: dict[str, str], tmp_path: Path
) -> None:
    args = [
        "simulate",
        "--shoppers",
        "20",
        "--hours",
        "2",
        "--stores",
        "2",
        "--truth",
        str(tmp_path),
    ]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    published = int(
        re.search(r"published ([\d,]+) events", result.output).group(1).replace(",", "")
    )
    truth = sorted(p.name for p in tmp_path.glob("*.truth.jsonl"))
    assert truth == ["corner-01.truth.jsonl", "corner-02.truth.jsonl"], "the first keeps its id"
    receipts = json.loads((tmp_path / "corner-01.receipts.json").read_text())
    assert receipts and all(isinstance(lines, dict) for lines in receipts.values())
    records = [json.loads(x) for x in (tmp_path / truth[0]).read_text().splitlines()]
    assert records and {"visitor", "persona", "items", "paid", "path"} <= set(records[0])
    info = runner.invoke(app, ["log", "info", "--json"], env=env)
    stats = {s["name"]: s["messages"] for s in json.loads(info.stdout)}
    prefix = env["AISLE_PREFIX"].upper()
    assert stats[f"{prefix}_EVENTS"] + stats[f"{prefix}_SAMPLES"] == published
    again = runner.invoke(app, args, env=env)
    assert again.exit_code == 0
    info = runner.invoke(app, ["log", "info", "--json"], env=env)
    after = {s["name"]: s["messages"] for s in json.loads(info.stdout)}
    assert after == stats, "the same seed publishes the same events: nothing new"


def test_simulate_a_chain_in_real_time_publishes_its_stores_together(env: dict[str, str]) -> None:
    """It published one store's day, then the next's."""
    args = ["simulate", "--shoppers", "10", "--hours", "0.1", "--stores", "2", "--realtime"]
    result = runner.invoke(app, [*args, "--speed", "400"], env=env)
    assert result.exit_code == 0, result.output

    async def stores_in_order() -> list[str]:
        nc = await connect(env["AISLE_NATS_URL"])
        log = await JetStreamLog.open(nc, LogConfig(prefix=env["AISLE_PREFIX"]))
        try:
            return [r.event.store async for r in log.replay()]
        finally:
            await nc.close()

    order = asyncio.run(stores_in_order())
    first_02, last_01 = order.index("corner-02"), len(order) - 1 - order[::-1].index("corner-01")
    assert first_02 < last_01, "the second store began before the first had ended"
    assert runner.invoke(app, ["simulate", "--speed", "2"], env=env).exit_code == 2


def test_simulate_writes_the_truth_of_the_packs_it_is_given(tmp_path: Path) -> None:
    from tests.test_shoppers import packs_with

    def due(packs: list[Path], out: Path) -> set[str]:
        args = ["simulate", "--no-publish", "--shoppers", "60", "--hours", "2", "--truth"]
        result = runner.invoke(app, [*args, str(out), "--packs", str(packs[0].parent)])
        assert result.exit_code == 0, result.output
        records = [json.loads(x) for x in (out / "corner-01.truth.jsonl").read_text().splitlines()]
        return {f"{r['visitor']}:{a}" for r in records for a in r["alerts"]}

    standard = due(packs_with(tmp_path / "standard"), tmp_path / "a")
    stricter = due(packs_with(tmp_path / "stricter", queue_wait="1h"), tmp_path / "b")
    assert any(a.endswith(":queue_wait_long") for a in standard)
    assert stricter == {a for a in standard if not a.endswith(":queue_wait_long")}

    broken = packs_with(tmp_path / "broken", hesitation_count="many")
    result = runner.invoke(app, ["simulate", "--no-publish", "--packs", str(broken[0].parent)])
    assert result.exit_code == 2, result.output
    assert "'hesitation_count', which should be a count; got 'many'" in result.output


def test_simulate_into_a_full_store_says_why_in_one_line(tmp_path: Path) -> None:
    from tests.test_log_faults import _TinyStore

    with _TinyStore(tmp_path / "nats") as server:
        env = {"AISLE_NATS_URL": server.url, "AISLE_PREFIX": unique_prefix()}
        result = runner.invoke(app, ["simulate", "--shoppers", "40", "--hours", "2"], env=env)
    assert result.exit_code == 2, result.output
    error = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert "insufficient resources" in error and "free disk space" in error
    assert isinstance(result.exception, SystemExit), "no traceback"


def test_render_films_a_camera_with_its_ground_truth(tmp_path: Path) -> None:
    args = ["render", "--camera", "cam-front-west", "--minutes", "0.2", "--shoppers", "2"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    gt = (tmp_path / "cam-front-west.gt.txt").read_text().splitlines()
    assert gt and all(len(line.split(",")) == 9 for line in gt)
    assert (tmp_path / "cam-front-west.mp4").stat().st_size > 10_000
    bad = runner.invoke(app, ["render", "--camera", "cam-nowhere", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "cam-front-west" in bad.output


async def test_real_time_publishing_keeps_the_pace_of_event_time(jslog) -> None:  # type: ignore[no-untyped-def]
    import time

    from simulator.cli import _paced

    events = visit("s1", "v-1", n_items=3)
    # visit() spans 60 s; squeeze it into 1.5 s of event time for the test.
    first = events[0].at
    squeezed = [msgspec.structs.replace(e, at=first + (e.at - first) / 40) for e in events]
    began = time.monotonic()
    await _paced(jslog, squeezed)
    took = time.monotonic() - began
    span = (squeezed[-1].at - first).total_seconds()
    assert span * 0.9 <= took <= span + 1.0
    assert len([r async for r in jslog.replay()]) == len(events)


def test_deadletters_skip_a_letter_that_does_not_decode_with_a_warning(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """An adapter may publish anything on its store's dead-letter subject: ``[1]`` there
    ended ``aisle log deadletters`` (and ``--json``) in a traceback."""
    from core.log import Rejected

    async def letters() -> None:
        nc = await connect(env["AISLE_NATS_URL"])
        log = await JetStreamLog.open(nc, LogConfig(prefix=env["AISLE_PREFIX"]))
        await log.js.publish(f"{env['AISLE_PREFIX']}.s1.deadletter", b"[1]")
        with pytest.raises(Rejected):
            await log.publish_raw(b'{"store": "s1", "type": "item.picked"}', source="cam")
        await log.close()

    asyncio.run(letters())
    for as_json in ([], ["--json"]):
        caplog.clear()
        result = runner.invoke(app, ["log", "deadletters", *as_json], env=env)
        assert result.exit_code == 0, result.output
        assert result.exception is None
        assert "not a dead letter, skipped" in caplog.text
        if as_json:
            assert [json.loads(x)["source"] for x in result.stdout.splitlines()] == ["cam"]
        else:
            assert [line.split()[1] for line in result.stdout.splitlines()] == ["s1"]


def _one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert isinstance(result.exception, SystemExit), "no traceback"
    assert "Traceback" not in result.output
    return next(line for line in result.output.splitlines() if line.startswith("error:"))


def test_rules_deploy_into_a_full_store_says_why_in_one_line(tmp_path: Path) -> None:
    from core.log import PublishError
    from tests.test_log_faults import _TinyStore, picks

    with _TinyStore(tmp_path / "nats") as server:
        env = {"AISLE_NATS_URL": server.url, "AISLE_PREFIX": unique_prefix()}

        async def fill() -> None:
            nc = await connect(server.url)
            log = await JetStreamLog.open(nc, LogConfig(prefix=env["AISLE_PREFIX"]))
            events = picks(20_000)
            with pytest.raises(PublishError):
                for i in range(0, len(events), 500):
                    await log.publish_many(events[i : i + 500])
            await log.close()

        asyncio.run(fill())
        result = runner.invoke(app, ["rules", "deploy", str(ROOT / "rules" / "packs")], env=env)
    assert result.exit_code == 2, result.output
    error = _one_error_line(result)
    assert "insufficient resources" in error and "free disk space" in error


def test_rules_deploy_as_a_viewer_before_any_deployment_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    """The viewer may not create the rules bucket: the server refuses it without an answer,
    which ended in nats-py's ``TimeoutError`` and a traceback."""
    from core.access import authorization, load_users, user_for
    from core.natsd import EmbeddedNats

    users = load_users(tmp_path / "users")
    prefix = unique_prefix()
    auth = authorization(users, LogConfig(prefix=prefix))
    with EmbeddedNats(tmp_path / "nats", auth=auth) as server:
        admin, viewer = user_for(users, Role.ADMIN), user_for(users, Role.VIEWER)

        async def streams() -> None:
            nc = await connect(server.url, auth=NatsAuth(user=admin.user, password=admin.password))
            await (await JetStreamLog.open(nc, LogConfig(prefix=prefix))).close()

        asyncio.run(streams())
        env = {
            "AISLE_NATS_URL": server.url,
            "AISLE_PREFIX": prefix,
            "AISLE_NATS_USER": viewer.user,
            "AISLE_NATS_PASSWORD": viewer.password,
        }
        result = runner.invoke(app, ["rules", "deploy", str(ROOT / "rules" / "packs")], env=env)
        status = runner.invoke(app, ["rules", "status"], env=env)
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), "no traceback"
    assert "does not let viewer write the rules" in " ".join(result.output.split())
    assert status.exit_code == 0, status.output
