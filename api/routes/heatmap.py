"""The heatmap over a time range: cells as JSON, and a PNG over the floor plan.

From ``heatmap_hour``: dwell adds up exactly; ``visits`` counts a person once per 10 s
window (a day's distinct visitors are the day window's, ``heatmap_cell`` with span
86,400 s, given with ``day=true``). The rows are hours: a range is widened to the whole
hours it touches, and the answer's ``start`` and ``end`` say so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.auth import Viewer
from api.context import Context, Ctx
from api.drawing import heatmap_png
from api.pages import Moment
from api.problems import Problem, documented
from api.stores import open_store
from readmodels.tables import HeatmapHour

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


def _hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole hours from ``start`` to ``end``."""
    first = start.replace(minute=0, second=0, microsecond=0)
    last = end.replace(minute=0, second=0, microsecond=0)
    return first, last if last == end else last + timedelta(hours=1)


def cells(ctx: Context, store: str, start: datetime, end: datetime) -> HeatmapOut:
    h = HeatmapHour
    start, end = _hours(start, end)
    with Session(ctx.db) as s:
        size = s.exec(
            select(h.size).where(h.store == store).order_by(col(h.hour).desc()).limit(1)
        ).first()
        rows = (
            s.exec(
                select(h.cell_x, h.cell_y, func.sum(h.dwell_s), func.sum(h.window_visits))
                .where(
                    h.store == store,
                    h.size == size,
                    col(h.hour) >= start,
                    col(h.hour) < end,
                )
                .group_by(col(h.cell_x), col(h.cell_y))
                .order_by(col(h.cell_x), col(h.cell_y))
            ).all()
            if size is not None
            else []
        )
    return HeatmapOut(
        store=store,
        start=start,
        end=end,
        size=size,
        cells=[Cell(x=x, y=y, dwell_s=float(d or 0), visits=int(v or 0)) for x, y, d, v in rows],
    )


Since = Annotated[Moment | None, Query(alias="from", description="default: a day before to")]
Until = Annotated[Moment | None, Query(alias="to", description="default: now")]


@router.get("/stores/{store}/heatmap", response_model=HeatmapOut)
def get_heatmap(
    ctx: Ctx, who: Viewer, store: str, since: Since = None, until: Until = None
) -> HeatmapOut:
    open_store(ctx, who, store)
    start, end = _range(since, until)
    return cells(ctx, store, start, end)


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
    out = cells(ctx, store, start, end)
    points = [(c.x, c.y, c.dwell_s if value == "dwell" else float(c.visits)) for c in out.cells]
    png = heatmap_png(
        ctx.layouts.get(store),
        points,
        out.size or 0.5,
        scale=scale,
        unit="s of dwell" if value == "dwell" else "visits",
    )
    return Response(png, media_type="image/png")
