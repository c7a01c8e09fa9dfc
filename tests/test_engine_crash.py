"""The engine service dies and moves: SIGKILLed again and again, and its stores taken over
by another worker; the derived events in the log stay exactly those of an unbroken run."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core import events as ev
from core.jetstream import JetStreamLog
from core.log import read_arrived
from rules.service.checkpoints import Checkpoints
from rules.service.leases import Leases
from tests.conftest import scratch_log
from tests.enginekit import (
    derived_ids,
    engine,
    engine_process,
    publish,
    settled,
    store_day,
    uninterrupted,
)

pytestmark = pytest.mark.timeout(600)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _one_second_window(log: JetStreamLog) -> None:
    """The server drops a repeated id for one second only, so what keeps output single is
    the engine's own logic. An existing stream keeps its settings: the window is set here,
    as an operator would."""
    await JetStreamLog(log.nc, replace(log.config, duplicate_window_s=1.0)).configure_streams(
        apply=True
    )


async def _exactly_as_unbroken(log: JetStreamLog, stores: list[str]) -> int:
    total = 0
    for store in stores:
        got, want = await derived_ids(log, store), await uninterrupted(log, store)
        assert len(set(got)) == len(got), f"{store}: a derived event is in the log twice"
        assert set(got) == set(want), (
            f"{store}: {len(set(want) - set(got))} missing, {len(set(got) - set(want))} extra"
        )
        assert got == want  # and in the same order
        total += len(got)
    return total


async def test_sigkill_at_random_points_changes_nothing(embedded_nats, tmp_path: Path) -> None:
    """Ten SIGKILLs while a noisy store day streams in. The server's duplicate window is
    one second, so what keeps output single is the engine's own restart logic."""
    rng = random.Random(7)
    events = store_day(hours=2, shoppers=80, seed=11)
    async with scratch_log(embedded_nats.url) as log:
        await _one_second_window(log)
        env = {"AISLE_DUPLICATE_WINDOW_S": "1"}
        args = ("--checkpoint-seconds", "0.5", "--checkpoint-every", "3000", "--lease-ttl", "3")
        logs = tmp_path / "engine.log"

        def start() -> subprocess.Popen[bytes]:
            return engine_process(
                embedded_nats.url, log.config.prefix, "crashy", *args, logs=logs, env=env
            )

        async def opened(n: int) -> None:
            deadline = time.monotonic() + 60
            while not logs.exists() or logs.read_text().count('"msg": "store opened"') < n:
                assert proc.poll() is None, "the engine exited"
                assert time.monotonic() < deadline, "the engine did not open the store"
                await asyncio.sleep(0.05)

        proc = start()
        # Paced so that the day streams in over about a minute: a restart takes seconds
        # (a worker of a just-killed one's id waits a round to be sure it is gone).
        publishing = asyncio.create_task(publish(log, events, chunk=150, pause_s=1.0))
        during = 0
        kills = 0
        try:
            while kills < 10:
                await opened(kills + 1)  # killed while at work, not while starting up
                await asyncio.sleep(rng.uniform(0.05, 1.5))
                proc.kill()
                proc.wait()
                kills += 1
                during += not publishing.done()
                proc = start()
            await publishing
            await opened(kills + 1)  # the last one is up (SIGTERM while importing kills it)
            await settled(log, ["corner-01"], timeout_s=180)
        finally:
            _stop(proc)
        assert kills == 10
        assert proc.returncode == 0, logs.read_text()[-3000:]  # the last one stopped cleanly
        assert await _exactly_as_unbroken(log, ["corner-01"]) > 500
        assert logs.read_text().count('"restored": true') >= 5  # checkpoints were there
        assert during >= 7, f"only {during} kills came while the day was streaming in"
        # Restarts found derived events of theirs in the log already, and did not repeat them.
        assert re.search(r'"already_published": [1-9]', logs.read_text())


async def test_a_dead_workers_stores_move_to_the_other(embedded_nats, tmp_path: Path) -> None:
    stores = [f"corner-{k:02d}" for k in range(1, 21)]
    days = {s: store_day(s, hours=0.5, shoppers=12, seed=k) for k, s in enumerate(stores)}
    async with scratch_log(embedded_nats.url) as log:
        args = ("--checkpoint-seconds", "0.5", "--lease-ttl", "2")
        a = engine_process(
            embedded_nats.url, log.config.prefix, "a", *args, logs=tmp_path / "a.log"
        )
        b = engine_process(
            embedded_nats.url, log.config.prefix, "b", *args, logs=tmp_path / "b.log"
        )
        try:
            for s in stores:
                await publish(log, days[s][: len(days[s]) // 2])
            leases = Leases(await log.key_value("engine_leases", ttl_s=2), "observer")
            deadline = time.monotonic() + 60
            while True:
                _, owners = await leases.view()
                split = sorted(owners.values()).count("a"), sorted(owners.values()).count("b")
                if split == (10, 10):
                    break
                assert time.monotonic() < deadline, f"no even split: {owners}"
                await asyncio.sleep(0.3)
            checkpoints = await log.key_value("engine_checkpoints")
            while len(await checkpoints.keys()) < 20:  # a has checkpointed its stores
                assert time.monotonic() < deadline, "not every store has a checkpoint"
                await asyncio.sleep(0.3)
            a.kill()
            a.wait()
            for s in stores:
                await publish(log, days[s][len(days[s]) // 2 :])
            deadline = time.monotonic() + 60
            while (
                set((await leases.view())[1].values()) != {"b"}
                or len((await leases.view())[1]) != 20
            ):
                assert time.monotonic() < deadline, "b did not take a's stores"
                await asyncio.sleep(0.3)
            await settled(log, stores, timeout_s=180)
        finally:
            _stop(a)
            _stop(b)
        assert await _exactly_as_unbroken(log, stores) > 20 * 50
        assert b.returncode == 0, (tmp_path / "b.log").read_text()[-3000:]  # a clean stop
        # a's ten stores were restored by b from a's checkpoints.
        assert (tmp_path / "b.log").read_text().count('"restored": true') >= 10


async def _receipts(log: JetStreamLog, store: str) -> list[bytes]:
    return [ev.encode(r.event) async for r in log.replay(store=store, types=["receipt.issued"])]


async def test_a_takeover_in_a_new_process_drops_raw_events_redelivered_after_it(
    embedded_nats, tmp_path: Path
) -> None:
    """Worker a (hash seed 1) applies half a store day, up to just after a pick, and
    checkpoints it; it is SIGKILLed. Worker b, a new process with hash seed 2, takes the
    store from that checkpoint. Then the last raw events a had applied are published again
    (past the one-second duplicate window, so the log stores them anew), the pick among
    them, and then the rest of the day: the receipts are those of an unbroken run, which
    drops the repeats, and nothing is charged twice."""
    store = "corner-01"
    events = store_day(hours=1, shoppers=40, seed=9)
    picks = [i for i, e in enumerate(events) if e.type == "item.picked"]
    cut = picks[len(picks) // 2] + 1  # the pick is the newest event: still buffered
    async with scratch_log(embedded_nats.url) as log:
        await _one_second_window(log)
        env = {"AISLE_DUPLICATE_WINDOW_S": "1"}
        args = ("--checkpoint-seconds", "0.5", "--lease-ttl", "2", "--store", store)
        a = engine_process(
            embedded_nats.url, log.config.prefix, "a", *args, logs=tmp_path / "a.log",
            env={**env, "PYTHONHASHSEED": "1"},
        )  # fmt: skip
        b: subprocess.Popen[bytes] | None = None
        try:
            await publish(log, events[:cut])
            await settled(log, [store])
            # Wait for a checkpoint of everything a applied (the pick in its buffer): the
            # repeats must be known from the snapshot, not from a's run after it.
            checkpoints = Checkpoints(
                await log.key_value("engine_checkpoints"),
                await log.object_store("engine_snapshots"),
            )
            business = sorted(ev.RAW_TYPES - ev.SAMPLE_TYPES)
            last = [  # the sequence of the store's last raw message in each stream
                max([r.seq async for r in log.replay(store=store, types=types)])
                for types in (business, sorted(ev.SAMPLE_TYPES))
            ]
            deadline = time.monotonic() + 60
            while True:
                cp, _, _ = await checkpoints.load(store)
                if cp is not None and list(cp.seqs) == last:
                    break
                assert time.monotonic() < deadline, "a took no checkpoint of it all"
                await asyncio.sleep(0.2)
            a.kill()
            a.wait()
            b = engine_process(
                embedded_nats.url, log.config.prefix, "b", *args, logs=tmp_path / "b.log",
                env={**env, "PYTHONHASHSEED": "2"},
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while '"restored": true' not in (
                (tmp_path / "b.log").read_text() if (tmp_path / "b.log").exists() else ""
            ):
                assert b.poll() is None, "worker b exited"
                assert time.monotonic() < deadline, "b did not restore the store"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # past the duplicate window of the first publish
            again = events[cut - 100 : cut]
            await publish(log, again)
            await publish(log, events[cut:])
            await settled(log, [store])
        finally:
            _stop(a)
            if b is not None:
                _stop(b)
        raw = await read_arrived(log, store)
        repeated = {e.id for e in again}
        assert sum(e.id in repeated for e in raw) >= 2 * len(repeated)  # the log holds them
        assert await _exactly_as_unbroken(log, [store]) > 100
        unbroken = engine().process(raw).derived
        receipts = [ev.encode(d) for d in unbroken if isinstance(d, ev.ReceiptIssued)]
        assert receipts and await _receipts(log, store) == receipts
