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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select

from core import events as ev
from readmodels import bulk
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
CHUNK = 200  # keys to an IN (...) of a look-up

Batch = Sequence[tuple[int, ev.Event]]


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

    checks_first = True

    def wants(self, event: ev.Event) -> bool:
        return not isinstance(event, ev.Metric) or event.data.name == UNPAID

    def apply_all(self, session: Session, batch: Batch) -> dict[int, Unexpected]:
        """A batch's picks, cart changes, receipts and unpaid carts, checked against the
        carts as the batch leaves them and written a table at a time; a correction writes
        what came before it first, then goes in a savepoint of its own."""
        work = _Work(session, batch)
        refused: dict[int, Unexpected] = {}
        for i, (seq, event) in enumerate(batch):
            try:
                match event:
                    case ev.ItemPicked() | ev.ItemPutBack():
                        work.shelf(seq, event)
                    case ev.CartItemAdded() | ev.CartItemRemoved():
                        work.change(seq, event)
                    case ev.ReceiptIssued():
                        work.receipt(seq, event)
                    case ev.Metric() if event.data.name == UNPAID:
                        work.unpaid(event)
                    case ev.ReceiptCorrected():
                        work.write()
                        with session.begin_nested():
                            self._correction(session, seq, event)
            except Unexpected as exc:
                refused[i] = exc
        work.write()
        return refused

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


def _table(model: type[SQLModel]) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


_CART, _CHANGE, _SHELF = _table(Cart), _table(CartChange), _table(ShelfEvent)
_CHANGES = (ev.CartItemAdded, ev.CartItemRemoved)


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


@dataclass(slots=True)
class _Cart:
    """A cart as the batch leaves it: written once, at the end (inserted if new)."""

    id: str
    store: str
    cart: str
    opened_at: datetime
    updated_at: datetime
    items: int
    new: bool
    status: str = "open"
    closed_at: datetime | None = None
    receipt_id: str | None = None
    closed_by_event: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "store": self.store,
            "cart": self.cart,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "closed_at": self.closed_at,
            "status": self.status,
            "items": self.items,
            "receipt_id": self.receipt_id,
            "closed_by_event": self.closed_by_event,
        }


class _Work:
    """One batch of the receipts projection: what the tables hold that the batch reads
    (its open carts, what they hold of each SKU, the changes and picks its receipts cite),
    looked up in a few statements first; what it writes, kept until ``write``. Each event
    is checked before it changes anything here, so a refused one leaves no trace."""

    def __init__(self, session: Session, batch: Batch) -> None:
        self.session = session
        names: set[tuple[str, str]] = set()
        cited: set[str] = set()
        for _, e in batch:
            match e:
                case ev.CartItemAdded() | ev.CartItemRemoved():
                    names.add((e.store, e.data.cart))
                case ev.ReceiptIssued():
                    names.add((e.store, e.data.cart))
                    cited.update(e.caused_by)
                case ev.Metric() if e.data.labels.get("cart"):
                    names.add((e.store, e.data.labels["cart"]))
        self.open: dict[tuple[str, str], _Cart] = {}
        for rows in _chunks(sorted(names)):
            query = sa.select(_CART).where(
                _CART.c.status == "open", sa.tuple_(_CART.c.store, _CART.c.cart).in_(rows)
            )
            for c in session.execute(query).mappings():
                self.open.setdefault(
                    (c["store"], c["cart"]),
                    _Cart(
                        id=c["id"],
                        store=c["store"],
                        cart=c["cart"],
                        opened_at=c["opened_at"],
                        updated_at=c["updated_at"],
                        items=c["items"],
                        new=False,
                    ),
                )
        self.held: dict[tuple[str, str], int] = {}
        for ids in _chunks(sorted(c.id for c in self.open.values())):
            query = (
                sa.select(_CHANGE.c.cart_id, _CHANGE.c.sku, func.sum(_CHANGE.c.qty))
                .where(_CHANGE.c.cart_id.in_(ids))
                .group_by(_CHANGE.c.cart_id, _CHANGE.c.sku)
            )
            for cart_id, sku, qty in session.execute(query):
                self.held[(cart_id, sku)] = int(qty)
        # The changes and picks a receipt may cite: those the tables hold, then the batch's.
        self.changes: dict[str, dict[str, Any]] = {}
        for ids in _chunks(sorted(cited)):
            for c in session.execute(sa.select(_CHANGE).where(_CHANGE.c.id.in_(ids))).mappings():
                self.changes[c["id"]] = dict(c)
        self.picks: dict[str, dict[str, Any]] = {}
        causes = {c["cause_id"] for c in self.changes.values()}
        causes.update(e.caused_by[0] for _, e in batch if isinstance(e, _CHANGES) and e.caused_by)
        for ids in _chunks(sorted(causes)):
            for p in session.execute(sa.select(_SHELF).where(_SHELF.c.id.in_(ids))).mappings():
                self.picks[p["id"]] = dict(p)
        self._picks: list[dict[str, Any]] = []  # to write
        self._changes: list[dict[str, Any]] = []
        self._carts: dict[str, _Cart] = {}  # every cart the batch changed, by id
        self._receipts: list[dict[str, Any]] = []
        self._lines: list[dict[str, Any]] = []
        self._evidence: list[dict[str, Any]] = []

    def shelf(self, seq: int, e: ev.ItemPicked | ev.ItemPutBack) -> None:
        d = e.data
        self.picks[e.id] = row = {
            "id": e.id,
            "seq": seq,
            "store": e.store,
            "type": e.type,
            "subject": e.subject,
            "sku": d.sku,
            "shelf": d.shelf,
            "qty": d.qty,
            "source": e.source,
            "at": e.at,
        }
        self._picks.append(row)

    def change(self, seq: int, e: ev.CartItemAdded | ev.CartItemRemoved) -> None:
        added = isinstance(e, ev.CartItemAdded)
        qty = e.data.qty if added else -e.data.qty
        cart = self.open.get((e.store, e.data.cart))
        if cart is None:
            if not added:
                raise Unexpected("data.cart", f"removes from cart {e.data.cart!r}, not open")
            cart = _Cart(
                id=e.id,
                store=e.store,
                cart=e.data.cart,
                opened_at=e.at,
                updated_at=e.at,
                items=0,
                new=True,
            )
            self.open[(e.store, e.data.cart)] = cart
        elif not added:
            held = self.held.get((cart.id, e.data.sku), 0)
            if held < e.data.qty:
                raise Unexpected(
                    "data.qty", f"removes {e.data.qty} {e.data.sku} from a cart holding {held}"
                )
        cart.updated_at = max(cart.updated_at, e.at)
        cart.items += qty
        self._carts[cart.id] = cart
        key = (cart.id, e.data.sku)
        self.held[key] = self.held.get(key, 0) + qty
        self.changes[e.id] = row = {
            "id": e.id,
            "seq": seq,
            "cart_id": cart.id,
            "store": e.store,
            "subject": e.subject,
            "sku": e.data.sku,
            "qty": qty,
            "at": e.at,
            "rule_id": e.rule.id,
            "rule_version": e.rule.version,
            "cause_id": e.caused_by[0],
        }
        self._changes.append(row)

    def receipt(self, seq: int, e: ev.ReceiptIssued) -> None:
        d = e.data
        _check_receipt(d)
        cart = self.open.pop((e.store, d.cart), None)
        if cart is not None:
            cart.status, cart.closed_at, cart.receipt_id = "paid", e.at, e.id
            cart.closed_by_event = e.caused_by[-1]
            self._carts[cart.id] = cart
        self._receipts.append(
            {
                "id": e.id,
                "seq": seq,
                "store": e.store,
                "subject": e.subject,
                "cart": d.cart,
                "cart_id": cart.id if cart is not None else None,
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
            }
        )
        self._lines += [
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
        ]
        for position, change_id in enumerate(e.caused_by):
            change = self.changes.get(change_id)
            if change is None:
                continue  # the cart's close (the gate), or a change the log no longer holds
            cause = self.picks.get(change["cause_id"])
            self._evidence.append(
                {
                    "receipt_id": e.id,
                    "change_id": change["id"],
                    "sku": change["sku"],
                    "position": position,
                    "qty": change["qty"],
                    "change_at": change["at"],
                    "subject": change["subject"],
                    "rule_id": change["rule_id"],
                    "rule_version": change["rule_version"],
                    "cause_id": change["cause_id"],
                    "cause_type": cause["type"] if cause else None,
                    "cause_seq": cause["seq"] if cause else None,
                    "source": cause["source"] if cause else None,
                    "shelf": cause["shelf"] if cause else None,
                    "cause_at": cause["at"] if cause else None,
                }
            )

    def unpaid(self, e: ev.Metric) -> None:
        """A cart closed without a receipt: its shopper left, or it outlived the longest
        visit (``closed_by``)."""
        name = e.data.labels.get("cart")
        if not name:
            raise Unexpected("data.labels.cart", f"a {UNPAID} metric names no cart")
        cart = self.open.pop((e.store, name), None)
        if cart is None:
            raise Unexpected("data.labels.cart", f"cart {name!r} is not open")
        cart.status = e.data.labels.get("closed_by") or "exit"
        cart.closed_at, cart.closed_by_event = e.at, e.id
        self._carts[cart.id] = cart

    def write(self) -> None:
        """Everything so far, a statement a table; the carts stay known (no longer new)."""
        s = self.session
        bulk.insert(s, _SHELF, self._picks)
        carts = list(self._carts.values())
        bulk.insert(s, _CART, [c.row() for c in carts if c.new])
        # Carts the tables hold: every column but the key takes the batch's value.
        bulk.insert(s, _CART, [c.row() for c in carts if not c.new], conflict="overwrite")
        bulk.insert(s, _CHANGE, self._changes)
        bulk.insert(s, _table(Receipt), self._receipts)
        bulk.insert(s, _table(ReceiptLine), self._lines)
        bulk.insert(s, _table(LineEvidence), self._evidence)
        for c in carts:
            c.new = False
        self._picks, self._changes, self._carts = [], [], {}
        self._receipts, self._lines, self._evidence = [], [], []


def _chunks(keys: list[Any]) -> list[list[Any]]:
    return [keys[i : i + CHUNK] for i in range(0, len(keys), CHUNK)]
