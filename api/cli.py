"""``aisle api run``, ``aisle tokens create | list | revoke`` and ``aisle audit``."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from api import audit
from api.audit import entries, unaudited
from api.auth import Principal, Role, create_token, list_tokens, revoke_token
from api.settings import EXAMPLE_LAYOUT, ApiSettings
from api.stores import stores_held
from core.config import ConfigError
from core.console import Console
from core.runtime import reload_embedded
from readmodels.database import SchemaMismatch, check_schema, make_engine, shown_url

api_app = typer.Typer(help="The HTTP API over the read models and the log.", no_args_is_help=True)
tokens_app = typer.Typer(help="The API's tokens (stored hashed).", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(2)


def _db(create: bool = True) -> Engine:
    try:
        settings = ApiSettings.from_env()
        db = make_engine(settings.url())
        check_schema(db, create=create)
    except (SchemaMismatch, ConfigError) as exc:
        raise _fail(str(exc)) from None
    except OperationalError as exc:
        raise _fail(f"the read models' database: {str(exc.orig).strip()}") from None
    return db


@api_app.command("run")
def run_api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    layout: Annotated[
        list[Path] | None,
        typer.Option("--layout", help="Store layout files (default: the example store)."),
    ] = None,
    no_log: Annotated[
        bool, typer.Option("--no-log", help="Serve the read models alone, without NATS.")
    ] = False,
) -> None:
    """Serve the API (uvicorn) on the read models and the log, until Ctrl-C."""
    import uvicorn

    from api.app import create_app

    layouts = tuple(layout or [EXAMPLE_LAYOUT])
    for path in layouts:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--layout")
    settings = ApiSettings.from_env(layouts=layouts)
    settings = ApiSettings(
        core=settings.core, database_url=settings.database_url, layouts=layouts, log=not no_log
    )
    db = _db()
    err.print(f"read models in {escape(shown_url(db))}", highlight=False)
    if not no_log and not settings.core.nats_url:
        reload_embedded(settings.core)  # a running embedded server learns the api user
    api = f"http://{host}:{port}/api/v1"
    err.print(f"the API on {api} (schema: {api}/openapi.json)", highlight=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


# Who the command line is, in the audit: whoever may open the database file.
CLI = Principal(token_id="cli", role=Role.ADMIN, name=f"command line ({getpass.getuser()})")


@tokens_app.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option("--role", "-r", help="viewer, operator or admin")],
    store: Annotated[
        list[str] | None, typer.Option("--store", "-s", help="Only these stores (default: all).")
    ] = None,
    name: Annotated[str, typer.Option(help="Who holds it (the audit shows it).")] = "",
) -> None:
    """Make a token; it is printed once (only its hash is kept)."""
    db = _db()
    try:
        row, token = create_token(db, role, store or (), name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    audit.record(db, CLI, "token.created", target=row.id, detail=f"{row.role} {row.name}")
    scope = ", ".join(row.stores) or "every store"
    err.print(f"token {row.id}: {row.role} of {scope}; keep it now, it is not shown again")
    unheard = sorted(set(row.stores) - stores_held(db))
    if unheard:  # a new store has no data yet; a mistyped one never will
        err.print(
            f"warning: the read models hold nothing of {', '.join(unheard)} yet: is the id "
            f"right? (`aisle tokens revoke {row.id}` if not)",
            style="yellow",
            highlight=False,
        )
    out.print(token, highlight=False, soft_wrap=True)


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The tokens: id, role, stores, holder, made and revoked (never the secret)."""
    rows = list_tokens(_db())
    if as_json:
        for r in rows:
            out.print(r.model_dump_json(exclude={"secret_hash"}), highlight=False, soft_wrap=True)
        return
    # An id is what a user pastes into ``revoke``: never cut, whatever the terminal's
    # width (a pipe's is 80); the other columns fold onto more lines instead.
    table = Table(
        Column("id", no_wrap=True, min_width=max((len(r.id) for r in rows), default=2)),
        Column("role", no_wrap=True),
        Column("stores", overflow="fold"),
        Column("name", overflow="fold"),
        Column("created", overflow="fold"),
        Column("revoked", overflow="fold"),
    )
    for r in rows:
        table.add_row(
            r.id,
            r.role,
            ", ".join(r.stores) or "all",
            escape(r.name),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
        )
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's id.")]) -> None:
    """Revoke a token: it answers 401 from now on (kept in the list, for the audit)."""
    db = _db()
    row = revoke_token(db, token_id)
    if row is None:
        raise _fail(f"no token {token_id!r} (aisle tokens list)")
    audit.record(db, CLI, "token.revoked", target=row.id)
    out.print(f"token {row.id} revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@api_app.command("audit")
def audit_command(
    store: Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action (receipt.read, ...).")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Only this token's id.")] = None,
    since: Annotated[
        datetime | None, typer.Option("--from", help="From this time (UTC if none given).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Who read receipts, corrected them, deployed rules, made or revoked tokens: newest first."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = entries(_db(), store=store, action=action, token_id=token, since=since, limit=limit)
    if as_json:
        for r in rows:
            out.print(json.dumps(r.model_dump(mode="json")), highlight=False, soft_wrap=True)
        return
    table = Table("at (UTC)", "who", "role", "action", "store", "target", "detail")
    for r in rows:
        table.add_row(
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            escape(r.who),
            r.role,
            r.action,
            r.store,
            escape(r.target),
            escape(r.detail),
        )
    out.print(table)


@api_app.command("unaudited")
def unaudited_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Operator actions in the log that were not made through this API (no audit entry):
    published with the API's or an admin's NATS credentials from elsewhere, by the demo,
    or by a request that failed after publishing. Exits 1 when there are any."""
    rows = unaudited(_db())
    if as_json:
        for r in rows:
            out.print(msgspec.json.encode(r).decode(), highlight=False, soft_wrap=True)
    elif rows:
        table = Table("seq", "at (UTC)", "store", "action", "target", "by", "source")
        for r in rows:
            table.add_row(
                str(r.seq),
                f"{r.at:%Y-%m-%d %H:%M:%S}",
                r.store,
                r.action,
                escape(r.target),
                escape(r.by),
                escape(r.source),
            )
        out.print(table)
    err.print(
        f"{len(rows)} operator action(s) in the read models with no audit entry"
        if rows
        else "every operator action in the read models was made through this API"
    )
    if rows:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(api_app, name="api")
    app.add_typer(tokens_app, name="tokens")
