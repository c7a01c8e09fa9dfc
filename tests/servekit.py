"""``aisle serve`` as the dashboard and serve tests run it: a process of its own on a free
loopback port, with its data folder and SQLite database in a temporary folder; what it
prints (the URL and the operator token) read as it comes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core import events as ev
from core.config import Settings
from core.log import publish_in_order
from core.runtime import open_log

AISLE = str(Path(sys.executable).parent / "aisle")


@dataclass
class Served:
    process: subprocess.Popen[str]
    data_dir: Path
    database_url: str
    url: str = ""  # the dashboard's, without the token
    token: str = ""
    newest: datetime | None = None  # the newest event time a test published
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def base(self) -> str:
        return self.url.removesuffix("/dashboard/")

    @property
    def settings(self) -> Settings:
        return Settings.from_env({"AISLE_DATA_DIR": str(self.data_dir)})

    def read_until(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first line (from the start) matching ``pattern``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        found = None
        while found is None:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line_ = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line_ is None:  # the process closed its output
                break
            self.lines.append(line_)
        raise AssertionError(
            f"aisle serve did not print /{pattern}/ in {timeout_s:.0f} s "
            f"(exit code {self.process.poll()}); it printed:\n" + "".join(self.lines)
        )

    def ready(self, timeout_s: float = 120.0) -> None:
        """Wait until it has printed its URL and token (and keep them)."""
        try:
            self.read_until(r"Ctrl-C stops it all", timeout_s)  # the last line it prints
            m = self.read_until(r"the dashboard on (\S+)#token=(\S+)", 0)
        except BaseException:
            self.stop()
            raise
        self.url, self.token = m.group(1), m.group(2)

    def get(self, path: str, token: str | None = None) -> Any:
        req = urllib.request.Request(
            f"{self.base}/api/v1{path}",
            headers={"Authorization": f"Bearer {token or self.token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        """Seconds until ``check()`` holds (an HTTP error counts as not yet)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            try:
                if check():
                    return time.monotonic() - began
            except (urllib.error.URLError, OSError, KeyError, IndexError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"{what}: not within {timeout_s:.0f} s; serve printed:\n{self.logs()}")

    def logs(self) -> str:
        out = "".join(self.lines)
        for name in ("engine", "projections"):
            path = self.data_dir / "serve" / f"{name}.log"
            if path.exists():
                out += f"\n--- {name}.log (end)\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-15:]
                )
        return out

    def publish(self, events: list[ev.Event]) -> None:
        """Into the log the server reads, as the engine and the adapters would (the
        admin may publish every type)."""

        async def go() -> None:
            async with open_log(self.settings, name="aisle-tests") as log:
                await publish_in_order(log, events)

        # A thread of its own: Playwright's sync API keeps an event loop in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, go()).result()

    def children(self) -> list[int]:
        """The pids of the processes ``aisle serve`` started (engine, projections)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def nats_pid(self) -> int | None:
        try:
            return int(json.loads((self.data_dir / "server.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def interrupt(self, timeout_s: float = 60.0) -> int:
        """Ctrl-C (SIGINT), and its exit code once it has stopped."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout_s)
        self._drain()
        return code

    def _drain(self) -> None:
        while True:
            try:
                line = self._queue.get(timeout=2)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_serve(tmp: Path, *args: str, ready_s: float = 120.0) -> Served:
    """``aisle serve ARGS --port 0`` in ``tmp``; returns once it has printed its URL and
    token (``ready_s`` 0: at once, and ``ready()`` waits)."""
    data_dir = tmp / ".aisle"
    db_url = f"sqlite:///{tmp / 'readmodels.db'}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AISLE_") or k in ("AISLE_TEST_REQUIRE_SERVICES",)
    }
    env |= {"AISLE_DATA_DIR": str(data_dir), "AISLE_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [AISLE, "serve", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Served(process, data_dir, db_url)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            served._queue.put(line)
        served._queue.put(None)

    threading.Thread(target=pump, daemon=True).start()
    if ready_s:
        served.ready(ready_s)
    return served
