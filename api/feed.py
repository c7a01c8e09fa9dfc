"""Events as the API shows them: whole for operators; for a viewer, only metrics and
heatmaps, and of those nothing that could be tied to a shopper (no subject, no causes, a
metric's labels reduced to its zone)."""

from __future__ import annotations

from typing import Any

import msgspec

from core import events as ev
from core.log import Record

VIEWER_TYPES = frozenset({"metric", "heatmap.tiles", "heatmap.tile"})
GAUGES = frozenset({"occupancy", "queue_length"})  # counts of people now, no one's own
MIN_TILE_S = 3600.0  # heatmap windows a viewer sees: ten seconds of one cell trace a person


def for_viewer(e: ev.Event) -> bool:
    """Whether a viewer may see the event: a metric over a window (a count, a rate) or a
    gauge of people present, and heatmap windows of an hour or more. Not a metric one
    visit makes (a zone visit's or a queue wait's seconds, a cart left unbought): its
    time and value are one shopper's."""
    if isinstance(e, ev.Metric):
        d = e.data
        return d.name in GAUGES or (d.window_start is not None and d.window_end is not None)
    if isinstance(e, ev.HeatmapTiles | ev.HeatmapTile):
        return (e.data.window_end - e.data.window_start).total_seconds() >= MIN_TILE_S
    return False


OPERATOR_STREAM_TYPES = ev.DERIVED_TYPES | ev.OPERATOR_TYPES


def shown(record: Record, *, whole: bool) -> dict[str, Any]:
    e = record.event
    if whole:
        return {"seq": record.seq, "stored_at": record.stored_at, "event": msgspec.to_builtins(e)}
    out: dict[str, Any] = {"id": e.id, "type": e.type, "store": e.store, "at": e.at}
    if isinstance(e, ev.Metric):
        d = e.data
        out["data"] = {
            "name": d.name,
            "value": d.value,
            "zone": d.labels.get("zone", ""),
            "window_start": d.window_start,
            "window_end": d.window_end,
        }
    elif isinstance(e, ev.HeatmapTiles | ev.HeatmapTile):
        out["data"] = msgspec.to_builtins(e.data)
    return {"seq": record.seq, "stored_at": record.stored_at, "event": msgspec.to_builtins(out)}
