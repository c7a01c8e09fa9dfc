"""The audit: who read a receipt, corrected one, deployed rules, made or revoked a token,
and when. Written before the answer goes out: a read that cannot be audited fails."""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.auth import Principal
from readmodels import bulk
from readmodels.tables import AlertAction, AuditEntry, ReceiptCorrection


def record(
    db: Engine,
    who: Principal,
    action: str,
    *,
    store: str = "",
    target: str = "",
    detail: str = "",
    event: str | None = None,
) -> AuditEntry:
    """``event``: the id of the log event that records the action. The entry's id comes
    from it and a second entry of one event is not written: a request retried because its
    audit failed after the event was published is audited then, and a retry of one that
    was audited is not audited twice."""
    entry = AuditEntry(
        id=secrets.token_hex(16) if event is None else _entry_id(event),
        at=datetime.now(UTC),
        token_id=who.token_id,
        role=who.role.value,
        who=who.who[:128],
        action=action,
        store=store,
        target=target[:256],
        detail=detail,
    )
    with Session(db) as s, s.begin():  # a Core insert: the ORM's flush of one row costs more
        bulk.insert(s, _AUDIT, [entry.model_dump()], conflict="error" if event is None else "keep")
    return entry


def _entry_id(event: str) -> str:
    return hashlib.blake2b(event.encode(), digest_size=16, person=b"aisle-audit").hexdigest()


_AUDIT: sa.Table = AuditEntry.__table__  # type: ignore[attr-defined]


def entries(
    db: Engine,
    *,
    store: str | None = None,
    action: str | None = None,
    token_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEntry]:
    q = select(AuditEntry)
    if store is not None:
        q = q.where(AuditEntry.store == store)
    if action is not None:
        q = q.where(AuditEntry.action == action)
    if token_id is not None:
        q = q.where(AuditEntry.token_id == token_id)
    if since is not None:
        q = q.where(col(AuditEntry.at) >= since)
    q = q.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id)).offset(offset).limit(limit)
    with Session(db) as s:
        return list(s.exec(q).all())


class Unaudited(msgspec.Struct, frozen=True):
    """An operator action the read models hold that no audit entry accounts for."""

    event_id: str
    seq: int
    store: str
    at: datetime
    action: str  # alert.acknowledged, receipt.corrected, ...
    target: str  # the alert's or the receipt's id
    by: str  # as the event says: whoever published it chose it
    source: str


def unaudited(db: Engine) -> list[Unaudited]:
    """The operator actions in the log (as projected) that were not made through this
    API: the NATS server knows the ``api`` user that published an action, not the person
    its ``by`` names, so an action published with the API's (or an admin's) credentials
    from elsewhere shows here. So do actions of ``aisle demo`` and scenarios, and those
    whose request failed after publishing and was never retried. An entry made before
    entries were keyed by their event is matched by action, target and who, once."""
    a, c, e = _ALERT_ACTIONS, _CORRECTIONS, _AUDIT
    with db.connect() as conn:
        actions = [
            Unaudited(r.id, r.seq, r.store, r.at, f"alert.{r.action}", r.alert_id, r.by, r.source)
            for r in conn.execute(sa.select(a))
        ] + [
            Unaudited(r.id, r.seq, r.store, r.at, "receipt.corrected", r.receipt_id, r.by, r.source)
            for r in conn.execute(sa.select(c))
        ]
        kinds = {x.action for x in actions}
        held = conn.execute(
            sa.select(e.c.id, e.c.action, e.c.target, e.c.who).where(e.c.action.in_(kinds))
        ).all()
    keyed = {_entry_id(x.event_id): x for x in actions}
    # Entries keyed by no action here are older ones (random ids): each accounts for at
    # most one action, so a forged action copying an audited one's `by` is still found.
    older = Counter((r.action, r.target, r.who) for r in held if r.id not in keyed)
    ids = {r.id for r in held}
    missing = []
    for x in sorted(actions, key=lambda x: x.seq):
        if _entry_id(x.event_id) in ids:
            continue
        if older[(x.action, x.target, x.by)] > 0:
            older[(x.action, x.target, x.by)] -= 1
            continue
        missing.append(x)
    return missing


_ALERT_ACTIONS: sa.Table = AlertAction.__table__  # type: ignore[attr-defined]
_CORRECTIONS: sa.Table = ReceiptCorrection.__table__  # type: ignore[attr-defined]
