"""The store layout: one YAML file that every layer reads (see ``docs/layout.md``).

The simulator walks shoppers over it, the adapters project detections onto it, the rules
engine asks it which zone a position is in and whether a step crossed the door, and the
dashboard draws it. A mistake in it therefore shows up everywhere at once, far from its
cause, so loading is strict: types and unknown fields first (``core.yamlsource``), then a
semantic pass (references, geometry, calibration, prices) that reports every problem it
finds with its line in the file, not just the first one.

Once loaded, a ``Layout`` is a frozen value; its derived geometry (zone grid, homographies,
lookup tables) is computed once at load and cached on the instance.
"""

from __future__ import annotations

import difflib
import fnmatch
import zoneinfo
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import shapely
from msgspec import Meta, Struct
from shapely.geometry import LineString, Polygon
from shapely.geometry import Point as ShapelyPoint
from shapely.validation import explain_validity

from core.events import SKU_PATTERN, STORE_PATTERN
from core.geometry import Edge, Homography, ZoneIndex, ring_area, ring_contains, ring_edges
from core.geometry import segment_crossing as _segment_crossing
from core.yamlsource import PathKey, SourceError, YamlDocument, convert_all, load_yaml

__all__ = [
    "CALIBRATION_TOLERANCE_M",
    "FLOOR_TOLERANCE_M",
    "SHELF_REACH_M",
    "Calibration",
    "CalibrationPoint",
    "Camera",
    "CatalogItem",
    "Detect",
    "ImageSize",
    "Layout",
    "LayoutError",
    "Line",
    "Shelf",
    "ShelfCamera",
    "Slot",
    "SlotView",
    "Store",
    "Zone",
    "check_layout",
    "load_layout",
    "load_layout_text",
]

FLOOR_TOLERANCE_M = 0.10
"""How far a zone, shelf or door line may stick out of the floor outline (drawing slack)."""
CALIBRATION_TOLERANCE_M = 0.05
MAX_LAYOUT_BYTES = 8 * 2**20  # a layout file larger than this is refused (docs/layout.md)
"""Largest reprojection error of a calibration point; beyond it a pair is likely mistyped."""
SHELF_REACH_M = 1.0
"""Largest gap between a shelf and the shelf_front zone it is reached from."""

# The events' own patterns: a store id is a subject token (no '.', '*', '>' or non-ASCII),
# and a SKU the catalog accepts is one an event may carry (no invisible characters).
StoreId = Annotated[str, Meta(pattern=STORE_PATTERN)]
Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Sku = Annotated[str, Meta(min_length=1, max_length=64, pattern=SKU_PATTERN)]
Name = Annotated[str, Meta(min_length=1, max_length=128)]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
Coord = Annotated[float, Meta(ge=-1e5, le=1e5)]  # also refuses .nan and .inf
Pixel = Annotated[float, Meta(ge=-1e5, le=1e5)]
Point = tuple[Coord, Coord]
ZoneKind = Literal["aisle", "shelf_front", "checkout_queue", "exit_gate", "staff_only", "entrance"]
LineKind = Literal["entrance", "exit", "entrance_exit", "passby"]
T = TypeVar("T")


class _Spec(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, dict=True):
    """Frozen and strict; ``dict=True`` only so ``cached_property`` can hold derived geometry."""


# A pattern of store ids a layout serves: store-id characters, with * and ? as in a glob.
ServesPattern = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_*?-]{1,64}$")]


class Store(_Spec):
    id: StoreId
    name: Name
    timezone: str
    currency: Currency = "EUR"
    # The stores of a chain this layout also serves (``corner-*``): one design, many ids.
    serves: Annotated[tuple[ServesPattern, ...], Meta(max_length=256)] = ()

    def serves_store(self, store: str) -> bool:
        """Whether this is ``store``'s layout: its own id, or one its patterns match."""
        return store == self.id or any(fnmatch.fnmatchcase(store, p) for p in self.serves)


class Line(_Spec):
    """A counting line. ``in_side`` is the inside, seen walking from points[0] to points[1]."""

    id: Id
    kind: LineKind
    points: tuple[Point, Point]
    in_side: Literal["left", "right"]

    @cached_property
    def _sign(self) -> int:
        return 1 if self.in_side == "left" else -1

    def crossing(self, p0: Sequence[float], p1: Sequence[float]) -> int:
        """+1 if the step p0→p1 crosses into the store (towards ``in_side``), -1 out, else 0.

        A sample exactly on the line counts as outside, so a track is counted once however
        its samples fall. Steps parallel to the line, beside it or along it give 0.
        """
        return _segment_crossing(self.points[0], self.points[1], self._sign, p0, p1)


class Zone(_Spec):
    id: Id
    kind: ZoneKind
    polygon: tuple[Point, ...]
    name: Name | None = None

    @cached_property
    def shape(self) -> Polygon:
        """The shapely polygon, for drawing and set operations (not for per-sample tests)."""
        return Polygon(self.polygon)

    @cached_property
    def area(self) -> float:
        return ring_area(self.polygon)

    @cached_property
    def _test(self) -> tuple[float, float, float, float, tuple[Edge, ...]]:
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys), ring_edges(self.polygon)

    def contains(self, x: float, y: float) -> bool:
        """Inside test with the same half-open boundary rule as ``Layout.zone_at``."""
        x0, y0, x1, y1, edges = self._test
        return x0 <= x <= x1 and y0 <= y <= y1 and ring_contains(edges, x, y)


class Slot(_Spec):
    sku: Sku
    facings: Annotated[int, Meta(ge=1, le=1000)] = 1
    sensor: Id | None = None
    """The load cell under the slot, as its readings name it (``docs/adapters.md``)."""


class Shelf(_Spec):
    """A shelf face; ``footprint`` is a polygon (3+ points) or the front edge (2 points)."""

    id: Id
    zone: Id
    footprint: tuple[Point, ...]
    slots: tuple[Slot, ...] = ()
    name: Name | None = None

    @cached_property
    def shape(self) -> Polygon | LineString:
        return LineString(self.footprint) if len(self.footprint) == 2 else Polygon(self.footprint)

    @property
    def skus(self) -> tuple[str, ...]:
        return tuple(s.sku for s in self.slots)


class ImageSize(_Spec):
    width: Annotated[int, Meta(gt=0, le=16384)]
    height: Annotated[int, Meta(gt=0, le=16384)]


class CalibrationPoint(_Spec):
    image: tuple[Pixel, Pixel]
    floor: Point


class Calibration(_Spec):
    points: tuple[CalibrationPoint, ...]


class Detect(_Spec):
    """How often the adapters look at a camera's frames, in the voice of Frigate's
    ``detect``: a rate (``fps``) for cameras that follow people, or a period
    (``interval_s``) for cameras that only count them. Neither: every frame."""

    fps: Annotated[float, Meta(gt=0, le=240)] | None = None  # frames/s to process
    interval_s: Annotated[float, Meta(gt=0, le=3600)] | None = None  # seconds between frames


class Camera(_Spec):
    id: Id
    kind: Literal["overhead", "angled"]
    position: tuple[Coord, Coord, Annotated[float, Meta(gt=0, le=100)]]
    image: ImageSize
    fps: Annotated[float, Meta(gt=0, le=240)]
    sees: tuple[Id, ...]
    calibration: Calibration
    detect: Detect = Detect()

    @property
    def detect_interval_s(self) -> float:
        """Seconds between the frames the adapters process (the loader checks that this is
        no shorter than the camera's own frame interval)."""
        if self.detect.interval_s is not None:
            return self.detect.interval_s
        return 1.0 / (self.detect.fps if self.detect.fps is not None else self.fps)

    @cached_property
    def homography(self) -> Homography:
        """Image pixels → floor metres, fitted to the calibration points."""
        pts = self.calibration.points
        return Homography.fit([p.image for p in pts], [p.floor for p in pts])

    @cached_property
    def _inverse(self) -> Homography:
        return self.homography.inverse()

    def to_floor(self, u: float, v: float) -> tuple[float, float]:
        """Where on the floor pixel (u, v) is, in metres (meaningful for floor-level points)."""
        return self.homography(u, v)

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Which pixel shows floor point (x, y)."""
        return self._inverse(x, y)

    def reprojection_errors(self) -> np.ndarray:
        """Distance in metres between each calibration floor point and its pixel's image."""
        pts = self.calibration.points
        mapped = self.homography.apply_array(np.array([p.image for p in pts]))
        return np.linalg.norm(mapped - np.array([p.floor for p in pts]), axis=1)


class SlotView(_Spec):
    """Where one slot of a shelf shows in a shelf camera's image: a pixel box, left, top,
    right, bottom. The adapter reads a hand in it and a change of its look; the renderer
    draws the slot's facings in it, side by side, so the two agree as a calibration."""

    sku: Sku
    box: tuple[Pixel, Pixel, Pixel, Pixel]


class ShelfCamera(_Spec):
    """A camera facing one shelf's front (mounted on the shelf across the aisle, or
    above it), looking for hands in the slots. It maps no floor: ``span`` is where the
    shelf front is on the floor at the image's left and right edges, so an arm that comes
    in at some image column comes from a shopper standing by that point of the front."""

    id: Id
    shelf: Id
    image: ImageSize
    fps: Annotated[float, Meta(gt=0, le=240)]
    span: tuple[Point, Point]
    slots: tuple[SlotView, ...]

    def floor_at(self, u: float) -> tuple[float, float]:
        """The point of the shelf front seen at image column ``u`` (clamped to the image)."""
        t = min(1.0, max(0.0, u / self.image.width))
        (x0, y0), (x1, y1) = self.span
        return x0 + t * (x1 - x0), y0 + t * (y1 - y0)

    def column_of(self, x: float, y: float) -> float:
        """The image column that shows floor point (x, y) projected onto the front."""
        (x0, y0), (x1, y1) = self.span
        dx, dy = x1 - x0, y1 - y0
        t = ((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy)
        return min(1.0, max(0.0, t)) * self.image.width


Grams = Annotated[float, Meta(gt=0, le=100_000)]


class CatalogItem(_Spec):
    sku: Sku
    name: Name
    price: Decimal
    age_restricted: bool = False
    weight_g: Grams | None = None
    """One unit's weight, for the weight shelves: a change of the slot's load is read as
    a whole number of units of it."""
    weight_tolerance_g: Grams | None = None
    """How far one unit may be from ``weight_g`` (packaging varies); None: 3% of it, at
    least 2 g."""

    @property
    def tolerance_g(self) -> float | None:
        if self.weight_g is None:
            return None
        if self.weight_tolerance_g is not None:
            return self.weight_tolerance_g
        return max(2.0, 0.03 * self.weight_g)

    @property
    def price_cents(self) -> int:
        """The price as an exact integer of minor units; the loader refuses sub-cent prices."""
        return int(self.price * 100)


class Layout(_Spec):
    store: Store
    floor: tuple[Point, ...]
    lines: tuple[Line, ...] = ()
    zones: tuple[Zone, ...] = ()
    shelves: tuple[Shelf, ...] = ()
    cameras: tuple[Camera, ...] = ()
    catalog: tuple[CatalogItem, ...] = ()
    shelf_cameras: tuple[ShelfCamera, ...] = ()

    @cached_property
    def _index(self) -> ZoneIndex:
        return ZoneIndex([(z.id, z.polygon) for z in self.zones])

    @cached_property
    def _by_id(self) -> dict[str, dict[str, Any]]:
        shelves_in: dict[str, list[Shelf]] = {}
        for s in self.shelves:
            shelves_in.setdefault(s.zone, []).append(s)
        return {
            "zone": {z.id: z for z in self.zones},
            "line": {ln.id: ln for ln in self.lines},
            "shelf": {s.id: s for s in self.shelves},
            "camera": {c.id: c for c in self.cameras},
            "shelf camera": {c.id: c for c in self.shelf_cameras},
            "sku": {c.sku: c for c in self.catalog},
            "shelves_in": {k: tuple(v) for k, v in shelves_in.items()},
        }

    def prepare(self) -> Layout:
        """Build every cache now, so the first position sample does not pay for it."""
        _ = self._index, self._by_id
        for cam in self.cameras:
            _ = cam._inverse
        for line in self.lines:
            _ = line._sign
        for zone in self.zones:
            _ = zone._test
        return self

    def zone_at(self, x: float, y: float) -> str | None:
        """The most specific zone containing (x, y): the smallest by area, then file order.

        Smallest-wins makes a shelf_front inside an aisle, or a queue inside a front area,
        win without any explicit priority field. Per-call cost: see ``ZoneIndex``.
        """
        return self._index.zone_at(x, y)

    def zones_at(self, x: float, y: float) -> tuple[str, ...]:
        """Every zone containing (x, y), most specific first."""
        return self._index.zones_at(x, y)

    def zone(self, zone_id: str) -> Zone:
        return self._get("zone", zone_id)

    def line(self, line_id: str) -> Line:
        return self._get("line", line_id)

    def shelf(self, shelf_id: str) -> Shelf:
        return self._get("shelf", shelf_id)

    def camera(self, camera_id: str) -> Camera:
        return self._get("camera", camera_id)

    def shelf_camera(self, camera_id: str) -> ShelfCamera:
        return self._get("shelf camera", camera_id)

    def sku(self, sku: str) -> CatalogItem:
        return self._get("sku", sku)

    def shelves_in_zone(self, zone_id: str) -> tuple[Shelf, ...]:
        """The shelves reached from ``zone_id`` (empty for a zone with none, or unknown)."""
        return self._by_id["shelves_in"].get(zone_id, ())

    def _get(self, kind: str, key: str) -> Any:
        try:
            return self._by_id[kind][key]
        except KeyError:
            raise KeyError(f"store {self.store.id!r} has no {kind} {key!r}") from None


def chain_store_ids(first: str, stores: int) -> list[str]:
    """The ids of a chain of ``stores`` stores of one design, the first being ``first``: a
    store keeps its id whether one or six are simulated. A trailing number counts on in
    its own width (``corner-01``, ``corner-02``...), other ids take ``-2``, ``-3``..."""
    stem = first.rstrip("0123456789")
    digits = first[len(stem) :]
    if digits:
        ids = [f"{stem}{int(digits) + k:0{len(digits)}d}" for k in range(stores)]
    else:
        ids = [first] + [f"{first}-{k}" for k in range(2, stores + 1)]
    for store in ids:
        if len(store) > 64:
            raise ValueError(f"store id {store!r} of a chain of {stores} is over 64 characters")
    return ids


class LayoutError(ValueError):
    """A layout with problems; ``errors`` holds every one, each with its place in the file."""

    def __init__(self, errors: Sequence[SourceError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def load_layout(source: str | Path, *, text: str | None = None) -> Layout:
    """Load and check a layout file (or ``text`` named ``source``); raise ``LayoutError``."""
    layout, errors = _load(source, text)
    if errors or layout is None:
        raise LayoutError(errors)
    return layout.prepare()


def load_layout_text(text: str, name: str = "<layout>") -> Layout:
    return load_layout(name, text=text)


def check_layout(source: str | Path, *, text: str | None = None) -> list[SourceError]:
    """Every problem in a layout file, in file order; empty when it loads."""
    return _load(source, text)[1]


# -- loading ---------------------------------------------------------------------------------


class _File(_Spec):
    """The top level only; each section is converted item by item to collect all errors."""

    store: Any
    floor: Any
    lines: tuple[Any, ...] = ()
    zones: tuple[Any, ...] = ()
    shelves: tuple[Any, ...] = ()
    cameras: tuple[Any, ...] = ()
    catalog: tuple[Any, ...] = ()
    shelf_cameras: tuple[Any, ...] = ()


_SECTIONS: dict[str, tuple[type[_Spec], str, str]] = {  # item type, key field, what it is
    "lines": (Line, "id", "line id"),
    "zones": (Zone, "id", "zone id"),
    "shelves": (Shelf, "id", "shelf id"),
    "cameras": (Camera, "id", "camera id"),
    "catalog": (CatalogItem, "sku", "sku"),
    "shelf_cameras": (ShelfCamera, "id", "shelf camera id"),
}


def _load(source: str | Path, text: str | None) -> tuple[Layout | None, list[SourceError]]:
    try:
        doc = load_yaml(source, text=text, max_bytes=MAX_LAYOUT_BYTES)
    except SourceError as exc:
        return None, [exc]
    if doc.data is None:
        return None, [doc.error((), "the layout file is empty")]
    top, errors = convert_all(doc, _File)
    if top is None:
        return None, errors
    c = _Checker(doc)
    store = c.convert(("store",), top.store, Store)
    floor = c.convert(("floor",), top.floor, tuple[Point, ...])
    sections: dict[str, list[tuple[int, Any]]] = {}
    for name, (typ, key, _) in _SECTIONS.items():
        sections[name] = []
        for i, raw in enumerate(getattr(top, name)):
            item = c.convert((name, i), raw, typ)
            if item is not None:
                sections[name].append((i, item))
            elif isinstance(raw, dict) and isinstance(raw.get(key), str):
                c.broken[name].add(raw[key])  # known to exist: refer to it without more noise
    c.check(store, floor, sections)
    errors = sorted(c.errors, key=lambda e: (e.line, e.col))
    if errors or store is None or floor is None:
        return None, errors
    layout = Layout(
        store=store,
        floor=floor,
        **{name: tuple(item for _, item in items) for name, items in sections.items()},
    )
    return layout, []


class _Checker:
    """The semantic pass: it records problems and carries on, so one run reports them all."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.errors: list[SourceError] = []
        self.broken: dict[str, set[str]] = {name: set() for name in _SECTIONS}
        self.floor_shape: Polygon | None = None
        self.zone_shapes: dict[str, Polygon] = {}  # only the zones whose polygon is valid
        self.sensors: dict[str, str] = {}  # load cell -> the shelf and slot it is under

    def error(self, path: PathKey, message: str) -> None:
        self.errors.append(self.doc.error(path, message))

    def convert(self, path: PathKey, raw: Any, typ: type[T]) -> T | None:
        value, errors = convert_all(self.doc, typ, path=path, data=raw)
        self.errors += errors
        return value

    def check(
        self,
        store: Store | None,
        floor: tuple[Point, ...] | None,
        sections: dict[str, list[tuple[int, Any]]],
    ) -> None:
        if store is not None:
            self.check_store(store)
        if floor is not None:
            self.floor_shape = self.polygon(("floor",), floor, "the floor outline")
        ids = {name: self.unique(name, items) for name, items in sections.items()}
        for i, line in sections["lines"]:
            self.check_line(i, line)
        for i, zone in sections["zones"]:
            self.check_zone(i, zone)
        for i, shelf in sections["shelves"]:
            self.check_shelf(i, shelf, ids["zones"], ids["catalog"])
        for i, cam in sections["cameras"]:
            self.check_camera(i, cam, ids["zones"])
        for i, item in sections["catalog"]:
            self.check_price(i, item)
            self.check_weight(i, item)
        for i, shelf_cam in sections["shelf_cameras"]:
            self.check_shelf_camera(i, shelf_cam, ids["shelves"], ids["cameras"])

    def unique(self, section: str, items: Iterable[tuple[int, Any]]) -> dict[str, Any]:
        _, key, what = _SECTIONS[section]
        seen: dict[str, int] = {}
        for i, item in items:
            value = getattr(item, key)
            if value in seen:
                first = self.doc.where((section, seen[value], key))[0]
                self.error((section, i, key), f"duplicate {what} {value!r} (first at line {first})")
            else:
                seen[value] = i
        return {getattr(item, key): item for _, item in items}

    def check_store(self, store: Store) -> None:
        zones = _timezones()
        if zones and store.timezone not in zones:
            self.error(
                ("store", "timezone"),
                f"unknown time zone {store.timezone!r}: use an IANA name such as "
                "'Europe/Amsterdam'",
            )

    def polygon(self, path: PathKey, ring: Sequence[Sequence[float]], what: str) -> Polygon | None:
        """A valid shapely polygon, or None after recording why the ring is not one."""
        if len(ring) < 3:
            self.error(path, f"{what} needs at least 3 points, got {len(ring)}")
            return None
        shape = Polygon(ring)
        if shape.convex_hull.area < 1e-6:
            self.error(path, f"{what} has zero area (its points are on one line)")
            return None
        if not shape.is_valid:
            reason = explain_validity(shape)
            self.error(
                path,
                f"{what} is not a simple polygon ({_explain(reason)}); "
                "list its corners in order around the edge",
            )
            return None
        return shape

    def outside_floor(self, path: PathKey, shape: Any, what: str, hint: str) -> None:
        floor = self.floor_shape
        if floor is None or floor.buffer(FLOOR_TOLERANCE_M).covers(shape):
            return
        outside = shape.difference(floor)
        far = max(
            (floor.distance(shapely.Point(p)) for p in shapely.get_coordinates(outside)),
            default=0.0,
        )
        self.error(
            path,
            f"{what} lies {far:.2f} m outside the floor outline "
            f"(tolerance {FLOOR_TOLERANCE_M} m){hint}",
        )

    def check_line(self, i: int, line: Line) -> None:
        (x0, y0), (x1, y1) = line.points
        if (x0, y0) == (x1, y1):
            self.error(("lines", i, "points"), f"line {line.id!r} has zero length")
        elif line.kind != "passby":
            self.outside_floor(
                ("lines", i, "points"),
                LineString(line.points),
                f"line {line.id!r}",
                "; only passby lines may be outside",
            )

    def check_zone(self, i: int, zone: Zone) -> None:
        shape = self.polygon(("zones", i, "polygon"), zone.polygon, f"zone {zone.id!r}")
        if shape is not None:
            self.zone_shapes.setdefault(zone.id, shape)
        if shape is not None and zone.kind != "entrance":
            self.outside_floor(
                ("zones", i, "polygon"),
                shape,
                f"zone {zone.id!r}",
                "; only entrance zones may be outside",
            )

    def check_shelf(
        self, i: int, shelf: Shelf, zones: dict[str, Zone], catalog: dict[str, CatalogItem]
    ) -> None:
        path: PathKey = ("shelves", i)
        zone = zones.get(shelf.zone)
        if zone is None and shelf.zone not in self.broken["zones"]:
            self.error(
                (*path, "zone"),
                f"shelf {shelf.id!r} is reached from unknown zone "
                f"{shelf.zone!r}{_suggest(shelf.zone, zones)}",
            )
        elif zone is not None and zone.kind != "shelf_front":
            self.error(
                (*path, "zone"),
                f"shelf {shelf.id!r} is reached from zone {zone.id!r} of kind "
                f"{zone.kind}; it must be a shelf_front zone",
            )
        shape: Any = None
        if len(shelf.footprint) == 2:
            if shelf.footprint[0] == shelf.footprint[1]:
                self.error((*path, "footprint"), f"shelf {shelf.id!r} footprint has zero length")
            else:
                shape = LineString(shelf.footprint)
        else:
            shape = self.polygon(
                (*path, "footprint"), shelf.footprint, f"shelf {shelf.id!r} footprint"
            )
        if shape is not None:
            self.outside_floor((*path, "footprint"), shape, f"shelf {shelf.id!r}", "")
            zone_shape = self.zone_shapes.get(shelf.zone)
            if zone is not None and zone.kind == "shelf_front" and zone_shape is not None:
                gap = shape.distance(zone_shape)
                if gap > SHELF_REACH_M:
                    self.error(
                        (*path, "footprint"),
                        f"shelf {shelf.id!r} is {gap:.2f} m from its zone {zone.id!r}; "
                        f"a shelf must be within {SHELF_REACH_M} m of its shelf_front",
                    )
        seen: set[str] = set()
        for j, slot in enumerate(shelf.slots):
            if slot.sensor is not None:
                self.check_sensor((*path, "slots", j), shelf.id, slot, catalog)
            where = (*path, "slots", j, "sku")
            if slot.sku in seen:
                self.error(where, f"sku {slot.sku!r} is listed twice on shelf {shelf.id!r}")
            seen.add(slot.sku)
            if slot.sku not in catalog and slot.sku not in self.broken["catalog"]:
                self.error(
                    where,
                    f"sku {slot.sku!r} on shelf {shelf.id!r} is not in the "
                    f"catalog{_suggest(slot.sku, catalog)}",
                )

    def check_camera(self, i: int, cam: Camera, zones: dict[str, Zone]) -> None:
        path: PathKey = ("cameras", i)
        self.check_detect(path, cam)
        for j, zid in enumerate(cam.sees):
            if zid not in zones and zid not in self.broken["zones"]:
                self.error(
                    (*path, "sees", j),
                    f"camera {cam.id!r} sees unknown zone {zid!r}{_suggest(zid, zones)}",
                )
        pts = cam.calibration.points
        where = (*path, "calibration", "points")
        if len(pts) < 4:
            self.error(
                where,
                f"camera {cam.id!r} calibration needs at least 4 points "
                f"(image ↔ floor pairs), got {len(pts)}",
            )
            return
        for j, p in enumerate(pts):
            u, v = p.image
            if not (0 <= u <= cam.image.width and 0 <= v <= cam.image.height):
                self.error(
                    (*where, j, "image"),
                    f"camera {cam.id!r} calibration point {j + 1} "
                    f"({u}, {v}) is outside the {cam.image.width}x{cam.image.height} image",
                )
        try:
            errors = cam.reprojection_errors()
        except (ValueError, np.linalg.LinAlgError) as exc:
            self.error(
                where,
                f"camera {cam.id!r} calibration is degenerate: {exc}; use at least "
                "4 points spread over the floor, no three on one line",
            )
            return
        if not self.faces_floor(cam):
            self.error(
                where,
                f"camera {cam.id!r} calibration puts the horizon inside the "
                "image (the points fold the floor over); a pair is probably "
                "mistyped" + (", or the camera is angled" if cam.kind == "overhead" else ""),
            )
            return
        worst = int(np.argmax(errors))
        if errors[worst] > CALIBRATION_TOLERANCE_M:
            self.error(
                (*where, worst),
                f"camera {cam.id!r} calibration point {worst + 1} "
                f"reprojects {errors[worst]:.3f} m from its floor position (tolerance "
                f"{CALIBRATION_TOLERANCE_M} m): a pair is probably mistyped",
            )

    def check_shelf_camera(
        self, i: int, cam: ShelfCamera, shelves: dict[str, Shelf], cameras: dict[str, Camera]
    ) -> None:
        """The shelf is known, each box is inside the image and shows one of its slots,
        no two boxes overlap, and the span is along the shelf front."""
        path: PathKey = ("shelf_cameras", i)
        if cam.id in cameras:
            self.error((*path, "id"), f"shelf camera {cam.id!r} has the id of a floor camera")
        shelf = shelves.get(cam.shelf)
        if shelf is None:
            if cam.shelf not in self.broken["shelves"]:
                self.error(
                    (*path, "shelf"),
                    f"shelf camera {cam.id!r} sees unknown shelf "
                    f"{cam.shelf!r}{_suggest(cam.shelf, shelves)}",
                )
        else:
            for k, end in enumerate(cam.span):
                gap = shelf.shape.distance(ShapelyPoint(end))
                if gap > SHELF_REACH_M:
                    self.error(
                        (*path, "span", k),
                        f"shelf camera {cam.id!r} span end {list(end)} is {gap:.2f} m from "
                        f"shelf {shelf.id!r}; the span runs along the shelf's front",
                    )
        if cam.span[0] == cam.span[1]:
            self.error((*path, "span"), f"shelf camera {cam.id!r} span has zero length")
        boxes: list[tuple[int, tuple[float, float, float, float]]] = []
        for j, view in enumerate(cam.slots):
            where = (*path, "slots", j)
            if shelf is not None and view.sku not in shelf.skus:
                self.error(
                    (*where, "sku"),
                    f"shelf camera {cam.id!r} shows {view.sku!r}, which no slot of shelf "
                    f"{shelf.id!r} holds{_suggest(view.sku, dict.fromkeys(shelf.skus))}",
                )
            x0, y0, x1, y1 = view.box
            if not (0 <= x0 < x1 <= cam.image.width and 0 <= y0 < y1 <= cam.image.height):
                self.error(
                    (*where, "box"),
                    f"shelf camera {cam.id!r} box {list(view.box)} is not left < right and "
                    f"top < bottom inside the {cam.image.width}x{cam.image.height} image",
                )
                continue
            for k, (bx0, by0, bx1, by1) in boxes:
                if x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1:
                    self.error(
                        (*where, "box"),
                        f"shelf camera {cam.id!r} box of {view.sku!r} overlaps the box of "
                        f"{cam.slots[k].sku!r}: a hand in both could not be told apart",
                    )
            boxes.append((j, view.box))

    def check_detect(self, path: PathKey, cam: Camera) -> None:
        rate, interval = cam.detect.fps, cam.detect.interval_s
        if rate is not None and interval is not None:
            self.error(
                (*path, "detect"),
                f"camera {cam.id!r} detect gives both fps ({rate:g}) and interval_s "
                f"({interval:g}); give one: fps for a rate, interval_s for one frame every so "
                "many seconds",
            )
        elif rate is not None and rate > cam.fps:
            self.error(
                (*path, "detect", "fps"),
                f"camera {cam.id!r} detect fps {rate:g} is more than the camera gives "
                f"(fps {cam.fps:g})",
            )
        elif interval is not None and interval * cam.fps < 1 - 1e-9:
            self.error(
                (*path, "detect", "interval_s"),
                f"camera {cam.id!r} detect interval_s {interval:g} is shorter than one frame "
                f"of the camera (1/{cam.fps:g} s)",
            )

    @staticmethod
    def faces_floor(cam: Camera) -> bool:
        """Whether every calibration pixel (and, overhead, every image corner) sees the floor.

        A real camera sees the floor on one side of its horizon only, so the homography's
        projective denominator has one sign over those pixels; a mistyped pair that folds
        the mapping shows up as a sign change even when 4 points fit exactly.
        """
        w, h = cam.image.width, cam.image.height
        pixels = [p.image for p in cam.calibration.points]
        if cam.kind == "overhead":
            pixels += [(0, 0), (w, 0), (w, h), (0, h)]
        denom = np.hstack([np.array(pixels), np.ones((len(pixels), 1))]) @ cam.homography.matrix[2]
        return bool(np.all(denom > 0) or np.all(denom < 0))

    def check_sensor(
        self, path: PathKey, shelf: str, slot: Slot, catalog: dict[str, CatalogItem]
    ) -> None:
        """A weighed slot needs one sensor of its own and an item of known weight."""
        assert slot.sensor is not None
        where = self.sensors.setdefault(slot.sensor, f"{shelf} slot {path[-1] + 1}")
        if where != f"{shelf} slot {path[-1] + 1}":
            self.error((*path, "sensor"), f"sensor {slot.sensor!r} is under two slots ({where})")
        item = catalog.get(slot.sku)
        if item is not None and item.weight_g is None:
            self.error(
                (*path, "sensor"),
                f"slot of {slot.sku!r} is weighed by {slot.sensor!r}, but the catalog gives "
                f"no weight_g for {slot.sku!r}",
            )

    def check_weight(self, i: int, item: CatalogItem) -> None:
        """Whole units must be told apart: a tolerance under half a unit."""
        tolerance = item.tolerance_g
        if item.weight_g is None:
            if item.weight_tolerance_g is not None:
                self.error(
                    ("catalog", i, "weight_tolerance_g"),
                    f"{item.sku!r} has a weight tolerance but no weight_g",
                )
        elif tolerance is not None and tolerance >= item.weight_g / 2:
            self.error(
                ("catalog", i, "weight_tolerance_g"),
                f"tolerance {tolerance:g} g of {item.sku!r} is half its weight "
                f"({item.weight_g:g} g) or more: one unit could not be told from two",
            )

    def check_price(self, i: int, item: CatalogItem) -> None:
        price = item.price
        where: PathKey = ("catalog", i, "price")
        if not price.is_finite():
            self.error(where, f"price of {item.sku!r} must be a number, got {price}")
        elif price < 0:
            self.error(where, f"price of {item.sku!r} is negative ({price})")
        elif price != price.quantize(Decimal("0.01")):
            self.error(where, f"price of {item.sku!r} has more than 2 decimals ({price})")


def _explain(reason: str) -> str:
    """Shapely says ``Self-intersection[1 1]``; people read 'crosses itself at (1, 1)'."""
    name, _, at = reason.partition("[")
    coords = ", ".join(at.rstrip("]").split())
    if name == "Self-intersection":
        return f"it crosses itself at ({coords})"
    return f"{name.lower()} at ({coords})" if coords else name.lower()


def _suggest(key: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@cache
def _timezones() -> set[str]:
    """The IANA names known here; empty (no check) where the system has no tz database."""
    return zoneinfo.available_timezones()
