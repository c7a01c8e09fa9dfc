"""The lease bucket followed by one watcher, not read by a new consumer every round."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest

from core.jetstream import JetStreamLog
from rules.reference import Reference
from rules.service.leases import Board, DuplicateWorker
from rules.service.partition import ServiceConfig
from rules.service.worker import Worker
from tests.enginekit import LATENESS_S, PACKS, layout, running


async def lease_consumers(log: JetStreamLog) -> int:
    stream = f"KV_{log.config.bucket('engine_leases')}"
    return len(await log.js.consumers_info(stream))


async def test_an_idle_worker_follows_the_lease_bucket_with_one_watcher(
    jslog: JetStreamLog,
) -> None:
    """Each round made a watcher of its own: 30 a minute behind one idle worker, each
    lingering on the server for minutes."""
    async with running(jslog, "w-idle", lease_ttl_s=1.0) as worker:
        await asyncio.sleep(6)  # about 18 rounds
        assert worker.rebalanced_at, "the worker went round"
        assert await lease_consumers(jslog) <= 2
        assert worker.leases.board is not None and worker.leases.board.watchers == 1
        assert worker.metrics.consumers._value.get() >= 1


async def test_the_board_sees_puts_and_deletes_at_once_and_forgets_what_expires(
    jslog: JetStreamLog,
) -> None:
    kv = await jslog.key_value("engine_leases", ttl_s=2.0)
    board = Board(kv, ttl_s=2.0)
    try:
        await kv.put("worker.a", b"{}")
        assert "worker.a" in await board.entries()
        await kv.put("store.s1", b"a")
        await asyncio.sleep(0.3)
        assert (await board.entries())["store.s1"] == b"a"
        await kv.delete("store.s1")
        await asyncio.sleep(0.3)
        assert "store.s1" not in await board.entries()
        await asyncio.sleep(2.2)  # the bucket's TTL removes worker.a, which sends nothing
        assert await board.entries() == {}
        assert board.watchers == 1
    finally:
        await board.close()


async def test_a_second_worker_of_a_running_ones_id_is_refused_and_a_stopped_one_leaves(
    jslog: JetStreamLog,
) -> None:
    """Two workers of one id took each other's leases and tore down each other's
    consumers; and a worker stopped cleanly stayed announced for a lease time, so the
    others held back from its stores."""
    async with running(jslog, "w-same", lease_ttl_s=3.0) as first:
        while not first.rebalanced_at:
            await asyncio.sleep(0.05)
        config = ServiceConfig(worker="w-same", lateness_s=LATENESS_S, lease_ttl_s=3.0)
        twin = Worker(jslog, Reference.of(layout()), config, packs=PACKS)
        with pytest.raises(DuplicateWorker, match="a worker 'w-same' is running already"):
            await twin.run(asyncio.Event())
    kv = await jslog.key_value("engine_leases", ttl_s=3.0)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("worker.w-same")  # gone at once, not after the lease time
    # Its id is free again: a worker of it starts (a crashed one's after a round).
    async with running(jslog, "w-same", lease_ttl_s=3.0) as again:
        assert again.engine is not None
