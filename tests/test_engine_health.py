"""An engine worker's /healthz and /readyz, beside its /metrics, through a real server."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.natsd import EmbeddedNats
from tests.conftest import set_up, unique_prefix
from tests.enginekit import engine_process


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def until(check, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_ready_while_it_reaches_the_log_alive_throughout(
    private_nats: EmbeddedNats, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    set_up({"AISLE_NATS_URL": private_nats.url, "AISLE_PREFIX": prefix})
    logs = tmp_path / "engine.log"
    proc = engine_process(
        private_nats.url, prefix, "w-health", "--metrics-port", "0", "--lease-ttl", "2s",
        logs=logs,
    )  # fmt: skip
    try:
        until(lambda: "health on" in logs.read_text())
        base = re.search(r"(http://127\.0\.0\.1:\d+)/healthz", logs.read_text()).group(1)
        until(lambda: get(f"{base}/readyz")[0] == 200)
        _, body = get(f"{base}/readyz")
        assert json.loads(body)["status"] == "ok" and "rules" in json.loads(body)["detail"]
        assert get(f"{base}/healthz")[0] == 200
        assert "aisle_engine_stores" in get(f"{base}/metrics")[1]

        private_nats.stop()
        until(lambda: get(f"{base}/readyz")[0] == 503, timeout_s=30)
        assert json.loads(get(f"{base}/readyz")[1])["status"] == "fail"
        assert get(f"{base}/healthz")[0] == 200, "alive: its loop goes round without the log"
        private_nats.start()
        until(lambda: get(f"{base}/readyz")[0] == 200, timeout_s=60)
    finally:
        proc.terminate()
        proc.wait(30)
