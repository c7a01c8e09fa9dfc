"""Metrics per store, zone and hour; occupancy over time; heatmap cells per window and
per hour. What the traffic and heatmap packs derive, kept as derived and summed."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel

from core import events as ev
from readmodels.projection import Projection, Unexpected, hour_of
from readmodels.tables import HeatmapCell, HeatmapHour, MetricHour, MetricPoint, Occupancy
from readmodels.upsert import greater, lesser, upsert

# The traffic pack's metrics of people present: the store's (zone "") and each queue's.
OCCUPANCY = {"occupancy": False, "queue_length": True}  # name -> per zone
DAY_S = 86400.0


class Metrics(Projection):
    name = "metrics"
    types = frozenset({"metric"})
    tables = (MetricPoint, MetricHour, Occupancy)
    checks_first = True

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        assert isinstance(event, ev.Metric)
        d = event.data
        if not math.isfinite(d.value):
            raise Unexpected("data.value", f"{d.value} is not a finite number")
        _check_window(d.window_start, d.window_end, strict=False)
        zone = d.labels.get("zone", "")
        hour = hour_of(d.window_start or event.at)
        key = {"store": event.store, "name": d.name, "zone": zone}
        session.execute(
            sa.insert(_table(MetricPoint)),
            {
                "id": event.id,
                "seq": seq,
                **key,
                "value": d.value,
                "labels": dict(sorted(d.labels.items())),
                "subject": event.subject,
                "at": event.at,
                "window_start": d.window_start,
                "window_end": d.window_end,
                "hour": hour,
                "rule_id": event.rule.id,
                "rule_version": event.rule.version,
            },
        )
        one = {"count": 1, "sum": d.value, "min": d.value, "max": d.value}
        upsert(
            session,
            _table(MetricHour),
            [{**key, "hour": hour, **one, "last": d.value, "last_at": event.at}],
            update=_hour_update,
        )
        if d.name in OCCUPANCY:
            where = zone if OCCUPANCY[d.name] else ""
            at = d.window_end or event.at
            point = {"store": event.store, "zone": where, "at": at, "value": d.value}
            upsert(session, _table(Occupancy), [point], update=_latest)


def _hour_update(t: sa.Table, new: Any) -> dict[str, Any]:
    later = new.last_at >= t.c.last_at
    return {
        "count": t.c.count + 1,
        "sum": t.c.sum + new.sum,
        "min": lesser(t.c.min, new.min),
        "max": greater(t.c.max, new.max),
        "last": sa.case((later, new.last), else_=t.c.last),
        "last_at": sa.case((later, new.last_at), else_=t.c.last_at),
    }


class Heatmaps(Projection):
    name = "heatmap"
    types = frozenset({"heatmap.tile", "heatmap.tiles"})
    tables = (HeatmapCell, HeatmapHour)
    checks_first = True

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        if isinstance(event, ev.HeatmapTile):
            d = event.data
            size, start, end = d.size, d.window_start, d.window_end
            cells: tuple[ev.HeatmapCell | ev.HeatmapTileData, ...] = (d,)
        else:
            assert isinstance(event, ev.HeatmapTiles)
            size, start, end = event.data.size, event.data.window_start, event.data.window_end
            cells = event.data.cells
        _check_window(start, end, strict=True)
        span = (end - start).total_seconds()
        seen: set[tuple[int, int]] = set()
        for i, c in enumerate(cells):
            if (c.cell_x, c.cell_y) in seen:
                raise Unexpected(f"data.cells[{i}]", f"cell ({c.cell_x}, {c.cell_y}) twice")
            seen.add((c.cell_x, c.cell_y))
            if not math.isfinite(c.dwell_s):
                raise Unexpected(f"data.cells[{i}].dwell_s", "not a finite number")
        if not cells:
            return
        session.execute(
            sa.insert(_table(HeatmapCell)),
            [
                {
                    "event_id": event.id,
                    "cell_x": c.cell_x,
                    "cell_y": c.cell_y,
                    "store": event.store,
                    "size": size,
                    "window_start": start,
                    "window_end": end,
                    "span_s": span,
                    "visits": c.visits,
                    "dwell_s": c.dwell_s,
                    "rule_id": event.rule.id,
                }
                for c in cells
            ],
        )
        if span >= DAY_S:
            return  # the day's own window: its visits are distinct, kept as they are
        hour = hour_of(start)
        upsert(
            session,
            _table(HeatmapHour),
            [
                {
                    "store": event.store,
                    "size": size,
                    "hour": hour,
                    "cell_x": c.cell_x,
                    "cell_y": c.cell_y,
                    "window_visits": c.visits,
                    "dwell_s": c.dwell_s,
                    "windows": 1,
                }
                for c in cells
            ],
            update=_cell_update,
        )


def _latest(t: sa.Table, new: Any) -> dict[str, Any]:
    return {"value": new.value}


def _cell_update(t: sa.Table, new: Any) -> dict[str, Any]:
    return {
        "window_visits": t.c.window_visits + new.window_visits,
        "dwell_s": t.c.dwell_s + new.dwell_s,
        "windows": t.c.windows + 1,
    }


def _table(model: type[SQLModel]) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


def _check_window(start: datetime | None, end: datetime | None, *, strict: bool) -> None:
    if (start is None) != (end is None):
        raise Unexpected("data.window_end", "a window needs its start and its end")
    if start is not None and end is not None and (end < start or (strict and end == start)):
        raise Unexpected("data.window_end", f"the window ends ({end}) before it starts ({start})")
