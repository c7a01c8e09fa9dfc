"""What the engine service refuses to take as input, and how it carries on: payloads off
their subject, store ids that are not store ids, events from the future, frames and
derived events too large for the log, and a message the engine itself fails on."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from core import events as ev
from core.config import LogConfig
from core.jetstream import JetStreamLog
from core.log import DeadLetter, read_arrived
from rules.engine import Output, RuleError
from rules.service.checkpoints import Pacer
from rules.service.metrics import EngineMetrics
from rules.service.partition import ServiceConfig, StoreRunner
from tests.enginekit import (
    PACKS,
    derived_ids,
    publish,
    running,
    settled,
    store_day,
    uninterrupted,
)
from tests.enginekit import engine as engine_for_test

pytestmark = pytest.mark.integration
STORE = "corner-01"


def day() -> list[ev.Event]:
    return store_day(noisy=False, hours=1, shoppers=20)


async def letters(log: JetStreamLog, store: str = STORE) -> list[DeadLetter]:
    return [d async for _, d in log.deadletters(store=store)]


async def around(log: JetStreamLog, store: str, kind: str, payload: bytes) -> None:
    """Straight onto a subject, past the log's checks (as a rogue publisher might)."""
    await log.js.publish(f"{log.config.prefix}.{store}.{kind}", payload)


async def test_a_derived_type_or_another_stores_payload_on_a_raw_subject_is_refused(
    jslog: JetStreamLog,
) -> None:
    events = day()
    last = events[-1]
    ghost = ev.derive(
        ev.Metric,
        rule=ev.RuleRef("cart", "1.0.0"),
        caused_by=("nothing",),
        store=STORE,
        at=last.at,
        subject="ghost",
        data=ev.MetricData(
            name="carts.unpaid_exit", value=5000.0, labels={"cart": "ghost", "items": "3"}
        ),
    )
    picked = next(e for e in events if e.type == "item.picked")
    wine = msgspec.structs.replace(picked, id="wine-1", store="wine-02")
    # A derived type that breaks its schema too: its subject is what is wrong with it.
    broken = ev.encode(ghost).replace(b'"caused_by":["nothing"],', b"")
    assert broken != ev.encode(ghost)
    async with running(jslog) as worker:
        await publish(jslog, events[:-1])
        await around(jslog, STORE, "item.picked", ev.encode(ghost))
        await around(jslog, STORE, "item.picked", broken)
        await around(jslog, STORE, "item.picked", ev.encode(wine))
        await jslog.publish(last)
        await settled(jslog, [STORE])
        assert worker.metrics.deadletters.labels(STORE)._value.get() == 3
    assert [(d.field, d.payload) for d in await letters(jslog)] == [
        ("type", ev.encode(ghost)),
        ("type", broken),
        ("store", ev.encode(wine)),
    ]
    alerts = [r.event async for r in jslog.replay(store=STORE, types=["alert.raised"])]
    assert not [a for a in alerts if a.subject == "ghost"]  # no shopper who never existed
    assert await derived_ids(jslog, STORE) == await uninterrupted(jslog, STORE)


async def test_store_ids_that_are_not_store_ids_in_subjects_are_skipped_and_reported(
    jslog: JetStreamLog, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS stores ``aisle.b*d.item.picked`` (a wildcard only counts as a whole token):
    such a token cannot name a lease, and once stopped every rebalance."""
    events = day()
    picked = ev.encode(next(e for e in events if e.type == "item.picked"))
    for token in ("b*d", "b>d", "bäd"):
        await around(jslog, token, "item.picked", picked)
    with caplog.at_level(logging.WARNING, logger="aisle.engine"):
        async with running(jslog) as worker:
            await publish(jslog, events)
            await settled(jslog, [STORE], timeout_s=60)
            assert worker.metrics.invalid_stores._value.get() == 3
            assert sorted(worker.runners) == [STORE]
    assert await derived_ids(jslog, STORE) == await uninterrupted(jslog, STORE)
    reported = [r for r in caplog.records if "invalid store id" in r.getMessage()]
    assert sorted(r.store for r in reported) == ["b*d", "b>d", "bäd"]  # type: ignore[attr-defined]


async def test_an_event_dated_in_the_year_9999_is_refused_and_the_store_keeps_its_clock(
    jslog: JetStreamLog,
) -> None:
    events = day()
    half = len(events) // 2
    future = msgspec.structs.replace(
        events[half], id="from-9999", at=datetime(9999, 1, 1, tzinfo=UTC)
    )
    async with running(jslog) as worker:
        await publish(jslog, events[:half])
        await around(jslog, STORE, future.type, ev.encode(future))
        await publish(jslog, events[half:])
        await settled(jslog, [STORE])
        assert not [m for m in worker.metrics.late.collect()[0].samples if m.value]  # none late
    [letter] = await letters(jslog)
    assert letter.field == "at" and "in the future" in letter.reason
    got = await derived_ids(jslog, STORE)
    assert len(got) > 50 and got == await uninterrupted(jslog, STORE)  # the later ones too


def _frame(n: int, at: datetime) -> ev.PositionSamples:
    """``n`` people in one frame, each in a cell of their own."""
    samples = tuple(
        ev.PositionSample(track=f"t{i}", x=(i % 200) * 0.5, y=(i // 200) * 0.5) for i in range(n)
    )
    return ev.new(
        ev.PositionSamples,
        store=STORE,
        at=at,
        source="cam-1",
        subject="cam-1",
        data=ev.PositionData(frame=7, samples=samples),
    )


async def test_a_frame_of_thirty_thousand_samples_is_refused_and_the_store_goes_on(
    jslog: JetStreamLog,
) -> None:
    events = day()
    half = len(events) // 2
    frame = _frame(30_000, events[half].at)
    payload = ev.encode(frame)
    assert len(payload) < jslog.nc.max_payload  # the server stores it
    async with running(jslog):
        await publish(jslog, events[:half])
        await around(jslog, STORE, frame.type, payload)
        await publish(jslog, events[half:])
        await settled(jslog, [STORE])
    [letter] = await letters(jslog)
    assert letter.field == "data.samples" and payload.startswith(letter.payload)
    assert await derived_ids(jslog, STORE) == await uninterrupted(jslog, STORE)


SUMMARY = "{data.sku * 10000}" * 11  # 1.1 MB, each piece within the sandbox's bound
HUGE = f"""\
pack: huge
version: "1.0.0"
description: A rule whose alert is over the server's payload limit.
rules:
  - id: huge_alert
    description: An alert of 1.1 MB.
    where: type == "item.picked" and subject == "v-huge"
    alert:
      name: huge
      summary: "{SUMMARY}"
      key: subject
"""


async def test_a_derived_event_over_the_payload_limit_is_its_rules_error_and_a_dead_letter(
    jslog: JetStreamLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pack = tmp_path / "huge.yaml"
    pack.write_text(HUGE)
    events = day()
    half = len(events) // 2
    base = next(e for e in events[half:] if e.type == "item.picked")
    trigger = ev.new(
        ev.ItemPicked,
        store=STORE,
        at=base.at,
        source="cam-1",
        subject="v-huge",
        data=ev.ItemData(sku="cola-500ml", shelf="fridge-drinks"),
    )
    with caplog.at_level(logging.WARNING, logger="aisle.engine"):
        async with running(jslog, packs=[*PACKS, pack]) as worker:
            await publish(jslog, [*events[:half], trigger, *events[half:]])
            await settled(jslog, [STORE])
            assert worker.metrics.rule_errors.labels(STORE)._value.get() == 1
    [letter] = await letters(jslog)
    assert letter.source == "rule:huge.huge_alert" and "over the server's limit" in letter.reason
    assert letter.size > jslog.nc.max_payload
    [logged] = [r for r in caplog.records if r.getMessage() == "rule failed"]
    assert logged.rule == "huge.huge_alert" and "over the server's limit" in logged.error  # type: ignore[attr-defined]
    # Everything else was derived and published, the events after it included.
    got = await derived_ids(jslog, STORE)
    assert len(got) > 50
    assert got == [i for i in await uninterrupted(jslog, STORE) if i != logged.event]  # type: ignore[attr-defined]


@pytest.mark.parametrize("when", ["given", "applied"])
async def test_a_message_the_engine_fails_on_is_set_aside_after_three_tries(
    jslog: JetStreamLog, when: str
) -> None:
    """The engine fails on one event, when it is given it or when it applies it (with a
    lateness, once a later event has moved the watermark past it): the store restarts
    from its checkpoint, and the third time sets that event aside, not the later one."""
    events = day()
    half = len(events) // 2
    poison = msgspec.structs.replace(events[half], id="poison", subject="poison")
    async with running(jslog) as worker:
        engine = worker.engine
        assert engine is not None and engine.lateness_s > 0
        if when == "given":
            real = engine.process

            def process(batch: Iterable[ev.Event]) -> Output:
                def checked() -> Iterable[ev.Event]:
                    for e in batch:
                        if e.id == "poison":
                            raise RuntimeError("a bug this event brings out")
                        yield e

                return real(checked())

            engine.process = process  # type: ignore[method-assign]
        else:
            real_apply = engine._apply

            def _apply(p: Any, e: ev.Event, ts: float, out: Output, depth: int) -> None:
                if e.id == "poison":
                    raise RuntimeError("a bug this event brings out")
                real_apply(p, e, ts, out, depth)

            engine._apply = _apply  # type: ignore[method-assign]
        await publish(jslog, [*events[:half], poison, *events[half:]])
        await settled(jslog, [STORE])
        assert sorted(worker.runners) == [STORE]
        assert worker.metrics.deadletters.labels(STORE)._value.get() == 1
    [letter] = await letters(jslog)
    assert letter.payload == ev.encode(poison)
    assert "failed on it 3 times" in letter.reason
    assert "a bug this event brings out" in letter.reason
    clean = [e for e in await read_arrived(jslog, STORE) if e.id != "poison"]
    expected = [d.id for d in engine_for_test().process(clean).derived]
    assert len(expected) > 50 and await derived_ids(jslog, STORE) == expected


def test_rule_errors_are_logged_with_rule_event_and_reason_but_never_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ServiceConfig(worker="w1", rule_errors_per_minute=5)
    log = SimpleNamespace(config=LogConfig())
    runner = StoreRunner(STORE, log, None, None, EngineMetrics(), config, Pacer(0.05))  # type: ignore[arg-type]
    errors = [RuleError("carts.cart", f"e{i}", "KeyError: 'x'") for i in range(100)]
    with caplog.at_level(logging.WARNING, logger="aisle.engine"):
        runner._log_errors(errors)
        logged = [r for r in caplog.records if r.getMessage() == "rule failed"]
        assert [(r.rule, r.event, r.error) for r in logged] == [  # type: ignore[attr-defined]
            ("carts.cart", f"e{i}", "KeyError: 'x'") for i in range(5)
        ]
        runner._errors_logged.window -= 60  # a minute later
        runner._log_errors(errors[:1])
    [held] = [r for r in caplog.records if r.getMessage().startswith("rule errors not logged")]
    assert held.count == 95  # type: ignore[attr-defined]


@pytest.mark.parametrize("store", ["b*d", "b.d", "bäd"])
def test_engine_run_refuses_a_store_id_that_is_not_one(store: str) -> None:
    from typer.testing import CliRunner

    from core.cli import _load_plugins, app

    _load_plugins()
    result = CliRunner().invoke(app, ["engine", "run", "--store", store])
    assert result.exit_code == 2 and f"--store {store!r}" in result.output


def _heartbeat(at: datetime, source: str = "cam-evil") -> ev.Event:
    return ev.new(ev.StoreHeartbeat, store=STORE, at=at, source=source, subject="x")


def _receipts_and_late(events: list[ev.Event]) -> tuple[list[str], int]:
    out = engine_for_test(lateness_s=ServiceConfig("w").lateness_s).process(events)
    return [d.id for d in out.derived if d.type == "receipt.issued"], len(out.late)


def test_an_event_dated_the_allowed_skew_ahead_puts_no_real_source_idle() -> None:
    """At the service's defaults, an invented source's heartbeat dated ``max_future_s``
    ahead (the most the engine admits) moves the store's newest time, yet every real source
    stays within the idle bound: nothing is late, every receipt comes. 290 s ahead (inside
    the old default of 300 s) made hundreds of real events late."""
    defaults = ServiceConfig("w")
    assert defaults.clock_conflict() is None
    events = store_day(hours=1, shoppers=15)
    k = len(events) // 3
    base = _receipts_and_late(events)
    ahead = timedelta(seconds=defaults.max_future_s)
    assert _receipts_and_late([*events[:k], _heartbeat(events[k].at + ahead), *events[k:]]) == base
    far = [*events[:k], _heartbeat(events[k].at + timedelta(seconds=290)), *events[k:]]
    assert _receipts_and_late(far)[1] > base[1] + 100  # what 290 s did: the test can fail


def test_a_skew_that_could_blind_a_store_is_refused_at_engine_run() -> None:
    from typer.testing import CliRunner

    from core.cli import _load_plugins, app

    _load_plugins()
    for flags, hint in (
        (["--max-future", "300"], "--source-idle"),
        (["--max-future", "5", "--lateness", "5"], "--source-idle"),
        (["--source-idle", "0"], "one clock per store"),
    ):
        result = CliRunner().invoke(app, ["engine", "run", *flags], env={"AISLE_NATS_URL": ""})
        assert result.exit_code == 2, (flags, result.output)
        error = " ".join(result.output.split())
        assert error.startswith("error:") and hint in error, error
    assert ServiceConfig("w", max_future_s=7.9, lateness_s=2).clock_conflict() is None


async def test_a_heartbeat_dated_minutes_ahead_of_the_log_is_refused_and_blinds_no_source(
    jslog: JetStreamLog,
) -> None:
    """A store's events dated up to now, and an invented source's heartbeat 290 s ahead of
    the time the log stores it, straight onto the subject: at the defaults it goes to the
    dead letters, and no real event is late."""
    events = day()
    shift = datetime.now(UTC) - timedelta(seconds=30) - events[-1].at
    events = [msgspec.structs.replace(e, at=e.at + shift) for e in events]
    k = len(events) // 3
    forged = _heartbeat(datetime.now(UTC) + timedelta(seconds=290))
    async with running(jslog) as worker:
        await publish(jslog, events[:k])
        await around(jslog, STORE, forged.type, ev.encode(forged))
        await publish(jslog, events[k:])
        await settled(jslog, [STORE])
        assert not [m for m in worker.metrics.late.collect()[0].samples if m.value]  # none late
    [letter] = await letters(jslog)
    assert letter.field == "at" and "in the future" in letter.reason
    assert await derived_ids(jslog, STORE) == await uninterrupted(jslog, STORE)


def test_a_metrics_port_in_use_is_refused_with_a_sentence_not_a_traceback() -> None:
    import socket

    from typer.testing import CliRunner

    from core.cli import _load_plugins, app

    _load_plugins()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["engine", "run", "--metrics-port", str(port)], env={"AISLE_NATS_URL": ""}
        )
    assert result.exit_code == 2, result.output
    error = " ".join(result.output.split())
    assert error.startswith(f"error: --metrics-port {port}") and "free port" in error, error
    assert "Traceback" not in result.output
