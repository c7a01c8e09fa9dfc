"""Carts, receipts, the evidence of every receipt line, and corrections.

A receipt event lists its causes: the cart changes the carts rule derived (each from one
pick or put-back) and the event that closed the cart. The evidence of a line is every
change of its SKU among them, with the pick or put-back behind it: the camera or shelf
sensor that saw it, when, on which shelf, and the rule and rule version that turned it
into the cart change. That is the answer to a shopper who disputes a line.

A correction or a refund is an event of its own (``receipt.corrected``, with who and
why); the receipt keeps its lines as issued, beside their corrected quantity and amount.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select

from core import events as ev
from readmodels.projection import Projection, Unexpected
from readmodels.tables import (
    Cart,
    CartChange,
    CorrectionAdjustment,
    LineEvidence,
    Receipt,
    ReceiptCorrection,
    ReceiptLine,
    ShelfEvent,
)

UNPAID = "carts.unpaid_exit"  # the carts rule's metric for a cart that left without a receipt


class Receipts(Projection):
    name = "receipts"
    types = frozenset(
        {
            "item.picked",
            "item.put_back",
            "cart.item_added",
            "cart.item_removed",
            "receipt.issued",
            "receipt.corrected",
            "metric",
        }
    )
    tables = (
        ShelfEvent,
        Cart,
        CartChange,
        Receipt,
        ReceiptLine,
        LineEvidence,
        ReceiptCorrection,
        CorrectionAdjustment,
    )

    def wants(self, event: ev.Event) -> bool:
        return not isinstance(event, ev.Metric) or event.data.name == UNPAID

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        match event:
            case ev.ItemPicked() | ev.ItemPutBack():
                d = event.data
                session.execute(
                    sa.insert(_SHELF),
                    {
                        "id": event.id,
                        "seq": seq,
                        "store": event.store,
                        "type": event.type,
                        "subject": event.subject,
                        "sku": d.sku,
                        "shelf": d.shelf,
                        "qty": d.qty,
                        "source": event.source,
                        "at": event.at,
                    },
                )
            case ev.CartItemAdded() | ev.CartItemRemoved():
                self._change(session, seq, event)
            case ev.ReceiptIssued():
                self._receipt(session, seq, event)
            case ev.ReceiptCorrected():
                self._correction(session, seq, event)
            case ev.Metric() if event.data.name == UNPAID:
                self._unpaid(session, event)

    def _change(self, session: Session, seq: int, e: ev.CartItemAdded | ev.CartItemRemoved) -> None:
        cart = _open_cart(session, e.store, e.data.cart)
        added = isinstance(e, ev.CartItemAdded)
        qty = e.data.qty if added else -e.data.qty
        if cart is None:
            if not added:
                raise Unexpected("data.cart", f"removes from cart {e.data.cart!r}, not open")
            cart_id = e.id
            session.execute(
                sa.insert(_CART),
                {
                    "id": cart_id,
                    "store": e.store,
                    "cart": e.data.cart,
                    "opened_at": e.at,
                    "updated_at": e.at,
                    "status": "open",
                    "items": qty,
                },
            )
        else:
            cart_id, updated = cart
            if not added:
                held = session.execute(
                    select(func.coalesce(func.sum(CartChange.qty), 0)).where(
                        CartChange.cart_id == cart_id, CartChange.sku == e.data.sku
                    )
                ).scalar_one()
                if held < e.data.qty:
                    raise Unexpected(
                        "data.qty", f"removes {e.data.qty} {e.data.sku} from a cart holding {held}"
                    )
            session.execute(
                sa.update(_CART)
                .where(_CART.c.id == cart_id)
                .values(items=_CART.c["items"] + qty, updated_at=max(updated, e.at))
            )
        session.execute(
            sa.insert(_CHANGE),
            {
                "id": e.id,
                "seq": seq,
                "cart_id": cart_id,
                "store": e.store,
                "subject": e.subject,
                "sku": e.data.sku,
                "qty": qty,
                "at": e.at,
                "rule_id": e.rule.id,
                "rule_version": e.rule.version,
                "cause_id": e.caused_by[0],
            },
        )

    def _receipt(self, session: Session, seq: int, e: ev.ReceiptIssued) -> None:
        d = e.data
        _check_receipt(d)
        cart = _open_cart(session, e.store, d.cart)
        if cart is not None:
            session.execute(
                sa.update(_CART)
                .where(_CART.c.id == cart[0])
                .values(
                    status="paid", closed_at=e.at, receipt_id=e.id, closed_by_event=e.caused_by[-1]
                )
            )
        session.execute(
            sa.insert(_table(Receipt)),
            {
                "id": e.id,
                "seq": seq,
                "store": e.store,
                "subject": e.subject,
                "cart": d.cart,
                "cart_id": cart[0] if cart is not None else None,
                "issued_at": e.at,
                "currency": d.currency,
                "total_cents": d.total_cents,
                "age_check": d.age_check,
                "needs_review": d.needs_review,
                "rule_id": e.rule.id,
                "rule_version": e.rule.version,
                "close_event_id": e.caused_by[-1],
                "corrected_total_cents": d.total_cents,
                "corrections": 0,
                "reviewed": False,
            },
        )
        session.execute(
            sa.insert(_table(ReceiptLine)),
            [
                {
                    "receipt_id": e.id,
                    "sku": line.sku,
                    "position": i,
                    "name": line.name,
                    "qty": line.qty,
                    "unit_cents": line.unit_cents,
                    "amount_cents": line.amount_cents,
                    "age_restricted": line.age_restricted,
                    "review": line.review,
                    "corrected_qty": line.qty,
                    "corrected_amount_cents": line.amount_cents,
                }
                for i, line in enumerate(d.lines)
            ],
        )
        changes = {
            c.id: c
            for c in session.execute(sa.select(_CHANGE).where(_CHANGE.c.id.in_(e.caused_by))).all()
        }
        causes = {
            c.id: c
            for c in session.execute(
                sa.select(_SHELF).where(_SHELF.c.id.in_([c.cause_id for c in changes.values()]))
            ).all()
        }
        evidence = []
        for position, change_id in enumerate(e.caused_by):
            change = changes.get(change_id)
            if change is None:
                continue  # the cart's close (the gate), or a change the log no longer holds
            cause = causes.get(change.cause_id)
            evidence.append(
                {
                    "receipt_id": e.id,
                    "change_id": change.id,
                    "sku": change.sku,
                    "position": position,
                    "qty": change.qty,
                    "change_at": change.at,
                    "subject": change.subject,
                    "rule_id": change.rule_id,
                    "rule_version": change.rule_version,
                    "cause_id": change.cause_id,
                    "cause_type": cause.type if cause else None,
                    "cause_seq": cause.seq if cause else None,
                    "source": cause.source if cause else None,
                    "shelf": cause.shelf if cause else None,
                    "cause_at": cause.at if cause else None,
                }
            )
        if evidence:
            session.execute(sa.insert(_table(LineEvidence)), evidence)

    def _correction(self, session: Session, seq: int, e: ev.ReceiptCorrected) -> None:
        d = e.data
        receipt = session.get(Receipt, d.receipt)
        if receipt is None or receipt.store != e.store:
            raise Unexpected("data.receipt", f"no receipt {d.receipt} in store {e.store}")
        if receipt.subject != e.subject:
            raise Unexpected(
                "subject", f"{e.subject!r} is not the receipt's subject {receipt.subject!r}"
            )
        lines = {
            line.sku: line
            for line in session.exec(select(ReceiptLine).where(ReceiptLine.receipt_id == d.receipt))
        }
        after = len(lines)
        change = 0
        for i, adj in enumerate(d.adjustments):
            line = lines.get(adj.sku)
            if line is None:
                line = lines[adj.sku] = ReceiptLine(
                    receipt_id=receipt.id,
                    sku=adj.sku,
                    position=after,
                    name=adj.name or adj.sku,
                    qty=0,
                    unit_cents=0,
                    amount_cents=0,
                    corrected_qty=0,
                    corrected_amount_cents=0,
                )
                after += 1
                session.add(line)
            line.corrected_qty += adj.qty
            line.corrected_amount_cents += adj.amount_cents
            if line.corrected_qty < 0 or line.corrected_amount_cents < 0:
                raise Unexpected(
                    f"data.adjustments[{i}]",
                    f"would leave {line.corrected_qty} {adj.sku} for "
                    f"{line.corrected_amount_cents} cents on the receipt",
                )
            change += adj.amount_cents
        receipt.corrected_total_cents += change
        if receipt.corrected_total_cents < 0:
            raise Unexpected("data.adjustments", "would make the receipt's total negative")
        receipt.corrections += 1
        receipt.reviewed = receipt.reviewed or d.reviewed
        session.add(
            ReceiptCorrection(
                id=e.id,
                seq=seq,
                receipt_id=receipt.id,
                store=e.store,
                at=e.at,
                by=d.by,
                reason=d.reason,
                source=e.source,
                reviewed=d.reviewed,
                amount_cents=change,
            )
        )
        for i, adj in enumerate(d.adjustments):
            session.add(
                CorrectionAdjustment(
                    correction_id=e.id,
                    position=i,
                    sku=adj.sku,
                    qty=adj.qty,
                    amount_cents=adj.amount_cents,
                )
            )

    def _unpaid(self, session: Session, e: ev.Metric) -> None:
        """A cart closed without a receipt: its shopper left, or it outlived the longest
        visit (``closed_by``)."""
        name = e.data.labels.get("cart")
        if not name:
            raise Unexpected("data.labels.cart", f"a {UNPAID} metric names no cart")
        cart = _open_cart(session, e.store, name)
        if cart is None:
            raise Unexpected("data.labels.cart", f"cart {name!r} is not open")
        session.execute(
            sa.update(_CART)
            .where(_CART.c.id == cart[0])
            .values(
                status=e.data.labels.get("closed_by") or "exit",
                closed_at=e.at,
                closed_by_event=e.id,
            )
        )


def _open_cart(session: Session, store: str, cart: str) -> tuple[str, datetime] | None:
    """The open cart of that name: its id and when it last changed."""
    row = session.execute(
        sa.select(_CART.c.id, _CART.c.updated_at).where(
            _CART.c.store == store, _CART.c.cart == cart, _CART.c.status == "open"
        )
    ).first()
    return None if row is None else (row[0], row[1])


def _table(model: type[SQLModel]) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


_CART, _CHANGE, _SHELF = _table(Cart), _table(CartChange), _table(ShelfEvent)


def _check_receipt(d: ev.ReceiptData) -> None:
    """A receipt must add up: its lines, their amounts, its total."""
    if not d.lines:
        raise Unexpected("data.lines", "a receipt with no lines")
    seen: set[str] = set()
    for i, line in enumerate(d.lines):
        if line.sku in seen:
            raise Unexpected(f"data.lines[{i}].sku", f"{line.sku} is on two lines")
        seen.add(line.sku)
        if line.amount_cents != line.unit_cents * line.qty:
            raise Unexpected(
                f"data.lines[{i}].amount_cents",
                f"{line.amount_cents} is not {line.qty} x {line.unit_cents}",
            )
    total = sum(line.amount_cents for line in d.lines)
    if d.total_cents != total:
        raise Unexpected("data.total_cents", f"{d.total_cents} is not the lines' sum {total}")
