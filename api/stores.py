"""Which stores the API knows: those whose layout it was given, and those the read models
hold; cached for a few seconds (every request asks)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from api.auth import Principal, check_store
from api.context import Context
from api.problems import Problem
from readmodels.tables import Alert, MetricHour, Visit

_TTL_S = 5.0


def known_stores(ctx: Context) -> set[str]:
    cached = getattr(ctx, "_stores", None)
    if cached is not None and time.monotonic() - cached[0] < _TTL_S:
        return cached[1]  # type: ignore[no-any-return]
    stores = set(ctx.layouts)
    with ctx.db.connect() as conn:
        for table in (MetricHour, Alert, Visit):
            t = table.__table__  # type: ignore[attr-defined]
            stores.update(conn.execute(sa.select(t.c.store).distinct()).scalars())
    ctx._stores = (time.monotonic(), stores)  # type: ignore[attr-defined]
    return stores


def open_store(ctx: Context, who: Principal, store: str) -> str:
    """``store``, if this token may see it (403) and the API knows it (404)."""
    check_store(who, store)
    if store not in known_stores(ctx):
        raise Problem(404, "not found", f"no store {store!r}", field="path.store")
    return store
