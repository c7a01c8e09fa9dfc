"""Reference data rules join with: each store's layout and catalog, by the partition at
hand, and the chain's enrolled members and watch list.

Functions here are what expressions may call. They read the current partition from the
engine's ``Context``, so one rule set serves every store of a chain, each with its own
zones and prices. Members and the watch list hold pseudonymous ids only (enrolment and
face matching happen elsewhere, with consent): a note per id, never a name or a face.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec

from core.layout import Layout
from core.yamlsource import convert, load_yaml
from rules.engine import Context

MAX_REFERENCE_BYTES = 16 * 2**20  # a members or watch-list file larger than this is refused


class ReferenceList(msgspec.Struct, forbid_unknown_fields=True):
    """A members or watch-list file: pseudonymous ids, each with an optional note."""

    entries: dict[Annotated[str, msgspec.Meta(min_length=1, max_length=128)], str] = {}


def load_reference_list(path: str | Path) -> dict[str, str]:
    """``entries: {m-7f3a: "opted in 2026-03"}``, with file:line errors (``SourceError``)."""
    return dict(convert(load_yaml(path, max_bytes=MAX_REFERENCE_BYTES), ReferenceList).entries)


class Reference:
    """Layouts by store id (with one layout, it serves every store); members and watch list."""

    def __init__(
        self,
        layouts: Mapping[str, Layout] | None = None,
        *,
        members: Mapping[str, str] | None = None,
        watchlist: Mapping[str, str] | None = None,
    ) -> None:
        self.layouts = dict(layouts or {})
        for layout in self.layouts.values():
            layout.prepare()
        self._zones: dict[str, tzinfo] = {}
        self._served: dict[str, Layout] = {}  # stores found through a layout's patterns
        self.members = dict(members or {})
        self.watchlist = dict(watchlist or {})

    @classmethod
    def of(
        cls,
        *layouts: Layout,
        members: Mapping[str, str] | None = None,
        watchlist: Mapping[str, str] | None = None,
    ) -> Reference:
        return cls({lay.store.id: lay for lay in layouts}, members=members, watchlist=watchlist)

    def layout(self, store: str) -> Layout:
        """The store's own layout; else the first whose ``serves`` patterns match it (a
        chain of one design); else the only one there is."""
        found = self.layouts.get(store) or self._served.get(store)
        if found is not None:
            return found
        for layout in self.layouts.values():
            if layout.store.serves_store(store):
                self._served[store] = layout
                return layout
        if len(self.layouts) == 1:
            return next(iter(self.layouts.values()))
        raise KeyError(
            f"no store layout for store {store!r}: give its layout, or list the store in a "
            "layout's store.serves"
        )

    def price(self, store: str, sku: str) -> tuple[str, int, bool]:
        """(name, unit price in cents, age restricted); an unknown SKU is an error."""
        item = self.layout(store).sku(sku)
        return item.name, item.price_cents, item.age_restricted

    def tz(self, store: str) -> tzinfo:
        """The store's time zone (its layout's), for windows aligned to local time."""
        if not self.layouts:
            return UTC
        name = self.layout(store).store.timezone
        found = self._zones.get(name)
        if found is None:
            found = self._zones[name] = ZoneInfo(name)
        return found

    def currency(self, store: str) -> str:
        return self.layout(store).store.currency if self.layouts else "EUR"

    def _merged(self, table: Callable[[Layout], dict[str, str]]) -> dict[str, str] | None:
        """One table for every store, or None if two stores disagree on an id."""
        if not self.layouts:
            return None
        return _no_conflict([table(lay) for lay in self.layouts.values()])

    def functions(self, context: Context) -> dict[str, Callable[..., Any]]:
        """The functions expressions may call, bound to the engine's context.

        Lookups by id go through tables built once, not walks through the layout.
        """

        def here() -> Layout:
            assert context.partition is not None
            return self.layout(context.partition.store)

        def zone_of(x: float, y: float) -> str | None:
            return here().zone_at(x, y)

        def per_store(build: Callable[[Layout], dict[str, str]]) -> Callable[[str], str]:
            """A lookup by id in the store at hand. Where every store agrees on what an id
            means (one layout, or a chain with one naming scheme), one table serves all,
            looked up in C: ``zone_kind`` runs in most rules on most zone events."""
            merged = self._merged(build)
            if merged is not None:
                return merged.__getitem__
            tables: dict[str, dict[str, str]] = {}

            def lookup(name: str) -> str:
                store = context.partition.store  # type: ignore[union-attr]
                table = tables.get(store)
                if table is None:
                    table = tables[store] = build(self.layout(store))
                return table[name]

            return lookup

        zone_kind = per_store(lambda lay: {z.id: z.kind for z in lay.zones})
        shelf_zone = per_store(lambda lay: {s.id: s.zone for s in lay.shelves})

        def price(sku: str) -> int:
            return here().sku(sku).price_cents

        def item_name(sku: str) -> str:
            return here().sku(sku).name

        def age_restricted(sku: str) -> bool:
            return here().sku(sku).age_restricted

        members, watchlist = self.members, self.watchlist

        def enrolled(member: str) -> bool:
            return member in members

        def watchlisted(member: str) -> bool:
            return member in watchlist

        def watch_note(member: str) -> str:
            return watchlist.get(member, "")

        return {
            "enrolled": enrolled,
            "watchlisted": watchlisted,
            "watch_note": watch_note,
            "zone_of": zone_of,
            "zone_kind": zone_kind,
            "shelf_zone": shelf_zone,
            "price": price,
            "item_name": item_name,
            "age_restricted": age_restricted,
            **PURE_FUNCTIONS,
        }


def _no_conflict(tables: list[dict[str, str]]) -> dict[str, str] | None:
    merged: dict[str, str] = {}
    for table in tables:
        for k, v in table.items():
            if merged.setdefault(k, v) != v:
                return None
    return merged


def cell(v: float, size: float) -> int:
    """The grid cell index of a coordinate: heatmaps group by ``cell(x, 0.5), cell(y, 0.5)``."""
    return math.floor(v / size)


def grid(x: float, y: float, size: float) -> tuple[int, int]:
    return math.floor(x / size), math.floor(y / size)


def distance(x1: float, y1: float, x2: float, y2: float) -> float:
    return math.hypot(x2 - x1, y2 - y1)


def item_count(lines: Any) -> int:
    """The items on a receipt's lines (``item_count(data.lines)``): a pick-to-purchase rate
    compares them with the items picked."""
    return sum(int(line.qty) for line in lines)


PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "cell": cell,
    "item_count": item_count,
    "grid": grid,
    "distance": distance,
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "str": str,
    "int": int,
    "float": float,
}
