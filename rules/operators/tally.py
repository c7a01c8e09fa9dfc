"""``tally``: a keyed running multiset, the cart.

``add`` and ``remove`` change the cart of the key (or of the group the key belongs to,
by ``members``); a removal never takes a count below zero, and a put-back counts by SKU,
whichever shelf it goes back to. ``close`` removes the key from its group; when the last
member of a cart has closed, a non-empty cart becomes a receipt with priced lines from the
catalog, and its state is freed. An item the catalog does not know still goes on the
receipt, priced 0 and flagged for review (``review`` on the line, ``needs_review`` on the
receipt): the shopper gets a receipt and a person checks it, rather than no receipt at all.

``abandon`` is the holder leaving without closing (out of the store, not through the
gate): a non-empty cart then fires the rule's outputs (with ``cart``, ``items``,
``total_cents`` and ``closed_by`` in scope) instead of a receipt.

Every wait is bounded: a cart still open ``max_visit`` after it opened (its gate and exit
events both missed) closes as abandoned, with ``closed_by`` "timeout", so goods never stay
on an open cart unbilled and unreported. A group's members are a set: a member whose entry
is seen twice (two counting cameras, a re-entry) is one member, and one close lets it go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from core import events as ev
from rules.operators.base import Cond, Emitter, KeyFn, Partition, Rule, Scope

EXIT, TIMEOUT = "exit", "timeout"  # what closed a cart without a receipt (``closed_by``)

Price = Callable[[str], tuple[str, int, bool]]  # sku -> (name, unit cents, age restricted)


class Opened(msgspec.Struct, gc=False):
    """When and by what a cart opened: its visit's bound runs from ``event``."""

    event: ev.AnyEvent  # the first event of the cart (a member joining, or an add)
    token: int  # the token of its ``max_visit`` timer


class Carts(msgspec.Struct, kw_only=True):
    """A tally rule's state in a store (a dict of these names at run time), as a snapshot
    holds it."""

    carts: dict[str, dict[str, int]] = {}  # cart -> SKU -> count
    causes: dict[str, list[str]] = {}  # cart -> the ids of its changes, in order
    alias: dict[str, str] = {}  # member of a group -> the group's cart
    # group cart -> its members still shopping: a set, kept in arrival order (stable bytes)
    crew: dict[str, list[str]] = {}
    opened: dict[str, Opened] = {}  # open cart -> when it opened, and its timer


class Tally(Rule):
    kind = "tally"
    state_type = Carts

    def __init__(
        self,
        *args: Any,
        by: KeyFn,
        add: tuple[Cond, KeyFn, KeyFn],
        remove: tuple[Cond, KeyFn, KeyFn],
        close: Cond,
        abandon: Cond | None,
        members: tuple[Cond, KeyFn, KeyFn] | None,
        price: Price,
        currency: Callable[[str], str],
        max_visit_s: float = 4 * 3600.0,
        op_types: dict[str, frozenset[str] | None] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        # Per event type, which of members, add, remove, close, abandon could match: a set
        # lookup instead of evaluating five conditions on every event.
        names = ("members", "add", "remove", "close", "abandon")
        types = op_types or {}
        self._plan = {
            t: tuple((types.get(n) is None) or (t in types[n]) for n in names)  # type: ignore[operator]
            for t in ev.EVENT_TYPES
        }
        self.by, self.add, self.remove = by, add, remove
        self.close, self.abandon = close, abandon
        self.members, self.price, self.currency = members, price, currency
        self.max_visit_s = max_visit_s

    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        may_join, may_add, may_remove, may_close, may_abandon = self._plan[e.type]
        st = p.rule_state(self.id)
        if may_join and self.members is not None and self.members[0](e):
            member, cart = str(self.members[1](e)), str(self.members[2](e))
            st.setdefault("alias", {})[member] = cart
            crew = st.setdefault("crew", {}).setdefault(cart, [])
            if member not in crew:  # an entry seen twice is one member
                crew.append(member)
            self._open(p, st, cart, e, ts)
            return
        if may_add and self.add[0](e):
            key, cart_id = self._cart_of(st, e)
            self._open(p, st, cart_id, e, ts)
            sku, n = str(self.add[1](e)), int(self.add[2](e))
            carts = _table(st, "carts")
            cart = carts.get(cart_id)
            if cart is None:
                cart = carts[cart_id] = {}
            cart[sku] = cart.get(sku, 0) + n
            data = ev.CartItemData(sku=sku, qty=n, cart=cart_id)
            added = self.derive(ev.CartItemAdded, p, ts, key, data, (e.id,), out)
            causes = _table(st, "causes")
            of_cart = causes.get(cart_id)
            if of_cart is None:
                of_cart = causes[cart_id] = []
            of_cart.append(added.id)
        elif may_remove and self.remove[0](e):
            key, cart_id = self._cart_of(st, e)
            cart = st.get("carts", {}).get(cart_id)
            sku = str(self.remove[1](e))
            n = min(int(self.remove[2](e)), cart.get(sku, 0) if cart else 0)
            if n <= 0 or cart is None:
                return  # nothing of that SKU in the cart: a count never goes below zero
            cart[sku] -= n
            if not cart[sku]:
                del cart[sku]
            data = ev.CartItemData(sku=sku, qty=n, cart=cart_id)
            removed = self.derive(ev.CartItemRemoved, p, ts, key, data, (e.id,), out)
            st["causes"][cart_id].append(removed.id)
        elif may_close and self.close(e):
            self._close(p, st, *self._cart_of(st, e), e, ts, out, paid=True)
        elif may_abandon and self.abandon is not None and self.abandon(e):
            self._close(p, st, *self._cart_of(st, e), e, ts, out, paid=False)

    def _open(self, p: Partition, st: dict[str, Any], cart_id: str, e: ev.Event, ts: float) -> None:
        """Start the bound of a cart's visit at its first event."""
        opened = _table(st, "opened")
        if cart_id not in opened:
            token = p.new_token()
            opened[cart_id] = Opened(e, token)
            p.schedule(ts + self.max_visit_s, self.id, cart_id, token)

    def timer_alive(self, p: Partition, key: Any, token: int) -> bool:
        o = p.state.get(self.id, {}).get("opened", {}).get(key)
        return o is not None and o.token == token

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:
        """A cart still open ``max_visit`` after it opened: closed, its whole group with it."""
        st = p.rule_state(self.id)
        o = st.get("opened", {}).get(key)
        if o is None or o.token != token:
            return  # the cart closed (and maybe opened again) since
        del st["opened"][key]
        for member in st.get("crew", {}).pop(key, ()):
            st["alias"].pop(member, None)
        cart = st.setdefault("carts", {}).pop(key, None)
        causes = tuple(st.setdefault("causes", {}).pop(key, ()))
        if cart:
            holder = str(self.by(o.event))
            self.fire(p, Scope(o.event, self._extra(key, cart, TIMEOUT)), holder, ts, causes, out)

    def save_state(self, state: dict[str, Any]) -> Carts:
        return Carts(**state)

    def load_state(self, saved: Carts) -> dict[str, Any]:
        return {name: getattr(saved, name) for name in saved.__struct_fields__}

    def _cart_of(self, st: dict[str, Any], e: ev.Event) -> tuple[str, str]:
        """The event's key, and the cart it shops on (its group's, if it joined one)."""
        key = str(self.by(e))
        alias = st.get("alias")
        return key, (key if alias is None else alias.get(key, key))

    def _extra(self, cart_id: str, cart: dict[str, int], closed_by: str) -> dict[str, Any]:
        """What the outputs of a cart closed without a receipt see."""
        return {
            "cart": cart_id,
            "items": sum(cart.values()),
            "total_cents": sum(self._priced(sku)[1] * n for sku, n in cart.items()),
            "closed_by": closed_by,
        }

    def _priced(self, sku: str) -> tuple[str, int, bool, bool]:
        """(name, unit cents, age restricted, for review): an unknown SKU is priced 0."""
        try:
            return (*self.price(sku), False)
        except KeyError:
            return f"unknown item {sku}", 0, False, True

    def _close(
        self,
        p: Partition,
        st: dict[str, Any],
        key: str,
        cart_id: str,
        e: ev.Event,
        ts: float,
        out: Emitter,
        paid: bool,
    ) -> None:
        crew = st.get("crew", {}).get(cart_id)
        last = crew is None or not [m for m in crew if m != key]
        st.setdefault("alias", {})
        cart = st.setdefault("carts", {}).get(cart_id)
        priced = {sku: self._priced(sku) for sku in cart} if last and cart else {}
        st["alias"].pop(key, None)
        if crew is not None:
            if key in crew:
                crew.remove(key)
            if crew:
                return  # others of the group are still shopping on this cart
            del st["crew"][cart_id]
        st["carts"].pop(cart_id, None)
        st.setdefault("opened", {}).pop(cart_id, None)  # its timer is void
        # The receipt is caused by every change of the cart, and by the close.
        causes = (*st.setdefault("causes", {}).pop(cart_id, ()), e.id)
        if not cart:
            return
        if not paid:
            self.fire(p, Scope(e, self._extra(cart_id, cart, EXIT)), key, ts, causes, out)
            return
        lines = []
        for sku in sorted(cart):
            name, unit, restricted, review = priced[sku]
            qty = cart[sku]
            lines.append(
                ev.ReceiptLine(
                    sku=sku,
                    name=name,
                    qty=qty,
                    unit_cents=unit,
                    amount_cents=unit * qty,
                    age_restricted=restricted,
                    review=review,
                )
            )
        receipt = ev.ReceiptData(
            cart=cart_id,
            lines=tuple(lines),
            total_cents=sum(line.amount_cents for line in lines),
            currency=self.currency(p.store),
            age_check=any(line.age_restricted for line in lines),
            needs_review=any(line.review for line in lines),
        )
        self.derive(ev.ReceiptIssued, p, ts, key, receipt, causes, out)


def _table(st: dict[str, Any], name: str) -> dict[str, Any]:
    """``st.setdefault(name, {})``, without a new dict on every call."""
    table = st.get(name)
    if table is None:
        table = st[name] = {}
    return table  # type: ignore[no-any-return]
