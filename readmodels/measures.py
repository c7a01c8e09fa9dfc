"""Metrics per store, zone and hour; occupancy over time; heatmap cells per window and
per hour. What the traffic and heatmap packs derive, kept as derived and summed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel

from core import events as ev
from readmodels import bulk
from readmodels.projection import Projection, Unexpected, hour_of
from readmodels.tables import HeatmapCell, HeatmapHour, MetricHour, MetricPoint, Occupancy
from readmodels.upsert import fold_into

# The traffic pack's metrics of people present: the store's (zone "") and each queue's.
OCCUPANCY = {"occupancy": False, "queue_length": True}  # name -> per zone
DAY_S = 86400.0


Batch = Sequence[tuple[int, ev.Event]]


class Metrics(Projection):
    name = "metrics"
    types = frozenset({"metric"})
    tables = (MetricPoint, MetricHour, Occupancy)
    checks_first = True

    def apply_all(self, session: Session, batch: Batch) -> dict[int, Unexpected]:
        """A batch's metrics: their points in one statement, each hour's and each
        occupancy's row in one more."""
        points, refused = [], {}
        hours: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        occupancy: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for i, (seq, event) in enumerate(batch):
            assert isinstance(event, ev.Metric)
            d = event.data
            try:
                if not math.isfinite(d.value):
                    raise Unexpected("data.value", f"{d.value} is not a finite number")
                _check_window(d.window_start, d.window_end, strict=False)
            except Unexpected as exc:
                refused[i] = exc
                continue
            zone = d.labels.get("zone", "")
            hour = hour_of(d.window_start or event.at)
            points.append(
                {
                    "id": event.id,
                    "seq": seq,
                    "store": event.store,
                    "name": d.name,
                    "zone": zone,
                    "value": d.value,
                    "labels": dict(sorted(d.labels.items())),
                    "subject": event.subject,
                    "at": event.at,
                    "window_start": d.window_start,
                    "window_end": d.window_end,
                    "hour": hour,
                    "rule_id": event.rule.id,
                    "rule_version": event.rule.version,
                }
            )
            key = (event.store, d.name, zone, hour)
            hours.setdefault(key, []).append(
                {"value": d.value, "at": event.at, "per_visit": d.window_start is None}
            )
            if d.name in OCCUPANCY:
                at = d.window_end or event.at
                where = (event.store, zone if OCCUPANCY[d.name] else "", at)
                occupancy.setdefault(where, []).append({"value": d.value})
        bulk.insert(session, _table(MetricPoint), points)
        fold_into(session, _table(MetricHour), hours, _fold_hour)
        fold_into(session, _table(Occupancy), occupancy, _fold_latest)
        return refused


def _fold_hour(row: dict[str, Any] | None, step: Mapping[str, Any]) -> dict[str, Any]:
    v, at, per_visit = step["value"], step["at"], step["per_visit"]
    if row is None:
        return {
            "count": 1, "sum": v, "min": v, "max": v, "last": v, "last_at": at,
            "per_visit": per_visit,
        }  # fmt: skip
    row = {
        **row,
        "count": row["count"] + 1,
        "sum": row["sum"] + v,
        "per_visit": bool(row["per_visit"]) or per_visit,
    }
    row["min"], row["max"] = min(row["min"], v), max(row["max"], v)
    if at >= row["last_at"]:
        row["last"], row["last_at"] = v, at
    return row


def _fold_latest(row: dict[str, Any] | None, step: Mapping[str, Any]) -> dict[str, Any]:
    return {**(row or {}), "value": step["value"]}


class Heatmaps(Projection):
    name = "heatmap"
    types = frozenset({"heatmap.tile", "heatmap.tiles"})
    tables = (HeatmapCell, HeatmapHour)
    checks_first = True

    def apply_all(self, session: Session, batch: Batch) -> dict[int, Unexpected]:
        """A batch's windows: their cells in one statement, each hour's cell in one more."""
        rows, refused = [], {}
        hours: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for i, (_, event) in enumerate(batch):
            if isinstance(event, ev.HeatmapTile):
                d = event.data
                size, start, end = d.size, d.window_start, d.window_end
                cells: tuple[ev.HeatmapCell | ev.HeatmapTileData, ...] = (d,)
            else:
                assert isinstance(event, ev.HeatmapTiles)
                size, start, end = event.data.size, event.data.window_start, event.data.window_end
                cells = event.data.cells
            try:
                _check_cells(start, end, cells)
            except Unexpected as exc:
                refused[i] = exc
                continue
            span = (end - start).total_seconds()
            assert isinstance(event, ev.DerivedEvent)
            for c in cells:
                rows.append(
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
                )
                if span < DAY_S:  # the day's own window keeps its distinct visitors as is
                    key = (event.store, size, hour_of(start), c.cell_x, c.cell_y)
                    hours.setdefault(key, []).append({"visits": c.visits, "dwell_s": c.dwell_s})
        bulk.insert(session, _table(HeatmapCell), rows)
        fold_into(session, _table(HeatmapHour), hours, _fold_cell)
        return refused


def _check_cells(
    start: datetime, end: datetime, cells: Sequence[ev.HeatmapCell | ev.HeatmapTileData]
) -> None:
    _check_window(start, end, strict=True)
    if len({(c.cell_x, c.cell_y) for c in cells}) != len(cells) or not all(
        math.isfinite(c.dwell_s) for c in cells
    ):  # rare: find the first cell at fault, to name it
        seen: set[tuple[int, int]] = set()
        for i, c in enumerate(cells):
            if (c.cell_x, c.cell_y) in seen:
                raise Unexpected(f"data.cells[{i}]", f"cell ({c.cell_x}, {c.cell_y}) twice")
            seen.add((c.cell_x, c.cell_y))
            if not math.isfinite(c.dwell_s):
                raise Unexpected(f"data.cells[{i}].dwell_s", "not a finite number")


def _fold_cell(row: dict[str, Any] | None, step: Mapping[str, Any]) -> dict[str, Any]:
    if row is None:
        return {"window_visits": step["visits"], "dwell_s": step["dwell_s"], "windows": 1}
    return {
        **row,
        "window_visits": row["window_visits"] + step["visits"],
        "dwell_s": row["dwell_s"] + step["dwell_s"],
        "windows": row["windows"] + 1,
    }


def _table(model: type[SQLModel]) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


def _check_window(start: datetime | None, end: datetime | None, *, strict: bool) -> None:
    if (start is None) != (end is None):
        raise Unexpected("data.window_end", "a window needs its start and its end")
    if start is not None and end is not None and (end < start or (strict and end == start)):
        raise Unexpected("data.window_end", f"the window ends ({end}) before it starts ({start})")
