"""Which stores the API knows: those whose layout it was given, and those the read models
hold. Every request asks, so the answers are cached for a few seconds, and a single
store is looked up by key (an index's first column), never by scanning a table."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from api.auth import Principal, check_store
from api.context import Context
from api.problems import Problem
from readmodels.tables import Alert, MetricHour, Visit

_TTL_S = 5.0
_SOURCES = (MetricHour, Visit, Alert)  # each with an index whose first column is the store


def _cache(ctx: Context) -> dict[str, tuple[float, object]]:
    cache = ctx.__dict__.setdefault("_store_cache", {})
    return cache  # type: ignore[no-any-return]


def known_stores(ctx: Context) -> set[str]:
    """Every store: the layouts', and the metrics' (every store's traffic rules report)."""
    cache = _cache(ctx)
    hit = cache.get("*")
    if hit is not None and time.monotonic() - hit[0] < _TTL_S:
        return hit[1]  # type: ignore[return-value]
    stores = set(ctx.layouts) | stores_held(ctx.db)
    cache["*"] = (time.monotonic(), stores)
    return stores


def stores_held(db: Engine) -> set[str]:
    """The stores the read models hold (every store's traffic rules report metrics)."""
    t = MetricHour.__table__  # type: ignore[attr-defined]
    with db.connect() as conn:
        return set(conn.execute(sa.select(t.c.store).distinct()).scalars())


def is_known(ctx: Context, store: str) -> bool:
    if store in ctx.layouts:
        return True
    cache = _cache(ctx)
    hit = cache.get(store)
    if hit is not None and time.monotonic() - hit[0] < _TTL_S:
        return bool(hit[1])
    found = False
    with ctx.db.connect() as conn:
        for table in _SOURCES:
            t = table.__table__  # type: ignore[attr-defined]
            if conn.execute(sa.select(t.c.store).where(t.c.store == store).limit(1)).first():
                found = True
                break
    if len(cache) > 10_000:  # a caller trying store names: the cache stays bounded
        cache.clear()
    cache[store] = (time.monotonic(), found)
    return found


def open_store(ctx: Context, who: Principal, store: str) -> str:
    """``store``, if this token may see it (403) and the API knows it (404)."""
    check_store(who, store)
    if not is_known(ctx, store):
        raise Problem(404, "not found", f"no store {store!r}", field="path.store")
    return store
