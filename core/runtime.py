"""Opening the log the way the settings say: a configured NATS URL, or the embedded server.

The embedded server writes ``server.json`` (pid and port) into its data folder while it
runs, so a second command on the same folder (``aisle log tail`` beside ``make demo``)
connects to it instead of starting a rival server on the same files. It runs with
authentication on: each command connects as the role it needs (``core/access.py``), with
the passwords aisle generated into the data folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import nats.errors
from nats.aio.client import Client

from core.access import RULES_HISTORY, Role, authorization, load_users, user_for
from core.config import NatsAuth, Settings
from core.jetstream import JetStreamLog, connect
from core.natsd import EmbeddedNats, NatsServerError, reload_users, write_private

log = logging.getLogger(__name__)


def _is_nats_server(pid: int) -> bool:
    """Whether ``pid`` runs nats-server (a pid is reused once its process is gone)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc here: trust the live pid
    except OSError:
        return False
    return b"nats-server" in cmdline.split(b"\0", 1)[0]


def _answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a NATS server greets on ``url`` (it sends INFO first, before any auth)."""
    host, port = url.rsplit("//", 1)[-1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False


def _running_embedded(data_dir: Path) -> str | None:
    """The URL of an embedded server another aisle process runs on ``data_dir``, if any.

    A ``server.json`` left by a server that died (its pid gone, or reused by another
    program) is removed, so a new server starts; a live nats-server that does not answer
    is an error that says what to do, as a second server on the same files would be worse.
    """
    marker = data_dir / "server.json"
    try:
        info = json.loads(marker.read_text())
        pid, url = int(info["pid"]), str(info["url"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable %s (%s): removed, a new server starts", marker, exc)
        marker.unlink(missing_ok=True)
        return None
    try:
        os.kill(pid, 0)
        alive = _is_nats_server(pid)
    except ProcessLookupError:
        alive = False
    except PermissionError:
        alive = _is_nats_server(pid)  # another user's process
    if not alive:
        log.warning("the embedded nats-server (pid %d) is gone: a new one starts", pid)
        marker.unlink(missing_ok=True)
        return None
    if not _answers(url):
        raise NatsServerError(
            f"the embedded nats-server (pid {pid}, {url}) named in {marker} does not answer: "
            f"stop it (kill {pid}) and run the command again"
        )
    return url


async def _open_as_configured(nc: Client, settings: Settings, read_only: bool) -> JetStreamLog:
    """The log on a server of one's own, whose user may not be allowed to create or
    change streams: then it uses them as the admin made them, and says so."""
    try:
        return await JetStreamLog.open(nc, settings.log, read_only=read_only)
    except nats.errors.TimeoutError:
        refused = str(nc.last_error or "")
        if "permissions violation" not in refused.lower():
            await nc.close()
            raise
    log.warning(
        "this NATS user may not create or update the streams (%s): using them as they are; "
        "an admin creates them (docs/security.md)",
        refused,
    )
    return JetStreamLog(nc, settings.log)


def _embedded_auth(data_dir: Path, role: Role) -> NatsAuth:
    user = user_for(load_users(data_dir), role)
    return NatsAuth(user=user.user, password=user.password)


def reload_embedded(settings: Settings) -> str | None:
    """Rewrite a running embedded server's users and have it reload them (SIGHUP, which
    nats-server takes as "reload the configuration"); its URL, or None if none runs."""
    try:
        url = _running_embedded(settings.data_dir)
    except NatsServerError:
        return None
    if url is None:
        return None
    pid = int(json.loads((settings.data_dir / "server.json").read_text())["pid"])
    users = authorization(load_users(settings.data_dir), settings.log)
    reload_users(settings.data_dir / f"{EmbeddedNats.NAME}.conf", pid, users)
    return url


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
    users = load_users(settings.data_dir)
    server = EmbeddedNats(settings.data_dir, auth=authorization(users, settings.log)).start()
    marker = settings.data_dir / "server.json"
    pid = server.process.pid  # type: ignore[union-attr]
    write_private(marker, json.dumps({"pid": pid, "url": server.url}))
    try:
        yield server.url
    finally:
        with suppress(OSError, ValueError, KeyError):
            if json.loads(marker.read_text())["pid"] == pid:  # not a successor's
                marker.unlink()
        server.stop()


@asynccontextmanager
async def open_log(
    settings: Settings, *, name: str = "aisle", role: Role = Role.ADMIN, read_only: bool = False
) -> AsyncIterator[JetStreamLog]:
    """The log, connected as ``role`` on the embedded server (as the configured
    credentials on a server of one's own, whatever the role); ``read_only`` for a command
    that only reads: no existing stream is changed.

    Only an admin may create or change streams: on the embedded server an admin
    connection makes sure of them first, the rules bucket included (an engine that could
    create it could make it take messages from a bucket it writes), and the role's
    connection then only uses them.
    """
    async with embedded_or_configured(settings) as url:
        if settings.nats_url:
            log_ = await _open_as_configured(
                await connect(url, name=name, auth=settings.auth), settings, read_only
            )
        else:
            if role is not Role.ADMIN:
                admin = await connect(
                    url, name=f"{name}-setup", auth=_embedded_auth(settings.data_dir, Role.ADMIN)
                )
                setup = await JetStreamLog.open(admin, settings.log, read_only=read_only)
                if not read_only:
                    await setup.key_value("rules", history=RULES_HISTORY)
                await setup.close()
            nc = await connect(url, name=name, auth=_embedded_auth(settings.data_dir, role))
            if role is Role.ADMIN:
                log_ = await JetStreamLog.open(nc, settings.log, read_only=read_only)
                if not read_only:
                    await log_.key_value("rules", history=RULES_HISTORY)
            else:
                log_ = JetStreamLog(nc, settings.log)
        try:
            yield log_
        finally:
            await log_.close()
