"""``aisle serve``: the API and the dashboard, the projections and the engine, for a store
or a chain, on the embedded defaults; with ``--demo``, a simulated store day published into
the log at an accelerated pace.

The engine and the projections run as ``aisle engine run`` and ``aisle projections run``
in processes of their own (their logs under ``<data dir>/serve/``): the engine's catch-up
is CPU work that would stall the API's requests in a shared event loop, and each keeps the
behaviour its own command documents. This process holds the embedded nats-server (the
others share it through its ``server.json``), serves the API with uvicorn and publishes
the demo day. Ctrl-C or SIGTERM stops the demo, the children, the API and last the
server, in that order. An embedded server that dies meanwhile is restarted on its port
(``api.keeper``), and a part that stopped for that outage is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any
from zoneinfo import ZoneInfo

import typer
import uvicorn
from rich.markup import escape
from ruamel.yaml import YAML

from api.keeper import Keeper
from core import events as ev
from core.access import Role
from core.cli import run as run_command
from core.config import Settings
from core.console import Console
from core.layout import Layout, chain_store_ids, load_layout
from core.log import publish_in_order
from core.logs import configure
from core.runtime import open_log
from core.yamlsource import SourceError

log = logging.getLogger("aisle.serve")
err = Console(stderr=True)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
MAX_RESTARTS = 10  # a part that stopped (an outage of the log, a kill) is started again this often
SETTLED_S = 30.0  # a part that stops sooner after its start stopped for a reason of its own
STOP_CHILD_S = 15.0  # a child that has not stopped this long after SIGTERM is killed
TOKEN_NAME = "aisle serve"  # the holder of the token it makes, as the audit names it
TOKEN_FILE = "operator.token"  # under <data dir>/serve/: serve's token, owner only


def _command(module: str) -> list[str]:
    """``aisle`` with only ``module``'s commands: loading every layer's (the adapters'
    imports alone take seconds) would delay the engine's and the projections' start."""
    code = f"import typer; from {module} import register; a = typer.Typer(); register(a); a()"
    return [sys.executable, "-c", code]


@dataclass(frozen=True)
class DemoDay:
    """The simulated day ``--demo`` publishes: the store's last full opening day (so no
    event is dated ahead of the wall clock), ``head_start_h`` of it at once, the rest
    ``speed`` times faster than it happened."""

    shoppers: int = 200
    hours: float = 15.0
    opens: int = 7  # local hour
    speed: float = 60.0
    head_start_h: float = 2.0
    seed: int = 1

    close_margin_s: float = 10.0  # the closing heartbeat, past the lateness of the engine

    def start(self, timezone: str, now: datetime) -> datetime:
        """The opening of the last day whose closing heartbeat (``closes``) is not after
        ``now``: its windows can be closed (the log refuses an event dated ahead of now)."""
        local = now.astimezone(ZoneInfo(timezone))
        day = local.replace(hour=self.opens, minute=0, second=0, microsecond=0)
        while self.closes(day) > local:
            day -= timedelta(days=1)
        return day

    def closes(self, start: datetime) -> datetime:
        """When the heartbeat that ends the day is dated: just after the local midnight
        that ends ``start``'s day, so the engine closes its last hour's and the store
        day's windows (store conversion and the other day KPIs) as a live store's would
        when its clock passes midnight."""
        midnight = (start + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + timedelta(seconds=self.close_margin_s)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    layouts: tuple[Path, ...] = (EXAMPLE,)
    stores: tuple[str, ...] = ()  # only these stores (default: every store in the log)
    engine: bool = True
    demo: DemoDay | None = None
    chain: int = 1  # --demo: this many stores of the first layout


class ServeError(RuntimeError):
    """A part of ``aisle serve`` could not start or stopped: the message says which, and why."""


# -- the chain's layouts --------------------------------------------------------------------


def chain_layouts(path: Path, stores: int, folder: Path) -> tuple[Path, ...]:
    """``stores`` copies of a layout file under the chain's store ids (``chain_store_ids``),
    written into ``folder`` with the comments kept, so that the API draws each store's
    floor; one store: the file itself."""
    if stores == 1:
        return (path,)
    yaml = YAML()  # round trip: the copy reads like the original
    folder.mkdir(parents=True, exist_ok=True)
    base = load_layout(path).store.id
    out = []
    for k, store in enumerate(chain_store_ids(base, stores), start=1):
        doc = yaml.load(path.read_text())
        doc["store"]["id"] = store
        doc["store"]["name"] = f"{doc['store'].get('name', base)} #{k}"
        copy = folder / f"{store}.yaml"
        with copy.open("w") as f:
            yaml.dump(doc, f)
        out.append(copy)
    return tuple(out)


# -- the children ---------------------------------------------------------------------------


# A child ends with serve, however serve ends (a SIGKILL leaves no time to stop it): Linux's
# "parent death signal", set by a few lines of Python that then become the child (it stays
# set across exec). Orphaned engines had run on beside the next serve's.
ORPHAN_GUARD = (
    [
        sys.executable,
        "-c",
        "import ctypes, os, signal, sys; "
        "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG
        "os.getppid() == 1 and sys.exit(1); "  # serve died before the line above
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]
    if sys.platform == "linux"
    else []
)


@dataclass
class Child:
    """A process ``aisle serve`` started, with its output in a file."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = None
    started_at: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.started_at = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Owner only: the children's logs name shoppers' visits and carts.
        self._out = os.fdopen(
            os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab"
        )
        self.process = subprocess.Popen(
            [*ORPHAN_GUARD, *self.argv],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def ran_s(self) -> float:
        """How long it has run (or ran) since it was last started."""
        return time.monotonic() - self.started_at

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_CHILD_S) -> None:
        """SIGTERM, then SIGKILL if it has not stopped in time; its exit is waited for."""
        p = self.process
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s: killed", self.name, timeout_s)
                p.kill()
                p.wait()
        if self._out is not None:
            self._out.close()
            self._out = None


def children(options: ServeOptions, layouts: Sequence[Path], logs: Path) -> list[Child]:
    """The projections and (unless ``--no-engine``) the engine, as their commands run them."""
    out = []
    projections = [
        *_command("readmodels.cli"),
        *("projections", "run", "--log-format", "text"),
    ]
    if len(options.stores) == 1:
        projections += ["--store", options.stores[0]]
    out.append(Child("projections", projections, logs / "projections.log"))
    if options.engine:
        engine = [
            *_command("rules.service.cli"),
            *("engine", "run", "--log-format", "text"),
        ]
        for path in layouts:
            engine += ["--layout", str(path)]
        for store in options.stores:
            engine += ["--store", store]
        out.append(Child("engine", engine, logs / "engine.log"))
    return out


# -- the demo day ---------------------------------------------------------------------------


async def publish_demo(
    settings: Settings, layouts: Sequence[Layout], day: DemoDay, now: datetime
) -> None:
    """Simulate each store's day, skip what the log already holds (a second run on the same
    data adds nothing), publish the head start at once and the rest at ``day.speed``."""
    from simulator.cli import _paced
    from simulator.day import simulate

    def days() -> list[ev.Event]:
        runs = [
            simulate(
                lay,
                day.start(lay.store.timezone, now),
                hours=day.hours,
                shoppers=day.shoppers,
                seed=day.seed + k,
            )
            for k, lay in enumerate(layouts)
        ]
        return sorted((e for r in runs for e in r.events), key=lambda e: e.at)

    events = await asyncio.to_thread(days)  # seconds of work: the API answers meanwhile
    # As the admin, as `aisle demo`: reading what the log holds is not an adapter's right.
    async with open_log(settings, name="aisle-serve-demo", create=True, keep_going=True) as log_:
        held: set[str] = set()
        for layout in layouts:
            for types in (None, ev.SAMPLE_TYPES):
                held |= {r.event.id async for r in log_.replay(store=layout.store.id, types=types)}
        events = [e for e in events if e.id not in held]
        if not events:
            log.info("the demo day is in the log already")
        else:
            head = events[0].at + timedelta(hours=day.head_start_h)
            first = [e for e in events if e.at < head]
            rest = events[len(first) :]
            await publish_in_order(log_, first)  # as a backfill: in order across the streams
            await _paced(log_, rest, speed=day.speed)
        # The day is over: its clock passes midnight, so the engine closes the last hour's
        # and the day's windows (a store that goes quiet would send the same heartbeat).
        # Its id is its content's: a second run publishes none.
        await log_.publish_many(closing_heartbeats(layouts, day, now))


def closing_heartbeats(layouts: Sequence[Layout], day: DemoDay, now: datetime) -> list[ev.Event]:
    """One ``store.heartbeat`` per store, dated when its demo day ``closes``."""
    return [
        ev.new(
            ev.StoreHeartbeat,
            store=lay.store.id,
            at=day.closes(day.start(lay.store.timezone, now)),
            source="aisle-serve-demo",
            subject="demo-day-end",
        )
        for lay in layouts
    ]


# -- the operator token ---------------------------------------------------------------------


def serve_token(
    database_url: str, stores: Sequence[str], name: str, path: Path
) -> tuple[str, bool]:
    """The operator token of ``serve``'s own session, and whether it was kept from an
    earlier start: one token for every start (kept in ``path``, owner only), not a new
    one each time that nobody revokes. A kept token that no longer fits (revoked, of
    another database, another role or other stores) is revoked where it exists, and a new
    one is made and kept."""
    from api.auth import Role as ApiRole
    from api.auth import authenticate, create_token, list_tokens, revoke_token
    from core.natsd import write_private
    from readmodels.database import check_schema, make_engine

    db = make_engine(database_url)
    try:
        check_schema(db)
        try:  # bytes that are no text (a damaged file) are no token either
            kept = path.read_bytes().decode(errors="replace").strip()
        except FileNotFoundError:
            kept = ""
        if kept:
            who = authenticate(db, kept)
            fits = (
                who is not None
                and who.role is ApiRole.OPERATOR
                and who.stores == tuple(sorted(set(stores)))
                and who.name == name
            )
            if fits:
                return kept, True
        # Every earlier token of serve's own is revoked, found by its name: the file may
        # no longer say which it was, and none is left behind valid.
        for row in list_tokens(db):
            if row.name == name and row.revoked_at is None:
                revoke_token(db, row.id)
        _, token = create_token(db, ApiRole.OPERATOR, stores, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, token + "\n")
    finally:
        db.dispose()
    return token, False


# -- the server -----------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns Ctrl-C and stops everything
    in order (uvicorn would re-raise the signal once it has stopped)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a port in use ends ``serve`` at
    once, and port 0 gets a free port to print."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
            "choose a free port, or 0 for any"
        ) from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/dashboard/"


@contextlib.contextmanager
def data_dir_lock(folder: Path) -> Iterator[None]:
    """One ``aisle serve`` a data folder: a second took the first's projections over (and
    it stopped), and their engines and demos ran side by side. The lock is the kernel's,
    so it goes with the process however it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ServeError(
            f"another aisle serve (pid {held}) uses the data folder {folder.parent}: stop it, "
            "or give this one another folder (AISLE_DATA_DIR)"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # and the lock with it


async def serve(settings: Settings, options: ServeOptions) -> None:
    """Run everything until Ctrl-C or SIGTERM, or until a part fails; then stop the parts
    in order, while the embedded nats-server still runs, so that it stops last."""
    with data_dir_lock(settings.data_dir / "serve"):
        await _serve(settings, options)


async def _serve(settings: Settings, options: ServeOptions) -> None:
    from api.app import create_app
    from api.settings import ApiSettings
    from readmodels.database import database_url

    sock = bind(options.host, options.port)
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logs = settings.data_dir / "serve"
    layouts = options.layouts
    if options.demo is not None and options.chain > 1:
        layouts = chain_layouts(layouts[0], options.chain, settings.data_dir / "chain")
    loaded = [load_layout(p) for p in layouts]
    db_url = database_url(settings)
    running = _Running(sock, children(options, layouts, logs))
    try:
        token, kept = await asyncio.to_thread(
            serve_token, db_url, options.stores, TOKEN_NAME, logs / TOKEN_FILE
        )
        # A connection of its own to the log: the embedded server, which stops when its
        # last client leaves, outlives every part and stops when `serve` itself does. It
        # sets the deployment up for the demo, and for a first run on the embedded server
        # (the parts it starts make none).
        async with open_log(
            settings,
            name="aisle-serve",
            role=Role.VIEWER,
            create=options.demo is not None,
            keep_going=True,
        ) as keep:
            at = keep.nc.connected_url
            nats_url = settings.nats_url or (f"nats://{at.hostname}:{at.port}" if at else "?")
            try:
                running.keeper = Keeper(settings)
                running.keeping = asyncio.create_task(running.keeper.run(running.kept))
                for child in running.parts:
                    child.start(dict(os.environ))
                api = ApiSettings(
                    core=settings, database_url=db_url, layouts=layouts, supervised=True
                )
                await running.start_api(create_app(api))
                url = dashboard_url(options.host, port)
                _say(f"aisle serve: the dashboard on {url}#token={token}")
                api = f"{url.removesuffix('/dashboard/')}/api/v1"
                _say(f"  the API on {api} (schema: {api}/openapi.json)")
                how = "kept from the last start" if kept else "new"
                _say(f"  operator token ({how}, in {logs / TOKEN_FILE}): {token}")
                where = "" if settings.nats_url else " (embedded)"
                _say(
                    f"  the log on {nats_url}{where}; the engine's and projections' logs in {logs}/"
                )
                if options.demo is not None:
                    d = options.demo
                    _say(
                        f"  demo: {len(loaded)} store(s), {d.shoppers} visitors each over "
                        f"{d.hours:g} h, {d.head_start_h:g} h at once, then {d.speed:g}x"
                    )
                    running.publish_demo = lambda: publish_demo(
                        settings, loaded, d, datetime.now().astimezone()
                    )
                    running.demo = asyncio.create_task(running.publish_demo())
                _say("  Ctrl-C stops it all")
                await running.watch(stop)
            finally:
                await running.stop()
    finally:
        sock.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _say(line: str) -> None:
    print(line, flush=True)  # at once, also into a pipe: a test or a wrapper reads it


@dataclass
class _Running:
    """What ``serve`` started, to watch and to stop."""

    sock: socket.socket
    parts: list[Child]
    server: _Server | None = None
    serving: asyncio.Task[None] | None = None
    demo: asyncio.Task[None] | None = None
    publish_demo: Callable[[], Coroutine[Any, Any, None]] | None = None
    keeper: Keeper | None = None  # restarts the embedded nats-server when it dies
    keeping: asyncio.Task[None] | None = None
    kept: asyncio.Event = field(default_factory=asyncio.Event)  # set: the keeper stops
    restarted: dict[str, int] = field(default_factory=dict)  # parts started again, by name

    def _outage(self) -> bool:
        """Whether the embedded server is down or just came back (what a part stopped
        for meanwhile is the outage's, not the part's)."""
        return self.keeper is not None and self.keeper.troubled()

    async def start_api(self, app: object) -> None:
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            log_level="warning",
            timeout_graceful_shutdown=2,  # the live streams never end by themselves
            lifespan="on",
        )
        self.server = _Server(config)
        self.serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.serving.done():
                self.serving.result()  # its exception, if it has one
                raise ServeError("the API stopped as it started")
            await asyncio.sleep(0.05)

    async def watch(self, stop: asyncio.Event) -> None:
        """Wait for ``stop``; a part that ends first ends ``serve`` with its reason."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if self.serving is not None and self.serving.done():
                self.serving.result()
                raise ServeError("the API stopped")
            for child in self.parts:
                code = child.exited()
                if code is None:
                    continue
                # Started again: a part that stopped while the log was down, or that had run
                # a while (killed, out of memory); one that stops as it starts has a reason
                # a restart will not change, and ends serve with it.
                ran = child.ran_s() >= SETTLED_S
                if (self._outage() or ran) and self.restarted.get(child.name, 0) < MAX_RESTARTS:
                    self.restarted[child.name] = self.restarted.get(child.name, 0) + 1
                    log.warning(
                        "the %s stopped (exit code %d%s): started again (%d of %d)",
                        child.name,
                        code,
                        " while the log was down" if self._outage() else "",
                        self.restarted[child.name],
                        MAX_RESTARTS,
                    )
                    child.stop()
                    child.start(dict(os.environ))
                    continue
                raise ServeError(
                    f"the {child.name} stopped (exit code {code}); the end of "
                    f"{child.log_path}:\n{child.tail()}"
                )
            if self.demo is not None and self.demo.done():
                demo, self.demo = self.demo, None
                if not demo.cancelled() and (exc := demo.exception()) is not None:
                    if self._outage() and self.publish_demo is not None:
                        log.warning("the demo publisher stopped while the log was down: again")
                        self.demo = asyncio.create_task(self.publish_demo())
                        continue
                    raise ServeError(f"the demo day could not be published: {exc}") from exc
                log.info("the demo day is in the log")

    async def stop(self) -> None:
        """The demo, the children, then the API; the embedded server stops after them,
        when ``serve``'s own connection leaves."""
        if self.demo is not None and not self.demo.done():
            self.demo.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.demo
        self.kept.set()  # no restart of the server while everything stops
        if self.keeping is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.keeping
        await asyncio.gather(*(asyncio.to_thread(c.stop) for c in self.parts))
        if self.server is not None and self.serving is not None:
            self.server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.serving


# -- the command ----------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        layout: Annotated[
            list[Path] | None,
            typer.Option("--layout", help="Store layouts (one serves every store of a chain)."),
        ] = None,
        store: Annotated[
            list[str] | None,
            typer.Option("--store", "-s", help="Only these stores (default: every store)."),
        ] = None,
        host: Annotated[str, typer.Option(help="Where the API listens.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Its port (0: any).")] = 8000,
        engine: Annotated[
            bool, typer.Option(help="Run the rules engine too (--no-engine: another runs it).")
        ] = True,
        demo: Annotated[
            bool, typer.Option(help="Publish a simulated store day into the log as it runs.")
        ] = False,
        stores: Annotated[
            int, typer.Option(min=1, max=50, help="--demo: a chain of this many stores.")
        ] = 1,
        shoppers: Annotated[
            int, typer.Option(min=1, max=5000, help="--demo: visitors per store.")
        ] = 200,
        speed: Annotated[
            float,
            typer.Option(min=1, max=10_000, help="--demo: store seconds per wall-clock second."),
        ] = 60.0,
        head_start: Annotated[
            float,
            typer.Option(min=0, max=24, help="--demo: hours of the day published at once."),
        ] = 2.0,
    ) -> None:
        """The API and the live dashboard, the projections and the engine, until Ctrl-C."""
        for s in store or ():
            if not re.fullmatch(ev.STORE_PATTERN, s):
                raise typer.BadParameter(
                    f"{s!r}: letters, digits, '-' or '_' (max 64)", param_hint="--store"
                )
        if store and demo:
            raise typer.BadParameter("--demo simulates its own stores", param_hint="--store")
        if stores > 1 and not demo:
            raise typer.BadParameter("a simulated chain needs --demo", param_hint="--stores")
        layouts = tuple(layout or [EXAMPLE])
        for path in layouts:
            try:
                load_layout(path)
            except (OSError, SourceError, ValueError) as exc:
                raise typer.BadParameter(f"{path}: {exc}", param_hint="--layout") from None
        options = ServeOptions(
            host=host,
            port=port,
            layouts=layouts,
            stores=tuple(store or ()),
            engine=engine,
            demo=DemoDay(shoppers=shoppers, speed=speed, head_start_h=head_start) if demo else None,
            chain=stores,
        )
        configure(json_lines=False)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        try:
            run_command(lambda settings: serve(settings, options))
        except ServeError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
