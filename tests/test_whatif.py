"""What-if replay: the diff by meaning (pure), and ``aisle replay`` over a real JetStream log,
where a shorter queue-wait threshold must show exactly the alerts it changes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.jetstream import JetStreamLog
from core.layout import Layout, load_layout
from core.log import read_arrived
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from rules.whatif import (
    DEFAULT_LATENESS_S,
    diff,
    live_derived,
    pack_factory,
    render,
    run_shadow,
    shadow_run,
    what_if,
)
from simulator.day import Run, simulate

ROOT = Path(__file__).resolve().parent.parent
PACKS_DIR = ROOT / "rules" / "packs"
PACKS = sorted(p for p in PACKS_DIR.glob("*.yaml") if not p.name.endswith("_test.yaml"))
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
runner = CliRunner()
_load_plugins()

# -- diff, on hand-made events ----------------------------------------------------------------


def _derived(cls: type[ev.Event], at: datetime, subject: str, data: Any, rule: str) -> ev.Event:
    return ev.derive(
        cls,
        rule=ev.RuleRef(rule, "1"),
        caused_by=[f"{subject}-{at.timestamp()}"],
        store="s1",
        at=at,
        subject=subject,
        data=data,
        discriminator=data,
    )


def receipt(subject: str, *lines: tuple[str, int], s: int = 0, rule: str = "r1") -> ev.Event:
    items = tuple(
        ev.ReceiptLine(sku=sku, name=sku, qty=qty, unit_cents=100, amount_cents=100 * qty)
        for sku, qty in lines
    )
    data = ev.ReceiptData(
        cart=subject, lines=items, total_cents=sum(i.amount_cents for i in items), currency="EUR"
    )
    return _derived(ev.ReceiptIssued, T0 + timedelta(seconds=s), subject, data, rule)


def alert(
    name: str,
    subject: str,
    s: float,
    *,
    severity: str = "warning",
    summary: str = "",
    resolved: bool = False,
    rule: str = "r1",
) -> ev.Event:
    data = ev.AlertData(alert=name, key=subject, severity=severity, summary=summary)  # type: ignore[arg-type]
    cls = ev.AlertResolved if resolved else ev.AlertRaised
    return _derived(cls, T0 + timedelta(seconds=s), subject, data, rule)


def metric(name: str, value: float, s: float = 0, rule: str = "r1", **labels: str) -> ev.Event:
    data = ev.MetricData(name=name, value=value, labels=labels)
    return _derived(ev.Metric, T0 + timedelta(seconds=s), f"m-{name}", data, rule)


def test_the_same_outputs_under_other_ids_are_no_difference() -> None:
    live = [receipt("v-1", ("milk", 1)), alert("queue_wait_long", "v-1", 30), metric("x", 2)]
    shadow = [
        receipt("v-1", ("milk", 1), rule="r2"),
        alert("queue_wait_long", "v-1", 30, rule="r2"),
        metric("x", 2, rule="r2"),
    ]
    assert {e.id for e in live}.isdisjoint(e.id for e in shadow)
    d = diff(live, shadow)
    assert d.unchanged
    assert d.counts == {"alert.raised": (1, 1), "metric": (1, 1), "receipt.issued": (1, 1)}
    assert "no difference" in render(d)


def test_receipts_match_by_subject_changed_added_and_gone() -> None:
    live = [
        receipt("v-1", ("milk", 1), ("cola", 2)),
        receipt("v-2", ("bread", 1)),
        receipt("v-3", ("tea", 1)),
    ]
    shadow = [
        receipt("v-1", ("milk", 1), ("cola", 1), s=5, rule="r2"),  # a line differs
        receipt("v-2", ("bread", 1), s=99, rule="r2"),  # later, same content: unchanged
        receipt("v-4", ("tea", 1), rule="r2"),
    ]
    d = diff(live, shadow)
    assert [(a.subject, b.subject) for a, b in d.receipts_changed] == [("v-1", "v-1")]
    assert [r.subject for r in d.receipts_added] == ["v-4"]
    assert [r.subject for r in d.receipts_gone] == ["v-3"]
    assert not d.alerts_added and not d.metrics
    text = render(d)
    assert "receipts: 3 live, 3 shadow; 1 changed, 1 added, 1 gone" in text
    assert "v-1: total 3.00 EUR → 2.00 EUR; lines -1× cola" in text


def test_alerts_pair_by_name_subject_and_occurrence_in_time_order() -> None:
    live = [
        alert("queue_wait_long", "v-1", 90, summary="90 s"),
        alert("queue_wait_long", "v-1", 600, summary="90 s"),
        alert("queue_wait_long", "v-1", 700, resolved=True),
        alert("pacing", "v-2", 10, severity="info"),
        alert("hesitation", "v-3", 50, severity="info"),
    ]
    shadow = [
        alert("queue_wait_long", "v-1", 30, summary="30 s", rule="r2"),
        alert("queue_wait_long", "v-1", 540, summary="30 s", rule="r2"),
        alert("queue_wait_long", "v-1", 700, resolved=True, rule="r2"),
        alert("queue_wait_long", "v-1", 900, summary="30 s", rule="r2"),  # a third one
        alert("pacing", "v-2", 10, severity="warning", rule="r2"),
        alert("pacing", "v-5", 20, severity="info", rule="r2"),
    ]
    d = diff(live, shadow)
    changed = [(a.subject, a.data.alert, a.at, b.at) for a, b in d.alerts_changed]
    assert changed == [
        ("v-2", "pacing", T0 + timedelta(seconds=10), T0 + timedelta(seconds=10)),
        ("v-1", "queue_wait_long", T0 + timedelta(seconds=90), T0 + timedelta(seconds=30)),
        ("v-1", "queue_wait_long", T0 + timedelta(seconds=600), T0 + timedelta(seconds=540)),
    ]
    assert [(a.data.alert, a.subject, a.at) for a in d.alerts_added] == [
        ("queue_wait_long", "v-1", T0 + timedelta(seconds=900)),
        ("pacing", "v-5", T0 + timedelta(seconds=20)),
    ][::-1]
    assert [(a.data.alert, a.subject) for a in d.alerts_gone] == [("hesitation", "v-3")]
    text = render(d, UTC)
    assert "alerts: 5 live, 6 shadow; 3 changed, 2 added, 1 gone" in text
    assert "alerts added (2):" in text
    assert "2026-11-28 09:15:00  raised    queue_wait_long  v-1  warning  30 s" in text
    assert "severity info → warning" in text
    assert "at 2026-11-28 09:01:30 → 2026-11-28 09:00:30; summary '90 s' → '30 s'" in text


def test_metrics_compare_count_and_sum_per_name_and_labels() -> None:
    live = [
        metric("footfall", 1),
        metric("footfall", 1),
        metric("queue_wait_s", 40, zone="q1"),
        metric("queue_wait_s", 50, zone="q2"),
        metric("dwell_s", 3.5),
    ]
    shadow = [
        metric("footfall", 1, rule="r2"),
        metric("footfall", 1, rule="r2"),
        metric("queue_wait_s", 40, zone="q1", rule="r2"),
        metric("queue_wait_s", 70, zone="q2", rule="r2"),
        metric("queue_wait_s", 10, zone="q2", s=1, rule="r2"),
        metric("abandoned", 1, rule="r2"),
    ]
    d = diff(live, shadow)
    got = {(m.name, m.labels): (m.count_delta, m.sum_delta) for m in d.metrics}
    assert got == {
        ("abandoned", ()): (1, 1.0),
        ("dwell_s", ()): (-1, -3.5),
        ("queue_wait_s", (("zone", "q2"),)): (1, 30.0),
    }
    assert "queue_wait_s{zone=q2}  count 1 → 2 (+1)  sum 50 → 80 (+30)" in render(d)
    assert "dwell_s  count 1 → 0 (-1)  sum 3.5 → 0 (-3.5)" in render(d)


def test_the_diff_is_json_for_machines() -> None:
    d = diff([receipt("v-1", ("milk", 1))], [alert("pacing", "v-1", 3)])
    out = json.loads(json.dumps(d.to_dict()))
    assert out["unchanged"] is False
    assert out["receipts"]["gone"][0]["subject"] == "v-1"
    assert out["alerts"]["added"][0]["type"] == "alert.raised"
    assert out["counts"] == {
        "alert.raised": {"live": 0, "shadow": 1},
        "receipt.issued": {"live": 1, "shadow": 0},
    }


# -- a store day in a real JetStream log -----------------------------------------------------


@cache
def layout() -> Layout:
    return load_layout(LAYOUT)


@cache
def day() -> Run:
    """An hour at the evening peak: small enough for seconds, busy enough for queues."""
    start = datetime(2026, 11, 28, 17, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    return simulate(layout(), start, hours=1, shoppers=60, seed=3)


def reference() -> Reference:
    return Reference.of(layout(), members=day().members)


def shorter_queue_wait(tmp_path: Path) -> Path:
    """The standard packs with one change: a queue-wait alert after 20 s instead of 90 s."""
    folder = tmp_path / "candidate"
    folder.mkdir()
    for p in PACKS:
        text = p.read_text()
        if p.name == "frustration.yaml":
            changed = text.replace("  queue_wait: 90s\n", "  queue_wait: 20s\n")
            assert changed != text, "the frustration pack's queue_wait param moved"
            text = changed
        (folder / p.name).write_text(text)
    return folder


def run_engine(packs: list[Path], events: list[ev.Event], until: float) -> list[ev.Event]:
    """Rules run as the engine service runs them (its lateness, over the events in the
    order it reads them): the independent reference."""
    engine = Engine(load_rules(packs, reference()), lateness_s=DEFAULT_LATENESS_S)
    out = engine.process(events)
    out.extend(engine.advance("corner-01", until))
    assert not out.errors
    return out.derived


async def publish_live_day(log: JetStreamLog) -> tuple[list[ev.Event], float]:
    """The raw day and what the standard packs derived from it, both in the log."""
    raw = day().events
    until = raw[-1].at.timestamp() + 3600  # the hour's windows close, as a live heartbeat would
    for i in range(0, len(raw), 2000):
        await log.publish_many(raw[i : i + 2000])
    derived = run_engine(PACKS, await read_arrived(log, "corner-01"), until)
    for i in range(0, len(derived), 2000):
        await log.publish_many(derived[i : i + 2000])
    return derived, until


def alert_facts(events: list[ev.Event]) -> Counter[tuple[Any, ...]]:
    """Alerts as plain facts, ids aside (they carry the rule version)."""
    return Counter(
        (e.type, e.data.alert, e.subject, e.data.key, e.at, e.data.severity, e.data.summary)
        for e in events
        if isinstance(e, ev.AlertRaised | ev.AlertResolved)
    )


@pytest.mark.integration
async def test_a_shorter_queue_wait_shows_exactly_the_alerts_it_changes(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    live, until = await publish_live_day(jslog)
    candidate = shorter_queue_wait(tmp_path)
    modified = sorted(candidate.glob("*.yaml"))

    report = await what_if(jslog, "corner-01", pack_factory(modified, reference()))
    d = report.diff

    # Independently: two engines over the same events, original rules against modified.
    old = alert_facts(live)
    new = alert_facts(run_engine(modified, await read_arrived(jslog, "corner-01"), until))
    appeared, disappeared = new - old, old - new
    assert appeared, "a 20 s threshold must raise queue alerts the 90 s one did not"
    assert alert_facts(d.alerts_added + [b for _, b in d.alerts_changed]) == appeared
    assert alert_facts(d.alerts_gone + [a for a, _ in d.alerts_changed]) == disappeared
    assert {a.data.alert for a in d.alerts_added} == {"queue_wait_long"}
    assert not d.receipts_added and not d.receipts_gone and not d.receipts_changed
    assert d.counts["receipt.issued"][0] == d.counts["receipt.issued"][1] > 20
    assert not d.metrics
    assert report.base == "live" and not report.shadow.errors and not report.notes
    # The whole log: from the first raw event to the live engine's clock, inclusive.
    assert report.start == day().events[0].at
    assert report.end > max(e.at for e in live)

    # The unchanged rules replayed over the whole log derive what the live ones did.
    same = await what_if(jslog, "corner-01", pack_factory(PACKS, reference()))
    assert same.diff.unchanged, render(same.diff)
    assert sorted(ev.encode(e) for e in same.shadow.derived) == sorted(ev.encode(e) for e in live)


@pytest.mark.integration
async def test_a_window_with_warmup_is_the_whole_run_cut_to_it(jslog: JetStreamLog) -> None:
    await publish_live_day(jslog)
    # The window opens between a shopper's first pick and their exit, 20 minutes into the day.
    picks = [e for e in day().events if isinstance(e, ev.ItemPicked)]
    # A shopper alone: a group's receipt goes under another member's name.
    alone = {
        e.subject for e in day().events if isinstance(e, ev.ShopperEntered) and e.data.group is None
    }
    straddler = next(
        e for e in picks if e.subject in alone and e.at > day().events[0].at + timedelta(minutes=20)
    )
    start = straddler.at + timedelta(seconds=1)
    end = start + timedelta(minutes=20)
    factory = pack_factory(PACKS, reference())
    shadow = await shadow_run(jslog, "corner-01", start, end, factory)
    window = await live_derived(jslog, "corner-01", start, end)
    assert window and all(start <= e.at < end for e in window)
    assert sorted(ev.encode(e) for e in shadow.derived) == sorted(ev.encode(e) for e in window)
    assert diff(window, shadow.derived).unchanged

    # Without warmup, carts begun before the window are missing: the caveat, seen.
    cold = run_shadow(day().events, "corner-01", start, end, factory, warmup_s=0)
    assert cold.skipped > 0
    d = diff(window, cold.derived)
    assert straddler.subject in {a.subject for a, _ in d.receipts_changed} | {
        r.subject for r in d.receipts_gone
    }


@pytest.mark.integration
async def test_against_a_baseline_both_sides_are_shadows(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    await publish_live_day(jslog)
    candidate = sorted(shorter_queue_wait(tmp_path).glob("*.yaml"))
    report = await what_if(
        jslog,
        "corner-01",
        pack_factory(candidate, reference()),
        baseline=pack_factory(PACKS, reference()),
    )
    assert report.base == "baseline" and report.baseline is not None
    assert report.diff.alerts_added and not report.diff.alerts_gone
    assert "alerts added (" in report.render()
    assert "shadow against baseline" in report.render()


def _cli(env: dict[str, str], *args: str) -> Any:
    # In a thread: the command runs its own event loop, as it does from a shell.
    return runner.invoke(app, ["replay", "--store", "corner-01", *args], env=env)


@pytest.mark.integration
async def test_the_command_writes_the_shadow_to_a_file_and_never_to_the_log(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    await publish_live_day(jslog)
    env = {
        "AISLE_NATS_URL": jslog.nc.connected_url.geturl(),  # type: ignore[union-attr]
        "AISLE_PREFIX": jslog.config.prefix,
    }
    before = {s.name: s.messages for s in await jslog.stats()}
    candidate = shorter_queue_wait(tmp_path)
    out = tmp_path / "out" / "shadow.jsonl"

    result = await asyncio.to_thread(_cli, env, "--rules", str(candidate), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "alerts added (" in result.output and "queue_wait_long" in result.output
    assert "receipts: " in result.output and "0 changed, 0 added, 0 gone" in result.output
    written = [ev.decode(line) for line in out.read_bytes().splitlines()]
    assert any(isinstance(e, ev.AlertRaised) and e.data.alert == "queue_wait_long" for e in written)
    assert f"{len(written):,} written to {out}" in result.output
    assert {s.name: s.messages for s in await jslog.stats()} == before

    as_json = await asyncio.to_thread(_cli, env, "--rules", str(candidate), "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["base"] == "live" and report["diff"]["alerts"]["added"]
    assert report["diff"]["receipts"] == {"added": [], "gone": [], "changed": []}

    # Bad input: clear errors, exit code 1, and still nothing published.
    unknown = await asyncio.to_thread(runner.invoke, app, ["replay", "--store", "nowhere"], env=env)
    assert unknown.exit_code == 1
    assert "no events of store 'nowhere' in the log; stores in the log: corner-01" in (
        unknown.output
    )
    late = day().events[-1].at + timedelta(days=2)
    empty = await asyncio.to_thread(_cli, env, "--from", late.isoformat())
    assert empty.exit_code == 1 and "the window is empty" in empty.output
    assert {s.name: s.messages for s in await jslog.stats()} == before


def test_bad_input_is_refused_before_the_log_is_read(tmp_path: Path) -> None:
    env = {"AISLE_NATS_URL": "nats://127.0.0.1:1", "AISLE_PREFIX": "never"}  # never reached
    reversed_ = runner.invoke(
        app,
        ["replay", "-s", "corner-01", "--from", "2026-11-28T10:00", "--to", "2026-11-28T09:00"],
        env=env,
    )
    assert reversed_.exit_code == 1
    assert "--from 2026-11-28T10:00 is not before --to 2026-11-28T09:00" in reversed_.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "pack: bad\nversion: '1'\nrules:\n  - id: oops\n    where: type ==\n    alert: {name: x}\n"
    )
    result = runner.invoke(app, ["replay", "-s", "corner-01", "--rules", str(bad)], env=env)
    assert result.exit_code == 1
    assert f"{bad}:5:" in result.output

    result = runner.invoke(app, ["replay", "-s", "corner-01", "--warmup", "6 hours"], env=env)
    assert result.exit_code == 2 and "is not a duration" in result.output  # as any bad option

    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["replay", "-s", "corner-01", "--rules", str(empty)], env=env)
    assert result.exit_code == 1 and "no rule packs to run" in result.output


def test_a_naive_time_is_the_stores_local_time() -> None:
    from rules.whatif import parse_when

    tz = ZoneInfo("Europe/Amsterdam")
    assert parse_when("2026-11-28T09:00", tz, "--from") == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    assert parse_when("2026-11-28T09:00Z", tz, "--from") == datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
