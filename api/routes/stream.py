"""A store's derived events as they come, as server-sent events (``text/event-stream``):
``id`` the stream sequence, ``event`` the type, ``data`` the event as JSON. Operators
get every derived and operator event; viewers only metrics and heatmaps, with nothing
tied to a shopper (``api.feed``). A comment line every ``heartbeat`` seconds keeps
proxies from closing a quiet stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import Role, Viewer
from api.context import Ctx
from api.feed import OPERATOR_STREAM_TYPES, VIEWER_TYPES, for_viewer, shown
from api.problems import documented
from api.stores import open_store
from core.log import Record

router = APIRouter(tags=["live"], responses=documented(401, 403, 404, 422, 503))


def _sse(record: Record, whole: bool) -> str:
    body = json.dumps(shown(record, whole=whole), default=str, separators=(",", ":"))
    return f"id: {record.seq}\nevent: {record.event.type}\ndata: {body}\n\n"


@router.get(
    "/stores/{store}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    ctx: Ctx,
    who: Viewer,
    store: str,
    request: Request,
    limit: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="close after this many events")
    ] = None,
    heartbeat: Annotated[float, Query(ge=0.1, le=300)] = 15.0,
) -> StreamingResponse:
    await run_in_threadpool(open_store, ctx, who, store)
    log = ctx.need_log()
    whole = who.may(Role.OPERATOR)
    types = OPERATOR_STREAM_TYPES if whole else VIEWER_TYPES
    if whole:  # the stream carries receipts as they are issued: audited when it opens
        await run_in_threadpool(
            audit.record, ctx.db, who, "stream.opened", store=store, detail="receipts, alerts"
        )
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1000)
    started = asyncio.Event()

    async def pump() -> None:
        reader = log.tail(store=store, types=sorted(types))
        async with contextlib.aclosing(reader):
            started.set()
            async for record in reader:
                if whole or for_viewer(record.event):
                    await queue.put(record)

    async def events() -> AsyncIterator[str]:
        task = asyncio.create_task(pump())
        try:
            await asyncio.wait_for(started.wait(), 10)
            yield ": aisle live events\n\n"
            sent = 0
            while limit is None or sent < limit:
                try:
                    record = await asyncio.wait_for(queue.get(), heartbeat)
                except TimeoutError:
                    if task.done() or await request.is_disconnected():
                        break
                    yield ": keep-alive\n\n"
                    continue
                yield _sse(record, whole)
                sent += 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
