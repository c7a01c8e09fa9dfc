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

from core.jetstream import JetStreamLog
from rules.service.leases import Leases
from tests.conftest import scratch_log
from tests.enginekit import derived_ids, engine_process, publish, settled, store_day, uninterrupted

pytestmark = pytest.mark.timeout(600)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        # An existing stream keeps its settings: the window is set here, as an operator would.
        one_second = replace(log.config, duplicate_window_s=1.0)
        await JetStreamLog(log.nc, one_second).configure_streams(apply=True)
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
        publishing = asyncio.create_task(publish(log, events, chunk=150, pause_s=0.3))
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
