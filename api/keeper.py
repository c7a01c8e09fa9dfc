"""``aisle serve`` keeps the embedded nats-server running.

The embedded server is a process of its own: killed (the OOM killer, a stray ``kill``) it
would take every part of ``serve`` with it. The keeper watches it and, when it has died,
says so in ``serve``'s log and starts a new one on the same port and data folder, so the
clients (the API's, the engine's, the projections') reconnect to it by themselves and
JetStream recovers the streams and durable consumers from its files. A restart that
fails (the port taken meanwhile) is tried again with a growing wait; the API answers
503 for what needs the log in the meantime, and reads the read models as before. A
server of one's own (``AISLE_NATS_URL``) is not this process's to restart: its clients
reconnect to it whenever it is back.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.access import authorization, load_users
from core.config import Settings
from core.natsd import EmbeddedNats, NatsServerError, write_private
from core.runtime import server_alive as _alive

log = logging.getLogger("aisle.serve")

FIRST_RETRY_S = 1.0
MOST_RETRY_S = 30.0
SETTLED_S = 30.0  # a server back this long: the outage is over for ``troubled``


def _how_it_ended(pid: int) -> str:
    """The server's exit status, if it was this process's child (else only that it went)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "it is gone"
    if done != pid:
        return "it is gone"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


@dataclass
class Keeper:
    """Restarts the embedded server ``server.json`` names when it dies, on its port."""

    settings: Settings
    pid: int = 0
    url: str = ""
    restarts: int = 0
    down_since: float | None = None  # monotonic: while the server is down
    back_at: float | None = None  # monotonic: when it last came back

    @property
    def marker(self) -> Path:
        return self.settings.data_dir / "server.json"

    def adopt(self) -> bool:
        """Take the server ``server.json`` names (the one ``serve`` connected to)."""
        try:
            info = json.loads(self.marker.read_text())
            self.pid, self.url = int(info["pid"]), str(info["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True

    def troubled(self) -> bool:
        """Whether the server is down, or came back less than ``SETTLED_S`` ago: a part
        that stopped meanwhile stopped for that, and is started again."""
        if self.down_since is not None:
            return True
        return self.back_at is not None and time.monotonic() - self.back_at < SETTLED_S

    def _restart(self) -> int:
        port = int(self.url.rsplit(":", 1)[1])
        users = load_users(self.settings.data_dir)
        server = EmbeddedNats(
            self.settings.data_dir, port=port, auth=authorization(users, self.settings.log)
        ).start()
        atexit.unregister(server.stop)  # stopped by the last one out, as the first was
        pid = server.process.pid  # type: ignore[union-attr]
        info = {"pid": pid, "url": server.url, "http_port": server.http_port}
        write_private(self.marker, json.dumps(info))
        return pid

    async def run(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        """Watch until ``stop``; restart the server each time it dies."""
        if self.settings.nats_url or not (self.pid or self.adopt()):
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set() or _alive(self.pid):
                continue
            await self._bring_back(stop)

    async def _bring_back(self, stop: asyncio.Event) -> None:
        self.down_since = time.monotonic()
        log.error(
            "the embedded nats-server (pid %d, %s) stopped (%s): restarting it on the same "
            "port; the API answers 503 for what needs the log until it is back",
            self.pid,
            self.url,
            _how_it_ended(self.pid),
        )
        wait = FIRST_RETRY_S
        while not stop.is_set():
            old = self.pid
            if self.adopt() and self.pid != old and _alive(self.pid):
                log.warning("another command restarted the embedded nats-server (pid %d)", self.pid)
                break
            self.pid = old
            try:
                self.pid = await asyncio.to_thread(self._restart)
                break
            except (NatsServerError, OSError) as exc:
                log.error(
                    "the embedded nats-server could not be restarted (%s): trying again in %.0f s",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    wait,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                wait = min(MOST_RETRY_S, wait * 2)
        else:
            return
        self.restarts += 1
        took = time.monotonic() - self.down_since
        self.down_since, self.back_at = None, time.monotonic()
        log.warning(
            "the embedded nats-server is back on %s (pid %d) after %.1f s; the parts reconnect",
            self.url,
            self.pid,
            took,
        )
