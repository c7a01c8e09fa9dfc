"""Running totals a batch at a time: the projections of high-volume events (metrics,
heatmap cells, visits) fold each key's changes into the row the table holds and write
the rows back in one statement (``readmodels.bulk``), rather than through the ORM's
per-object flushes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from readmodels import bulk


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
    cols = [c.name for c in table.primary_key.columns]
    held = {tuple(row[c] for c in cols): row for row in bulk.by_keys(session, table, changes)}
    rows = []
    for key, steps in changes.items():
        row = held.get(key)
        for step in steps:
            row = fold(row, step)
        assert row is not None
        rows.append({**row, **dict(zip(cols, key, strict=True))})
    bulk.insert(session, table, rows, conflict="overwrite")
