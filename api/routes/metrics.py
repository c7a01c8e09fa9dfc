"""Metrics per store and zone over a time range, by hour or by day (the store's local
day where its layout gives a time zone), from ``metric_hour``; and the same as CSV.

Each row keeps what the hour rows hold (count, sum, min, max, last) so every metric
reads as it should: footfall adds up (``sum``), occupancy is a level (``last``, ``max``),
a rate or a wait is a mean (``mean`` = sum / count). ``kpis`` names the usual ones.

A viewer sees no one's own figures. The gauges of people present and the store's counts
(``GAUGES``, ``STORE_COUNTS``: occupancy, queue length, footfall, passers-by, capture
rates) whole. Single visits' figures (a dwell, a wait, an unpaid cart: ``per_visit``) and
a zone's visits only for an hour that has ended by the store's clock and in which at
least ``MIN_PEOPLE`` different shoppers made them, never their min, max or last; an hour
that is not is left out whole, counted in ``hours_withheld``. Nothing of the other
figures (means, rates, percentiles over a window: over one shopper they are that
shopper's), which are an operator's. A day, and the KPIs, add up the hours a viewer may
see, so that no two answers differ by a hidden hour. The rows are hours: a range is
widened to whole hours, and ``start``/``end`` say which."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import sqlalchemy as sa
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from api.auth import Role, Viewer
from api.context import Context, Ctx
from api.feed import GAUGES, STORE_COUNTS
from api.pages import Moment
from api.problems import Problem, documented
from api.stores import open_store
from readmodels.measures import Metrics
from readmodels.projection import whole_hours
from readmodels.tables import MetricHour, MetricPoint, Position

router = APIRouter(tags=["metrics"], responses=documented(401, 403, 404, 422))

Granularity = Literal["hour", "day"]
MAX_RANGE = timedelta(days=366)
MIN_PEOPLE = 5  # different shoppers behind a figure a viewer sees, at least
ZONE_COUNTS = {"dwell.visits": "zone_visit_s"}  # a zone's visits: whose people they are
CLOSED_AFTER = timedelta(seconds=30)  # an hour a viewer sees ended this long ago (late events)
CSV_COLUMNS = ("start", "name", "zone", "count", "sum", "min", "max", "last", "mean", "per_visit")
# The metrics of the standard packs (rules/packs/traffic.yaml), and how each reads.
KPIS: dict[str, tuple[str, str]] = {
    "footfall": ("footfall", "sum"),
    "occupancy_max": ("occupancy", "max"),
    # entries / passers-by and entries / all traffic: from the range's sums (``_capture``)
    "capture_rate": ("capture_rate", "mean"),
    "capture_rate_of_traffic": ("capture_rate_of_traffic", "mean"),
    "store_conversion": ("store_conversion", "last"),
    "zone_conversion": ("zone_conversion", "mean"),
    "dwell_s": ("zone_visit_s", "mean"),
    "queue_wait_s": ("queue_wait_s", "mean"),
    "queue_wait_max_s": ("queue_wait_s", "max"),
    "queue_length_max": ("queue_length", "max"),
}


class Point(BaseModel):
    name: str
    zone: str  # "" for the whole store
    start: datetime  # the bucket's start (UTC)
    count: int
    sum: float
    min: float | None  # null for a viewer of single visits' values
    max: float | None
    last: float | None
    mean: float | None  # null where nothing was summed
    per_visit: bool


class MetricsOut(BaseModel):
    store: str
    start: datetime
    end: datetime
    granularity: Granularity
    timezone: str
    series: list[Point]
    hours_withheld: int  # a viewer's: hours of few shoppers, or not yet ended, left out
    role: str  # whose view: a viewer's leaves out what the module's docstring says
    kpis: dict[str, float | None]  # over the whole range, for the store (zone "")


def _range(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    end = until or now
    start = since or end - timedelta(days=1)
    for name, t in (("query.from", start), ("query.to", end)):
        if t.tzinfo is None:
            raise Problem(422, "invalid request", "a time needs its zone (Z or +hh:mm)", field=name)
    if end <= start:
        raise Problem(422, "invalid request", "to must be after from", field="query.to")
    if end - start > MAX_RANGE:
        raise Problem(422, "invalid request", "at most 366 days at once", field="query.to")
    return start.astimezone(UTC), end.astimezone(UTC)


def _zone(ctx: Context, store: str) -> ZoneInfo:
    layout = ctx.layouts.get(store)
    try:
        return ZoneInfo(layout.store.timezone) if layout else ZoneInfo("UTC")
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _bucket(hour: datetime, granularity: Granularity, tz: ZoneInfo) -> datetime:
    if granularity == "hour":
        return hour
    local = hour.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


Row = tuple[str, str, Any, int, float, float, float, float, Any, bool]  # times as held
HOUR = timedelta(hours=1)
CACHED = 256  # answers kept, the oldest dropped first
_POSITION: sa.Table = Position.__table__  # type: ignore[attr-defined]
_METRICS_POSITION = sa.select(_POSITION.c.scope, _POSITION.c.stream, _POSITION.c.seq).where(
    _POSITION.c.projection == Metrics.name
)


def _cache(ctx: Context) -> dict[tuple[Any, ...], tuple[tuple[Any, ...], dict[str, Any]]]:
    """Answers by question, each with the metrics projection's position it was read at:
    a dashboard asks for the same day again and again, and the hour rows change only
    when that position moves (a rebuild removes it). Kept per app, in insertion order."""
    return ctx.__dict__.setdefault("_metrics_cache", {})  # type: ignore[no-any-return]


def _utc(held: datetime | str) -> datetime:
    """A time as ``UTCDateTime`` reads it: SQLite holds its text, PostgreSQL naive UTC."""
    at = datetime.fromisoformat(held) if isinstance(held, str) else held
    return at.replace(tzinfo=UTC)


def _fold(rows: list[Row]) -> tuple[int, float, float, float, float]:
    """count, sum, min, max and the last value of hour rows."""
    _, _, hour, count, total, lo, hi, last, last_at, _ = rows[0]
    newest = (last_at, hour)
    for r in rows[1:]:
        count += r[3]
        total += r[4]
        lo = min(lo, r[5])
        hi = max(hi, r[6])
        if (r[8], r[2]) > newest:
            newest, last = (r[8], r[2]), r[7]
    return count, total, lo, hi, last


def compute(
    ctx: Context,
    store: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    names: list[str] | None,
    zone: str | None,
    viewer: bool = False,
) -> dict[str, Any]:
    """``MetricsOut`` as plain data: a day of a store's hours is a thousand rows, and
    models for each cost more than the query. ``viewer``: a viewer's (the module's
    docstring)."""
    tz = _zone(ctx, store)
    start, end = whole_hours(start, end)
    t = MetricHour.__table__  # type: ignore[attr-defined]
    # The times as the database holds them (no per-row type processing: a day is a
    # thousand rows): ``hour`` converted once a distinct value, for its bucket; both only
    # compared with their like (the same text format, or naive UTC times, on one database).
    raw = sa.types.NullType()
    q = sa.select(
        t.c.name,
        t.c.zone,
        sa.type_coerce(t.c.hour, raw),
        t.c.count,
        t.c.sum,
        t.c.min,
        t.c.max,
        t.c.last,
        sa.type_coerce(t.c.last_at, raw),
        t.c.per_visit,
    ).where(t.c.store == store, t.c.hour >= start, t.c.hour < end)
    if names:
        q = q.where(t.c.name.in_(names))
    if zone is not None:
        q = q.where(t.c.zone == zone)
    key = (store, start, end, granularity, tuple(names or ()), zone, viewer)
    cache = _cache(ctx)
    with ctx.db.connect() as conn:  # one transaction: one snapshot on SQLite
        # Where the metrics projection stands, read first: it commits the hour rows and
        # its position together, so the rows are at least as new as the position read.
        version = tuple(conn.execute(_METRICS_POSITION).all())
        hit = cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        fetched = conn.execute(q).all()
        held = 0
        if viewer:
            clock = conn.execute(
                sa.select(sa.func.max(sa.type_coerce(t.c.last_at, raw))).where(t.c.store == store)
            ).scalar()
            p = MetricPoint.__table__  # type: ignore[attr-defined]
            people = {
                (name, z, hour): n
                for name, z, hour, n in conn.execute(
                    sa.select(
                        p.c.name, p.c.zone, sa.type_coerce(p.c.hour, raw),
                        sa.func.count(sa.distinct(p.c.subject)),
                    )
                    .where(p.c.store == store, p.c.hour >= start, p.c.hour < end)
                    .where(p.c.window_start.is_(None))
                    .group_by(p.c.name, p.c.zone, p.c.hour)
                )
            }  # fmt: skip
            fetched, held = _for_viewer(fetched, _utc(clock) if clock else None, people)
    out = _computed(fetched, held, store, start, end, granularity, tz, viewer)
    cache[key] = (version, out)
    while len(cache) > CACHED:
        cache.pop(next(iter(cache)))
    return out


def has_ended(hour: datetime, clock: datetime | None) -> bool:
    """Whether the hour from ``hour`` has ended by the store's clock, late events too."""
    return clock is not None and hour + HOUR + CLOSED_AFTER <= clock


def _for_viewer(
    rows: Sequence[Any], clock: datetime | None, people: dict[tuple[Any, ...], int]
) -> tuple[list[Row], int]:
    """The hour rows a viewer may see, and how many of the figures of few shoppers were
    held back (an hour of fewer than MIN_PEOPLE, or not yet ended by the store's clock:
    polled, each new visit would show as the difference). Figures of no allowed kind are
    left out uncounted."""
    shown: list[Row] = []
    held = 0
    for r in rows:
        name, zone, hour = r[0], r[1], r[2]
        if name in GAUGES or (name in STORE_COUNTS and zone == ""):
            shown.append(r)
            continue
        if r[9]:
            n = people.get((name, zone, hour), 0)
        elif name in ZONE_COUNTS:
            n = people.get((ZONE_COUNTS[name], zone, hour), 0)
        else:
            continue
        ended = has_ended(_utc(hour), clock)
        if ended and n >= MIN_PEOPLE:
            shown.append(r)
        else:
            held += 1
    return shown, held


def _computed(
    fetched: Sequence[Any],
    held: int,
    store: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    tz: ZoneInfo,
    viewer: bool,
) -> dict[str, Any]:
    rows: list[Row] = fetched  # type: ignore[assignment]
    buckets = {h: _bucket(_utc(h), granularity, tz) for h in {r[2] for r in rows}}
    groups: dict[tuple[str, str, datetime], list[Row]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1], buckets[r[2]]), []).append(r)
    series: list[dict[str, Any]] = []
    for (name, z, at), group in sorted(groups.items()):
        count, total, lo, hi, last = _fold(group)
        per_visit = any(r[9] for r in group)
        series.append(
            {
                "name": name,
                "zone": z,
                "start": at,
                "count": count,
                "sum": total,
                "min": None if viewer and per_visit else lo,
                "max": None if viewer and per_visit else hi,
                "last": None if viewer and per_visit else last,
                "mean": total / count if count else None,
                "per_visit": per_visit,
            }
        )
    kpis: dict[str, float | None] = {}
    per_zone = {"zone_visit_s", "queue_wait_s", "queue_length", "zone_conversion"}
    by_name: dict[str, list[Row]] = {}
    for r in rows:
        if r[1] == "" or r[0] in per_zone:
            by_name.setdefault(r[0], []).append(r)
    for kpi, (name, how) in KPIS.items():
        mine = by_name.get(name)
        if not mine:
            kpis[kpi] = None
            continue
        count, total, _, hi, last = _fold(mine)
        if viewer and how in ("max", "last") and any(r[9] for r in mine):
            kpis[kpi] = None  # one visit's
            continue
        kpis[kpi] = {
            "sum": total,
            "max": hi,
            "last": last,
            "mean": total / count if count else None,
        }[how]
    kpis.update(_capture(by_name))
    return {
        "store": store,
        "start": start,
        "end": end,
        "granularity": granularity,
        "timezone": str(tz),
        "series": series,
        "hours_withheld": held,
        "kpis": kpis,
        "role": "viewer" if viewer else "operator",
    }


def _capture(by_name: dict[str, list[Row]]) -> dict[str, float | None]:
    """The capture rates over the range from its sums: entries over passers-by, and
    entries over entries plus passers-by, of the hours whose passers-by were counted (an
    hour without is no part of either, as the rules leave its rate undefined). A mean of
    the hours' rates would weigh a quiet hour as much as a busy one. Read models of a
    traffic pack before 1.4.0 hold no passers-by counts: their KPIs stay the mean of the
    hours' rates, the only figure those rows allow."""
    passersby: dict[datetime, float] = {}
    for r in by_name.get("passersby", ()):
        passersby[r[2]] = passersby.get(r[2], 0.0) + r[4]
    counted = {hour for hour, n in passersby.items() if n > 0}
    if not counted:
        return {}
    entries = sum(r[4] for r in by_name.get("footfall", ()) if r[2] in counted)
    seen = sum(passersby[h] for h in counted)
    return {
        "capture_rate": entries / seen,
        "capture_rate_of_traffic": entries / (entries + seen),
    }


Since = Annotated[Moment | None, Query(alias="from", description="default: a day before to")]
Until = Annotated[Moment | None, Query(alias="to", description="default: now")]
Names = Annotated[list[str] | None, Query(alias="name", description="only these metrics")]
Zone = Annotated[str | None, Query(max_length=128, description='one zone ("" for the store)')]


@router.get("/stores/{store}/metrics", response_model=MetricsOut)
def get_metrics(
    ctx: Ctx,
    who: Viewer,
    store: str,
    since: Since = None,
    until: Until = None,
    granularity: Granularity = "hour",
    name: Names = None,
    zone: Zone = None,
) -> Response:
    """Footfall, occupancy, capture rate (of passers-by, and of all traffic), conversion
    (store and zone), dwell and queue waits, by hour or day."""
    open_store(ctx, who, store)
    start, end = _range(since, until)
    out = compute(ctx, store, start, end, granularity, name, zone, who.role is Role.VIEWER)
    return Response(msgspec.json.encode(out), media_type="application/json")


@router.get(
    "/stores/{store}/metrics.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def get_metrics_csv(
    ctx: Ctx,
    who: Viewer,
    store: str,
    since: Since = None,
    until: Until = None,
    granularity: Granularity = "hour",
    name: Names = None,
    zone: Zone = None,
) -> Response:
    """The same series as CSV, one row per metric, zone and bucket."""
    open_store(ctx, who, store)
    start, end = _range(since, until)
    out = compute(ctx, store, start, end, granularity, name, zone, who.role is Role.VIEWER)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for p in out["series"]:
        w.writerow([p["start"].isoformat(), *(p[k] for k in CSV_COLUMNS[1:])])
    filename = f"{store}-metrics-{start:%Y%m%dT%H%M}.csv"
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
