"""Receipts: list, filter, search; one receipt with its lines and each line's evidence
(the answer to a shopper's dispute); corrections and refunds as events. Every read of a
receipt and every correction is audited."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import or_
from sqlmodel import Session, SQLModel, col, select
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import Operator
from api.context import Ctx
from api.operator import Accepted, IdempotencyKey, audited, key_id, publish, same_action
from api.operator import applied_seq as _applied_seq
from api.pages import Limit, Moment, Offset, next_offset
from api.problems import Problem, documented
from api.stores import open_store
from core import events as ev
from readmodels.tables import (
    Cart,
    CorrectionAdjustment,
    LineEvidence,
    Receipt,
    ReceiptCorrection,
    ReceiptLine,
)

router = APIRouter(tags=["receipts"], responses=documented(401, 403, 404, 422))


class ReceiptPage(BaseModel):
    items: list[Receipt]
    next_offset: int | None


class LineOut(BaseModel):
    """A line, and the evidence it rests on: each cart change of its SKU with the pick or
    put-back it came from (camera or sensor, shelf, time) and the rule that derived it."""

    line: ReceiptLine
    evidence: list[LineEvidence]


class CorrectionOut(BaseModel):
    correction: ReceiptCorrection
    adjustments: list[CorrectionAdjustment]


class ReceiptDetail(BaseModel):
    receipt: Receipt
    lines: list[LineOut]
    corrections: list[CorrectionOut]
    cart: Cart | None


class AdjustmentIn(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(default=0, ge=-1000, le=1000)
    # Left out: qty times the line's unit price (the receipt's, else the catalog's), as
    # the dashboard's form computes it; a refund with no amount refunded nothing.
    amount_cents: int | None = Field(default=None, ge=-(10**9), le=10**9)
    name: str = Field(default="", max_length=128)


class CorrectionIn(BaseModel):
    """A correction or refund: what each line changes by (negative: taken off), and why."""

    reason: str = Field(min_length=1, max_length=1000)

    @field_validator("reason")
    @classmethod
    def _said(cls, reason: str) -> str:
        """A reason of spaces was taken as one."""
        if not reason.strip():
            raise ValueError("a reason is required: what was wrong with the receipt")
        return reason.strip()

    adjustments: list[AdjustmentIn] = Field(default_factory=list, max_length=200)
    reviewed: bool = False


@router.get("/stores/{store}/receipts", response_model=ReceiptPage)
def list_receipts(
    ctx: Ctx,
    who: Operator,
    store: str,
    since: Annotated[Moment | None, Query(alias="from", description="issued at or after")] = None,
    until: Annotated[Moment | None, Query(alias="to", description="issued before")] = None,
    subject: Annotated[str | None, Query(max_length=128)] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[^\x00-\x1f\x7f]+$",  # a NUL matched every receipt
            description="an id's start, a cart, a SKU or item name",
        ),
    ] = None,
    needs_review: bool | None = None,
    corrected: bool | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ReceiptPage:
    open_store(ctx, who, store)
    query = select(Receipt).where(Receipt.store == store)
    if since is not None:
        query = query.where(col(Receipt.issued_at) >= since)
    if until is not None:
        query = query.where(col(Receipt.issued_at) < until)
    if subject is not None:
        query = query.where(Receipt.subject == subject)
    if needs_review is not None:
        query = query.where(Receipt.needs_review == needs_review)
    if corrected is not None:
        query = query.where((col(Receipt.corrections) > 0) == corrected)
    if q is not None:
        lines = select(ReceiptLine.receipt_id).where(
            or_(ReceiptLine.sku == q, col(ReceiptLine.name).contains(q, autoescape=True))
        )
        query = query.where(
            or_(
                col(Receipt.id).startswith(q, autoescape=True),
                Receipt.subject == q,
                Receipt.cart == q,
                col(Receipt.id).in_(lines),
            )
        )
    query = query.order_by(col(Receipt.issued_at).desc(), col(Receipt.id))
    with Session(ctx.db) as s:
        rows = list(s.exec(query.offset(offset).limit(limit + 1)).all())
    shown = rows[:limit]
    asked = {"from": since, "to": until, "subject": subject, "q": q, "offset": offset}
    detail = " ".join(f"{k}={v}" for k, v in asked.items() if v) + f" ({len(shown)} shown)"
    audit.record(ctx.db, who, "receipts.listed", store=store, detail=detail.strip())
    return ReceiptPage(items=shown, next_offset=next_offset(rows, limit, offset))


def _receipt(ctx: Ctx, store: str, receipt_id: str) -> Receipt:
    with Session(ctx.db) as s:
        receipt = s.get(Receipt, receipt_id)
    if receipt is None or receipt.store != store:
        raise Problem(
            404, "not found", f"no receipt {receipt_id!r} in {store}", field="path.receipt_id"
        )
    return receipt


@router.get("/stores/{store}/receipts/{receipt_id}", response_model=ReceiptDetail)
def get_receipt(ctx: Ctx, who: Operator, store: str, receipt_id: str) -> Response:
    """The receipt as issued and as corrected, each line with its evidence; the read is
    audited."""
    open_store(ctx, who, store)
    # ``ReceiptDetail`` as plain data, read on one connection with Core selects and
    # encoded by msgspec (the same JSON): ORM objects and two rounds of pydantic
    # validation cost more than the queries.
    with ctx.db.connect() as conn:
        receipt = _first(conn, _BY_ID, receipt_id)
        if receipt is None or receipt["store"] != store:
            raise Problem(
                404, "not found", f"no receipt {receipt_id!r} in {store}", field="path.receipt_id"
            )
        lines = _all(conn, _LINES, receipt_id)
        evidence = _all(conn, _EVIDENCE_OF, receipt_id)
        corrections = _all(conn, _CORRECTIONS, receipt_id)
        adjustments = []
        for c in corrections:
            adjustments += _all(conn, _ADJUSTMENTS, c["id"])
        cart = _first(conn, _CART_OF, receipt["cart_id"]) if receipt["cart_id"] else None
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for e in evidence:
        by_sku.setdefault(e["sku"], []).append(e)
    by_correction: dict[str, list[dict[str, Any]]] = {}
    for a in adjustments:
        by_correction.setdefault(a["correction_id"], []).append(a)
    audit.record(ctx.db, who, "receipt.read", store=store, target=receipt_id)
    out = {
        "receipt": receipt,
        "lines": [{"line": line, "evidence": by_sku.get(line["sku"], [])} for line in lines],
        "corrections": [
            {"correction": c, "adjustments": by_correction.get(c["id"], [])} for c in corrections
        ],
        "cart": cart,
    }
    return Response(msgspec.json.encode(out), media_type="application/json")


def _table(model: type[SQLModel]) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


_RECEIPT, _LINE, _EVIDENCE = _table(Receipt), _table(ReceiptLine), _table(LineEvidence)
_CORRECTION, _ADJUSTMENT = _table(ReceiptCorrection), _table(CorrectionAdjustment)
_CART = _table(Cart)


_KEY = sa.bindparam("key")
# Built once: building a statement per request cost more than running it.
_BY_ID = sa.select(_RECEIPT).where(_RECEIPT.c.id == _KEY)
_LINES = sa.select(_LINE).where(_LINE.c.receipt_id == _KEY).order_by(_LINE.c.position)
_EVIDENCE_OF = (
    sa.select(_EVIDENCE).where(_EVIDENCE.c.receipt_id == _KEY).order_by(_EVIDENCE.c.position)
)
_CORRECTIONS = (
    sa.select(_CORRECTION).where(_CORRECTION.c.receipt_id == _KEY).order_by(_CORRECTION.c.seq)
)
_ADJUSTMENTS = (
    sa.select(_ADJUSTMENT)
    .where(_ADJUSTMENT.c.correction_id == _KEY)
    .order_by(_ADJUSTMENT.c.position)
)
_CART_OF = sa.select(_CART).where(_CART.c.id == _KEY)


def _all(conn: sa.Connection, query: sa.Select[Any], key: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(query, {"key": key}).mappings().all()]


def _first(conn: sa.Connection, query: sa.Select[Any], key: str) -> dict[str, Any] | None:
    row = conn.execute(query, {"key": key}).mappings().first()
    return None if row is None else dict(row)


class _InFlight:
    """Corrections this process published that the read models may not show yet, per
    receipt, and a lock per receipt: two refunds sent at once are checked one after the
    other, each against the receipt as the other leaves it. (Two API processes on one
    log do not see each other's: the projection then refuses the second, a dead letter.)"""

    def __init__(self) -> None:
        self.locks: dict[str, asyncio.Lock] = {}
        self.sent: dict[str, dict[str, list[AdjustmentIn]]] = {}  # receipt -> event -> adjustments

    def lock(self, receipt: str) -> asyncio.Lock:
        if len(self.locks) > 10_000:  # bounded: idle locks go
            for key in [k for k, v in self.locks.items() if not v.locked()]:
                del self.locks[key]
        return self.locks.setdefault(receipt, asyncio.Lock())

    def pending(self, ctx: Ctx, receipt: str, retry: str | None) -> list[AdjustmentIn]:
        """The adjustments sent for ``receipt`` that the read models do not hold yet, but
        ``retry``'s (the event a retried Idempotency-Key names: it is not sent twice)."""
        sent = self.sent.get(receipt)
        if not sent:
            return []
        with Session(ctx.db) as s:
            applied = set(
                s.exec(
                    select(ReceiptCorrection.id).where(col(ReceiptCorrection.id).in_(list(sent)))
                ).all()
            )
        for eid in applied:
            del sent[eid]
        if not sent:
            del self.sent[receipt]
        return [a for eid, adjustments in sent.items() if eid != retry for a in adjustments]


def _in_flight(ctx: Ctx) -> _InFlight:
    if ctx.corrections is None:
        ctx.corrections = _InFlight()
    return ctx.corrections  # type: ignore[no-any-return]


def _priced(ctx: Ctx, receipt: Receipt, body: CorrectionIn) -> CorrectionIn:
    """The correction with every amount given: one left out is the quantity at the line's
    unit price on the receipt, or the catalog's for an item the receipt does not hold."""
    if all(a.amount_cents is not None for a in body.adjustments):
        return body
    with Session(ctx.db) as s:
        units = {
            line.sku: line.unit_cents
            for line in s.exec(select(ReceiptLine).where(ReceiptLine.receipt_id == receipt.id))
        }
    layout = ctx.layouts.get(receipt.store)
    catalog = {c.sku: c.price_cents for c in layout.catalog} if layout is not None else {}
    adjustments = []
    for i, adj in enumerate(body.adjustments):
        if adj.amount_cents is None:
            unit = units.get(adj.sku, catalog.get(adj.sku))
            if unit is None:
                raise Problem(
                    422,
                    "invalid request",
                    f"{adj.sku!r} is neither on the receipt nor in the store's catalog",
                    field=f"body.adjustments[{i}].sku",
                )
            adj = adj.model_copy(update={"amount_cents": adj.qty * unit})
        adjustments.append(adj)
    return body.model_copy(update={"adjustments": adjustments})


def _check_correction(
    ctx: Ctx, receipt: Receipt, body: CorrectionIn, pending: list[AdjustmentIn]
) -> None:
    """Refuse what the projection would refuse (a line or the total below zero), naming
    the adjustment, rather than publish an event that ends as a dead letter: against the
    receipt as the read models hold it and the corrections still on their way."""
    with Session(ctx.db) as s:
        lines = {
            line.sku: [line.corrected_qty, line.corrected_amount_cents]
            for line in s.exec(select(ReceiptLine).where(ReceiptLine.receipt_id == receipt.id))
        }
    layout = ctx.layouts.get(receipt.store)
    catalog = {c.sku for c in layout.catalog} if layout is not None else None
    for i, adj in enumerate(body.adjustments):
        if adj.sku not in lines and catalog is not None and adj.sku not in catalog:
            raise Problem(
                422,
                "invalid request",
                f"{adj.sku!r} is neither on the receipt nor in the store's catalog",
                field=f"body.adjustments[{i}].sku",
            )
    total = receipt.corrected_total_cents
    for adj in pending:
        line = lines.setdefault(adj.sku, [0, 0])
        line[0] += adj.qty
        line[1] += adj.amount_cents
        total += adj.amount_cents
    for i, adj in enumerate(body.adjustments):
        line = lines.setdefault(adj.sku, [0, 0])
        line[0] += adj.qty
        line[1] += adj.amount_cents
        if line[0] < 0 or line[1] < 0:
            raise Problem(
                422,
                "invalid request",
                f"would leave {line[0]} of {adj.sku} for {line[1]} cents on the receipt",
                field=f"body.adjustments[{i}]",
            )
        total += adj.amount_cents
    if total < 0:
        raise Problem(
            422,
            "invalid request",
            "would make the receipt's total negative",
            field="body.adjustments",
        )


@router.post(
    "/stores/{store}/receipts/{receipt_id}/corrections",
    response_model=Accepted,
    status_code=202,
    responses=documented(503),
)
async def correct_receipt(
    ctx: Ctx,
    who: Operator,
    store: str,
    receipt_id: str,
    body: CorrectionIn,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """A correction or refund: a ``receipt.corrected`` event with who and why, never an
    edit; the receipt shows it beside its lines as issued once projected. Audited."""
    await run_in_threadpool(open_store, ctx, who, store)
    receipt = await run_in_threadpool(_receipt, ctx, store, receipt_id)
    body = await run_in_threadpool(_priced, ctx, receipt, body)
    try:
        data = ev.ReceiptCorrectionData(
            receipt=receipt.id,
            by=who.who[:128],
            reason=body.reason,
            reviewed=body.reviewed,
            adjustments=tuple(ev.Adjustment(**a.model_dump()) for a in body.adjustments),
        )
    except (TypeError, ValueError) as exc:
        raise Problem(422, "invalid request", str(exc), field="body") from None
    if idempotency_key is not None:  # a retry of what is applied already: the same answer
        eid = key_id(who, ev.ReceiptCorrected, store, receipt.id, idempotency_key)
        seq = await run_in_threadpool(_applied_seq, ctx, ReceiptCorrection, eid)
        if seq is not None:
            await same_action(ctx, seq, eid, data)
            done = Accepted(event_id=eid, type=ev.ReceiptCorrected.type, seq=seq, duplicate=True)
            return await audited(
                ctx, who, done, store=store, target=receipt.id, detail=_detail(body)
            )
    async with _in_flight(ctx).lock(receipt.id):
        retry = (
            None
            if idempotency_key is None
            else key_id(who, ev.ReceiptCorrected, store, receipt.id, idempotency_key)
        )
        pending = await run_in_threadpool(_in_flight(ctx).pending, ctx, receipt.id, retry)
        await run_in_threadpool(_check_correction, ctx, receipt, body, pending)
        done = await publish(
            ctx,
            who,
            ev.ReceiptCorrected,
            store=store,
            subject=receipt.subject,
            data=data,
            target=receipt.id,
            key=idempotency_key,
        )
        if not done.duplicate:
            _in_flight(ctx).sent.setdefault(receipt.id, {})[done.event_id] = body.adjustments
    return await audited(ctx, who, done, store=store, target=receipt.id, detail=_detail(body))


def _detail(body: CorrectionIn) -> str:
    return f"{body.reason} ({sum(a.amount_cents for a in body.adjustments):+d} cents)"
