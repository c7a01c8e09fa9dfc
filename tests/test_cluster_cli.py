"""`aisle cluster up|status|down`: a local three-node cluster that outlives the command."""

from __future__ import annotations

import json
import os
import signal
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
