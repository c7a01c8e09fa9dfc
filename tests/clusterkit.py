"""What the cluster tests driven by ``aisle cluster`` share: a three-node cluster on free
loopback ports (core/cluster.py, the command's own code), a node killed and brought back,
and a log on it with every stream at three replicas."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from core import cluster as local
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[local.Cluster]:
    """``aisle cluster up --nodes 3`` in a folder of the test's, taken down and removed
    afterwards."""
    the = local.plan(tmp_path / "cluster", 3, "aisle-test")
    try:
        local.up(the, timeout_s=90)
        yield the
    finally:
        local.down(the)
        shutil.rmtree(the.folder, ignore_errors=True)


def kill(node: local.Node) -> None:
    """SIGKILL, as a machine that loses power; ``local.up`` brings it back."""
    os.kill(node.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def node_named(the: local.Cluster, name: str) -> local.Node:
    found = [n for n in the.nodes if n.name == name]
    assert found, f"no node {name!r} in {[n.name for n in the.nodes]}"
    return found[0]


def logs(the: local.Cluster) -> str:
    """The tail of every node's log, for a failure message."""
    out = []
    for n in the.nodes:
        path = the.folder / n.name / "server.log"
        if path.exists():
            out.append(f"--- {n.name}\n" + path.read_text(errors="replace")[-1500:])
    return "\n".join(out)


async def leader(log: JetStreamLog, stream: str, timeout_s: float = 30.0) -> str:
    """The node leading ``stream``, once it has one."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            info = await log.js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                return info.cluster.leader
        assert time.monotonic() < deadline, f"{stream} has no leader"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def replicated_log(url: str, prefix: str) -> AsyncIterator[JetStreamLog]:
    """A log under ``prefix`` with its streams at three replicas, made once the cluster
    takes them (just after it came up its meta leader may not have settled)."""
    nc = await connect(url, name="aisle-cluster-tests")
    config = LogConfig(prefix=prefix, replicas=3, publish_deadline_s=60.0)
    deadline = time.monotonic() + 30.0
    while True:
        try:
            log = await JetStreamLog.open(nc, config)
            break
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
            nats.js.errors.ServerError,
        ):
            if time.monotonic() > deadline:
                await nc.close()
                raise
            await asyncio.sleep(0.5)
    try:
        yield log
    finally:
        await log.close()
