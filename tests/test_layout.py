"""The store layout: the example stores, the geometry the rules rely on, and bad files.

Broken layouts are small inline edits of one valid layout (``BASE``), each checked for the
exact line of the error and a phrase of its message: an operator fixes a layout from those
two things alone.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point

from core.geometry import Homography, ZoneIndex, segment_crossing
from core.layout import Layout, LayoutError, check_layout, load_layout, load_layout_text
from core.yamlsource import load_yaml

STORES = Path(__file__).resolve().parent.parent / "examples" / "stores"


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(STORES / "convenience.yaml")


@pytest.fixture(scope="module")
def supermarket() -> Layout:
    return load_layout(STORES / "supermarket.yaml")


# -- the example stores ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["convenience.yaml", "supermarket.yaml"])
def test_example_store_has_no_problems(name: str) -> None:
    assert check_layout(STORES / name) == []


def test_convenience_store_is_what_the_brief_asks(corner: Layout) -> None:
    assert corner.store.id == "corner-01"
    assert 45 <= shapely.Polygon(corner.floor).area <= 60
    kinds = [z.kind for z in corner.zones]
    assert kinds.count("aisle") >= 3
    assert {"checkout_queue", "exit_gate", "staff_only", "shelf_front"} <= set(kinds)
    assert {ln.kind for ln in corner.lines} >= {"entrance", "exit", "passby"}
    assert 15 <= len(corner.catalog) <= 30
    assert sum(item.age_restricted for item in corner.catalog) >= 2
    assert len(corner.cameras) == 4
    assert all(c.kind == "overhead" for c in corner.cameras)


def test_supermarket_is_what_the_brief_asks(supermarket: Layout) -> None:
    s = supermarket
    assert s.store.id == "super-01"
    assert 1900 <= shapely.Polygon(s.floor).area <= 2100
    assert sum(ln.kind == "entrance" for ln in s.lines) == 2
    assert sum(z.kind == "aisle" and z.id.startswith("aisle-") for z in s.zones) >= 20
    assert len(s.catalog) >= 200
    assert len(s.cameras) >= 50
    assert {"checkout_queue", "exit_gate", "staff_only"} <= {z.kind for z in s.zones}


def test_supermarket_cameras_cover_the_floor(supermarket: Layout) -> None:
    views = []
    for cam in supermarket.cameras:
        w, h = cam.image.width, cam.image.height
        views.append(
            shapely.Polygon([cam.to_floor(u, v) for u, v in ((0, 0), (w, 0), (w, h), (0, h))])
        )
    uncovered = shapely.Polygon(supermarket.floor).difference(shapely.union_all(views))
    assert uncovered.area < 1e-6


def test_the_example_in_the_docs_loads() -> None:
    doc = (STORES.parent.parent / "docs" / "layout.md").read_text(encoding="utf-8")
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    layout = load_layout_text(example, "docs/layout.md")
    assert layout.zone_at(1.5, 0.4) == "exit-gate"
    assert layout.sku("pretzel").price_cents == 120


def test_supermarket_file_is_what_its_generator_makes() -> None:
    """The committed YAML and the script that documents it must not drift apart."""
    spec = importlib.util.spec_from_file_location("gen", STORES / "generate_supermarket.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.build() == (STORES / "supermarket.yaml").read_text(encoding="utf-8")


# -- zones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "zone"),
    [
        (0.8, 3.0, "sf-drinks"),  # shelf front wins over its aisle
        (1.25, 3.0, "aisle-1"),  # between the two shelf fronts of aisle 1
        (1.2, 0.5, "entrance"),
        (2.5, 0.5, "exit-gate"),
        (2.5, 1.7, "checkout-queue"),  # the queue wins over the front area around it
        (6.0, 1.0, "front"),
        (7.0, 6.0, "stock-room"),
        (3.5, 6.0, "aisle-2"),  # the walkway behind the gondolas (non-convex aisle 2)
        (5.5, 6.0, "aisle-3"),  # the narrow arm of the L-shaped aisle 3
        (7.2, 3.0, "sf-meals"),
        (2.4, 4.0, None),  # inside gondola 1: nobody stands there
        (12.0, 3.0, None),  # outside the store
        (-3.0, -3.0, None),
    ],
)
def test_zone_at_known_points(corner: Layout, x: float, y: float, zone: str | None) -> None:
    assert corner.zone_at(x, y) == zone


def test_zones_at_lists_every_zone_most_specific_first(corner: Layout) -> None:
    assert corner.zones_at(0.8, 3.0) == ("sf-drinks", "aisle-1")
    assert corner.zones_at(2.5, 1.7) == ("checkout-queue", "front")
    assert corner.zones_at(20, 20) == ()


def test_a_point_on_a_shared_edge_is_in_exactly_one_zone(corner: Layout) -> None:
    """Entrance and exit gate share the edge x = 1.8: a point on it must not count twice."""
    on_edge = corner.zones_at(1.8, 0.5)
    assert sum(z in on_edge for z in ("entrance", "exit-gate")) == 1
    assert corner.zone("entrance").contains(1.8, 0.5) != corner.zone("exit-gate").contains(1.8, 0.5)


def test_a_point_on_a_shared_horizontal_edge_is_in_exactly_one_zone(corner: Layout) -> None:
    """The exit gate (y up to 1.2) and the queue (y from 1.2) share the edge y = 1.2."""
    on_edge = corner.zones_at(2.5, 1.2)
    assert sum(z in on_edge for z in ("exit-gate", "checkout-queue")) == 1


def test_zone_contains(corner: Layout) -> None:
    aisle3 = corner.zone("aisle-3")
    assert aisle3.contains(5.5, 6.0)
    assert not aisle3.contains(7.0, 6.0)  # the stock room notch of the L
    assert aisle3.area == pytest.approx(2.4 * 2.3 + 0.9 * 2.0)


def test_zone_index_with_no_zones() -> None:
    index = ZoneIndex([])
    assert index.zone_at(1, 1) is None
    assert index.zones_at(1, 1) == ()


def _reference_zones(layout: Layout, x: float, y: float) -> tuple[str, ...] | None:
    """Shapely's answer, or None when the point is too close to an edge to be sure."""
    p = Point(x, y)
    inside = []
    for i, z in enumerate(layout.zones):
        if z.shape.exterior.distance(p) < 1e-6:
            return None
        if z.shape.contains(p):
            inside.append((z.area, i, z.id))
    return tuple(zid for _, _, zid in sorted(inside))


@settings(max_examples=400, deadline=None)
@given(x=st.floats(-5, 55), y=st.floats(-7, 45))
def test_zones_at_agrees_with_shapely(supermarket: Layout, x: float, y: float) -> None:
    expected = _reference_zones(supermarket, x, y)
    assume(expected is not None)
    assert supermarket.zones_at(x, y) == expected
    assert supermarket.zone_at(x, y) == (expected[0] if expected else None)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_point_strictly_inside_a_zone_is_found(corner: Layout, data: st.DataObject) -> None:
    zone = data.draw(st.sampled_from(corner.zones))
    x0, y0, x1, y1 = zone.shape.bounds
    x = data.draw(st.floats(x0, x1))
    y = data.draw(st.floats(y0, y1))
    assume(zone.shape.buffer(-1e-6).contains(Point(x, y)))
    found = corner.zones_at(x, y)
    assert zone.id in found
    assert zone.contains(x, y)
    assert corner.zone_at(x, y) == found[0]
    assert corner.zone(found[0]).area <= zone.area


# -- lines -----------------------------------------------------------------------------------


def test_crossing_the_entrance_both_ways(corner: Layout) -> None:
    door = corner.line("entrance")  # (0.6, 0) → (1.8, 0), inside to the left (north)
    assert door.crossing((1.2, -0.5), (1.2, 0.5)) == 1
    assert door.crossing((1.2, 0.5), (1.2, -0.5)) == -1
    assert door.crossing((0.0, -0.5), (2.0, 0.5)) == 1  # diagonal, through the door


def test_steps_that_do_not_cross(corner: Layout) -> None:
    door = corner.line("entrance")
    assert door.crossing((0.0, -0.5), (3.0, -0.5)) == 0  # parallel, outside
    assert door.crossing((0.0, 0.5), (3.0, 0.5)) == 0  # parallel, inside
    assert door.crossing((0.7, 0.0), (1.7, 0.0)) == 0  # along the line itself
    assert door.crossing((5.0, -0.5), (5.0, 0.5)) == 0  # through the wall beside the door
    assert door.crossing((1.0, 0.5), (1.0, 0.5)) == 0  # standing still
    assert door.crossing((1.0, -2.0), (1.0, -0.1)) == 0  # stops short of the door


def test_a_sample_on_the_line_counts_once(corner: Layout) -> None:
    door = corner.line("entrance")
    out, on, inside = (1.2, -0.4), (1.2, 0.0), (1.2, 0.4)
    assert door.crossing(out, on) + door.crossing(on, inside) == 1
    assert door.crossing(inside, on) + door.crossing(on, out) == -1
    assert door.crossing(out, on) + door.crossing(on, out) == 0  # touched the line, went back


def test_in_side_right_flips_the_direction() -> None:
    assert segment_crossing((0, 0), (2, 0), -1, (1, -1), (1, 1)) == -1
    assert segment_crossing((0, 0), (2, 0), 1, (1, -1), (1, 1)) == 1


def test_passby_line_counts_both_directions(corner: Layout) -> None:
    pavement = corner.line("pavement")  # (5, -0.3) → (5, -3): +1 is walking east
    assert pavement.crossing((4.0, -1.5), (6.0, -1.5)) == 1
    assert pavement.crossing((6.0, -1.5), (4.0, -1.5)) == -1
    assert pavement.crossing((4.0, 1.0), (6.0, 1.0)) == 0  # inside the shop, not on the pavement


P = tuple[float, float]
_coord = st.floats(-10, 10, allow_nan=False)
_point = st.tuples(_coord, _coord)


@example(  # found by search: float rounding decides whether the door's end is on the step
    a=(-1.0760754400035264, 1.0791094930950553),
    b=(-1.010178704225238, 3.031859454455258),
    p0=(-7.312715117751976, 6.9486747387446535),
    p1=(5.275492379532281, -4.898619485211566),
    sign=1,
)
@given(a=_point, b=_point, p0=_point, p1=_point, sign=st.sampled_from([1, -1]))
def test_crossing_is_antisymmetric(a: P, b: P, p0: P, p1: P, sign: int) -> None:
    assert segment_crossing(a, b, sign, p0, p1) == -segment_crossing(a, b, sign, p1, p0)


@given(t=st.floats(0, 1), b=_point, p0=_point, p1=_point, sign=st.sampled_from([1, -1]))
def test_crossing_is_antisymmetric_when_the_door_ends_on_the_step(
    t: float, b: P, p0: P, p1: P, sign: int
) -> None:
    """The touching case, where float rounding could count a step one way but not back."""
    a = (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))
    assert segment_crossing(a, b, sign, p0, p1) == -segment_crossing(a, b, sign, p1, p0)


@given(a=_point, b=_point, p0=_point, p1=_point)
def test_crossing_agrees_with_shapely(a: P, b: P, p0: P, p1: P) -> None:
    door, step = LineString([a, b]), LineString([p0, p1])
    assume(door.length > 1e-3 and step.length > 1e-3)
    # Away from touching cases, a crossing is exactly a proper intersection of the two.
    assume(min(door.distance(Point(p0)), door.distance(Point(p1))) > 1e-6)
    assume(min(step.distance(Point(a)), step.distance(Point(b))) > 1e-6)
    assert (segment_crossing(a, b, 1, p0, p1) != 0) == door.crosses(step)


# -- cameras ---------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["corner", "supermarket"])
def test_homography_round_trip(store: str, request: pytest.FixtureRequest) -> None:
    layout: Layout = request.getfixturevalue(store)
    for cam in layout.cameras:
        cx, cy, _ = cam.position
        for dx, dy in ((0, 0), (1.0, 0.5), (-1.2, 0.8), (0.7, -1.1)):
            x, y = cx + dx, cy + dy
            back = cam.to_floor(*cam.to_image(x, y))
            assert back == pytest.approx((x, y), abs=1e-9)
        u, v = cam.to_image(cx, cy)  # an overhead camera looks at the floor under itself
        assert abs(u - cam.image.width / 2) < 0.1 * cam.image.width
        assert abs(v - cam.image.height / 2) < 0.1 * cam.image.height


def test_calibration_points_map_to_their_floor_marks(corner: Layout) -> None:
    for cam in corner.cameras:
        for p in cam.calibration.points:
            assert cam.to_floor(*p.image) == pytest.approx(p.floor, abs=0.005)


def _has_four_in_general_position(points: np.ndarray) -> bool:
    """Whether some 4 of the points have no 3 (even nearly) on one line."""
    scale = float(np.ptp(points, axis=0).max()) ** 2
    for quad in itertools.combinations(points, 4):
        areas = [
            abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])) / 2
            for a, b, c in itertools.combinations(quad, 3)
        ]
        if min(areas) > 0.01 * scale:
            return True
    return False


@settings(max_examples=200, deadline=None)
@given(
    m=st.lists(st.floats(-2, 2), min_size=8, max_size=8),
    pts=st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=4, max_size=8),
)
def test_homography_fit_recovers_the_map(m: list[float], pts: list[tuple[float, float]]) -> None:
    truth = Homography(
        [[10 + m[0], m[1], m[2]], [m[3], 10 + m[4], m[5]], [m[6] / 100, m[7] / 100, 1]]
    )
    src = np.array(pts)
    assume(np.all(src @ truth.matrix[2, :2] + 1 > 0.2))  # all on the camera's side of the horizon
    assume(_has_four_in_general_position(src))
    fitted = Homography.fit(src, truth.apply_array(src))
    probe = np.array([[0.0, 0.0], [50.0, 50.0], [100.0, 0.0], [0.0, 100.0]])
    assume(np.all(probe @ truth.matrix[2, :2] + 1 > 0.2))
    assert fitted.apply_array(probe) == pytest.approx(truth.apply_array(probe), rel=1e-6, abs=1e-6)


def test_homography_refuses_collinear_points() -> None:
    with pytest.raises(ValueError, match="on one line"):
        Homography.fit([(0, 0), (1, 1), (2, 2), (3, 3)], [(0, 0), (1, 0), (1, 1), (0, 1)])
    with pytest.raises(ValueError, match="three of them on one line"):
        Homography.fit([(0, 0), (1, 0), (2, 0), (0, 1)], [(0, 0), (1, 0), (2, 0), (0, 1)])


# -- lookups ---------------------------------------------------------------------------------


def test_lookups(corner: Layout) -> None:
    wine = corner.sku("red-wine-750ml")
    assert wine.price == Decimal("6.99")
    assert wine.price_cents == 699
    assert wine.age_restricted
    assert not corner.sku("alcohol-free-lager-4x330ml").age_restricted
    assert corner.shelf("g2-east").zone == "sf-g2-east"
    assert "lager-4x330ml" in corner.shelf("g2-east").skus
    assert [s.id for s in corner.shelves_in_zone("sf-g2-east")] == ["g2-east"]
    assert corner.shelves_in_zone("front") == ()
    assert corner.camera("cam-front-west").fps == 15
    with pytest.raises(KeyError, match="no sku 'caviar'"):
        corner.sku("caviar")
    with pytest.raises(KeyError, match="no zone 'nowhere'"):
        corner.zone("nowhere")


def test_prices_are_exact_cents(supermarket: Layout) -> None:
    for item in supermarket.catalog:
        assert isinstance(item.price_cents, int)
        assert Decimal(item.price_cents) / 100 == item.price


def test_a_loaded_layout_is_frozen(corner: Layout) -> None:
    with pytest.raises(AttributeError):
        corner.store = corner.store  # type: ignore[misc]


# -- broken layouts --------------------------------------------------------------------------

BASE = """\
store: {id: t1, name: Test shop, timezone: Europe/Paris}
floor: [[0, 0], [10, 0], [10, 8], [0, 8]]
lines:
  - {id: door, kind: entrance_exit, points: [[1, 0], [3, 0]], in_side: left}
  - {id: street, kind: passby, points: [[5, -1], [5, -4]], in_side: left}
zones:
  - {id: aisle, kind: aisle, polygon: [[0, 0], [10, 0], [10, 8], [0, 8]]}
  - {id: front-a, kind: shelf_front, polygon: [[4, 2], [5, 2], [5, 6], [4, 6]]}
  - {id: porch, kind: entrance, polygon: [[0, -2], [4, -2], [4, 0], [0, 0]]}
shelves:
  - id: shelf-a
    zone: front-a
    footprint: [[5, 2], [5, 6]]
    slots:
      - {sku: apple}
      - {sku: beer, facings: 2}
cameras:
  - id: cam-1
    kind: overhead
    position: [5, 4, 3]
    image: {width: 1000, height: 800}
    fps: 10
    sees: [aisle, front-a]
    calibration:
      points:
        - {image: [0, 0], floor: [0, 8]}
        - {image: [1000, 0], floor: [10, 8]}
        - {image: [1000, 800], floor: [10, 0]}
        - {image: [0, 800], floor: [0, 0]}
        - {image: [500, 400], floor: [5, 4]}
catalog:
  - {sku: apple, name: Apple, price: 0.45}
  - {sku: beer, name: Lager 330 ml, price: 1.29, age_restricted: true}
"""

CALIBRATION = BASE[BASE.index("        - {image: [0, 0]") : BASE.index("catalog:")]

FOUR_POINTS_THREE_IN_LINE = """\
        - {image: [0, 0], floor: [0, 8]}
        - {image: [500, 0], floor: [5, 8]}
        - {image: [1000, 0], floor: [10, 8]}
        - {image: [0, 800], floor: [0, 0]}
"""

BEER = "  - {sku: beer, name: Lager 330 ml, price: 1.29, age_restricted: true}\n"
LINE_AFTER_BEER = BASE[: BASE.index(BEER)].count("\n") + 2

BROKEN = {
    # name: (text to replace in BASE, replacement, line of the error, phrase of its message)
    "yaml syntax": ("    zone: front-a\n", "    zone: front-a: x\n", 12, "YAML syntax"),
    "wrong type": ("fps: 10", "fps: fast", 22, "cameras[0].fps: expected float, got str"),
    "unknown field": ("height: 800}", "height: 800, depth: 3}", 21, "unknown field 'depth'"),
    "bad store id": ("id: t1,", "id: t 1,", 1, "store.id: expected str matching regex"),
    "store id with a subject wildcard": ("id: t1,", "id: 't*1',", 1, "store.id: expected str"),
    "store id with a subject separator": ("id: t1,", "id: t.1,", 1, "store.id: expected str"),
    "store id with a subject tail": ("id: t1,", "id: 't>',", 1, "store.id: expected str"),
    "store id not in ASCII": ("id: t1,", "id: tö1,", 1, "store.id: expected str matching"),
    "sku with a zero-width space": (
        BEER,
        BEER + '  - {sku: "ap\\u200bple", name: Apple, price: 0.45}\n',
        LINE_AFTER_BEER,
        "catalog[2].sku: expected str matching regex",
    ),
    "sku with a control character": (
        BEER,
        BEER + '  - {sku: "ap\\tple", name: Apple, price: 0.45}\n',
        LINE_AFTER_BEER,
        "catalog[2].sku: expected str matching regex",
    ),
    "bad time zone": ("Europe/Paris", "Europe/Pariss", 1, "unknown time zone 'Europe/Pariss'"),
    "unknown zone in a shelf": (
        "    zone: front-a\n",
        "    zone: front-b\n",
        12,
        "reached from unknown zone 'front-b' (did you mean 'front-a'?)",
    ),
    "shelf zone not a shelf front": (
        "    zone: front-a\n",
        "    zone: aisle\n",
        12,
        "it must be a shelf_front zone",
    ),
    "shelf far from its zone": (
        "footprint: [[5, 2], [5, 6]]",
        "footprint: [[8, 2], [8, 6]]",
        13,
        "is 3.00 m from its zone 'front-a'",
    ),
    "self-intersecting polygon": (
        "[[4, 2], [5, 2], [5, 6], [4, 6]]",
        "[[4, 2], [5, 6], [5, 2], [4, 6]]",
        8,
        "not a simple polygon (it crosses itself at (4.5, 4))",
    ),
    "polygon with two points": (
        "[[4, 2], [5, 2], [5, 6], [4, 6]]",
        "[[4, 2], [5, 2]]",
        8,
        "needs at least 3 points, got 2",
    ),
    "polygon with zero area": (
        "[[4, 2], [5, 2], [5, 6], [4, 6]]",
        "[[4, 2], [5, 2], [6, 2]]",
        8,
        "zero area",
    ),
    "zone outside the floor": (
        "[[4, 2], [5, 2], [5, 6], [4, 6]]",
        "[[4, 2], [12, 2], [12, 6], [4, 6]]",
        8,
        "lies 2.00 m outside the floor outline",
    ),
    "aisle zone outside the floor": (
        "{id: porch, kind: entrance",
        "{id: porch, kind: aisle",
        9,
        "only entrance zones may be outside",
    ),
    "door line outside the floor": (
        "[[1, 0], [3, 0]]",
        "[[1, -3], [3, -3]]",
        4,
        "only passby lines may be outside",
    ),
    "zero-length line": ("[[1, 0], [3, 0]]", "[[1, 0], [1, 0]]", 4, "'door' has zero length"),
    "duplicate zone id": (
        "{id: porch,",
        "{id: aisle,",
        9,
        "duplicate zone id 'aisle' (first at line 7)",
    ),
    "duplicate sku": (
        "  - {sku: beer, name: Lager 330 ml, price: 1.29, age_restricted: true}\n",
        "  - {sku: beer, name: Lager 330 ml, price: 1.29, age_restricted: true}\n"
        "  - {sku: beer, name: Lager 500 ml, price: 1.79}\n",
        34,
        "duplicate sku 'beer' (first at line 33)",
    ),
    "sku in a slot not in the catalog": (
        "{sku: beer, facings: 2}",
        "{sku: bier, facings: 2}",
        16,
        "sku 'bier' on shelf 'shelf-a' is not in the catalog (did you mean 'beer'?)",
    ),
    "sku twice on a shelf": (
        "{sku: beer, facings: 2}",
        "{sku: apple, facings: 2}",
        16,
        "listed twice",
    ),
    "camera sees an unknown zone": (
        "sees: [aisle, front-a]",
        "sees: [aisle, front-b]",
        23,
        "sees unknown zone 'front-b'",
    ),
    "missing price": (
        "{sku: apple, name: Apple, price: 0.45}",
        "{sku: apple, name: Apple}",
        32,
        "missing required field 'price'",
    ),
    "malformed price": (
        "price: 0.45",
        "price: twelve",
        32,
        "catalog[0].price: Invalid decimal string",
    ),
    "price with 3 decimals": ("price: 0.45", "price: 0.455", 32, "more than 2 decimals (0.455)"),
    "negative price": ("price: 0.45", "price: -0.45", 32, "is negative (-0.45)"),
    "detect faster than the camera": (
        "fps: 10\n",
        "fps: 10\n    detect: {fps: 12}\n",
        23,
        "detect fps 12 is more than the camera gives (fps 10)",
    ),
    "detect interval shorter than a frame": (
        "fps: 10\n",
        "fps: 10\n    detect: {interval_s: 0.05}\n",
        23,
        "detect interval_s 0.05 is shorter than one frame of the camera (1/10 s)",
    ),
    "detect with both a rate and an interval": (
        "fps: 10\n",
        "fps: 10\n    detect: {fps: 5, interval_s: 4}\n",
        23,
        "give one: fps for a rate, interval_s for one frame every so many seconds",
    ),
    "detect with a negative interval": (
        "fps: 10\n",
        "fps: 10\n    detect: {interval_s: -4}\n",
        23,
        "cameras[0].detect.interval_s: expected float > 0.0",
    ),
    "detect with an unknown field": (
        "fps: 10\n",
        "fps: 10\n    detect: {every: 4}\n",
        23,
        "unknown field 'every'",
    ),
    "unknown camera kind": ("kind: overhead", "kind: fisheye", 19, "Invalid enum value 'fisheye'"),
    "calibration points all on one line": (
        CALIBRATION,
        CALIBRATION.replace("floor: [10, 0]", "floor: [10, 8]")
        .replace("floor: [0, 0]", "floor: [2, 8]")
        .replace("floor: [5, 4]", "floor: [5, 8]"),
        26,
        "calibration is degenerate: the floor points all lie on one line",
    ),
    "calibration with three of four points in line": (
        CALIBRATION,
        FOUR_POINTS_THREE_IN_LINE,
        26,
        "calibration is degenerate: the points do not determine a homography",
    ),
    "calibration with a mistyped pair": (
        "floor: [5, 4]}",
        "floor: [5, 4.5]}",
        30,
        "calibration point 5 reprojects 0.355 m",
    ),
    "calibration that folds the floor": (
        "{image: [0, 800], floor: [0, 0]}",
        "{image: [0, 800], floor: [10, 4]}",
        26,
        "puts the horizon inside the image",
    ),
    "weighed slot of an item of no known weight": (
        "      - {sku: apple}\n",
        "      - {sku: apple, sensor: cell-1}\n",
        15,
        "weighed by 'cell-1', but the catalog gives no weight_g for 'apple'",
    ),
    "weight tolerance of half a unit": (
        "price: 0.45}",
        "price: 0.45, weight_g: 100, weight_tolerance_g: 50}",
        LINE_AFTER_BEER - 2,
        "one unit could not be told from two",
    ),
    "calibration with three points": (
        "        - {image: [0, 800], floor: [0, 0]}\n"
        "        - {image: [500, 400], floor: [5, 4]}\n",
        "",
        26,
        "needs at least 4 points (image ↔ floor pairs), got 3",
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_layout_is_refused_with_line_and_reason(case: str) -> None:
    old, new, line, phrase = BROKEN[case]
    assert BASE.count(old) == 1, "the case must edit exactly one place"
    text = BASE.replace(old, new)
    errors = check_layout("store.yaml", text=text)
    assert [(e.line, phrase in e.message) for e in errors] == [(line, True)], errors
    assert errors[0].file == "store.yaml"
    with pytest.raises(LayoutError) as info:
        load_layout_text(text, "store.yaml")
    assert str(info.value).startswith(f"store.yaml:{line}:")


@pytest.mark.parametrize(
    ("detect", "interval"),
    [("", 0.1), ("detect: {fps: 2.5}", 0.4), ("detect: {interval_s: 4}", 4.0), ("detect: {}", 0.1)],
)
def test_a_cameras_detect_rate_or_interval_gives_the_seconds_between_processed_frames(
    detect: str, interval: float
) -> None:
    text = BASE.replace("fps: 10\n", f"fps: 10\n    {detect}\n") if detect else BASE
    assert load_layout_text(text).camera("cam-1").detect_interval_s == pytest.approx(interval)


def test_the_base_layout_is_valid() -> None:
    """The broken cases mean something only if the layout they break is fine."""
    layout = load_layout_text(BASE)
    assert layout.zone_at(4.5, 4) == "front-a"
    assert layout.zone_at(1, -1) == "porch"  # entrance zones may lie outside the floor


def test_every_problem_is_reported_in_file_order() -> None:
    text = (
        BASE.replace("{sku: beer, facings: 2}", "{sku: bier, facings: 2}")
        .replace("Europe/Paris", "Mars/Olympus")
        .replace("price: 0.45", "price: 0.455")
        .replace("fps: 10", "fps: fast")
    )
    errors = check_layout("store.yaml", text=text)
    assert [e.line for e in errors] == [1, 16, 22, 32]
    with pytest.raises(LayoutError) as info:
        load_layout_text(text, "store.yaml")
    assert len(info.value.errors) == 4
    assert len(str(info.value).splitlines()) == 4


def test_a_broken_zone_does_not_cause_unknown_zone_noise() -> None:
    """A zone that failed its own check still exists for the shelves that name it."""
    text = BASE.replace("{id: front-a, kind: shelf_front,", "{id: front-a, kind: shelf-front,")
    errors = check_layout("store.yaml", text=text)
    assert [e.line for e in errors] == [8]
    assert "Invalid enum value 'shelf-front'" in errors[0].message


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "the layout file is empty"),
        ("- a\n", "expected object, got array"),
        ("floor: []\n", "missing required field 'store'"),
    ],
)
def test_not_a_layout(text: str, phrase: str) -> None:
    errors = check_layout("store.yaml", text=text)
    assert len(errors) == 1
    assert phrase in errors[0].message


def test_missing_file() -> None:
    errors = check_layout("/nonexistent/store.yaml")
    assert len(errors) == 1
    assert "cannot read file" in errors[0].message


def test_numbers_in_the_file_are_plain() -> None:
    """ruamel hands back float subclasses; a layout of decimals must still load."""
    layout = load_layout_text(BASE.replace("[[4, 2], [5, 2],", "[[4.0, 2.0], [5.0, 2.0],"))
    assert layout.zone("front-a").polygon[0] == (4.0, 2.0)
    assert type(layout.zone("front-a").polygon[0][0]) is float
    assert math.isclose(layout.zone("front-a").area, 4.0)


def test_a_layout_check_reports_every_field_of_a_section_in_one_run(tmp_path: Path) -> None:
    text = (STORES / "convenience.yaml").read_text()
    text = text.replace("currency: EUR", "currency: 12", 1)
    text = text.replace("timezone: Europe/Amsterdam", "timezone: 5", 1)
    text = text.replace("kind: entrance\n", "kind: entrancee\n", 1)
    text = text.replace("in_side: left\n", "in_side: up\n", 1)
    errors = check_layout("store.yaml", text=text)
    assert [(e.line, e.message) for e in errors] == [
        (31, "store.currency: expected str, got int"),
        (32, "store.timezone: expected str, got int"),
        (44, "lines[0].kind: Invalid enum value 'entrancee'"),
        (46, "lines[0].in_side: Invalid enum value 'up'"),
    ]


@pytest.mark.parametrize(
    ("raw", "place", "message"),
    [
        (b"store:\n  id: corner-01\n  name: Caf\xe9\n", (3, 12), "not UTF-8"),
        (b"store: " + b"[" * 20_000 + b"]" * 20_000, (1, 108), "nested more than 100"),
        (
            b"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            + b"".join(
                b"%c: &%c [%s]\n" % (97 + i, 97 + i, b", ".join([b"*%c" % (96 + i)] * 10))
                for i in range(1, 8)
            ),
            (4, 4),
            "aliases (*name) stand for more than 10000 values",
        ),
    ],
)
def test_a_layout_not_utf8_nested_too_deep_or_an_alias_bomb_is_refused_at_its_place(
    tmp_path: Path, raw: bytes, place: tuple[int, int], message: str
) -> None:
    path = tmp_path / "store.yaml"
    path.write_bytes(raw)
    errors = check_layout(path)
    assert len(errors) == 1
    assert ((errors[0].line, errors[0].col), errors[0].message[: len(message)]) == (place, message)


def test_a_yaml_merge_key_is_read_with_its_values_placed_where_the_map_starts(
    tmp_path: Path,
) -> None:
    """``<<: *anchor`` (YAML's merge key) once raised a KeyError from the position table."""
    path = tmp_path / "merged.yaml"
    path.write_text("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    doc = load_yaml(path)
    assert doc.data["other"] == {"x": 1, "y": 2}
    assert doc.positions[("other", "x")] == (3, 3)
    assert doc.positions[("other", "y")] == (4, 6)


def test_a_load_cell_under_two_slots_is_refused_at_the_second() -> None:
    text = BASE.replace("{sku: apple}", "{sku: apple, sensor: cell-1}")
    text = text.replace("{sku: beer, facings: 2}", "{sku: beer, facings: 2, sensor: cell-1}")
    text = text.replace("price: 0.45}", "price: 0.45, weight_g: 180}")
    text = text.replace("age_restricted: true}", "age_restricted: true, weight_g: 350}")
    errors = check_layout("store.yaml", text=text)
    assert [(e.line, e.message.split(": ", 1)[-1]) for e in errors] == [
        (16, "sensor 'cell-1' is under two slots (shelf-a slot 1)")
    ], errors
    apple = load_layout_text(
        text.replace("sensor: cell-1}\n      - {sku: beer", "sensor: c2}\n      - {sku: beer")
    ).catalog[0]
    assert apple.tolerance_g == pytest.approx(5.4)  # 3% of 180 g


def test_a_chain_numbers_its_stores_from_the_layouts_own_id() -> None:
    from core.layout import chain_store_ids

    assert chain_store_ids("corner-01", 1) == ["corner-01"]
    assert chain_store_ids("corner-01", 3) == ["corner-01", "corner-02", "corner-03"]
    assert chain_store_ids("amsterdam-oost", 3) == [
        "amsterdam-oost",
        "amsterdam-oost-2",
        "amsterdam-oost-3",
    ]
    assert chain_store_ids("s9", 3) == ["s9", "s10", "s11"]
    with pytest.raises(ValueError, match="over 64 characters"):
        chain_store_ids("a" * 64, 2)


def test_a_layout_serves_the_stores_its_patterns_name_and_only_those() -> None:
    from rules.reference import Reference

    root = Path(__file__).resolve().parent.parent / "examples" / "stores"
    corner, market = load_layout(root / "convenience.yaml"), load_layout(root / "supermarket.yaml")
    assert corner.store.serves == ("corner-*",)
    both = Reference.of(market, corner)
    assert both.layout("corner-05") is corner and both.layout("corner-01") is corner
    assert both.layout(market.store.id) is market
    with pytest.raises(KeyError, match=r"no store layout for store .kiosk-7.*store\.serves"):
        both.layout("kiosk-7")
    assert Reference.of(corner).layout("kiosk-7") is corner, "one layout serves every store"


def test_a_serves_pattern_that_is_no_store_id_glob_is_refused_where_it_is(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent / "examples" / "stores"
    text = (root / "convenience.yaml").read_text().replace('["corner-*"]', '["corner.*"]')
    bad = tmp_path / "store.yaml"
    bad.write_text(text)
    (problem,) = check_layout(bad)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "serves:" in x)
    assert str(problem).startswith(f"{bad}:{line}:"), problem
    assert "serves" in str(problem)
