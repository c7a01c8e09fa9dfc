"""``aisle shelf``: a store's weight shelves to events in the log.

Readings (``adapters/readings.py``) from one or more sources: a serial line, a TCP
stream of JSON lines, NATS core subjects, a file. The floor's position samples come
from the log (read as the viewer role: the adapter role may only publish); the picks,
put-backs and review items go through an outbox as the adapter role, as ``aisle adapt``'s
floor events do, so a re-run over the same readings publishes nothing twice. A mistake
on the command line ends it with exit code 2 and the reason; events the outbox had to
refuse end it with exit code 1. Ctrl-C (or SIGTERM) stops reading, sends what was made
and ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from adapters.cli import (
    CommandError,
    _logging,
    err,
    layout_of,
    out,
    outbox_to_log,
    stop_on_signals,
)
from adapters.readings import LineReader, ReadingSource, SourceSpecError, nats_source, source_from
from adapters.shelf import ShelfAdapter, ShelfSettings
from adapters.shelf_run import ShelfProgress, run_shelf
from core import events as ev
from core.access import Role, readings_subject
from core.cli import run
from core.config import Settings
from core.jetstream import connect
from core.layout import Layout
from core.outbox import OutboxError
from core.runtime import embedded_or_configured, open_log, role_auth

__all__ = ["ShelfPlan", "register", "shelf"]

NATS = "nats"


@dataclass
class ShelfPlan:
    """What the command line asks for, checked before anything is connected."""

    layout: Layout
    files: list[tuple[str, ReadingSource]] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)  # NATS core subjects
    positions_from: datetime | None = None  # arrival time; None: keep_s ago
    no_positions: bool = False
    stall_s: float = 5.0
    max_line: int = 1024
    outbox_file: Path | None = None
    settings: ShelfSettings = field(default_factory=ShelfSettings)


def plan(
    layout_file: Path,
    sources: list[str],
    once: bool,
    positions_from: str | None,
    no_positions: bool,
    stall_s: float,
    max_line: int,
    prefix: str,
) -> ShelfPlan:
    layout = layout_of(layout_file)
    if not any(sl.sensor for sh in layout.shelves for sl in sh.slots):
        raise CommandError(
            f"--layout: store {layout.store.id!r} has no weighed slot (a slot's sensor)"
        )
    if not sources:
        raise CommandError(
            "--source: where the readings come from (tcp://HOST:PORT, "
            "serial:///dev/ttyUSB0, nats or nats://SUBJECT, a file, -)"
        )
    the = ShelfPlan(layout, stall_s=stall_s, max_line=max_line, no_positions=no_positions)
    for spec in sources:
        if spec == NATS or spec.startswith(f"{NATS}://"):
            subject = spec.partition("://")[2] or readings_subject(prefix, layout.store.id)
            the.subjects.append(subject)
            continue
        try:
            the.files.append(source_from(spec, reconnect=not once))
        except SourceSpecError as exc:
            raise CommandError(str(exc)) from None
    if positions_from is not None:
        try:
            at = datetime.fromisoformat(positions_from.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(
                f"--positions-from: {positions_from!r} is not an ISO date and time"
            ) from None
        the.positions_from = at if at.tzinfo else at.replace(tzinfo=UTC)
    return the


async def _tail(log: object, store: str, kind: str, since: datetime) -> AsyncIterator[ev.Event]:
    """The store's events of ``kind`` stored from ``since`` on, and those to come."""
    async for record in log.tail(store=store, types=[kind], since=since):  # type: ignore[attr-defined]
        yield record.event


async def shelf(settings: Settings, the: ShelfPlan, stop: asyncio.Event) -> ShelfProgress:
    """Run the plan against the configured log; what it did."""
    store = the.layout.store.id
    adapter = ShelfAdapter(the.layout, the.settings)
    path = the.outbox_file or settings.outboxes / f"{store}.shelf.sqlite"
    config = replace(settings.outbox, duplicate_window_s=settings.log.duplicate_window_s)
    async with AsyncExitStack() as stack:
        outbox = await stack.enter_async_context(outbox_to_log(settings, path, config))
        positions = entries = None
        if not the.no_positions:
            viewer = await stack.enter_async_context(
                open_log(settings, name="aisle-shelf-floor", role=Role.VIEWER, read_only=True)
            )
            since = the.positions_from or datetime.now(UTC) - timedelta(seconds=the.settings.keep_s)
            positions = _tail(viewer, store, "position.samples", since)
            entries = _tail(viewer, store, "shopper.entered", since)
        sources: list[tuple[LineReader, ReadingSource]] = [
            (LineReader(name, the.max_line), opener) for name, opener in the.files
        ]
        if the.subjects:
            url = await stack.enter_async_context(embedded_or_configured(settings))
            nc = await connect(url, name="aisle-shelf", auth=role_auth(settings, Role.ADAPTER))
            stack.push_async_callback(nc.close)
            for subject in the.subjects:
                sources.append((LineReader(f"nats:{subject}", the.max_line), _opener(nc, subject)))
        progress = await run_shelf(
            adapter, sources, positions, outbox, entries=entries, stall_s=the.stall_s, stop=stop,
            max_future_s=settings.log.max_future_s,
        )  # fmt: skip
    return progress


@dataclass
class _Stop:
    event: asyncio.Event

    def stop(self) -> None:
        self.event.set()


def _opener(nc: object, subject: str) -> ReadingSource:
    return lambda: nats_source(nc, subject)


def _summary(p: ShelfProgress, took: float) -> None:
    bad = sum(p.malformed.values())
    kinds = ", ".join(f"{t} {n:,}" for t, n in sorted(p.events.items()))
    box = p.outbox
    sent = f"{box.published:,} published, {box.pending:,} waiting" if box else "none published"
    out.print(
        f"readings: {p.readings:,} taken, {bad:,} skipped; position frames: {p.positions:,}; "
        f"events: {sum(p.events.values()):,} made ({kinds or 'none'}), {p.new:,} new, "
        f"{sent}; in {took:.1f} s",
        highlight=False,
    )
    for reason, n in p.malformed.most_common(5):
        out.print(f"  skipped {n:,}: {escape(reason)}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("shelf")
    def shelf_command(
        layout_file: Annotated[Path, typer.Option("--layout", help="Store layout file.")],
        source: Annotated[
            list[str] | None,
            typer.Option(
                "--source",
                help="Where the readings come from (JSON lines): tcp://HOST:PORT, "
                "serial:///dev/ttyUSB0?baud=115200, nats (the store's readings subjects) or "
                "nats://SUBJECT, a file, or - (standard input); several allowed.",
            ),
        ] = None,
        once: Annotated[
            bool,
            typer.Option("--once", help="End when a TCP stream closes (default: reconnect)."),
        ] = False,
        positions_from: Annotated[
            str | None,
            typer.Option(
                "--positions-from",
                help="Read the floor's positions stored from this time on (ISO, UTC "
                "without an offset; default: a minute ago), for readings recorded earlier.",
            ),
        ] = None,
        no_positions: Annotated[
            bool,
            typer.Option(
                "--no-positions",
                help="Do not read the floor: every change goes to review (nobody near).",
            ),
        ] = False,
        stall_s: Annotated[
            float,
            typer.Option(
                "--positions-wait",
                min=0.1,
                max=600,
                help="Seconds a change waits for positions that do not come.",
            ),
        ] = 5.0,
        max_line: Annotated[
            int,
            typer.Option("--max-line", min=64, max=1 << 20, help="The longest reading line."),
        ] = 1024,
        outbox: Annotated[
            Path | None,
            typer.Option(
                "--outbox",
                help="The outbox file (default: AISLE_OUTBOX_DIR, else the data folder's "
                "outbox/, then STORE.shelf.sqlite).",
            ),
        ] = None,
    ) -> None:
        """Turn a store's weight-shelf readings into picks and put-backs in the log:
        stable weight changes, whole units through the catalog, the shopper at the slot
        from the floor's positions; what is not sure goes to review (shelf.unresolved)."""
        prefix = Settings.from_env().log.prefix
        try:
            the = plan(
                layout_file, source or [], once, positions_from, no_positions, stall_s,
                max_line, prefix,
            )  # fmt: skip
        except CommandError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        the.outbox_file = outbox
        undo = _logging()
        began = time.monotonic()

        async def go(settings: Settings) -> ShelfProgress:
            stop = asyncio.Event()
            with stop_on_signals(_Stop(stop)):
                return await shelf(settings, the, stop)

        try:
            result = run(go)
        except (CommandError, SourceSpecError, OutboxError, OSError) as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        finally:
            undo()
        _summary(result, time.monotonic() - began)
        refused = sum(result.refused.values())
        if refused:
            err.print(f"[red]error:[/] {refused:,} events refused by the outbox", soft_wrap=True)
            raise typer.Exit(1)
