"""Everything the read models hold about one enrolled member, for a subject access
request (GDPR article 15): the visits their face was matched in, what they picked and
put back, their receipts and corrections, and the alerts about them. Nothing of anyone
else: a group's receipt shows only the lines the member's own picks made."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, or_, select

from readmodels.tables import (
    Alert,
    FaceMatch,
    LineEvidence,
    Receipt,
    ReceiptCorrection,
    ReceiptLine,
    ShelfEvent,
    Visit,
)

# What a row shows of itself; the rest (sequence numbers, rule versions) is the system's.
_HIDDEN = {"seq", "rule_id", "rule_version", "close_event_id", "cart_id"}


def export(db: Engine, member: str) -> dict[str, Any]:
    with Session(db) as s:
        matches = s.exec(
            select(FaceMatch).where(FaceMatch.member == member).order_by(col(FaceMatch.at))
        ).all()
        visits = []
        for store, subject in dict.fromkeys((m.store, m.subject) for m in matches):
            visits.append(_visit(s, store, subject))
        alerts = s.exec(  # a watch-list alert is keyed by the member, not the visit
            select(Alert).where(Alert.subject == member).order_by(col(Alert.raised_at))
        ).all()
    return {
        "member": member,
        "made_at": datetime.now(UTC).isoformat(),
        "face_matches": _rows(matches),
        "visits": visits,
        "alerts_about_the_member": _rows(alerts),
    }


def _visit(s: Session, store: str, subject: str) -> dict[str, Any]:
    visit = s.get(Visit, (store, subject))
    shelf = s.exec(
        select(ShelfEvent)
        .where(ShelfEvent.store == store, ShelfEvent.subject == subject)
        .order_by(col(ShelfEvent.at))
    ).all()
    owners = [subject] + ([visit.group] if visit is not None and visit.group else [])
    receipts = []
    for r in s.exec(
        select(Receipt)
        .where(Receipt.store == store, col(Receipt.subject).in_(owners))
        .order_by(col(Receipt.issued_at))
    ).all():
        receipts.append(_receipt(s, r, subject))
    alerts = s.exec(
        select(Alert)
        .where(Alert.store == store, or_(Alert.subject == subject, Alert.key == subject))
        .order_by(col(Alert.raised_at))
    ).all()
    return {
        "store": store,
        "visit": subject,
        **(_row(visit, {"store", "subject"}) if visit is not None else {}),
        "picks_and_put_backs": _rows(shelf, {"store", "subject"}),
        "receipts": receipts,
        "alerts": _rows(alerts, {"store"}),
    }


def _receipt(s: Session, r: Receipt, subject: str) -> dict[str, Any]:
    """The member's own receipt whole; a group's, only the lines their own picks made
    (the others' picks are the others')."""
    lines = s.exec(
        select(ReceiptLine)
        .where(ReceiptLine.receipt_id == r.id)
        .order_by(col(ReceiptLine.position))
    ).all()
    if r.subject == subject:
        corrections = s.exec(
            select(ReceiptCorrection).where(ReceiptCorrection.receipt_id == r.id)
        ).all()
        return {
            **_row(r, {"store", "subject"}),
            "lines": _rows(lines, {"receipt_id"}),
            "corrections": _rows(corrections, {"store", "receipt_id", "by"}),
        }
    mine = set(
        s.exec(
            select(LineEvidence.sku).where(
                LineEvidence.receipt_id == r.id, LineEvidence.subject == subject
            )
        ).all()
    )
    return {
        "id": r.id,
        "issued_at": r.issued_at.isoformat(),
        "shared_with_a_group": True,
        "lines_from_the_members_picks": [
            {"sku": x.sku, "name": x.name, "unit_cents": x.unit_cents}
            for x in lines
            if x.sku in mine
        ],
    }


def _rows(rows: Iterable[SQLModel], leave: set[str] | None = None) -> list[dict[str, Any]]:
    return [_row(r, leave or set()) for r in rows]


def _row(row: SQLModel, leave: set[str]) -> dict[str, Any]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in row.model_dump().items()
        if k not in _HIDDEN and k not in leave
    }
