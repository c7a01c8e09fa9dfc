"""The log's contract, on JetStream (the machine's server and an embedded one) and in memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core import events as ev
from core.jetstream import JetStreamLog
from core.log import EventLog, Rejected, publish_in_order
from core.memlog import MemoryLog
from tests.conftest import scratch_log, server_url

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def visit(store: str, subject: str, n_items: int = 2, start: datetime = T0) -> list[ev.Event]:
    """A short scripted visit: enter, pick ``n_items``, put one back, leave."""
    base = {"store": store, "source": "cam-1", "subject": subject}
    out: list[ev.Event] = [
        ev.new(ev.ShopperEntered, at=start, data=ev.EntryData(line="door"), **base)
    ]
    for i in range(n_items):
        at = start + timedelta(seconds=10 + i)
        out.append(
            ev.new(ev.ItemPicked, at=at, data=ev.ItemData(sku=f"sku-{i}", shelf="A1"), **base)
        )
    out.append(
        ev.new(
            ev.ItemPutBack,
            at=start + timedelta(seconds=30),
            data=ev.ItemData(sku="sku-0", shelf="B2"),
            **base,
        )
    )
    out.append(
        ev.new(
            ev.ShopperExited,
            at=start + timedelta(seconds=60),
            data=ev.ExitData(line="door"),
            **base,
        )
    )
    return out


@pytest.fixture(params=["system", "embedded", "memory"])
async def anylog(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    if request.param == "memory":
        yield MemoryLog()
        return
    async with scratch_log(server_url(request.param, request)) as log:
        yield log


async def collect(it: AsyncIterator) -> list:  # type: ignore[type-arg]
    return [x async for x in it]


async def test_publish_then_replay_by_store_and_type(anylog: EventLog) -> None:
    a, b = visit("s1", "v-1"), visit("s2", "v-2")
    acks = await anylog.publish_many([*a, *b])
    assert [p.id for p in acks] == [e.id for e in [*a, *b]]
    assert not any(p.duplicate for p in acks)

    everything = await collect(anylog.replay())
    assert [r.event for r in everything] == [*a, *b]
    assert [r.seq for r in everything] == list(range(1, len(a) + len(b) + 1))
    assert [r.event for r in await collect(anylog.replay(store="s2"))] == b
    picks = await collect(anylog.replay(store="s1", types=["item.picked"]))
    assert [r.event for r in picks] == [e for e in a if e.type == "item.picked"]
    both = await collect(anylog.replay(types=["shopper.entered", "shopper.exited"]))
    assert {r.event.type for r in both} == {"shopper.entered", "shopper.exited"}
    assert len(both) == 4


async def test_replay_from_a_sequence(anylog: EventLog) -> None:
    events = visit("s1", "v-1", n_items=5)
    await anylog.publish_many(events)
    tail = await collect(anylog.replay(from_seq=4))
    assert [r.event for r in tail] == events[3:]


async def test_replay_from_a_time(anylog: EventLog) -> None:
    first, second = visit("s1", "v-1"), visit("s1", "v-2")
    await anylog.publish_many(first)
    await asyncio.sleep(0.05)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await anylog.publish_many(second)
    assert [r.event for r in await collect(anylog.replay(from_time=cut))] == second


async def test_republishing_keeps_one_copy(anylog: EventLog) -> None:
    events = visit("s1", "v-1")
    await anylog.publish_many(events)
    again = await anylog.publish_many(events + events)
    assert all(p.duplicate for p in again)
    assert len(await collect(anylog.replay())) == len(events)


async def test_invalid_event_goes_to_the_dead_letters(anylog: EventLog) -> None:
    good = visit("s1", "v-1")[0]
    bad = ev.ItemPicked(
        id="x1",
        store="s1",
        at=T0,
        source="cam-1",
        subject="v-1",
        data=ev.ItemData(sku="", shelf="A1"),
    )
    with pytest.raises(Rejected) as info:
        await anylog.publish_many([good, bad])
    assert info.value.field == "data.sku"
    assert info.value.deadletter_seq == 1
    with pytest.raises(Rejected) as info:
        await anylog.publish_raw(b'{"type":"item.picked","store":"s1",', source="adapter-x")
    assert info.value.field == "$"
    letters = await collect(anylog.deadletters())
    assert [(s, d.store, d.field) for s, d in letters] == [
        (1, "s1", "data.sku"),
        (2, "_unknown", "$"),
    ]
    assert letters[0][1].payload == ev.encode(bad)
    assert letters[1][1].source == "adapter-x"
    # Nothing of a refused batch reaches the business stream.
    assert await collect(anylog.replay()) == []


async def test_position_samples_have_their_own_stream(anylog: EventLog) -> None:
    frame = ev.new(
        ev.PositionSamples,
        store="s1",
        at=T0,
        source="cam-1",
        subject="cam-1",
        data=ev.PositionData(frame=7, samples=(ev.PositionSample("t1", 1.0, 2.0),)),
    )
    await anylog.publish_many([frame, *visit("s1", "v-1")])
    samples = await collect(anylog.replay(types=["position.samples"]))
    assert [r.event for r in samples] == [frame]
    assert samples[0].seq == 1
    assert all(r.event.type != "position.samples" for r in await collect(anylog.replay()))
    with pytest.raises(ValueError, match="own stream"):
        await collect(anylog.replay(types=["position.samples", "item.picked"]))


async def test_durable_consumer_resumes(anylog: EventLog) -> None:
    events = visit("s1", "v-1", n_items=4)
    await anylog.publish_many(events)
    c = await anylog.consumer("engine-s1", store="s1", types=["item.picked", "item.put_back"])
    first = await c.fetch(3, timeout_s=2)
    assert [d.record.event for d in first] == [e for e in events if e.type.startswith("item.")][:3]
    for d in first:
        await d.ack()
    await c.close()
    c = await anylog.consumer("engine-s1", store="s1", types=["item.picked", "item.put_back"])
    rest = await c.fetch(10, timeout_s=2)
    assert [d.record.event.type for d in rest] == ["item.picked", "item.put_back"]
    assert await c.fetch(10, timeout_s=0.2) == []


async def test_nak_redelivers(anylog: EventLog) -> None:
    await anylog.publish_many(visit("s1", "v-1")[:1])
    c = await anylog.consumer("redo", store="s1")
    (d,) = await c.fetch(1, timeout_s=2)
    await d.nak()
    (again,) = await c.fetch(1, timeout_s=2)
    assert again.record.event == d.record.event


async def test_tail_sees_new_events(anylog: EventLog) -> None:
    events = visit("s1", "v-1")
    await anylog.publish(events[0])  # already there: tail does not repeat it

    async def first_two() -> list[ev.Event]:
        out = []
        async for r in anylog.tail(store="s1"):
            out.append(r.event)
            if len(out) == 2:
                return out
        return out

    task = asyncio.create_task(first_two())
    await asyncio.sleep(0.3)
    await anylog.publish_many(events[1:3])
    assert await asyncio.wait_for(task, 10) == events[1:3]


async def test_tail_since_a_time_gives_what_was_stored_from_then_and_then_what_comes(
    anylog: EventLog,
) -> None:
    before, stored, later = visit("s1", "v-1")[:1], visit("s1", "v-2")[:2], visit("s1", "v-3")
    await anylog.publish_many(before)
    await asyncio.sleep(0.05)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await anylog.publish_many(stored)

    async def first_four() -> list[ev.Event]:
        out = []
        async for r in anylog.tail(store="s1", since=cut):
            out.append(r.event)
            if len(out) == 4:
                return out
        return out

    task = asyncio.create_task(first_four())
    await asyncio.sleep(0.3)
    await anylog.publish_many(later[:2])
    assert await asyncio.wait_for(task, 10) == stored + later[:2]


async def test_publishing_in_order_stores_the_two_streams_in_that_order(
    jslog: JetStreamLog,
) -> None:
    """What the engine service merges by arrival comes in the order it was published."""
    base = {"store": "s1", "source": "cam-1", "subject": "v1"}
    events: list[ev.Event] = []
    for i in range(3000):
        at = T0 + timedelta(seconds=i / 2)
        samples = tuple(ev.PositionSample(f"t{k}", 1.0 + k, 2.0) for k in range(8))
        data = ev.PositionData(frame=i, samples=samples)
        events.append(ev.new(ev.PositionSamples, at=at, data=data, **base))
        if i % 3 == 0:
            item = ev.ItemData(sku=f"sku-{i}", shelf="A1")
            events.append(ev.new(ev.ItemPicked, at=at, data=item, **base))
    await publish_in_order(jslog, events, lot=500)
    stamps = {}
    for types in (["item.picked"], ["position.samples"]):
        stamps |= {r.event.id: r.stored_ns async for r in jslog.replay(store="s1", types=types)}
    arrived = [stamps[e.id] for e in events]
    assert arrived == sorted(arrived)


async def test_stats_count_by_subject(jslog: JetStreamLog) -> None:
    await jslog.publish_many(visit("s1", "v-1") + visit("s2", "v-2", n_items=3))
    stats = {s.name: s for s in await jslog.stats()}
    events = stats[jslog.config.events_stream]
    assert events.messages == 5 + 6
    assert events.subjects[f"{jslog.config.prefix}.s2.item.picked"] == 3
    assert stats[jslog.config.samples_stream].messages == 0


async def test_streams_are_created_idempotently(jslog: JetStreamLog) -> None:
    await jslog.publish_many(visit("s1", "v-1"))
    await jslog.ensure_streams()
    await JetStreamLog.open(jslog.nc, jslog.config)
    assert len(await collect(jslog.replay())) == 5


async def test_opening_the_log_keeps_an_operators_limits_and_reports_them(
    jslog: JetStreamLog, caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    await jslog.publish_many(visit("s1", "v-1"))
    name = jslog.config.events_stream
    config = (await jslog.js.stream_info(name)).config
    config.max_bytes, config.max_msgs, config.max_age = 10_000_000, 1_000, 7 * 86400.0
    picked = f"{jslog.config.prefix}.*.item.picked"
    config.subjects = [s for s in config.subjects or [] if s != picked]  # an older aisle's
    await jslog.js.update_stream(config)

    reader = await JetStreamLog.open(jslog.nc, jslog.config, read_only=True)
    info = await jslog.js.stream_info(name)
    assert picked not in (info.config.subjects or []), "a read-only command changes nothing"
    assert (info.config.max_bytes, info.config.max_msgs) == (10_000_000, 1_000)
    assert "max_bytes 10,000,000 (aisle's: unlimited)" in caplog.text
    assert "max_age 7 d (aisle's: unlimited)" in caplog.text

    newer = replace(jslog.config, duplicate_window_s=30.0)
    found = await (await JetStreamLog.open(jslog.nc, newer)).ensure_streams()
    info = await jslog.js.stream_info(name)
    assert picked in (info.config.subjects or []), "the subjects aisle needs are added"
    assert (info.config.max_bytes, info.config.max_msgs) == (10_000_000, 1_000)
    assert (info.config.max_age, info.config.duplicate_window) == (7 * 86400.0, 120.0)
    assert info.state.messages == 5
    assert {(d.stream, d.field) for d in found} == {
        (name, "max_bytes"),
        (name, "max_msgs"),
        (name, "max_age"),
        *((s, "duplicate_window") for s in reader._streams.values()),
    }

    assert await reader.configure_streams() == await reader.ensure_streams(read_only=True)
    await JetStreamLog(jslog.nc, newer).configure_streams(apply=True)
    info = await jslog.js.stream_info(name)
    assert (info.config.max_bytes, info.config.max_msgs, info.config.max_age) == (-1, -1, 0)
    assert info.config.duplicate_window == 30.0 and info.state.messages == 5
    assert await JetStreamLog(jslog.nc, newer).configure_streams() == []


async def test_publish_gives_up_with_a_clear_error_when_no_stream_answers(
    jslog: JetStreamLog,
) -> None:
    from dataclasses import replace

    from core.log import PublishError

    await jslog.delete_streams()
    lost = JetStreamLog(
        jslog.nc, replace(jslog.config, publish_deadline_s=0.5, publish_timeout_s=0.2)
    )
    with pytest.raises(PublishError, match="not confirmed"):
        await lost.publish(visit("s1", "v-1")[0])
    with contextlib.suppress(Exception):
        await jslog.ensure_streams()


async def test_publish_window_holds_few_unconfirmed_and_loses_nothing(jslog: JetStreamLog) -> None:
    from dataclasses import replace

    narrow = JetStreamLog(jslog.nc, replace(jslog.config, max_pending=7))
    events = [e for i in range(60) for e in visit("s1", f"v-{i}")]
    acks = await narrow.publish_many([*events, events[3]])  # one id twice in the lot
    assert [a.id for a in acks] == [e.id for e in events] + [events[3].id]
    assert [a.seq for a in acks[:-1]] == list(range(1, len(events) + 1))
    assert acks[-1].duplicate and acks[-1].seq == acks[3].seq
    assert [i for i, a in enumerate(acks[:-1]) if a.duplicate] == []
    assert not narrow._acks._waiting  # every token answered and let go


async def test_publish_refused_by_the_stream_says_why(jslog: JetStreamLog) -> None:
    from core.log import PublishError

    config = (await jslog.js.stream_info(jslog.config.events_stream)).config
    config.max_msg_size = 64
    await jslog.js.update_stream(config)
    with pytest.raises(PublishError, match=r"refused: .*(size|maximum).*code 400"):
        await jslog.publish(visit("s1", "v-1")[0])


async def test_an_abandoned_lot_frees_its_window(jslog: JetStreamLog) -> None:
    await jslog.delete_streams()  # nobody answers: the lot stays unconfirmed
    lot = await jslog.send_many(visit("s1", "v-1"))
    assert len(jslog._acks._waiting) == len(lot.items)
    lot.abandon()
    assert not jslog._acks._waiting
    await jslog.ensure_streams()


async def test_a_handler_subscription_hands_over_each_message_in_order_and_survives_a_failure(
    jslog: JetStreamLog,
) -> None:
    from core import handlers

    nc, seen = jslog.nc, []
    inbox = nc.new_inbox()

    def handle(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.data == b"bad":
            raise ValueError("a handler's failure stays with its message")
        seen.append((msg.subject, msg.data, msg.headers))

    sub = await handlers.subscribe(nc, f"{inbox}.*", handle)
    for i, data in enumerate([b"one", b"bad", b"two", b"three"]):
        await nc.publish(f"{inbox}.{i}", data, headers={"K": str(i)})
    await nc.flush()
    for _ in range(100):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.01)
    assert seen == [
        (f"{inbox}.0", b"one", {"K": "0"}),
        (f"{inbox}.2", b"two", {"K": "2"}),
        (f"{inbox}.3", b"three", {"K": "3"}),
    ]
    await sub.unsubscribe()
    await nc.publish(f"{inbox}.4", b"after")
    await nc.flush()
    await asyncio.sleep(0.05)
    assert len(seen) == 3


async def test_a_puller_whose_consumer_is_made_again_under_its_name_knows_it_is_fenced_out(
    jslog: JetStreamLog,
) -> None:
    """The server's 409 says "Consumer Deleted" in words for people; the puller asks the
    consumer API instead, and a consumer made again under the same name is not its own."""
    from core.log import Stream
    from core.puller import ConsumerGone

    await jslog.publish_many(visit("s1", "v-1"))
    kind = {"store": "s1", "types": ["item.picked"], "start_seq": 1}
    old, _ = await jslog.engine_consumer("fence-me", Stream.EVENTS, **kind)  # type: ignore[arg-type]
    assert await old.poll(10) and len(old.take()) == 2
    waiting = asyncio.create_task(old.wait(10.0))
    await asyncio.sleep(0.2)
    new, _ = await jslog.engine_consumer("fence-me", Stream.EVENTS, **kind)  # type: ignore[arg-type]
    with pytest.raises(ConsumerGone):
        await waiting
    await new.stop()
    await old.stop()


async def test_a_conflict_that_is_not_a_deletion_does_not_fence_a_puller_out(
    jslog: JetStreamLog,
) -> None:
    from nats.js import api

    from core.puller import Puller

    name = "busy"
    config = api.ConsumerConfig(durable_name=name, ack_policy=api.AckPolicy.NONE, max_waiting=1)
    await jslog.js.add_consumer(jslog.config.events_stream, config)
    first = await Puller(jslog.nc, jslog.config.events_stream, name).start()
    second = await Puller(jslog.nc, jslog.config.events_stream, name).start()
    asked: list[bool] = []
    ask = second._gone

    async def gone() -> bool:
        asked.append(await ask())
        return asked[-1]

    second._gone = gone  # type: ignore[method-assign]
    waiting = asyncio.create_task(first.wait(1.0))
    await asyncio.sleep(0.2)
    await second.wait(1.0)  # 409 "Exceeded MaxWaiting": the consumer is still there
    assert asked == [False], "a 409 came, and the server said the consumer is there"
    await waiting
    await first.stop()
    await second.stop()


async def test_opening_the_log_fails_loudly_when_nats_py_does_not_report_the_servers_version(
    jslog: JetStreamLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nats.aio.client import Client, ServerVersion

    unknown = property(lambda self: ServerVersion("0.0.0-unknown"))
    monkeypatch.setattr(Client, "connected_server_version", unknown)
    with pytest.raises(RuntimeError, match=r"nats-py 2\.\d+\.\d+ did not report .* version"):
        await JetStreamLog.open(jslog.nc, jslog.config)


def _metric(store: str, label: str) -> ev.Metric:
    """A derived event as large as ``label`` makes it (labels are the one unbounded field)."""
    return ev.derive(
        ev.Metric,
        rule=ev.RuleRef("r", "1"),
        caused_by=("c1",),
        store=store,
        at=T0,
        subject="s",
        data=ev.MetricData(name="m", value=1.0, labels={"big": label}),
    )


async def test_a_five_megabyte_event_refuses_its_whole_batch_before_any_is_sent(
    jslog: JetStreamLog,
) -> None:
    good = visit("s1", "v-1")
    big = _metric("s1", "x" * 5_000_000)
    with pytest.raises(Rejected) as info:
        await jslog.publish_many([*good[:2], big, *good[2:]])
    assert info.value.field == "$"
    assert big.id in info.value.reason and "over the server's limit" in info.value.reason
    assert str(len(ev.encode(big))) in info.value.reason
    assert await collect(jslog.replay()) == []  # not half a batch: none of it
    [(_, letter)] = await collect(jslog.deadletters())
    # Too large to keep whole: its start, and its size.
    assert letter.size == len(ev.encode(big)) and letter.field == "$"
    assert 0 < len(letter.payload) < jslog.max_event_bytes
    assert ev.encode(big).startswith(letter.payload)
    await jslog.publish_many(good)  # the batch without it goes through
    assert len(await collect(jslog.replay())) == len(good)


async def test_a_five_megabyte_payload_from_outside_is_kept_in_the_dead_letters_cut_to_fit(
    jslog: JetStreamLog,
) -> None:
    obj = ev.encode(visit("s1", "v-1")[1]).replace(b'"sku-0"', b'"' + b"y" * 5_000_000 + b'"')
    with pytest.raises(Rejected) as info:
        await jslog.publish_raw(obj, source="adapter-x")
    assert info.value.field == "data.sku" and info.value.deadletter_seq == 1
    [(_, letter)] = await collect(jslog.deadletters(store="s1"))
    assert letter.size == len(obj) and obj.startswith(letter.payload)
    assert letter.source == "adapter-x"


async def test_an_event_dated_in_the_year_9999_is_refused_at_publish(jslog: JetStreamLog) -> None:
    [entered] = visit("s1", "v-1", start=datetime(9999, 1, 1, tzinfo=UTC))[:1]
    with pytest.raises(Rejected) as info:
        await jslog.publish(entered)
    assert info.value.field == "at" and "in the future" in info.value.reason
    with pytest.raises(Rejected) as info:
        await jslog.publish_raw(ev.encode(entered))
    assert info.value.field == "at"
    assert await collect(jslog.replay()) == []
    # The same bytes refused twice: one dead letter (they are idempotent too).
    assert [d.field for _, d in await collect(jslog.deadletters(store="s1"))] == ["at"]
    soon = visit("s1", "v-2", start=datetime.now(UTC) + timedelta(seconds=3))[:1]
    await jslog.publish_many(soon)  # a clock a few seconds fast is within the skew allowed
    with pytest.raises(Rejected):  # a minute is not (docs/engine.md, "Clock skew")
        minute = datetime.now(UTC) + timedelta(seconds=60)
        await jslog.publish_many(visit("s1", "v-3", start=minute)[:1])


async def test_replay_skips_what_was_published_around_the_log_onto_another_subject(
    jslog: JetStreamLog,
) -> None:
    """A derived type on a raw subject, another store's event, the year 9999: none is
    replayed as if it were the log's."""
    events = visit("s1", "v-1")
    await jslog.publish_many(events)
    p = jslog.config.prefix
    forged = _metric("s1", "forged")
    await jslog.js.publish(f"{p}.s1.item.picked", ev.encode(forged))
    wine = visit("s2", "v-9")[1]
    await jslog.js.publish(f"{p}.s1.item.picked", ev.encode(wine))
    future = visit("s1", "v-3", start=datetime(9999, 1, 1, tzinfo=UTC))[1]
    await jslog.js.publish(f"{p}.s1.item.picked", ev.encode(future))
    got = [r.event for r in await collect(jslog.replay(store="s1"))]
    assert got == events


# -- a message id taken first by another message (issue 12) --------------------------------


async def test_an_event_whose_message_id_was_taken_first_is_stored_again_and_reported(
    jslog: JetStreamLog, caplog: pytest.LogCaptureFixture
) -> None:
    events = visit("s1", "v-1")
    taken = f"{jslog.config.prefix}.s2.store.heartbeat"
    impostor = await jslog.js.publish(taken, b"{}", headers={"Nats-Msg-Id": events[1].id})
    with caplog.at_level(logging.ERROR, logger="core.pubacks"):
        acks = await jslog.publish_many(events)
    assert [a.preempted_by for a in acks] == [0, impostor.seq, 0, 0, 0]
    assert not acks[1].duplicate and acks[1].seq > impostor.seq
    stored = [r.event.id async for r in jslog.replay(store="s1")]
    assert sorted(stored) == sorted(e.id for e in events)  # it comes after the rest of its lot
    assert f"seq {impostor.seq} on {taken}" in caplog.text
    # A genuine duplicate (the same event again) is one, and stays one.
    again = await jslog.publish_many(events[:1])
    assert again[0].duplicate and again[0].preempted_by == 0 and again[0].seq == acks[0].seq


@pytest.mark.timeout(60)
async def test_a_role_that_may_not_read_the_stream_takes_duplicate_acks_as_they_come(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An adapter may not read the streams: its duplicate acks cannot be checked. It is
    said once, at once (the server refuses the read to the connection; no timeout)."""
    from core.access import Role, authorization, load_users, user_for
    from core.config import LogConfig, NatsAuth
    from core.jetstream import connect
    from core.natsd import EmbeddedNats

    users = load_users(tmp_path / "users")
    config = LogConfig(prefix="dup")
    with EmbeddedNats(tmp_path / "nats", auth=authorization(users, config)) as server:

        async def as_(role: Role) -> JetStreamLog:
            u = user_for(users, role)
            nc = await connect(server.url, auth=NatsAuth(user=u.user, password=u.password))
            return JetStreamLog(nc, config)

        admin = await as_(Role.ADMIN)
        await admin.ensure_streams()
        adapter = await as_(Role.ADAPTER)
        events = visit("s1", "v-1")
        await adapter.publish_many(events)
        with caplog.at_level(logging.WARNING, logger="core.pubacks"):
            began = asyncio.get_running_loop().time()
            acks = await adapter.publish_many(events)
            await adapter.publish_many(events)
            spent = asyncio.get_running_loop().time() - began
        assert all(a.duplicate for a in acks) and spent < 3
        assert caplog.text.count("duplicate acks are not checked") == 1
        await adapter.close()
        await admin.close()
