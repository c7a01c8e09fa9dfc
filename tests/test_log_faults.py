"""What survives: server restarts in the middle of a publish loop, and endless re-publishing."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.js import api

from core import events as ev
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.natsd import EmbeddedNats
from tests.conftest import unique_prefix
from tests.strategies import any_event

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def picks(n: int) -> list[ev.Event]:
    return [
        ev.new(
            ev.ItemPicked,
            store=f"s{i % 3}",
            at=T0 + timedelta(milliseconds=i),
            source="cam-1",
            subject=f"v-{i % 40}",
            data=ev.ItemData(sku=f"sku-{i % 17}", shelf="A1"),
        )
        for i in range(n)
    ]


async def _publish_through(server: EmbeddedNats, outage: str) -> None:
    nc = await connect(server.url)
    log = await JetStreamLog.open(nc, LogConfig(prefix="faults", publish_timeout_s=1.0))
    events = picks(3000)
    acked: list[str] = []

    async def publish_loop() -> None:
        for i in range(0, len(events), 50):
            acks = await log.publish_many(events[i : i + 50])
            acked.extend(p.id for p in acks)

    loop = asyncio.create_task(publish_loop())
    while len(acked) < 1000:
        await asyncio.sleep(0.01)
    # The outage starts in the middle of the loop, with publishes in flight.
    if outage == "restart":
        await asyncio.to_thread(server.stop)
    else:
        await asyncio.to_thread(server.kill)
    cut = len(acked)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    await asyncio.wait_for(loop, 120)

    assert cut < len(events), "the outage must fall inside the loop"
    assert acked == [e.id for e in events]
    stored = Counter([r.event.id async for r in log.replay()])
    assert set(stored) == set(acked), "an acknowledged event was lost"
    assert max(stored.values()) == 1, "an event was stored twice"
    await log.close()


async def test_restart_mid_publish_loses_and_duplicates_nothing(private_nats: EmbeddedNats) -> None:
    await _publish_through(private_nats, "restart")


async def test_crash_mid_publish_loses_and_duplicates_nothing(private_nats: EmbeddedNats) -> None:
    """SIGKILL: the process dies, the operating system (and its page cache) lives on."""
    await _publish_through(private_nats, "kill")


async def test_a_publish_on_a_connection_closed_for_good_ends_at_once_with_what_was_stored(
    private_nats: EmbeddedNats,
) -> None:
    """Without reconnecting, a lost connection never comes back: waiting out the publish
    deadline (an hour here) would only delay the caller that reconnects itself."""
    from core.log import PublishError

    nc = await connect(private_nats.url, reconnect=False)
    config = LogConfig(prefix="closed", publish_timeout_s=1.0, publish_deadline_s=3600)
    log = await JetStreamLog.open(nc, config)
    events = picks(20)
    await log.publish_many(events[:10])
    await asyncio.to_thread(private_nats.stop)
    with pytest.raises(PublishError, match="connection to NATS is closed") as failed:
        await asyncio.wait_for(log.publish_many(events[10:]), 60)
    assert failed.value.confirmed == (None,) * 10
    assert nc.is_closed


def with_content_id(event: ev.Event) -> ev.Event:
    """Generated ids are arbitrary; real ones name one occurrence, as ``ev.new`` makes them."""
    return msgspec.structs.replace(event, id=ev.event_id(ev.encode(event)))


@pytest.fixture(scope="module")
def runner():  # type: ignore[no-untyped-def]
    with asyncio.Runner() as r:
        yield r


@pytest.fixture(scope="module", params=["system", "embedded"])
def republish_log(request: pytest.FixtureRequest, runner: asyncio.Runner):  # type: ignore[no-untyped-def]
    from tests.conftest import server_url

    url = server_url(request.param, request)

    async def open_() -> JetStreamLog:
        return await JetStreamLog.open(await connect(url), LogConfig(prefix=unique_prefix()))

    log = runner.run(open_())
    yield log

    async def close() -> None:
        await log.delete_streams()
        await log.close()

    runner.run(close())


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(event=any_event.map(with_content_id), copies=st.integers(1, 6), batched=st.booleans())
def test_republishing_any_event_leaves_one_copy(
    republish_log: JetStreamLog, runner: asyncio.Runner, event: ev.Event, copies: int, batched: bool
) -> None:
    async def go() -> list[int]:
        if batched:
            acks = await republish_log.publish_many([event] * copies)
        else:
            acks = [await republish_log.publish(event) for _ in range(copies)]
        assert [a.duplicate for a in acks][1:] == [True] * (copies - 1)
        found = [
            r.seq
            async for r in republish_log.replay(store=event.store, types=[event.type])
            if r.event.id == event.id
        ]
        return found

    found = runner.run(go())
    assert len(found) == 1


async def test_durable_consumer_carries_on_after_a_restart(private_nats: EmbeddedNats) -> None:
    """Pulls resume by themselves after the server comes back, where they left off."""
    log = await JetStreamLog.open(await connect(private_nats.url), LogConfig(prefix="resume"))
    events = picks(500)
    await log.publish_many(events)
    consumer = await log.consumer("engine", store="s1")
    wanted = [e.id for e in events if e.store == "s1"]
    seen: list[str] = []
    for d in await consumer.fetch(100, timeout_s=2):
        seen.append(d.record.event.id)
        await d.ack()
    await asyncio.to_thread(private_nats.restart)
    for _ in range(50):
        batch = await consumer.fetch(100, timeout_s=1)
        for d in batch:
            seen.append(d.record.event.id)
            await d.ack()
        if len(seen) >= len(wanted):
            break
    assert seen == wanted
    await log.close()


class _TinyStore(EmbeddedNats):
    """A server whose JetStream may keep 256 KB on file: full after a few thousand events."""

    def _args(self) -> list[str]:
        conf = self.data_dir / "tiny.conf"
        conf.write_text("jetstream { max_file_store: 256KB }\n")
        return [*super()._args(), "--config", str(conf)]


class _NoJetStream(EmbeddedNats):
    """A server without JetStream, as one is after disabling it when its disk filled."""

    def _args(self) -> list[str]:
        return [a for a in super()._args() if a != "--jetstream"]


async def test_a_full_jetstream_storage_is_reported_with_the_servers_reason_and_what_to_do(
    tmp_path: Path,
) -> None:
    from core.log import PublishError

    with _TinyStore(tmp_path / "nats") as server:
        log = await JetStreamLog.open(
            await connect(server.url), LogConfig(prefix="full", publish_deadline_s=30)
        )
        events = picks(20_000)
        with pytest.raises(PublishError) as refused:
            for i in range(0, len(events), 200):
                await log.publish_many(events[i : i + 200])
        message = str(refused.value)
        assert "insufficient resources" in message and "error 10023" in message
        assert "free disk space" in message and "max_file_store" in message
        assert "not confirmed" not in message, "refused at once, not retried to the deadline"
        await log.close()


async def test_a_stream_full_at_its_own_limit_says_so_and_what_to_do(jslog: JetStreamLog) -> None:
    from core.log import PublishError

    config = (await jslog.js.stream_info(jslog.config.events_stream)).config
    await jslog.js.update_stream(config.evolve(max_msgs=10, discard=api.DiscardPolicy.NEW))
    await jslog.publish_many(picks(10))
    with pytest.raises(PublishError, match=r"maximum messages exceeded.*aisle log configure"):
        await jslog.publish_many(picks(11)[10:])


def test_a_server_without_jetstream_is_named_as_such_not_a_bare_service_unavailable(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from core.cli import app

    with _NoJetStream(tmp_path / "nats") as server:
        env = {"AISLE_NATS_URL": server.url, "AISLE_PREFIX": unique_prefix()}
        result = CliRunner().invoke(app, ["log", "info"], env=env)
    assert result.exit_code == 2, result.output
    assert "JetStream does not answer" in result.output and "free disk space" in result.output
    assert "Traceback" not in result.output
