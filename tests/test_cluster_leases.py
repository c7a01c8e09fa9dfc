"""Leases on a three-node cluster: a worker's stores stay its own through a node loss, and
a dead worker's move within the lease time even when ``aisle rules status`` ran first.

The cluster is `aisle cluster up`'s (core/cluster.py) on free loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import cluster as local
from tests.clusterkit import kill, leader, logs, node_named, replicated_log, three_nodes
from tests.conftest import unique_prefix
from tests.enginekit import engine_process, publish, running, store_day

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
__all__ = ["three_nodes"]  # the fixture, used by name

STORES = [f"corner-{k:02d}" for k in range(1, 7)]
AISLE = str(Path(sys.executable).parent / "aisle")


async def test_a_worker_keeps_its_own_stores_through_the_loss_of_a_node(
    three_nodes: local.Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal the cluster does not answer while it elects a leader for the lease bucket
    was given up at once (the round failed; a renewal that landed unanswered then looked
    like a lost lease): the surviving worker dropped its own stores and took them again."""
    caplog.set_level(logging.INFO, logger="aisle.engine")
    days = {s: store_day(s, hours=0.5, shoppers=10, seed=k) for k, s in enumerate(STORES)}
    async with replicated_log(three_nodes.url, unique_prefix()) as log:
        for s in STORES:
            await publish(log, days[s][: len(days[s]) // 2])
        async with running(log, "w1", lease_ttl_s=6.0, checkpoint_s=1.0) as worker:
            deadline = time.monotonic() + 60
            while sorted(worker.runners) != STORES:
                assert time.monotonic() < deadline, f"w1 runs {sorted(worker.runners)}"
                await asyncio.sleep(0.2)
            bucket = f"KV_{log.config.bucket('engine_leases')}"
            victim = node_named(three_nodes, await leader(log, bucket))
            before = len(caplog.records)
            kill(victim)  # the lease bucket's leader: the renewals wait for an election
            t0 = time.monotonic()
            for s in STORES:  # the stores go on streaming in
                await publish(log, days[s][len(days[s]) // 2 :])
            print(f"published in {time.monotonic() - t0:.1f}s")
            await asyncio.sleep(20)  # many rounds of renewals, the election among them
            await asyncio.to_thread(local.up, three_nodes, 90)
            print(f"up again at {time.monotonic() - t0:.1f}s")
            await asyncio.sleep(6)
            said = [r.getMessage() for r in caplog.records[before:]]
            assert sorted(worker.runners) == STORES, (said, logs(three_nodes))
            for what in ("lease lost", "store stopped", "store taken", "store handed over"):
                assert what not in said, f"{what!r} after {victim.name} died: {said}"


def _aisle(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AISLE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=180
    )


def _status(env: dict[str, str]) -> dict[str, list[str]]:
    """``aisle rules status --json``: each worker listed, and the stores it runs."""
    shown = _aisle(env, "rules", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    return {w["worker"]: sorted(w["stores"]) for w in json.loads(shown.stdout)["workers"]}


async def test_a_dead_workers_stores_move_even_when_rules_status_ran_first(
    three_nodes: local.Cluster, tmp_path: Path
) -> None:
    """`aisle rules status`, the natural first check, made the lease bucket with no TTL:
    a SIGKILLed worker then kept its stores for good and stayed listed as live."""
    env = {
        "AISLE_NATS_URL": three_nodes.url,
        "AISLE_REPLICAS": "3",
        "AISLE_PREFIX": unique_prefix(),
    }
    assert _aisle(env, "log", "configure", "--apply").returncode == 0
    first = _aisle(env, "rules", "status", "--json")  # before any worker
    assert first.returncode == 0 and json.loads(first.stdout)["workers"] == [], first.stderr
    days = {s: store_day(s, hours=0.3, shoppers=6, seed=k) for k, s in enumerate(STORES)}
    async with replicated_log(three_nodes.url, env["AISLE_PREFIX"]) as log:
        for s in STORES:
            await publish(log, days[s])
    ttl = 6.0
    procs = {
        w: engine_process(three_nodes.url, env["AISLE_PREFIX"], w, "--lease-ttl", f"{ttl:g}s",
                          logs=tmp_path / f"{w}.log", env=env)
        for w in ("a", "b")
    }  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while (shown := _status(env)) != {"a": shown.get("a", []), "b": shown.get("b", [])} or (
            sorted(shown["a"] + shown["b"]) != STORES or not shown["a"] or not shown["b"]
        ):
            assert time.monotonic() < deadline, f"no split of the stores: {shown}"
            await asyncio.sleep(1)
        print(f"split: {shown}")
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait()
        killed = time.monotonic()
        while (shown := _status(env)) != {"b": STORES}:
            assert time.monotonic() - killed < ttl + 90, f"a's stores did not move: {shown}"
            await asyncio.sleep(1)
        took = time.monotonic() - killed
        print(f"b runs every store {took:.1f} s after a was killed (lease time {ttl:g} s)")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    assert procs["b"].returncode == 0, (tmp_path / "b.log").read_text()[-3000:]
