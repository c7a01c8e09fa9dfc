"""Opening the log the way the settings say: a configured NATS URL, or the embedded server.

The embedded server writes ``server.json`` (pid and port) into its data folder while it
runs, so a second command on the same folder (``aisle log tail`` beside ``make demo``)
connects to it instead of starting a rival server on the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from core.config import Settings
from core.jetstream import JetStreamLog, connect
from core.natsd import EmbeddedNats


def _running_embedded(data_dir: Path) -> str | None:
    """The URL of an embedded server another aisle process runs on ``data_dir``, if any."""
    marker = data_dir / "server.json"
    try:
        info = json.loads(marker.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(info["url"])


@asynccontextmanager
async def embedded_or_configured(settings: Settings) -> AsyncIterator[str]:
    """Yield a NATS URL; start (and afterwards stop) the embedded server when none is set."""
    if settings.nats_url:
        yield settings.nats_url
        return
    shared = _running_embedded(settings.data_dir)
    if shared:
        yield shared
        return
    server = EmbeddedNats(settings.data_dir).start()
    marker = settings.data_dir / "server.json"
    marker.write_text(json.dumps({"pid": server.process.pid, "url": server.url}))  # type: ignore[union-attr]
    try:
        yield server.url
    finally:
        with suppress(OSError):
            marker.unlink()
        server.stop()


@asynccontextmanager
async def open_log(
    settings: Settings, *, name: str = "aisle", read_only: bool = False
) -> AsyncIterator[JetStreamLog]:
    """The log; ``read_only`` for a command that only reads: no existing stream is changed."""
    async with embedded_or_configured(settings) as url:
        nc = await connect(url, name=name)
        log = await JetStreamLog.open(nc, settings.log, read_only=read_only)
        try:
            yield log
        finally:
            await log.close()
