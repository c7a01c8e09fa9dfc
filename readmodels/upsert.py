"""Insert-or-update in one statement, on SQLite and PostgreSQL alike (both have
``INSERT ... ON CONFLICT``): the projections of high-volume events (metrics, heatmap
cells) write through it rather than through the ORM's per-object flushes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session


def upsert(
    session: Session,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    update: Callable[[sa.Table, Any], dict[str, Any]] | None = None,
) -> None:
    """Insert ``rows``; a row whose key is there already takes ``update(table, excluded)``
    (None: it is left as it is). ``update`` is a module-level function: the statement is
    kept per function."""
    if rows:
        session.execute(_statement(session.get_bind().dialect.name, table, update), list(rows))


@functools.cache
def _statement(
    dialect: str, table: sa.Table, update: Callable[[sa.Table, Any], dict[str, Any]] | None
) -> Any:
    """Built once per table and update (building one is most of the cost of a small write)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    if update is None:
        return stmt.on_conflict_do_nothing(index_elements=keys)
    return stmt.on_conflict_do_update(index_elements=keys, set_=update(table, stmt.excluded))


def lesser(a: Any, b: Any) -> Any:
    """The smaller of two column values (portable: ``min(a, b)`` is an aggregate in PG)."""
    return sa.case((b < a, b), else_=a)


def greater(a: Any, b: Any) -> Any:
    return sa.case((b > a, b), else_=a)
