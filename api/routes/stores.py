"""Stores, their layout (JSON and SVG) and their live state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.auth import Role, Viewer
from api.context import Ctx
from api.drawing import layout_svg
from api.problems import Problem, documented
from api.stores import known_stores, open_store
from readmodels.tables import Alert, Cart, Occupancy

router = APIRouter(tags=["stores"], responses=documented(401, 403, 404, 422))


class StoreOut(BaseModel):
    id: str
    name: str
    timezone: str | None = None
    currency: str | None = None
    layout: bool  # whether the API has its layout


class QueueOut(BaseModel):
    zone: str
    length: float
    at: datetime


class OpenCartOut(BaseModel):
    id: str
    cart: str
    opened_at: datetime
    updated_at: datetime
    items: int


class ActiveAlertOut(BaseModel):
    id: str
    name: str
    severity: str
    summary: str
    subject: str
    state: str
    raised_at: datetime


class LiveOut(BaseModel):
    """Occupancy and queues for every role; carts and alerts (tied to shoppers: a cart
    opening or an alert raised while one person is in the store is theirs), counted and
    listed, for operators and admins only (``null`` for a viewer)."""

    store: str
    occupancy: float | None
    occupancy_at: datetime | None
    queues: list[QueueOut]
    open_carts: int | None
    active_alerts: int | None
    carts: list[OpenCartOut] | None = None
    alerts: list[ActiveAlertOut] | None = None


ACTIVE = ("raised", "acknowledged", "confirmed")


@router.get("/stores", response_model=list[StoreOut])
def list_stores(ctx: Ctx, who: Viewer) -> list[StoreOut]:
    out = []
    for store in sorted(known_stores(ctx)):
        if not who.sees(store):
            continue
        layout = ctx.layouts.get(store)
        if layout is None:
            out.append(StoreOut(id=store, name=store, layout=False))
        else:
            s = layout.store
            out.append(
                StoreOut(
                    id=s.id, name=s.name, timezone=s.timezone, currency=s.currency, layout=True
                )
            )
    return out


def _layout(ctx: Ctx, store: str) -> Any:
    layout = ctx.layouts.get(store)
    if layout is None:
        raise Problem(404, "not found", f"no layout for store {store!r}", field="path.store")
    return layout


@router.get("/stores/{store}/layout", response_model=dict[str, Any])
def get_layout(ctx: Ctx, who: Viewer, store: str) -> dict[str, Any]:
    """The layout file as JSON (docs/layout.md): floor, lines, zones, shelves, cameras, catalog."""
    open_store(ctx, who, store)
    return msgspec.to_builtins(_layout(ctx, store))  # type: ignore[no-any-return]


@router.get(
    "/stores/{store}/layout.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def get_layout_svg(ctx: Ctx, who: Viewer, store: str) -> Response:
    open_store(ctx, who, store)
    return Response(layout_svg(_layout(ctx, store)), media_type="image/svg+xml")


@router.get("/stores/{store}/live", response_model=LiveOut)
def live(ctx: Ctx, who: Viewer, store: str) -> LiveOut:
    """What the store holds now: occupancy and queues, open carts, active alerts."""
    open_store(ctx, who, store)
    with Session(ctx.db) as s:
        last = s.exec(
            select(Occupancy)
            .where(Occupancy.store == store, Occupancy.zone == "")
            .order_by(col(Occupancy.at).desc())
            .limit(1)
        ).first()
        newest = (
            select(Occupancy.zone, func.max(Occupancy.at).label("at"))
            .where(Occupancy.store == store, Occupancy.zone != "")
            .group_by(col(Occupancy.zone))
            .subquery()
        )
        queues = s.exec(
            select(Occupancy)
            .join(
                newest, (col(Occupancy.zone) == newest.c.zone) & (col(Occupancy.at) == newest.c.at)
            )
            .where(Occupancy.store == store)
            .order_by(col(Occupancy.zone))
        ).all()
        # An open cart holding nothing is no one's shopping (all put back): not shown.
        holding = (Cart.store == store, Cart.status == "open", col(Cart.items) > 0)
        open_carts = s.exec(select(func.count()).select_from(Cart).where(*holding)).one()
        active = (
            Alert.store == store,
            col(Alert.state).in_(ACTIVE),
            col(Alert.resolved_at).is_(None),
        )
        active_alerts = s.exec(select(func.count()).select_from(Alert).where(*active)).one()
        out = LiveOut(
            store=store,
            occupancy=last.value if last else None,
            occupancy_at=last.at if last else None,
            queues=[QueueOut(zone=q.zone, length=q.value, at=q.at) for q in queues],
            open_carts=None,
            active_alerts=None,
        )
        if who.may(Role.OPERATOR):
            out.open_carts, out.active_alerts = open_carts, active_alerts
            carts = s.exec(
                select(Cart).where(*holding).order_by(col(Cart.opened_at).desc()).limit(100)
            ).all()
            alerts = s.exec(
                select(Alert).where(*active).order_by(col(Alert.raised_at).desc()).limit(100)
            ).all()
            out.carts = [OpenCartOut.model_validate(c, from_attributes=True) for c in carts]
            out.alerts = [ActiveAlertOut.model_validate(a, from_attributes=True) for a in alerts]
    return out
