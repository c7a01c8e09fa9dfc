"""Metrics per store, zone and hour; occupancy over time; heatmap cells per window and
per hour. What the traffic and heatmap packs derive, kept as derived and summed."""

from __future__ import annotations

import math
from datetime import datetime

from sqlmodel import Session

from core import events as ev
from readmodels.projection import Projection, Unexpected, hour_of
from readmodels.tables import HeatmapCell, HeatmapHour, MetricHour, MetricPoint, Occupancy

# The traffic pack's metrics of people present: the store's (zone "") and each queue's.
OCCUPANCY = {"occupancy": False, "queue_length": True}  # name -> per zone
DAY_S = 86400.0


class Metrics(Projection):
    name = "metrics"
    types = frozenset({"metric"})
    tables = (MetricPoint, MetricHour, Occupancy)

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        assert isinstance(event, ev.Metric)
        d = event.data
        if not math.isfinite(d.value):
            raise Unexpected("data.value", f"{d.value} is not a finite number")
        _check_window(d.window_start, d.window_end, strict=False)
        zone = d.labels.get("zone", "")
        hour = hour_of(d.window_start or event.at)
        session.add(
            MetricPoint(
                id=event.id,
                seq=seq,
                store=event.store,
                name=d.name,
                zone=zone,
                value=d.value,
                labels=dict(sorted(d.labels.items())),
                subject=event.subject,
                at=event.at,
                window_start=d.window_start,
                window_end=d.window_end,
                hour=hour,
                rule_id=event.rule.id,
                rule_version=event.rule.version,
            )
        )
        row = session.get(MetricHour, (event.store, d.name, zone, hour))
        if row is None:
            row = MetricHour(
                store=event.store,
                name=d.name,
                zone=zone,
                hour=hour,
                min=d.value,
                max=d.value,
                last_at=event.at,
            )
            session.add(row)
        row.count += 1
        row.sum += d.value
        row.min, row.max = min(row.min, d.value), max(row.max, d.value)
        if event.at >= row.last_at:
            row.last, row.last_at = d.value, event.at
        if d.name in OCCUPANCY:
            at = d.window_end or event.at
            where = zone if OCCUPANCY[d.name] else ""
            point = session.get(Occupancy, (event.store, where, at))
            if point is None:
                session.add(Occupancy(store=event.store, zone=where, at=at, value=d.value))
            else:
                point.value = d.value


class Heatmaps(Projection):
    name = "heatmap"
    types = frozenset({"heatmap.tile", "heatmap.tiles"})
    tables = (HeatmapCell, HeatmapHour)

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
            session.add(
                HeatmapCell(
                    event_id=event.id,
                    cell_x=c.cell_x,
                    cell_y=c.cell_y,
                    store=event.store,
                    size=size,
                    window_start=start,
                    window_end=end,
                    span_s=span,
                    visits=c.visits,
                    dwell_s=c.dwell_s,
                    rule_id=event.rule.id,
                )
            )
            if span >= DAY_S:
                continue  # the day's own window: its visits are distinct, kept as they are
            key = (event.store, size, hour_of(start), c.cell_x, c.cell_y)
            row = session.get(HeatmapHour, key)
            if row is None:
                row = HeatmapHour(
                    store=key[0], size=key[1], hour=key[2], cell_x=key[3], cell_y=key[4]
                )
                session.add(row)
            row.window_visits += c.visits
            row.dwell_s += c.dwell_s
            row.windows += 1


def _check_window(start: datetime | None, end: datetime | None, *, strict: bool) -> None:
    if (start is None) != (end is None):
        raise Unexpected("data.window_end", "a window needs its start and its end")
    if start is not None and end is not None and (end < start or (strict and end == start)):
        raise Unexpected("data.window_end", f"the window ends ({end}) before it starts ({start})")
