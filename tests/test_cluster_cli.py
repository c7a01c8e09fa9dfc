"""`aisle cluster up|status|down`: a local three-node cluster that outlives the command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import unique_prefix

pytestmark = pytest.mark.integration
AISLE = str(Path(sys.executable).parent / "aisle")


def aisle(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AISLE, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def test_a_cluster_comes_up_loses_a_node_comes_back_and_keeps_its_streams(
    tmp_path: Path,
) -> None:
    folder = str(tmp_path / "cluster")
    try:
        made = aisle("cluster", "up", "--nodes", "3", "--dir", folder)
        assert made.returncode == 0, made.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in made.stdout.splitlines()
        )
        assert exports["AISLE_REPLICAS"] == "3" and exports["AISLE_NATS_URL"].count(",") == 2
        env = {**exports, "AISLE_PREFIX": unique_prefix()}
        assert aisle("log", "configure", "--apply", env=env).returncode == 0
        info = json.loads(aisle("log", "info", "--json", env=env).stdout)
        assert {s["replicas"] for s in info} == {3}

        nodes = json.loads(aisle("cluster", "status", "--dir", folder, "--json").stdout)
        assert [n["health"] for n in nodes] == ["ok"] * 3
        os.kill(nodes[0]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60  # the others elect a meta leader if it was one
        while True:
            shown = aisle("cluster", "status", "--dir", folder, "--json")
            health = [n["health"] for n in json.loads(shown.stdout)]
            if health == ["down", "ok", "ok"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert shown.returncode == 1 and health == ["down", "ok", "ok"], health
        assert aisle("rules", "status", env=env).returncode == 0, "two of three serve"

        again = aisle("cluster", "up", "--dir", folder)
        assert again.returncode == 0 and "1 of 3 servers started" in again.stderr
        back = json.loads(aisle("cluster", "status", "--dir", folder, "--json").stdout)
        assert back[0]["url"] == nodes[0]["url"], "the same port"

        assert aisle("cluster", "down", "--dir", folder).returncode == 0
        assert aisle("cluster", "status", "--dir", folder).returncode == 1
        assert aisle("cluster", "up", "--dir", folder).returncode == 0
        kept = json.loads(aisle("log", "info", "--json", env=env).stdout)
        assert {s["replicas"] for s in kept} == {3}, "the streams outlived the servers"
        other = aisle("cluster", "up", "--nodes", "5", "--dir", folder)
        assert other.returncode == 2 and "has 3 nodes, not 5" in other.stderr
    finally:
        aisle("cluster", "down", "--dir", folder, "--purge")
    assert not Path(folder).exists()


def test_servers_on_a_folder_its_cluster_json_forgot_are_refused_and_stopped(
    tmp_path: Path,
) -> None:
    """With cluster.json gone, `up` started three more servers on the same data (six on
    three store directories), and nothing could stop the first three."""
    folder = tmp_path / "c"
    assert aisle("cluster", "up", "--dir", str(folder)).returncode == 0
    pids = [n["pid"] for n in json.loads((folder / "cluster.json").read_text())["nodes"]]
    try:
        (folder / "cluster.json").unlink()
        again = aisle("cluster", "up", "--dir", str(folder))
        assert again.returncode == 2, again.stderr
        said = " ".join(again.stderr.split())
        assert "already run on the data in" in said and str(pids[0]) in said, said
        assert not (folder / "cluster.json").exists() or all(
            n["pid"] in (0, *pids)
            for n in json.loads((folder / "cluster.json").read_text())["nodes"]
        )
        down = aisle("cluster", "down", "--dir", str(folder))
        assert down.returncode == 0 and "3 servers stopped" in down.stderr, down.stderr
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


def test_a_port_in_use_is_named_and_no_server_is_left_half_up(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    assert aisle("cluster", "up", "--dir", str(folder)).returncode == 0
    assert aisle("cluster", "down", "--dir", str(folder)).returncode == 0
    port = json.loads((folder / "cluster.json").read_text())["nodes"][0]["port"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        up = aisle("cluster", "up", "--dir", str(folder))
        said = " ".join(up.stderr.split())
        assert up.returncode == 2 and f"port {port} is in use by another program" in said, said
        nodes = json.loads((folder / "cluster.json").read_text())["nodes"]
        assert [n["pid"] for n in nodes] == [0, 0, 0], "the others started were stopped"
