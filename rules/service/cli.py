"""``aisle engine run`` and ``aisle rules deploy | status``: the engine as a service."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import nats.errors
import nats.js.errors
import typer
from nats.js.kv import KeyValue
from rich.markup import escape
from rich.table import Table

from core import events as ev
from core.access import RULES_HISTORY, Role, authenticated_user
from core.cli import run as run_command
from core.config import Settings
from core.console import Console
from core.durations import duration_flag
from core.layout import load_layout
from core.logs import configure
from core.runtime import open_log
from rules.cli import EXAMPLE, rules_app
from rules.loader import PACKS, PackError, pack_files
from rules.reference import Reference, load_reference_list
from rules.service.deploy import (
    DeployError,
    Deployment,
    Past,
    UnreadableDeployment,
    deploy,
    deployed,
    history,
    packs_of,
    rollback,
    rules_bucket,
    validated,
)
from rules.service.health import Health
from rules.service.leases import WorkerStatus, running_workers
from rules.service.metrics import EngineMetrics
from rules.service.partition import MAX_FUTURE_S, SOURCE_IDLE_S, ServiceConfig
from rules.service.worker import Worker

engine_app = typer.Typer(help="The rules engine as a service over the log.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

LayoutOpt = Annotated[
    list[Path] | None,
    typer.Option("--layout", help="Store layout files (one serves every store of a chain)."),
]


def _reference(
    layouts: list[Path] | None, members: Path | None, watchlist: Path | None
) -> Reference:
    return Reference.of(
        *(load_layout(p) for p in layouts or [EXAMPLE]),
        members=load_reference_list(members) if members else None,
        watchlist=load_reference_list(watchlist) if watchlist else None,
    )


def _default_worker() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}")


@engine_app.command("run")
def run(
    layout: LayoutOpt = None,
    packs: Annotated[
        list[Path] | None,
        typer.Option(
            "--packs", help="Packs to run when none are deployed (default: the standard ones)."
        ),
    ] = None,
    members: Annotated[
        Path | None, typer.Option(help="Enrolled members (a reference list).")
    ] = None,
    watchlist: Annotated[
        Path | None, typer.Option(help="The watch list (a reference list).")
    ] = None,
    worker: Annotated[
        str | None, typer.Option(help="This worker's id (default: host-pid).")
    ] = None,
    store: Annotated[
        list[str] | None, typer.Option("--store", "-s", help="Only these stores (default: all).")
    ] = None,
    lateness: Annotated[float, duration_flag("Allowed lateness in event time.", 2.0)] = 2.0,
    max_future: Annotated[
        float,
        duration_flag(
            "Refuse events dated more than this after the log stored them "
            "(with --lateness, below --source-idle).",
            MAX_FUTURE_S,
        ),
    ] = MAX_FUTURE_S,
    source_idle: Annotated[
        float,
        duration_flag(
            "How far in event time a source may fall behind the store's newest event "
            "and still hold the store's watermark back (0: one clock per store).",
            SOURCE_IDLE_S,
        ),
    ] = SOURCE_IDLE_S,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N events...")] = 20_000,
    checkpoint_seconds: Annotated[float, duration_flag("...or every T.", 5.0)] = 5.0,
    checkpoint_budget: Annotated[
        float, typer.Option(help="...but at most this share of the time, all stores together.")
    ] = 0.05,
    lease_ttl: Annotated[float, duration_flag("How long a dead worker's stores wait.", 6.0)] = 6.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics, /healthz and /readyz on this port."),
    ] = None,
    metrics_address: Annotated[
        str,
        typer.Option(help="The address they listen on (the default: this machine only)."),
    ] = "127.0.0.1",
    log_format: Annotated[str, typer.Option(help="json or text.")] = "json",
) -> None:
    """Consume raw events, apply the deployed rules, publish derived events, checkpoint."""
    if log_format not in ("json", "text"):
        err.print(f"[red]error:[/] --log-format {escape(log_format)!r}: json or text")
        raise typer.Exit(2)
    configure(json_lines=log_format == "json")
    if worker is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", worker):
        err.print(f"[red]error:[/] --worker {worker!r}: letters, digits, '-' or '_' only")
        raise typer.Exit(2)
    for s in store or ():
        if not re.fullmatch(ev.STORE_PATTERN, s):
            err.print(f"[red]error:[/] --store {s!r}: letters, digits, '-' or '_' (max 64)")
            raise typer.Exit(2)
    if max_future < 0:
        err.print(f"[red]error:[/] --max-future {max_future}: seconds, 0 or more")
        raise typer.Exit(2)
    if not (lateness >= 0 and source_idle >= 0):
        err.print(f"[red]error:[/] --lateness {lateness}, --source-idle {source_idle}: 0 or more")
        raise typer.Exit(2)
    if not 0 < checkpoint_budget <= 1:
        err.print(f"[red]error:[/] --checkpoint-budget {checkpoint_budget}: a share in (0, 1]")
        raise typer.Exit(2)
    reference = _reference(layout, members, watchlist)
    config = ServiceConfig(
        worker=worker or _default_worker(),
        lateness_s=lateness,
        source_idle_s=source_idle,
        checkpoint_every=checkpoint_every,
        checkpoint_s=checkpoint_seconds,
        checkpoint_budget=checkpoint_budget,
        lease_ttl_s=lease_ttl,
        stores=tuple(store or ()),
        max_future_s=max_future,
    )
    if conflict := config.clock_conflict():
        err.print(f"[red]error:[/] {escape(conflict)}", soft_wrap=True)
        raise typer.Exit(2)
    metrics, health = EngineMetrics(), Health(config.lease_ttl_s)
    if metrics_port is not None:
        try:
            port = metrics.serve(metrics_port, metrics_address, health)
        except OSError as exc:
            err.print(
                f"[red]error:[/] --metrics-port {metrics_port} on {escape(metrics_address)}: "
                f"cannot serve metrics there ({escape(exc.strerror or str(exc))}); choose a "
                "free port (0 for any) and an address of this machine",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
        at = f"http://{metrics_address}:{port}"
        err.print(f"metrics on {at}/metrics, health on {at}/healthz and {at}/readyz")

    async def go(settings: Settings) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_log(
            settings, name=f"aisle-engine-{config.worker}", role=Role.ENGINE
        ) as log:
            worker = Worker(
                log, reference, config, packs=pack_files(packs or [PACKS]), metrics=metrics
            )
            health.worker = worker
            await worker.run(stop)

    # A worker makes many short-lived objects (events, messages, acks), nearly all freed by
    # reference counting, beside a large long-lived state. At Python's default thresholds
    # the collector runs again and again, mostly walking that state; at these, a few times
    # a catch-up (docs/benchmarks-history.md, the second round).
    gc.set_threshold(50_000, 50, 100)
    try:
        run_command(go)
    except PackError as exc:
        err.print(f"[red]error:[/] the rules were refused:\n{exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


@rules_app.command("deploy")
def deploy_command(
    paths: Annotated[list[Path], typer.Argument(help="Pack files or folders of packs.")],
    layout: LayoutOpt = None,
) -> None:
    """Validate packs and deploy them to every running engine (they swap atomically)."""
    try:
        files = validated(pack_files(paths), _reference(layout, None, None))
    except DeployError as exc:
        _refused(exc)

    async def go(settings: Settings) -> None:
        async with _rules_bucket(settings, "aisle-rules-deploy") as (kv, by):
            deployment, new = await deploy(kv, files, by=by)
        verb = "deployed" if new else "already deployed"
        out.print(f"{verb} rules version {deployment.version} ({len(deployment.files)} packs)")

    _deploying(go)


@asynccontextmanager
async def _rules_bucket(settings: Settings, name: str) -> AsyncIterator[tuple[KeyValue, str]]:
    """The rules bucket to write, as an admin, and who the server says is writing."""
    async with open_log(settings, name=name) as log:
        by = await authenticated_user(log.nc) or _unconfirmed_user(settings)
        try:
            yield await log.key_value("rules", history=RULES_HISTORY), by
        except nats.errors.TimeoutError:
            refused = log.nc.last_error
            if refused is None or "permissions violation" not in str(refused).lower():
                raise
            err.print(
                f"[red]refused[/]: the server does not let {by} write the rules: "
                f"{escape(str(refused))}; deploy as an admin (docs/security.md)"
            )
            raise typer.Exit(1) from None


def _deploying(go: Callable[[Settings], Awaitable[None]], *, retry: bool = True) -> None:
    """Run a command that deploys; a refusal says why and that nothing changed. A deploy
    may run again (the same packs deploy once); a rollback may not (its second run would
    roll back the rollback)."""
    try:
        run_command(go, retry=retry)
    except DeployError as exc:
        _refused(exc)


def _refused(exc: DeployError) -> NoReturn:
    for line in exc.errors:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    err.print("[red]refused[/]: nothing was deployed; the running rules stay as they are")
    raise typer.Exit(1) from None


def _packs_line(deployment: Deployment) -> str:
    return ", ".join(
        f"{pack} {v}" for pack, (_, v, _) in sorted(packs_of(deployment.files).items())
    )


@rules_app.command("history")
def history_command() -> None:
    """The deployments the rules bucket keeps, oldest first: revision, version, when, who."""

    async def go(settings: Settings) -> list[Past]:
        async with open_log(
            settings, name="aisle-rules-history", role=Role.VIEWER, read_only=True
        ) as log:
            rules = await rules_bucket(log.js, log.config.bucket("rules"))
            return await history(rules) if rules else []

    past = run_command(go)
    if not past:
        out.print("no deployment yet (engines run the packs they were started with)")
        return
    table = Table("revision", "version", "deployed (UTC)", "by", "packs", "note")
    for i, p in enumerate(past):
        d = p.deployment
        if d is None:
            table.add_row(str(p.revision), "unreadable", "", "", "", "")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.deployed_at))
        now = " (deployed)" if i == len(past) - 1 else ""
        table.add_row(str(p.revision), d.version + now, when, d.by, _packs_line(d), d.note)
    out.print(table)


@rules_app.command("rollback")
def rollback_command(
    to: Annotated[
        str | None,
        typer.Option(
            help="A revision or version from `aisle rules history` (default: the one before)."
        ),
    ] = None,
    layout: LayoutOpt = None,
) -> None:
    """Deploy an earlier deployment's packs again (checked against the layouts first)."""
    reference = _reference(layout, None, None)

    async def go(settings: Settings) -> None:
        async with _rules_bucket(settings, "aisle-rules-rollback") as (kv, by):
            deployment, target = await rollback(kv, reference, to=to, by=by)
        out.print(
            f"rolled back to revision {target.revision}: deployed rules version "
            f"{deployment.version} ({_packs_line(deployment)})"
        )

    _deploying(go, retry=False)


def _unconfirmed_user(settings: Settings) -> str:
    """Who deployed, where the server cannot say (no authentication, or before 2.10)."""
    if settings.nats_url and settings.auth.user:
        return f"{settings.auth.user} (as configured; the server did not confirm it)"
    return "anonymous (the server did not say who)"


@rules_app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="As one JSON object.")] = False,
) -> None:
    """Which rules version is deployed, and which each running engine worker runs."""

    async def go(settings: Settings) -> None:
        async with open_log(
            settings, name="aisle-rules-status", role=Role.VIEWER, read_only=True
        ) as log:
            try:
                rules = await rules_bucket(log.js, log.config.bucket("rules"))
                current, unreadable = (await deployed(rules) if rules else None), ""
            except UnreadableDeployment as exc:
                current, unreadable = None, str(exc)
            leases = log.config.bucket("engine_leases")
            workers = await running_workers(log.js, leases) or []

        def behind(w: WorkerStatus) -> bool:
            return current is not None and w.rules_version != current.version

        if as_json:
            sys.stdout.write(
                json.dumps(
                    {
                        "deployed": None
                        if current is None
                        else {
                            "version": current.version,
                            "deployed_at": current.deployed_at,
                            "by": current.by,
                            "note": current.note,
                        },
                        "unreadable": unreadable or None,
                        "workers": [
                            {
                                "worker": w.worker,
                                "rules_version": w.rules_version,
                                "behind": behind(w),
                                "stores": list(w.stores),
                                "packs": dict(w.packs),
                            }
                            for w in workers
                        ],
                    }
                )
                + "\n"
            )
            return
        if unreadable:
            out.print(f"deployed: [red]unreadable[/]: {escape(unreadable)}")
            out.print("engines run the packs they were started with, or the last good deployment")
        elif current is None:
            out.print("deployed: none (engines run the packs they were started with)")
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(current.deployed_at))
            out.print(f"deployed: {current.version} at {when} UTC by {current.by}")
        table = Table("worker", "rules", "stores", "packs", title=f"engines ({len(workers)})")
        for w in workers:
            mark = " [red](behind)[/]" if behind(w) else ""
            packs = ", ".join(f"{k} {v}" for k, v in sorted(w.packs.items()))
            table.add_row(w.worker, w.rules_version + mark, ", ".join(w.stores) or "-", packs)
        out.print(table)

    run_command(go)


def register(app: typer.Typer) -> None:
    app.add_typer(engine_app, name="engine")
