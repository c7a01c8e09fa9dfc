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


def fold_into(
    session: Session,
    table: sa.Table,
    changes: Mapping[tuple[Any, ...], Sequence[Any]],
    fold: Callable[[dict[str, Any] | None, Any], dict[str, Any]],
) -> None:
    """For each key, the row the table holds (None if none) folded with its changes in
    order, written back in one statement: a running total a batch at a time that is, to
    the last bit, the one an event at a time gives (floating-point sums keep their order)."""
    if not changes:
        return
    cols = list(table.primary_key.columns)
    held: dict[tuple[Any, ...], dict[str, Any]] = {}
    keys = list(changes)
    for i in range(0, len(keys), 200):
        query = sa.select(table).where(sa.tuple_(*cols).in_(keys[i : i + 200]))
        for row in session.execute(query).mappings():
            held[tuple(row[c.name] for c in cols)] = dict(row)
    rows = []
    for key, steps in changes.items():
        row = held.get(key)
        for step in steps:
            row = fold(row, step)
        assert row is not None
        rows.append({**row, **{c.name: k for c, k in zip(cols, key, strict=True)}})
    upsert(session, table, rows, update=overwrite)


def overwrite(t: sa.Table, new: Any) -> dict[str, Any]:
    """Every column but the key takes the row written."""
    return {c.name: new[c.name] for c in t.columns if not c.primary_key}
