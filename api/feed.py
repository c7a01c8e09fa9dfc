"""Events as the API shows them: whole for operators; for a viewer, only metrics and
heatmaps, and of those nothing that could be tied to a shopper (no subject, no causes, a
metric's labels reduced to its zone)."""

from __future__ import annotations

from typing import Any

import msgspec

from core import events as ev
from core.log import Record

VIEWER_TYPES = frozenset({"metric"})
GAUGES = frozenset({"occupancy", "queue_length"})  # counts of people now, no one's own
# The store's counts of people over a window, and rates of them: what a viewer sees
# whole. A zone's visits, a mean, a rate or a single visit's figure over a window of few
# shoppers is theirs (api/routes/metrics.py shows some of those over enough people).
STORE_COUNTS = frozenset({"footfall", "passersby", "capture_rate", "capture_rate_of_traffic"})


def for_viewer(e: ev.Event) -> bool:
    """Whether a viewer may see the event as it comes: a gauge of people present, or a
    count of the store's over a window. Nothing of a zone or of one visit (a zone visit's
    seconds, a cart left unbought: its time and value are one shopper's), and no heatmap
    (a window of one shopper is their path): those come from the API, over enough people."""
    if isinstance(e, ev.Metric):
        d = e.data
        windowed = d.window_start is not None and d.window_end is not None
        store_level = d.labels.get("zone", "") == ""
        return d.name in GAUGES or (d.name in STORE_COUNTS and windowed and store_level)
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
