"""Events as the API shows them: whole for operators; for a viewer, only metrics and
heatmaps, and of those nothing that could be tied to a shopper (no subject, no causes, a
metric's labels reduced to its zone)."""

from __future__ import annotations

from typing import Any

import msgspec

from core import events as ev
from core.log import Record

VIEWER_TYPES = frozenset({"metric", "heatmap.tiles", "heatmap.tile"})
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
