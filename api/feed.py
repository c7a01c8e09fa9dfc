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
# The standard packs' counts of people, gauges, and rates of counts a viewer sees anyway:
# no one's own figure. A mean, a percentile or a rate over a window of one shopper is
# that shopper's: those are an operator's.
COUNTS = GAUGES | {
    "footfall", "passersby", "queue_abandoned", "picked_not_bought",
    "occupancy.unmatched_exits", "dwell.visits", "capture_rate", "capture_rate_of_traffic",
}  # fmt: skip
MIN_TILE_S = 86400.0  # heatmap windows a viewer is sent: an hour of one cell traces a person


def for_viewer(e: ev.Event) -> bool:
    """Whether a viewer may see the event: a count of people over a window or a gauge of
    people present, and a day's heatmap. Not a metric one visit makes (a zone visit's or
    a queue wait's seconds, a cart left unbought: its time and value are one shopper's),
    nor a mean or a rate (over one shopper, theirs)."""
    if isinstance(e, ev.Metric):
        d = e.data
        windowed = d.window_start is not None and d.window_end is not None
        return d.name in GAUGES or (d.name in COUNTS and windowed)
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
