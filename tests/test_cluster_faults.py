"""The cluster fault test, driven by the tools of docs/operations.md: three nodes (`aisle
cluster up`), two engine workers (`aisle engine run`), a simulated day of six stores
(`aisle simulate --stores 6 --realtime`); mid-day one worker is SIGKILLed and one node
killed, and both are started again. At the end every store's receipts are exactly the
simulator's truth, and none is in the log twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core import events as ev
from tests.clusterkit import leader, replicated_log
from tests.conftest import unique_prefix
from tests.enginekit import engine_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

AISLE = str(Path(sys.executable).parent / "aisle")
STORES = 6


def aisle(
    env: dict[str, str], *args: str, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AISLE, *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=timeout_s,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _receipts(url: str, prefix: str, store: str) -> list[ev.Event]:
    async with replicated_log(url, prefix) as log:
        return [r.event async for r in log.replay(store=store, types=["receipt.issued"])]


async def test_a_day_of_six_stores_through_a_dead_worker_and_a_dead_node(tmp_path: Path) -> None:
    folder = str(tmp_path / "cluster")
    made = aisle({}, "cluster", "up", "--nodes", "3", "--dir", folder)
    assert made.returncode == 0, made.stderr
    env = dict(line.removeprefix("export ").split("=", 1) for line in made.stdout.splitlines())
    env["AISLE_PREFIX"] = prefix = unique_prefix()
    url = env["AISLE_NATS_URL"]
    workers: dict[str, subprocess.Popen[bytes]] = {}
    day: subprocess.Popen[str] | None = None
    try:
        for step in (["log", "configure", "--apply"],
                     ["log", "configure", "--lease-ttl", "10s", "--apply"]):  # fmt: skip
            done = aisle(env, *step)
            assert done.returncode == 0, done.stderr

        def start(name: str) -> subprocess.Popen[bytes]:
            return engine_process(
                url, prefix, name, "--lease-ttl", "10s", "--checkpoint-seconds", "2",
                logs=tmp_path / f"{name}.log", env=env,
            )  # fmt: skip

        workers = {w: start(w) for w in ("a", "b")}
        truth = tmp_path / "truth"
        day = subprocess.Popen(
            [AISLE, "simulate", "--stores", str(STORES), "--hours", "1", "--shoppers", "15",
             "--truth", str(truth), "--realtime", "--speed", "40"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        await asyncio.sleep(25)  # the day streams in (90 s at this speed)
        workers["a"].send_signal(signal.SIGKILL)
        workers["a"].wait()
        await asyncio.sleep(8)
        workers["a"] = start("a")
        async with replicated_log(url, prefix) as log:
            victim = await leader(log, log.config.events_stream)
        nodes = json.loads(aisle(env, "cluster", "status", "--dir", folder, "--json").stdout)
        pid = next(n["pid"] for n in nodes if n["name"] == victim)
        assert day.poll() is None, "the day had ended before the node was killed"
        os.kill(pid, signal.SIGKILL)  # the business stream's leader
        await asyncio.sleep(10)
        again = aisle(env, "cluster", "up", "--dir", folder)
        assert again.returncode == 0 and "1 of 3 servers started" in again.stderr, again.stderr
        said, _ = await asyncio.to_thread(day.communicate, timeout=600)
        assert day.returncode == 0, said
        assert "Traceback" not in said, said

        due = {
            f.name.removesuffix(".receipts.json"): json.loads(f.read_text())
            for f in truth.glob("*.receipts.json")
        }
        assert len(due) == STORES and all(due.values())
        deadline = time.monotonic() + 300
        while True:
            got = {s: await _receipts(url, prefix, s) for s in due}
            if all(len(got[s]) >= len(due[s]) for s in due) or time.monotonic() > deadline:
                break
            await asyncio.sleep(3)
        await asyncio.sleep(5)  # anything published twice would come in now
        got = {s: await _receipts(url, prefix, s) for s in due}
        for store, receipts in got.items():
            ids = Counter(r.id for r in receipts)
            carts = Counter(r.data.cart for r in receipts)
            assert max(ids.values()) == 1, f"{store}: a receipt id in the log twice"
            assert max(carts.values()) == 1, f"{store}: a cart with two receipts"
            lines = {r.data.cart: {x.sku: x.qty for x in r.data.lines} for r in receipts}
            assert lines == due[store], f"{store}: receipts differ from the truth"
        status = json.loads(aisle(env, "rules", "status", "--json").stdout)
        held = sorted(s for w in status["workers"] for s in w["stores"])
        assert held == sorted(due), status
        for name in ("a", "b"):
            text = (tmp_path / f"{name}.log").read_text(errors="replace")
            assert "Traceback" not in text, text[-3000:]
        print(
            f"{sum(len(r) for r in got.values())} receipts, all as true; the worker was "
            f"killed at 25 s, node {victim} at ~35 s; b opened "
            f"{(tmp_path / 'b.log').read_text().count('store opened')} stores in all"
        )
    finally:
        if day is not None and day.poll() is None:
            day.kill()
        for proc in workers.values():
            _stop(proc)
        aisle({}, "cluster", "down", "--dir", folder, "--purge")
