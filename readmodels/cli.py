"""``aisle projections run | rebuild | status | migrate``: the read models over the log."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError

from core.access import Role
from core.cli import privacy_app
from core.cli import run as run_command
from core.config import Settings
from core.console import Console
from core.logs import configure
from core.runtime import open_log
from readmodels.database import (
    SchemaMismatch,
    check_schema,
    current,
    database_url,
    make_engine,
    migrate,
    shown_url,
)
from readmodels.dbfile import DatabaseGone
from readmodels.maintenance import rebuild, standings
from readmodels.projection import Projection
from readmodels.retention import prune
from readmodels.runner import (
    ALL_STORES,
    PositionMoved,
    Progress,
    ProjectionService,
    ScopeConflict,
    by_name,
)
from readmodels.subject_access import export

projections_app = typer.Typer(
    help="Read models (SQL) projected from the log: receipts, alerts, metrics, heatmaps.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[
    str | None, typer.Option("--store", "-s", help="Only this store (one process per store).")
]
ProjectionOpt = Annotated[
    list[str] | None,
    typer.Option("--projection", "-p", help="Only these projections (default: all)."),
]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(2)


def _selected(names: list[str] | None) -> tuple[Projection, ...]:
    try:
        return by_name(names or ())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--projection") from None


def _line(progress: list[Progress]) -> str:
    parts = [
        f"{p.name} {p.seq:,}" + (" ✓" if p.caught_up else f" (+{p.pending:,})") for p in progress
    ]
    applied = sum(p.applied for p in progress)
    rejected = sum(p.rejected for p in progress)
    tail = f" · {rejected:,} not applied" if rejected else ""
    return f"{applied:,} events applied · " + " · ".join(parts) + tail


class _Ticker:
    """The progress line: rewritten in place on a terminal, every 10 s otherwise."""

    EVERY_S = 10.0

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = ""
        self.at = -self.EVERY_S

    def __call__(self, progress: list[Progress]) -> None:
        line = _line(progress)
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
        elif time.monotonic() - self.at >= self.EVERY_S:
            self._print(line)

    def end(self, progress: list[Progress]) -> None:
        line = _line(progress)
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line + "\n")
        elif line != self.shown:  # not the line just printed again
            self._print(line)

    def _print(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        self.shown, self.at = line, time.monotonic()


@projections_app.command("run")
def run_projections(
    store: StoreOpt = None,
    projection: ProjectionOpt = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Events per transaction.")] = 500,
    log_format: Annotated[str, typer.Option(help="json or text")] = "json",
) -> None:
    """Follow the log and keep the read models up to date, until Ctrl-C or SIGTERM."""
    configure(json_lines=log_format == "json")
    selected = _selected(projection)

    async def go(settings: Settings) -> None:
        db = make_engine(database_url(settings))
        await asyncio.to_thread(check_schema, db)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        err.print(f"read models in {escape(shown_url(db))}", highlight=False)
        ticker = _Ticker()
        async with open_log(settings, name="aisle-projections", role=Role.ENGINE) as log:
            service = ProjectionService(
                log, db, scope=store or ALL_STORES, selected=selected, batch=batch
            )
            try:
                await service.run(stop, on_progress=ticker)
            finally:
                ticker.end(service.progress)

    _run(go)


@projections_app.command("rebuild")
def rebuild_projections(
    store: StoreOpt = None,
    projection: ProjectionOpt = None,
    log_format: Annotated[str, typer.Option(help="json or text")] = "json",
) -> None:
    """Drop the read models and project them again from the log's first message."""
    configure(json_lines=log_format == "json")
    selected = _selected(projection)

    async def go(settings: Settings) -> None:
        db = make_engine(database_url(settings))
        ticker = _Ticker()
        async with open_log(settings, name="aisle-projections", role=Role.ENGINE) as log:
            done = await rebuild(
                log, db, selected=selected, scope=store or ALL_STORES, on_progress=ticker
            )
        ticker.end(done)
        out.print(f"rebuilt {', '.join(p.name for p in done)} in {escape(shown_url(db))}")

    _run(go)


@projections_app.command("status")
def status() -> None:
    """Each projection's position against the log; its lag: messages of its types after it."""

    async def go(settings: Settings) -> None:
        db = make_engine(database_url(settings))
        if await asyncio.to_thread(current, db) is None:
            out.print("no projection has run on this database yet: `aisle projections run`")
            return
        await asyncio.to_thread(check_schema, db, create=False)
        async with open_log(
            settings, name="aisle-projections-status", role=Role.VIEWER, read_only=True
        ) as log:
            rows = await standings(log, db)
        if not rows:
            out.print("no projection has run on this database yet: `aisle projections run`")
            return
        table = Table("projection", "stores", "position", "stream last", "lag", "applied",
                      "not applied")  # fmt: skip
        for r in rows:
            table.add_row(
                r.projection,
                "all" if r.scope == ALL_STORES else r.scope,
                f"{r.seq:,}",
                f"{r.last_seq:,}",
                f"{r.pending:,}",
                f"{r.applied:,}",
                f"{r.rejected:,}",
            )
        out.print(table)

    _run(go)


@projections_app.command("migrate")
def migrate_command() -> None:
    """Bring the read models' schema to this version of aisle (Alembic)."""

    async def go(settings: Settings) -> None:
        db = make_engine(database_url(settings))
        before, after = await asyncio.to_thread(migrate, db)
        where = escape(shown_url(db))
        if before == after:
            out.print(f"the read models in {where} are at schema {after}: nothing to do")
        else:
            out.print(f"the read models in {where}: schema {before or 'none'} -> {after}")

    _run(go)


@projections_app.command("prune")
def prune_command() -> None:
    """Delete now what is about people and older than the log's retention (the running
    projections do it every hour): visits, picks, carts, receipts, alerts, face matches
    and heatmap windows shorter than a day, past AISLE_RETENTION_EVENTS."""

    async def go(settings: Settings) -> None:
        db = make_engine(database_url(settings))
        await asyncio.to_thread(check_schema, db, create=False)
        done = await asyncio.to_thread(prune, db, settings.log, datetime.now(UTC))
        if not done:
            out.print("nothing in the read models is past the log's retention")
        for table, n in sorted(done.items()):
            out.print(f"{table}: {n:,} row(s) deleted")

    _run(go)


@privacy_app.command("export")
def privacy_export(
    member: Annotated[str, typer.Option(help="The member's pseudonymous id (m-...).")],
    to: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON here (default: stdout).")
    ] = None,
) -> None:
    """Everything the read models hold about one enrolled member, as JSON, for a subject
    access request: the visits their face was matched in, picks, receipts, alerts."""

    async def go(settings: Settings) -> None:
        db = make_engine(database_url(settings))
        await asyncio.to_thread(check_schema, db, create=False)
        held = await asyncio.to_thread(export, db, member)
        text = json.dumps(held, indent=2, ensure_ascii=False) + "\n"
        if to is None:
            sys.stdout.write(text)
        else:
            to.write_text(text)
            to.chmod(0o600)  # what is held about a person: theirs and the store's only
        err.print(
            f"{len(held['visits'])} visit(s), {len(held['face_matches'])} face match(es) of "
            f"{member}" + (f" in {to}" if to else ""),
            highlight=False,
        )

    _run(go)


def _run(go: Callable[[Settings], Awaitable[None]]) -> None:
    try:
        run_command(go)
    except (SchemaMismatch, PositionMoved, ScopeConflict, DatabaseGone) as exc:
        raise _fail(str(exc)) from None
    except OperationalError as exc:  # the database is not there, or refuses us
        raise _fail(f"the read models' database: {str(exc.orig).strip()}") from None


def register(app: typer.Typer) -> None:
    app.add_typer(projections_app, name="projections")
