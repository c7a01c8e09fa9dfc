"""Operator actions are events in the log, never edits: an alert acknowledged, a receipt
corrected. With an ``Idempotency-Key`` the event's id is the key's (per token and
target), so a retried click publishes one event: the log's duplicate window drops the
copy, and the projections apply an id once whenever it comes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from fastapi import Header
from pydantic import BaseModel
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import Principal
from api.context import Context
from api.problems import Problem
from core import events as ev
from readmodels.tables import AlertAction, ReceiptCorrection

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Any string unique to this action: a retry with the same key publishes once.",
    ),
]
SOURCE = "api"


class Accepted(BaseModel):
    """The event that records the action: the read models show it once projected."""

    event_id: str
    type: str
    seq: int
    duplicate: bool  # the log already held it (a retry)


async def publish(
    ctx: Context,
    who: Principal,
    cls: type[ev.OperatorEvent],
    *,
    store: str,
    subject: str,
    data: msgspec.Struct,
    target: str,
    key: str | None,
) -> Accepted:
    log = ctx.need_log()
    at = datetime.now(UTC)
    event = ev.new(cls, store=store, at=at, source=SOURCE, subject=subject, data=data)
    if key is not None:
        event = msgspec.structs.replace(event, id=key_id(who, cls, store, target, key))
    try:
        ev.validate(event)
    except ev.EventError as exc:
        raise Problem(
            422, "invalid request", exc.reason, field=f"body.{exc.field.removeprefix('data.')}"
        ) from None
    done = await log.publish(event)
    if done.duplicate:
        await same_action(ctx, done.seq, event.id, data)
    return Accepted(event_id=event.id, type=cls.type, seq=done.seq, duplicate=done.duplicate)


def key_id(who: Principal, cls: type[ev.OperatorEvent], store: str, target: str, key: str) -> str:
    """The id of the action an ``Idempotency-Key`` names (per token, type and target)."""
    return ev.event_id(SOURCE, who.token_id, key, cls.type, store, target)


async def same_action(ctx: Context, seq: int, eid: str, data: msgspec.Struct) -> None:
    """A key used again must name the same action: the log's copy at ``seq`` (id ``eid``)
    must carry ``data``; another action under the key is refused."""
    log = ctx.need_log()
    stored = await log.js.get_msg(log.config.events_stream, seq)
    held = ev.decode(stored.data or b"")
    if held.id != eid or msgspec.json.encode(held.data) != msgspec.json.encode(data):  # type: ignore[attr-defined]
        raise Problem(
            422,
            "invalid request",
            "this Idempotency-Key was used for another action: use a new key",
            field="header.Idempotency-Key",
        )


def applied_seq(
    ctx: Context, model: type[ReceiptCorrection] | type[AlertAction], eid: str
) -> int | None:
    """Where the log holds an action the read models have applied, by its id (None: not
    applied, or not yet)."""
    with Session(ctx.db) as s:
        row = s.get(model, eid)
        return None if row is None else row.seq


async def audited(
    ctx: Context, who: Principal, done: Accepted, *, store: str, target: str, detail: str
) -> Accepted:
    """``done``, audited once per event: a retry whose first request published but could
    not write the audit (a locked database) writes it then; later retries add nothing."""
    await run_in_threadpool(
        audit.record,
        ctx.db,
        who,
        done.type,
        store=store,
        target=target,
        detail=detail,
        event=done.event_id,
    )
    return done
