"""Alerts: list and filter; acknowledge, confirm, dismiss, resolve (each an event).

An action moves the alert along its life cycle (``readmodels.alerts.NEXT``); one the
alert's state does not allow is refused with 409 naming the state. The state is the read
models', and the actions this API process published that they do not show yet (a dismiss
clicked just before a close), as the receipts' corrections in flight are counted."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from api.auth import Operator
from api.context import Context, Ctx
from api.operator import (
    Accepted,
    IdempotencyKey,
    applied_seq,
    audited,
    key_id,
    publish,
    same_action,
)
from api.pages import Limit, Moment, Offset, next_offset
from api.problems import Problem, documented
from api.stores import open_store
from core import events as ev
from readmodels.alerts import ACTIONS as STATES
from readmodels.alerts import refusal
from readmodels.tables import Alert, AlertAction

router = APIRouter(tags=["alerts"], responses=documented(401, 403, 404, 422))

State = Literal["raised", "acknowledged", "confirmed", "dismissed", "closed"]
ACTIONS: dict[str, type[ev.OperatorEvent]] = {
    "acknowledge": ev.AlertAcknowledged,
    "confirm": ev.AlertConfirmed,
    "dismiss": ev.AlertDismissed,
    "resolve": ev.AlertClosed,
}
Action = Literal["acknowledge", "confirm", "dismiss", "resolve"]
ACTIVE = ("raised", "acknowledged", "confirmed")  # as the live state counts them


class AlertPage(BaseModel):
    items: list[Alert]
    next_offset: int | None


class AlertDetail(BaseModel):
    alert: Alert
    actions: list[AlertAction]


class ActionIn(BaseModel):
    reason: str = Field(default="", max_length=1000)


DECISIONS = ("confirm", "dismiss")  # final: they need a reason, kept with the decision
IN_FLIGHT_MAX = 10_000  # alerts whose last action this process remembers


@dataclass
class _InFlight:
    """The last action this process published on each alert (its event id and the state
    it moves to), until the read models show it; one action at a time, so two clicks
    cannot both pass the check."""

    last: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def note(self, alert_id: str, event_id: str, state: str) -> None:
        self.last[alert_id] = (event_id, state)
        self.last.move_to_end(alert_id)
        while len(self.last) > IN_FLIGHT_MAX:
            self.last.popitem(last=False)


def _in_flight(ctx: Context) -> _InFlight:
    if ctx.alert_actions is None:
        ctx.alert_actions = _InFlight()
    return ctx.alert_actions  # type: ignore[no-any-return]


def _state(ctx: Context, alert: Alert, pending: tuple[str, str] | None) -> str:
    """The alert's state counting an action in flight (not yet in the read models)."""
    if pending is not None and applied_seq(ctx, AlertAction, pending[0]) is None:
        return pending[1]
    return alert.state


@router.get("/stores/{store}/alerts", response_model=AlertPage)
def list_alerts(
    ctx: Ctx,
    who: Operator,
    store: str,
    state: Annotated[list[State] | None, Query()] = None,
    severity: Annotated[list[Literal["info", "warning", "critical"]] | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=128)] = None,
    active: Annotated[
        bool | None,
        Query(description="raised, acknowledged or confirmed, and not resolved by its rule"),
    ] = None,
    since: Annotated[Moment | None, Query(alias="from")] = None,
    until: Annotated[Moment | None, Query(alias="to")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> AlertPage:
    open_store(ctx, who, store)
    q = select(Alert).where(Alert.store == store)
    if state:
        q = q.where(col(Alert.state).in_(state))
    if severity:
        q = q.where(col(Alert.severity).in_(severity))
    if name:
        q = q.where(Alert.name == name)
    if active is not None:
        open_ = col(Alert.state).in_(ACTIVE) & col(Alert.resolved_at).is_(None)
        q = q.where(open_ if active else ~open_)
    if since is not None:
        q = q.where(col(Alert.raised_at) >= since)
    if until is not None:
        q = q.where(col(Alert.raised_at) < until)
    q = q.order_by(col(Alert.raised_at).desc(), col(Alert.id)).offset(offset).limit(limit + 1)
    with Session(ctx.db) as s:
        rows = list(s.exec(q).all())
    return AlertPage(items=rows[:limit], next_offset=next_offset(rows, limit, offset))


def _alert(ctx: Ctx, store: str, alert_id: str) -> Alert:
    with Session(ctx.db) as s:
        alert = s.get(Alert, alert_id)
    if alert is None or alert.store != store:
        raise Problem(404, "not found", f"no alert {alert_id!r} in {store}", field="path.alert_id")
    return alert


@router.get("/stores/{store}/alerts/{alert_id}", response_model=AlertDetail)
def get_alert(ctx: Ctx, who: Operator, store: str, alert_id: str) -> AlertDetail:
    open_store(ctx, who, store)
    alert = _alert(ctx, store, alert_id)
    with Session(ctx.db) as s:
        actions = s.exec(
            select(AlertAction)
            .where(AlertAction.alert_id == alert_id)
            .order_by(col(AlertAction.seq), col(AlertAction.id))
        ).all()
    return AlertDetail(alert=alert, actions=list(actions))


@router.post(
    "/stores/{store}/alerts/{alert_id}/{action}",
    response_model=Accepted,
    status_code=202,
    responses=documented(409, 503),
)
async def act_on_alert(
    ctx: Ctx,
    who: Operator,
    store: str,
    alert_id: str,
    action: Action,
    idempotency_key: IdempotencyKey = None,
    body: ActionIn | None = None,
) -> Accepted:
    """Publish the action as an event (``alert.acknowledged``, ``alert.confirmed``,
    ``alert.dismissed``, ``alert.closed``) with who did it; the alert shows it once the
    projections have applied it."""
    await run_in_threadpool(open_store, ctx, who, store)
    alert = await run_in_threadpool(_alert, ctx, store, alert_id)
    reason = body.reason.strip() if body else ""
    if action in DECISIONS and not reason:
        raise Problem(
            422,
            "invalid request",
            f"a reason is required to {action} an alert (it is kept with the decision)",
            field="body.reason",
        )
    data = ev.AlertActionData(alert=alert.id, by=who.who[:128], reason=reason)
    if idempotency_key is not None:  # a retry of what is applied already: the same answer
        eid = key_id(who, ACTIONS[action], store, alert.id, idempotency_key)
        seq = await run_in_threadpool(applied_seq, ctx, AlertAction, eid)
        if seq is not None:
            await same_action(ctx, seq, eid, data)
            done = Accepted(event_id=eid, type=ACTIONS[action].type, seq=seq, duplicate=True)
            return await audited(ctx, who, done, store=store, target=alert.id, detail=reason)
    flight = _in_flight(ctx)
    to = STATES[ACTIONS[action].type]
    async with flight.lock:
        pending = flight.last.get(alert.id)
        retry = (
            idempotency_key is not None
            and pending is not None
            and pending[0] == key_id(who, ACTIONS[action], store, alert.id, idempotency_key)
        )
        state = await run_in_threadpool(_state, ctx, alert, pending)
        if not retry and (why := refusal(state, to)) is not None:
            if state == "closed" and alert.closed_at is not None:
                why += f" (closed at {alert.closed_at:%Y-%m-%d %H:%M:%S} by {alert.closed_by})"
            raise Problem(409, "conflict", why, field="path.alert_id")
        done = await publish(
            ctx,
            who,
            ACTIONS[action],
            store=store,
            subject=alert.subject,
            data=data,
            target=alert.id,
            key=idempotency_key,
        )
        flight.note(alert.id, done.event_id, to)
    return await audited(ctx, who, done, store=store, target=alert.id, detail=reason)
