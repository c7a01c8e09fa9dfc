"""docs/operations.md followed step by step: its ``# walkthrough`` blocks, run in order as
one shell script, against a three-node cluster on free loopback ports.

The commands come from the page itself, so the page cannot drift from what works.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.natsd import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "operations.md"
MARK = "# walkthrough"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def walkthrough(text: str) -> list[str]:
    """The page's runnable blocks, in order: the ``sh`` blocks whose first line is the mark."""
    return [b for b in BLOCK.findall(text) if b.startswith(MARK)]


def test_the_walkthrough_blocks_are_found_and_the_others_are_not() -> None:
    blocks = walkthrough(GUIDE.read_text())
    assert len(blocks) >= 8
    assert "aisle cluster up" in blocks[0] and "aisle cluster down" in blocks[-1]
    assert not any("nats stream backup" in b for b in blocks), "the NATS CLI is not installed"


def test_the_operations_guide_runs_as_written(tmp_path: Path) -> None:
    for shared in ("rules", "examples"):  # the page's paths are the repository's
        (tmp_path / shared).symlink_to(ROOT / shared)
    script = "set -euo pipefail\n" + "\n".join(walkthrough(GUIDE.read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISLE_")}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "PYTHONPATH": str(ROOT),
        "W1_PORT": str(free_port()),
        "W2_PORT": str(free_port()),
    }
    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the workers it starts are ended with it, whatever happens
    )
    try:
        said, _ = shell.communicate(timeout=1000)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)  # a worker left behind by a failure
        subprocess.run(
            [str(Path(sys.executable).parent / "aisle"), "cluster", "down", "--purge"],
            cwd=tmp_path, env=env, capture_output=True, timeout=120,
        )  # fmt: skip
    workers = "".join(
        (tmp_path / f).read_text(errors="replace")[-3000:]
        for f in ("w1.log", "w2.log")
        if (tmp_path / f).exists()
    )
    assert shell.returncode == 0, f"{said[-6000:]}\n--- workers\n{workers}"
    assert "receipts in the log" in said
    assert "Traceback" not in said and "Traceback" not in workers, workers
    assert said.count('"status": "ok"') >= 3, "each worker's /readyz answered ready"
