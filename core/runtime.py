"""Opening the log the way the settings say: a configured NATS URL, or the embedded server.

The embedded server writes ``server.json`` (pid and port) into its data folder while it
runs, so a second command on the same folder (``aisle log tail`` beside ``make demo``)
connects to it instead of starting a rival server on the same files. It runs with
authentication on: each command connects as the role it needs (``core/access.py``), with
the passwords aisle generated into the data folder.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import nats.errors
from nats.aio.client import Client

from core.access import RULES_HISTORY, Role, authorization, load_users, user_for
from core.config import NatsAuth, Settings
from core.jetstream import DeploymentMissing, JetStreamLog, connect, deployments
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


async def _open_as_configured(
    nc: Client, settings: Settings, read_only: bool, create: bool
) -> JetStreamLog:
    """The log on a server of one's own, whose user may not be allowed to create or
    change streams: then it uses them as the admin made them, and says so."""
    try:
        return await JetStreamLog.open(nc, settings.log, read_only=read_only, create=create)
    except DeploymentMissing:
        await nc.close()
        raise
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


async def _as_admin(nc: Client, settings: Settings, read_only: bool, create: bool) -> JetStreamLog:
    """The log on the embedded server as its admin, which makes sure of the streams and
    the rules bucket (not a read-only command); ``nc`` closed if it cannot."""
    try:
        log_ = await _embedded_log(nc, settings, read_only, create)
    except BaseException:
        await nc.close()
        raise
    if not read_only:
        await log_.key_value("rules", history=RULES_HISTORY)
    return log_


async def _embedded_log(
    nc: Client, settings: Settings, read_only: bool = False, create: bool = False
) -> JetStreamLog:
    """The log on the embedded server. A command that writes may make the first deployment
    there even if it sets none up (there is no other to mistype): the server's deployments
    are listed only when this one is missing, not at every start."""
    try:
        return await JetStreamLog.open(nc, settings.log, read_only=read_only, create=create)
    except DeploymentMissing:
        if read_only or await deployments(nc):
            raise
    return await JetStreamLog.open(nc, settings.log, create=True)


def role_auth(settings: Settings, role: Role) -> NatsAuth:
    """The credentials a command connects with as ``role``: the embedded server's user
    of that role, or the configured ones on a server of one's own."""
    if settings.nats_url:
        return settings.auth
    return _embedded_auth(settings.data_dir, role)


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


GONE_AFTER_S = 5.0  # an embedded server dead this long ends the commands that used it


@dataclass
class _Held:
    """The embedded server a command uses: a successor at the same URL (``aisle serve``
    restarts a server that died, on the same port) takes the place of the one that died."""

    pid: int
    url: str
    http_port: int | None


@asynccontextmanager
async def embedded_or_configured(
    settings: Settings, *, keep_going: bool = False
) -> AsyncIterator[str]:
    """Yield a NATS URL; start the embedded server when none is set, or share the one
    another command runs on the same data folder.

    The embedded server outlives the command that started it while other commands use
    it: on the way out a command (the one that started it or not) stops it only if no
    other client is connected (its monitoring port says), so the last one out stops it.
    A server that dies under a command ends that command with the reason, once it has
    been gone ``GONE_AFTER_S`` with no successor at its URL, instead of a client that
    reconnects to it forever; a successor (``server.json`` naming a live server at the
    same URL) is followed, and the clients reconnect to it. ``keep_going``: the command
    itself restarts the server (``aisle serve``), so its end is only said.
    """
    if settings.nats_url:
        yield settings.nats_url
        return
    marker = settings.data_dir / "server.json"
    url = _running_embedded(settings.data_dir)
    owner = not url
    if url:
        info = json.loads(marker.read_text())
        pid, http_port = int(info["pid"]), info.get("http_port")
    else:
        users = load_users(settings.data_dir)
        server = EmbeddedNats(settings.data_dir, auth=authorization(users, settings.log)).start()
        # Its life is the last user's, not this command's: no stop at this one's exit.
        atexit.unregister(server.stop)
        url, pid, http_port = server.url, server.process.pid, server.http_port  # type: ignore[union-attr]
        write_private(marker, json.dumps({"pid": pid, "url": url, "http_port": http_port}))
    gone = asyncio.Event()
    held = _Held(pid, url, http_port)
    user = None if keep_going else asyncio.current_task()
    watch = asyncio.create_task(_watch(held, marker, gone, user))
    try:
        yield url
    except BaseException:
        if gone.is_set() or not _alive(held.pid):  # whatever failed, the server's end is why
            raise NatsServerError(
                f"the embedded nats-server (pid {held.pid}, {url}) went away while this "
                "command used it: run the command again (a new server starts)"
            ) from None
        raise
    finally:
        watch.cancel()
        with suppress(asyncio.CancelledError):
            await watch
        if _alive(held.pid):
            await asyncio.to_thread(_leave, marker, held.pid, held.http_port, owner)


def server_alive(pid: int) -> bool:
    """Whether ``pid`` still runs nats-server (a zombie no longer does)."""
    return _alive(pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs nats-server (a zombie no longer does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _is_nats_server(pid)


def successor(marker: Path, held: _Held) -> tuple[int, int | None] | None:
    """The pid and monitoring port of a live server ``marker`` names at ``held``'s URL
    in place of ``held``'s (None: there is none)."""
    try:
        info = json.loads(marker.read_text())
        pid, url = int(info["pid"]), str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == held.pid or url != held.url or not _alive(pid):
        return None
    return pid, info.get("http_port")


async def _watch(
    held: _Held, marker: Path, gone: asyncio.Event, user: asyncio.Task[object] | None
) -> None:
    """End ``user`` (the command) once the server has been dead ``GONE_AFTER_S`` with no
    successor at its URL; without ``user``, only say it (once)."""
    dead_since: float | None = None
    said = False
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1.0)
        if _alive(held.pid):
            dead_since, said = None, False
            continue
        if (found := successor(marker, held)) is not None:
            log.warning(
                "the embedded nats-server (pid %d) was replaced by pid %d on %s: going on",
                held.pid,
                found[0],
                held.url,
            )
            held.pid, held.http_port = found
            dead_since, said = None, False
            continue
        dead_since = dead_since or loop.time()
        if loop.time() - dead_since >= GONE_AFTER_S and not said:
            if user is None:
                log.error("the embedded nats-server (pid %d) is gone", held.pid)
                said = True
                continue
            log.error("the embedded nats-server (pid %d) is gone: this command ends", held.pid)
            gone.set()
            user.cancel()
            return


def _connections(http_port: int | None) -> int | None:
    """Clients connected to the server, from its monitoring endpoint (None: unknown)."""
    if not http_port:
        return None
    url = f"http://127.0.0.1:{http_port}/varz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(json.loads(resp.read())["connections"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _leave(marker: Path, pid: int, http_port: int | None, owner: bool) -> None:
    """Stop the server if no other client uses it (the last one out), else leave it and
    ``server.json`` for the others. This command's connections are closed by now; the
    server may take a moment to see a closed one go. Where the server cannot say (a
    ``server.json`` without its monitoring port), only the command that started it
    stops it."""
    deadline = time.monotonic() + 1.0
    while (n := _connections(http_port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if n or (n is None and not owner):
        users = f"{n} other connection(s)" if n else "the command that started it"
        log.info("this command leaves the embedded nats-server (pid %d) to %s", pid, users)
        return
    with suppress(OSError, ValueError, KeyError):
        if json.loads(marker.read_text())["pid"] == pid:  # not a successor's
            marker.unlink()
    _stop(pid)


def _stop(pid: int, timeout_s: float = 10.0) -> None:
    """Stop the server cleanly (SIGTERM), or kill it if it does not stop in time; it may
    be another command's child, so it is waited for by polling, not ``wait()``."""
    if not _alive(pid):
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is this process's child
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@asynccontextmanager
async def open_log(
    settings: Settings,
    *,
    name: str = "aisle",
    role: Role = Role.ADMIN,
    read_only: bool = False,
    create: bool = False,
    keep_going: bool = False,
) -> AsyncIterator[JetStreamLog]:
    """The log, connected as ``role`` on the embedded server (as the configured
    credentials on a server of one's own, whatever the role); ``read_only`` for a command
    that only reads: no existing stream is changed. Only a command that sets a deployment
    up (``create``: the simulator, the demos, ``log configure``) makes one where its
    prefix names none; any other refuses and names the deployments there are, except on
    an embedded server that has none yet (a first run on one's own machine, where no
    prefix can be mistyped for another).

    Only an admin may create or change streams: on the embedded server an admin
    connection makes sure of them first, the rules bucket included (an engine that could
    create it could make it take messages from a bucket it writes), and the role's
    connection then only uses them. ``keep_going``: an embedded server's end does not end
    the caller, which restarts it (``embedded_or_configured``).
    """
    async with embedded_or_configured(settings, keep_going=keep_going) as url:
        if settings.nats_url:
            log_ = await _open_as_configured(
                await connect(url, name=name, auth=settings.auth), settings, read_only, create
            )
        else:
            if role is not Role.ADMIN:
                admin = await connect(
                    url, name=f"{name}-setup", auth=_embedded_auth(settings.data_dir, Role.ADMIN)
                )
                await (await _as_admin(admin, settings, read_only, create)).close()
            nc = await connect(url, name=name, auth=_embedded_auth(settings.data_dir, role))
            if role is Role.ADMIN:
                log_ = await _as_admin(nc, settings, read_only, create)
            else:
                log_ = JetStreamLog(nc, settings.log)
        try:
            yield log_
        finally:
            await log_.close()


def log_factory(
    settings: Settings, url: str, *, name: str = "aisle", role: Role = Role.ADAPTER
) -> Callable[[], Awaitable[JetStreamLog]]:
    """Fresh logs for an outbox (``core.outbox``), each on a connection of its own that
    does not reconnect by itself: after a failure the outbox asks for another and sends
    again in order. ``url`` is ``embedded_or_configured``'s; the streams are used as
    they are (``open_log`` makes them), except by an admin, which makes sure of them."""

    async def new_log() -> JetStreamLog:
        if settings.nats_url:
            nc = await connect(url, name=name, auth=settings.auth, reconnect=False)
            return await _open_as_configured(nc, settings, read_only=False, create=False)
        auth = _embedded_auth(settings.data_dir, role)
        nc = await connect(url, name=name, auth=auth, reconnect=False)
        if role is Role.ADMIN:
            return await _embedded_log(nc, settings)
        return JetStreamLog(nc, settings.log)

    return new_log
