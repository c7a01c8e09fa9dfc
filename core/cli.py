"""The ``aisle`` command.

``core`` owns the log and layout commands; the layers above add theirs through the
``aisle.commands`` entry point group (a ``register(app)`` function each), so ``core`` never
imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from core import cluster
from core import events as ev
from core.access import Role, add_adapter, permissions
from core.config import ConfigError, Settings
from core.console import Console
from core.durations import duration_flag
from core.jetstream import ELECTION_S, ConnectError, LogUnavailable, electing
from core.log import PublishError, Record, stores_of
from core.natsd import NatsServerError
from core.pubacks import advice
from core.runtime import open_log, reload_embedded
from core.streamconfig import StreamDifference
from core.yamlsource import SourceError

T = TypeVar("T")

app = typer.Typer(
    help="aisle: an event-sourced rules engine for checkout-free stores.", no_args_is_help=True
)
log_app = typer.Typer(help="The event log: what it holds, live and replayed.", no_args_is_help=True)
layout_app = typer.Typer(help="Store layout files.", no_args_is_help=True)
cluster_app = typer.Typer(
    help="A local JetStream cluster of nats-server processes (docs/operations.md).",
    no_args_is_help=True,
)
app.add_typer(log_app, name="log")
app.add_typer(layout_app, name="layout")
app.add_typer(cluster_app, name="cluster")
privacy_app = typer.Typer(
    help="What aisle keeps about people, and for how long (docs/privacy.md).",
    no_args_is_help=True,
)
app.add_typer(privacy_app, name="privacy")
out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")]
TypeOpt = Annotated[list[str] | None, typer.Option("--type", "-t", help="Only these event types.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON event per line.")]


# A request that times out: the server refused it by permission (it says so to the
# connection, not in an answer), or it is too busy; the caller names the refusal if it can.
NO_ANSWER = (
    "the NATS server did not answer a request in time: this user may lack a permission "
    "the command needs (the server's log names the subject it refused; docs/security.md), "
    "or the server is overloaded"
)


NO_LEADER = (
    f"the NATS cluster answered no JetStream request for {ELECTION_S:g} s: it has no "
    "leader for the streams (too few of its servers are up, or they cannot reach each "
    "other); `aisle log info` shows the streams' leaders and replicas once it has"
)


def _retrying(coro: Callable[[Settings], Awaitable[T]], settings: Settings) -> T:
    """The command, run again while the failures are those of an election in progress,
    within ``ELECTION_S`` of its start (a later failure is no election of the start)."""
    began = time.monotonic()
    while True:
        try:
            return asyncio.run(coro(settings))
        except Exception as exc:
            if not electing(exc) or time.monotonic() - began > ELECTION_S:
                raise
        time.sleep(1.0)


def run(coro: Callable[[Settings], Awaitable[T]], *, retry: bool = True) -> T:
    """Run one async command against the configured log, with friendly failures. Without
    ``retry``, a command that may not run twice (its first run may have done its work
    before the answer timed out) is not run again through an election."""
    try:
        settings = Settings.from_env()
        return _retrying(coro, settings) if retry else asyncio.run(coro(settings))
    except (NatsServerError, ConnectError, ConfigError, LogUnavailable, PublishError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except nats.js.errors.APIError as exc:  # what the server said; the lasting ones, with advice
        what = advice(exc.err_code or 0)
        line = f"[red]error:[/] {escape(str(exc))}" + (f": {escape(what)}" if what else "")
        err.print(line, soft_wrap=True)
        raise typer.Exit(2) from None
    except (nats.errors.TimeoutError, TimeoutError):  # a request the server never answered
        err.print(f"[red]error:[/] {escape(NO_ANSWER)}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
        err.print(f"[red]error:[/] {escape(NO_LEADER)}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _check_types(types: list[str] | None) -> list[str] | None:
    unknown = sorted(set(types or ()) - set(ev.EVENT_TYPES))
    if unknown:
        raise typer.BadParameter(
            f"unknown event type {', '.join(unknown)}; known: {', '.join(sorted(ev.EVENT_TYPES))}",
            param_hint="--type",
        )
    return types


def _summary(data: Any) -> str:
    fields = msgspec.to_builtins(data)
    if "samples" in fields:
        return f"frame {fields['frame']}: {len(fields['samples'])} people"
    if "lines" in fields:
        total = fields["total_cents"] / 100
        return f"{len(fields['lines'])} lines, total {total:.2f} {fields['currency']}"
    return " ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, {}, ""))


# Characters a terminal acts on rather than shows: C0 and C1 controls (an ANSI escape
# starts with one), and the invisible ones that reorder or hide text (zero-width, bidi).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_C1 = re.compile("[\x7f-\x9f]")  # JSON may carry them raw; a terminal may act on them


def shown(text: object) -> str:
    """Event text as a terminal may show it: what it would act on, written as an escape
    (``\\x1b``). Printed as ``Text``, never as markup, so ``[/]`` is only text."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def _json_line(data: str) -> str:
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", data) + "\n"


def print_record(record: Record, as_json: bool) -> None:
    e = record.event
    if as_json:
        sys.stdout.write(_json_line(ev.encode(e).decode()))
        return
    line = Text.assemble(
        (f"{record.seq:>8}", "dim"),
        f" {e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3] + "Z  ",  # UTC, and says so
        (shown(e.store), "bold"),
        " ",
        (f"{shown(e.type):<22}", "cyan"),
        f" {shown(e.subject):<14} {shown(_summary(e.data))}",
    )
    if isinstance(e, ev.DerivedEvent):
        line.append(f" ← {shown(e.rule.id)}@{shown(e.rule.version)}", style="dim")
    out.print(line, highlight=False)


def _parse_from(value: str | None) -> tuple[int | None, datetime | None]:
    if value is None:
        return None, None
    if value.isdigit():
        return int(value), None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither a stream sequence nor an ISO time", param_hint="--from"
        ) from None
    if at.tzinfo is None:
        raise typer.BadParameter(
            "give the time zone, e.g. 2026-11-28T09:00:00Z", param_hint="--from"
        )
    return None, at


@privacy_app.command("report")
def privacy_report(
    store: Annotated[
        str, typer.Option(help="The store's name, as the page should say it.")
    ] = "this store",
) -> None:
    """The retention schedule and what each event holds about people, as Markdown a store
    can publish, from this deployment's configuration (AISLE_RETENTION_*)."""
    from core.privacy_report import report

    sys.stdout.write(report(Settings.from_env().log, store))


@log_app.command("info")
def log_info(as_json: JsonOpt = False) -> None:
    """Streams, message counts, last sequences, and counts by store and type."""

    async def go(settings: Settings) -> None:
        async with open_log(
            settings, name="aisle-log-info", role=Role.VIEWER, read_only=True
        ) as log:
            stats = await log.stats()
        if as_json:
            sys.stdout.write(json.dumps([asdict(s) for s in stats]) + "\n")
            return
        table = Table(
            "stream", "messages", "bytes", "first seq", "last seq", "replicas", "consumers"
        )
        for s in stats:
            replicas = str(s.replicas) + (f", leader {s.leader}" if s.leader else "")
            if s.lagging:
                replicas += f", behind: {', '.join(s.lagging)}"
            behind = max(s.lag.values(), default=0)
            table.add_row(
                s.name,
                f"{s.messages:,}",
                f"{s.bytes:,}",
                str(s.first_seq),
                str(s.last_seq),
                Text(shown(replicas)),
                f"{s.consumers}" + (f" (furthest {behind:,} behind)" if behind else ""),
            )
        out.print(table)
        by_subject = Table("store", "type", "messages")
        for s in stats:
            for subject, count in sorted(s.subjects.items()):
                _, store, kind = subject.split(".", 2)
                by_subject.add_row(Text(shown(store)), Text(shown(kind)), f"{count:,}")
        if by_subject.row_count:
            out.print(by_subject)

    run(go)


@log_app.command("tail")
def log_tail(store: StoreOpt = None, types: TypeOpt = None, as_json: JsonOpt = False) -> None:
    """Follow new events as they arrive (Ctrl-C to stop)."""
    _check_types(types)

    async def go(settings: Settings) -> None:
        async with open_log(
            settings, name="aisle-log-tail", role=Role.VIEWER, read_only=True
        ) as log:
            async for record in log.tail(store=store, types=types):
                print_record(record, as_json)

    run(go)


@log_app.command("replay")
def log_replay(
    store: StoreOpt = None,
    types: TypeOpt = None,
    start: Annotated[
        str | None, typer.Option("--from", help="A stream sequence, or an ISO time of arrival.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print what the log holds, oldest first, and a count by type."""
    _check_types(types)
    from_seq, from_time = _parse_from(start)

    async def go(settings: Settings) -> None:
        counts: dict[str, int] = {}
        async with open_log(
            settings, name="aisle-log-replay", role=Role.VIEWER, read_only=True
        ) as log:
            records = log.replay(store=store, types=types, from_seq=from_seq, from_time=from_time)
            async with contextlib.aclosing(records):  # --limit: its consumer goes before we do
                async for record in records:
                    print_record(record, as_json)
                    counts[record.event.type] = counts.get(record.event.type, 0) + 1
                    if limit is not None and sum(counts.values()) >= limit:
                        break
            if store and not counts and store not in (known := stores_of(await log.stats())):
                listed = ", ".join(known) if known else "none: the log is empty"
                err.print(f"no events of store {shown(store)!r}; stores in the log: {listed}")
        if not as_json:
            err.print(
                f"{sum(counts.values()):,} events: "
                + ", ".join(f"{t} {n:,}" for t, n in sorted(counts.items()))
            )

    run(go)


@log_app.command("deadletters")
def log_deadletters(
    store: StoreOpt = None,
    late: Annotated[
        bool, typer.Option("--late", help="Events the engine set aside as too late instead.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (the payload as text).")
    ] = False,
) -> None:
    """Events the log refused, with the field at fault and the reason."""

    async def go(settings: Settings) -> None:
        async with open_log(
            settings, name="aisle-log-deadletters", role=Role.VIEWER, read_only=True
        ) as log:
            async for seq, letter in log.deadletters(store=store, late=late):
                if as_json:
                    entry = {**msgspec.to_builtins(letter), "seq": seq}
                    entry["payload"] = letter.payload.decode(errors="replace")
                    sys.stdout.write(_json_line(json.dumps(entry, ensure_ascii=False)))
                    continue
                payload = letter.payload[:120].decode(errors="replace")
                line = Text.assemble(
                    (f"{seq:>6}", "dim"),
                    " ",
                    (shown(letter.store), "bold"),
                    " ",
                    (shown(letter.field), "red"),
                    f": {shown(letter.reason)}  ",
                    (shown(payload), "dim"),
                )
                out.print(line, highlight=False)

    run(go)


@log_app.command("permissions")
def log_permissions(
    role: Annotated[Role, typer.Argument(help="admin, engine, adapter or viewer.")],
    stores: Annotated[
        list[str] | None, typer.Option("--store", "-s", help="An adapter's stores (default: all).")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="The user's name, for its inbox (default: the role)."),
    ] = None,
) -> None:
    """A role's NATS permissions for this deployment (AISLE_PREFIX), as nats-server
    configuration, for a server of your own (docs/security.md). The user may subscribe
    to its own inbox prefix only, ``_INBOX_<user>``: give the process the same user name
    (AISLE_NATS_USER), or AISLE_NATS_INBOX for a token, an NKey or a .creds file."""
    try:
        block = permissions(role, Settings.from_env().log, stores or (), user=user)
    except ValueError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    sys.stdout.write(json.dumps({"permissions": block}, indent=2) + "\n")


@log_app.command("add-adapter")
def log_add_adapter(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    stores: Annotated[list[str], typer.Option("--store", "-s", help="Its stores (one or more).")],
) -> None:
    """An embedded-server user that publishes the raw events of these stores only.

    A running embedded server reloads its users at once; the password is printed once
    (and kept in the data folder, readable by its owner only)."""
    settings = Settings.from_env()
    try:
        user = add_adapter(settings.data_dir, name, stores)
    except ValueError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    url = reload_embedded(settings)
    out.print(f"AISLE_NATS_USER={user.user}", highlight=False)
    out.print(f"AISLE_NATS_PASSWORD={user.password}", highlight=False)
    if url:
        out.print(f"AISLE_NATS_URL={url}  # the running embedded server", highlight=False)


@log_app.command("configure")
def log_configure(
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Set aisle's settings (lifts any limit an operator set)."),
    ] = False,
    lease_ttl: Annotated[
        float | None,
        duration_flag("The engine workers' lease time, 1s to 1h (every worker's --lease-ttl)."),
    ] = None,
) -> None:
    """How the streams' settings differ from aisle's; with --apply, set aisle's.

    Every other command keeps a stream's own settings (an operator's limits) and only adds
    the subjects aisle needs. The workers' lease time is the lease bucket's: stop every
    worker before changing it, then start them with the new --lease-ttl.
    """

    if lease_ttl is not None and not 1 <= lease_ttl <= 3600:
        raise typer.BadParameter(
            f"{lease_ttl:g} s is not within 1s to 1h", param_hint="--lease-ttl"
        )

    async def go(settings: Settings) -> list[StreamDifference]:
        async with open_log(
            settings, name="aisle-log-configure", read_only=True, create=True
        ) as log:
            found = await log.configure_streams(apply=apply)
            if lease_ttl is not None:
                was = await log.set_bucket_ttl("engine_leases", lease_ttl, apply=apply)
                if was != f"{lease_ttl:g} s":
                    bucket = f"KV_{log.config.bucket('engine_leases')}"
                    found.append(StreamDifference(bucket, "lease time", was, f"{lease_ttl:g} s"))
            return found

    found = run(go)
    if not found:
        out.print("the streams have aisle's settings")
        return
    table = Table("stream", "setting", "the stream's", "aisle's")
    for d in found:
        table.add_row(*(Text(shown(x)) for x in (d.stream, d.field, d.theirs, d.ours)))
    out.print(table)
    if apply:
        err.print(f"applied aisle's settings ({len(found)} changed)")
    else:
        err.print("kept; `aisle log configure --apply` sets aisle's")


@layout_app.command("check")
def layout_check(
    files: Annotated[list[Path], typer.Argument(help="Store layout files.")],
    as_json: JsonOpt = False,
) -> None:
    """Validate store layouts; errors as file:line:col: message, exit code 1 on any."""
    from core.layout import check_layout

    errors: list[SourceError] = []
    for path in files:
        found = check_layout(path)
        errors.extend(found)
        if not found and not as_json:
            out.print(f"[green]ok[/] {path}")
    if as_json:
        sys.stdout.write(json.dumps([e.to_dict() for e in errors]) + "\n")
    else:
        for e in errors:
            err.print(str(e), highlight=False, markup=False)
    raise typer.Exit(1 if errors else 0)


ClusterDir = Annotated[
    Path, typer.Option("--dir", help="The cluster's folder (configuration, data, logs).")
]


def _cluster(folder: Path) -> cluster.Cluster:
    try:
        found = cluster.Cluster.load(folder)
    except NatsServerError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if found is None:
        err.print(f"[red]error:[/] no cluster in {folder}: `aisle cluster up --dir {folder}`")
        raise typer.Exit(2)
    return found


@cluster_app.command("up")
def cluster_up(
    nodes: Annotated[int, typer.Option(min=1, max=9, help="Servers (3 or 5 for a quorum).")] = 3,
    folder: ClusterDir = Path(".aisle/cluster"),
    name: Annotated[str, typer.Option(help="The cluster's name.")] = "aisle",
) -> None:
    """Start the cluster's servers on loopback ports (again, those that are down)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
        raise typer.BadParameter("letters, digits, '-' or '_'", param_hint="--name")
    existing = cluster.Cluster.load(folder) if (folder / cluster.STATE).exists() else None
    if existing is not None and len(existing.nodes) != nodes:
        err.print(
            f"[red]error:[/] the cluster in {folder} has {len(existing.nodes)} nodes, not "
            f"{nodes}: `aisle cluster down --dir {folder} --purge` first for another size"
        )
        raise typer.Exit(2)
    the = existing or cluster.plan(folder, nodes, name)
    try:
        started = cluster.up(the)
    except NatsServerError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    err.print(f"{len(started)} of {len(the.nodes)} servers started; the cluster is healthy")
    out.print(f"export AISLE_NATS_URL={the.url}", highlight=False)
    out.print(f"export AISLE_REPLICAS={min(3, len(the.nodes))}", highlight=False)


@cluster_app.command("status")
def cluster_status(folder: ClusterDir = Path(".aisle/cluster"), as_json: JsonOpt = False) -> None:
    """Each server: its URL, process and health (exit code 1 if one is not healthy)."""
    the = _cluster(folder)
    rows = [(n.name, n.url, n.pid if n.alive() else 0, n.health()) for n in the.nodes]
    if as_json:
        keys = ("name", "url", "pid", "health")
        sys.stdout.write(json.dumps([dict(zip(keys, r, strict=True)) for r in rows]) + "\n")
    else:
        table = Table("server", "url", "pid", "health")
        for name, url, pid, health in rows:
            table.add_row(name, url, str(pid or "-"), Text(shown(health)))
        out.print(table)
    raise typer.Exit(0 if all(r[3] == "ok" for r in rows) else 1)


@cluster_app.command("down")
def cluster_down(
    folder: ClusterDir = Path(".aisle/cluster"),
    purge: Annotated[bool, typer.Option(help="Remove the folder too (every event in it).")] = False,
) -> None:
    """Stop the cluster's servers; their data stays unless --purge."""
    try:
        the = cluster.Cluster.load(folder)
    except NatsServerError:  # a damaged cluster.json: its servers are found by their files
        the = None
    if the is None:
        pids = cluster.down_orphans(folder)
        if not pids and not folder.exists():
            err.print(f"[red]error:[/] no cluster in {folder}")
            raise typer.Exit(2)
        err.print(f"{len(pids)} servers stopped (found by their configuration in {folder})")
    else:
        # and any started beside it on the same data, which it does not name
        stopped = len(cluster.down(the)) + len(cluster.down_orphans(folder))
        err.print(f"{stopped} servers stopped")
    if purge:
        shutil.rmtree(folder)
        err.print(f"removed {folder}")


def _load_plugins() -> None:
    for entry in entry_points(group="aisle.commands"):
        entry.load()(app)


def main() -> None:
    """The command; a server that cannot be started or reached ends it with the reason,
    whichever layer's command met it."""
    _load_plugins()
    try:
        app()
    except (NatsServerError, ConnectError, ConfigError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
