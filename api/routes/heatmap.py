"""The heatmap over a time range: cells as JSON, and a PNG over the floor plan.

From ``heatmap_hour``: dwell adds up exactly; ``visits`` counts a person once per 10 s
window (a day's distinct visitors are the day window's, ``heatmap_cell`` with span
86,400 s, given with ``day=true``). The rows are hours: a range is widened to the whole
hours it touches, and the answer's ``start`` and ``end`` say so.

A viewer sees the hours that have ended by the store's clock (its latest metric) and in
which at least ``MIN_PEOPLE`` people came in: an hour of one shopper is that shopper's
path, and an open hour polled gives each step of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.auth import Role, Viewer
from api.context import Context, Ctx
from api.drawing import heatmap_png
from api.pages import Moment
from api.problems import Problem, documented
from api.routes.metrics import MIN_PEOPLE, has_ended
from api.stores import open_store
from readmodels.projection import whole_hours
from readmodels.tables import HeatmapHour, MetricHour

router = APIRouter(tags=["heatmap"], responses=documented(401, 403, 404, 422))
MAX_RANGE = timedelta(days=366)


class Cell(BaseModel):
    x: int  # the cell's column: floor(x / size)
    y: int
    dwell_s: float
    visits: int  # per 10 s window


class HeatmapOut(BaseModel):
    store: str
    start: datetime  # the whole hours the cells are of, the range asked for widened
    end: datetime
    size: float | None  # metres a side
    cells: list[Cell]
    hours_withheld: int = 0  # a viewer's: hours too quiet, or not yet ended, left out


def _range(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    end = until or datetime.now(UTC)
    start = since or end - timedelta(days=1)
    for name, t in (("query.from", start), ("query.to", end)):
        if t.tzinfo is None:
            raise Problem(422, "invalid request", "a time needs its zone (Z or +hh:mm)", field=name)
    if end <= start:
        raise Problem(422, "invalid request", "to must be after from", field="query.to")
    if end - start > MAX_RANGE:
        raise Problem(422, "invalid request", "at most 366 days at once", field="query.to")
    return start.astimezone(UTC), end.astimezone(UTC)


def cells(
    ctx: Context, store: str, start: datetime, end: datetime, viewer: bool = False
) -> HeatmapOut:
    h = HeatmapHour
    start, end = whole_hours(start, end)
    with Session(ctx.db) as s:
        size = s.exec(
            select(h.size).where(h.store == store).order_by(col(h.hour).desc()).limit(1)
        ).first()
        q = (
            select(h.cell_x, h.cell_y, func.sum(h.dwell_s), func.sum(h.window_visits))
            .where(h.store == store, h.size == size, col(h.hour) >= start, col(h.hour) < end)
            .group_by(col(h.cell_x), col(h.cell_y))
            .order_by(col(h.cell_x), col(h.cell_y))
        )
        withheld = 0
        if viewer and size is not None:
            held = set(s.exec(select(h.hour).distinct().where(
                h.store == store, h.size == size, col(h.hour) >= start, col(h.hour) < end
            )).all())  # fmt: skip
            shown = _busy_ended_hours(s, store, start, end)
            withheld = len({_aware(x) for x in held} - shown)
            q = q.where(col(h.hour).in_(sorted(shown)))
        rows = s.exec(q).all() if size is not None else []
    return HeatmapOut(
        store=store,
        start=start,
        end=end,
        size=size,
        cells=[Cell(x=x, y=y, dwell_s=float(d or 0), visits=int(v or 0)) for x, y, d, v in rows],
        hours_withheld=withheld,
    )


def _aware(at: datetime | str) -> datetime:
    """A time as the database gives it back (its text, or naive UTC) as a UTC time."""
    at = datetime.fromisoformat(at) if isinstance(at, str) else at
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _busy_ended_hours(s: Session, store: str, start: datetime, end: datetime) -> set[datetime]:
    """The hours of a range a viewer may see (the module's docstring), as UTC times."""
    m = MetricHour
    clock = s.exec(select(func.max(m.last_at)).where(m.store == store)).first()
    if clock is None:
        return set()
    footfall = s.exec(
        select(m.hour).where(
            m.store == store,
            m.name == "footfall",
            m.zone == "",
            col(m.hour) >= start,
            col(m.hour) < end,
            m.sum >= MIN_PEOPLE,
        )
    ).all()
    return {_aware(x) for x in footfall if has_ended(_aware(x), _aware(clock))}


Since = Annotated[Moment | None, Query(alias="from", description="default: a day before to")]
Until = Annotated[Moment | None, Query(alias="to", description="default: now")]


@router.get("/stores/{store}/heatmap", response_model=HeatmapOut)
def get_heatmap(
    ctx: Ctx, who: Viewer, store: str, since: Since = None, until: Until = None
) -> HeatmapOut:
    open_store(ctx, who, store)
    start, end = _range(since, until)
    return cells(ctx, store, start, end, who.role is Role.VIEWER)


@router.get(
    "/stores/{store}/heatmap.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_heatmap_png(
    ctx: Ctx,
    who: Viewer,
    store: str,
    since: Since = None,
    until: Until = None,
    value: Literal["dwell", "visits"] = "dwell",
    scale: Annotated[float, Query(ge=10, le=200, description="pixels a metre")] = 60.0,
) -> Response:
    open_store(ctx, who, store)
    start, end = _range(since, until)
    out = cells(ctx, store, start, end, who.role is Role.VIEWER)
    points = [(c.x, c.y, c.dwell_s if value == "dwell" else float(c.visits)) for c in out.cells]
    png = heatmap_png(
        ctx.layouts.get(store),
        points,
        out.size or 0.5,
        scale=scale,
        unit="s of dwell" if value == "dwell" else "visits",
    )
    return Response(png, media_type="image/png")
