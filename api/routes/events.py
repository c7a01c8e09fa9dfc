"""The log's events of a store, by type, subject and time, a page at a time (by stream
sequence: ``after`` is the last page's ``next_after``). Read from the log itself, not the
read models; a page reads at most ``max_scan`` messages, so a rare subject gives short
pages rather than a long wait."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import Operator
from api.context import Ctx
from api.feed import shown
from api.pages import Moment
from api.problems import Problem, documented
from api.stores import open_store
from core import events as ev
from core.log import stream_for_types

router = APIRouter(tags=["events"], responses=documented(401, 403, 404, 422, 503))


class EventOut(BaseModel):
    seq: int
    stored_at: datetime
    event: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int | None  # pass as ``after`` for the next page; None: the log's end


@router.get("/stores/{store}/events", response_model=EventPage)
async def list_events(
    ctx: Ctx,
    who: Operator,
    store: str,
    type: Annotated[list[str] | None, Query(description="only these event types")] = None,
    subject: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[
        Moment | None, Query(alias="from", description="stored in the log at or after")
    ] = None,
    until: Annotated[Moment | None, Query(alias="to", description="stored before")] = None,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 2, description="after this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    await run_in_threadpool(open_store, ctx, who, store)
    log = ctx.need_log()
    for i, t in enumerate(type or ()):
        if t not in ev.EVENT_TYPES:
            raise Problem(422, "invalid request", f"no event type {t!r}", field=f"query.type[{i}]")
    try:
        stream_for_types(type)
    except ValueError as exc:
        raise Problem(422, "invalid request", str(exc), field="query.type") from None
    for name, t in (("query.from", since), ("query.to", until)):
        if t is not None and t.tzinfo is None:
            raise Problem(422, "invalid request", "a time needs its zone (Z or +hh:mm)", field=name)
    items: list[EventOut] = []
    scanned, last, ended = 0, after, True
    reader = log.replay(
        store=store,
        types=type,
        from_seq=after + 1 if after is not None else None,
        from_time=since if after is None else None,
        batch=min(1000, ctx.settings.max_scan),
    )
    async with contextlib.aclosing(reader):
        async for record in reader:
            if until is not None and record.stored_at >= until:
                break
            scanned += 1
            last = record.seq
            if subject is None or record.event.subject == subject:
                items.append(EventOut(**shown(record, whole=True)))
            if len(items) >= limit or scanned >= ctx.settings.max_scan:
                ended = False
                break
    receipts = [e.event["id"] for e in items if e.event.get("type") == "receipt.issued"]
    if receipts:  # a receipt read through the log is a receipt read
        await run_in_threadpool(
            audit.record,
            ctx.db,
            who,
            "receipt.read",
            store=store,
            target=receipts[0] if len(receipts) == 1 else f"{len(receipts)} receipts",
            detail=f"through /events: {', '.join(receipts)}"[:2000],
        )
    return EventPage(items=items, next_after=None if ended else last)
