"""The read models keep what is about people no longer than the log keeps its events: a
row of a visit, a pick, a cart, a receipt, an alert, a face match or a heatmap window
shorter than a day (ten seconds of a cell trace a person) goes once the time it happened
is older than the business stream's retention (``AISLE_RETENTION_EVENTS``), where those
events are. What is about the store only (the hourly metrics, occupancy, the hourly and
daily heatmaps) stays: no one is in it.

The projections service prunes every ``EVERY_S`` and ``aisle projections prune`` now.
A retention of 0 (the log keeps its events until removed) prunes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.config import LogConfig
from readmodels.tables import (
    Alert,
    AlertAction,
    Cart,
    CartChange,
    CorrectionAdjustment,
    FaceMatch,
    HeatmapCell,
    LineEvidence,
    MetricPoint,
    Receipt,
    ReceiptCorrection,
    ReceiptLine,
    ShelfEvent,
    Visit,
)

EVERY_S = 3600.0
DAY_S = 86400.0


def _t(model: type) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


def prune(db: Engine, log: LogConfig, now: datetime) -> dict[str, int]:
    """Delete what is past its retention, in one transaction: rows deleted, by table."""
    done: dict[str, int] = {}
    with db.begin() as conn:
        if log.events_max_age_s > 0:
            _people(conn, now - timedelta(seconds=log.events_max_age_s), done)
    return {k: v for k, v in done.items() if v}


def _people(conn: Connection, cutoff: datetime, done: dict[str, int]) -> None:
    receipt, alert, cart = _t(Receipt), _t(Alert), _t(Cart)
    old_receipts = sa.select(receipt.c.id).where(receipt.c.issued_at < cutoff)
    old_corrections = sa.select(_t(ReceiptCorrection).c.id).where(
        _t(ReceiptCorrection).c.receipt_id.in_(old_receipts)
    )
    _delete(
        conn,
        _t(CorrectionAdjustment),
        _t(CorrectionAdjustment).c.correction_id.in_(old_corrections),
        done,
    )
    for child in (ReceiptCorrection, ReceiptLine, LineEvidence):
        _delete(conn, _t(child), _t(child).c.receipt_id.in_(old_receipts), done)
    _delete(conn, receipt, receipt.c.issued_at < cutoff, done)
    old_alerts = sa.select(alert.c.id).where(alert.c.raised_at < cutoff)
    _delete(conn, _t(AlertAction), _t(AlertAction).c.alert_id.in_(old_alerts), done)
    _delete(conn, alert, alert.c.raised_at < cutoff, done)
    # A cart goes with its last change (an open one still changing stays whole).
    old_carts = sa.select(cart.c.id).where(cart.c.updated_at < cutoff)
    _delete(conn, _t(CartChange), _t(CartChange).c.cart_id.in_(old_carts), done)
    _delete(conn, cart, cart.c.updated_at < cutoff, done)
    visit = _t(Visit)
    last_seen = sa.func.coalesce(visit.c.exited_at, visit.c.entered_at)
    _delete(conn, visit, last_seen < cutoff, done)
    for model in (FaceMatch, ShelfEvent, MetricPoint):
        _delete(conn, _t(model), _t(model).c.at < cutoff, done)
    cells = _t(HeatmapCell)
    _delete(conn, cells, (cells.c.span_s < DAY_S) & (cells.c.window_end < cutoff), done)


def _delete(
    conn: Connection, table: sa.Table, where: sa.ColumnElement[bool], done: dict[str, int]
) -> None:
    done[table.name] = done.get(table.name, 0) + conn.execute(table.delete().where(where)).rowcount
