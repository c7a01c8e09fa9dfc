"""Tokens and the audit, for admins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import (
    NAME_PATTERN,
    Admin,
    Principal,
    Role,
    create_token,
    list_tokens,
    revoke_token,
)
from api.context import Ctx
from api.pages import Limit, Moment, Offset
from api.problems import Problem, documented
from api.stores import is_known, known_stores
from readmodels.tables import AuditEntry

router = APIRouter(tags=["admin"], responses=documented(401, 403, 422))


class TokenOut(BaseModel):
    id: str
    role: str
    stores: list[str]
    name: str
    created_at: datetime
    revoked_at: datetime | None


class TokenIn(BaseModel):
    role: Role
    stores: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        default_factory=list, max_length=1000
    )
    name: str = Field(default="", max_length=128, pattern=NAME_PATTERN)


class NewToken(TokenOut):
    token: str  # shown once: only its hash is kept


def _within(who: Principal, stores: Sequence[str]) -> bool:
    """Whether a token of ``stores`` (empty: all) reaches no further than ``who``'s."""
    return not who.stores or (bool(stores) and set(stores) <= set(who.stores))


@router.get("/tokens", response_model=list[TokenOut])
def get_tokens(ctx: Ctx, who: Admin) -> list[TokenOut]:
    """The tokens; an admin limited to stores sees those limited to its stores."""
    return [
        TokenOut.model_validate(t, from_attributes=True)
        for t in list_tokens(ctx.db)
        if _within(who, t.stores)
    ]


@router.post("/tokens", response_model=NewToken, status_code=201)
def post_token(ctx: Ctx, who: Admin, body: TokenIn) -> NewToken:
    if not _within(who, body.stores):
        raise Problem(
            403,
            "forbidden",
            f"a token limited to {', '.join(who.stores)} makes tokens for those stores only",
            field="body.stores",
        )
    if "stores" in body.model_fields_set and not body.stores:
        raise Problem(
            422,
            "invalid request",
            "an empty list of stores reads as none, but would make a token of every store: "
            "leave `stores` out for every store",
            field="body.stores",
        )
    unknown = [s for s in body.stores if not is_known(ctx, s)]
    if unknown:  # a mistyped id makes a token that can open nothing, and says nothing
        known = sorted(known_stores(ctx))
        raise Problem(
            422,
            "invalid request",
            f"no store {', '.join(map(repr, unknown))} here (no layout and nothing in the "
            f"read models); the stores are: {', '.join(known[:20]) or 'none yet'}",
            field=f"body.stores[{body.stores.index(unknown[0])}]",
        )
    row, token = create_token(ctx.db, body.role, body.stores, body.name)
    audit.record(ctx.db, who, "token.created", target=row.id, detail=f"{row.role} {row.stores}")
    return NewToken(**TokenOut.model_validate(row, from_attributes=True).model_dump(), token=token)


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=documented(404))
def delete_token(ctx: Ctx, who: Admin, token_id: str) -> TokenOut:
    known = {t.id: t for t in list_tokens(ctx.db)}
    row = None
    if token_id in known and _within(who, known[token_id].stores):
        row = revoke_token(ctx.db, token_id)
    if row is None:
        raise Problem(404, "not found", f"no token {token_id!r}", field="path.token_id")
    audit.record(ctx.db, who, "token.revoked", target=row.id)
    return TokenOut.model_validate(row, from_attributes=True)


class AuditPage(BaseModel):
    items: list[AuditEntry]


@router.get("/audit", response_model=AuditPage)
async def get_audit(
    ctx: Ctx,
    who: Admin,
    store: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    token_id: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[Moment | None, Query(alias="from")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> AuditPage:
    """Who read receipts, corrected them, deployed rules, made or revoked tokens: newest
    first. An admin limited to stores reads their entries only."""
    if since is not None and since.tzinfo is None:
        raise Problem(
            422, "invalid request", "a time needs its zone (Z or +hh:mm)", field="query.from"
        )
    if who.stores and (store is None or store not in who.stores):
        raise Problem(
            403,
            "forbidden",
            f"a token limited to {', '.join(who.stores)} reads those stores' entries: "
            "give one of them as store",
            field="query.store",
        )
    rows = await run_in_threadpool(
        audit.entries,
        ctx.db,
        store=store,
        action=action,
        token_id=token_id,
        since=since,
        limit=limit,
        offset=offset,
    )
    return AuditPage(items=rows)
