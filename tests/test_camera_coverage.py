"""The example convenience store's cameras see all of its floor: every zone and the doors.

A lone standing shopper is put on a grid over every zone (where a person can stand) and
along every door line, and filmed by each camera from the layout's calibration and
position (``simulator.render.truth_boxes``: the boxes the rendered video would hold).
Seen means usable by the adapters: whole in the image (not cut by its border), at least
``MIN_SHOWING`` of the figure showing past the shelves, and at least ``MIN_PX`` pixels across.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from shapely.geometry import LineString, Point

from core.layout import Layout, load_layout
from simulator.floor import Floor
from simulator.render import Person, RenderOptions, truth_boxes

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "examples" / "stores" / "convenience.yaml"
GRID_M = 0.25
MIN_PX = 40
MIN_SHOWING = 0.35  # the least: just past a gondola's end, it hides the legs from above

Pt = tuple[float, float]


def spots(layout: Layout) -> list[Pt]:
    """Grid points of every zone where a person can stand, and points along the doors."""
    floor = Floor(layout, staff=True)
    xs = [p[0] for p in layout.floor]
    ys = [p[1] for p in layout.floor]
    out = []
    for i in range(int((max(xs) - min(xs)) / GRID_M)):
        for j in range(int((max(ys) - min(ys)) / GRID_M)):
            p = (min(xs) + (i + 0.5) * GRID_M, min(ys) + (j + 0.5) * GRID_M)
            if layout.zone_at(*p) is not None and floor.walkable(p):
                out.append(p)
    for line in layout.lines:
        if line.kind in ("entrance", "exit", "entrance_exit"):
            (ax, ay), (bx, by) = line.points
            out += [(ax + (bx - ax) * k / 6, ay + (by - ay) * k / 6) for k in range(1, 6)]
    return out


@cache
def seen_by(path: Path = STORE) -> dict[Pt, list[str]]:
    """For each point, the cameras that see a person standing there (as the docstring says)."""
    layout = load_layout(path)
    points = spots(layout)
    out: dict[Pt, list[str]] = {p: [] for p in points}
    frames = [(float(k), [Person(f"p{k}", *p)]) for k, p in enumerate(points)]  # each fresh
    for camera in layout.cameras:
        w_px, h_px = camera.image.width, camera.image.height
        options = RenderOptions(min_visibility=0.0)
        for p, boxes in zip(points, truth_boxes(layout, camera.id, frames, options), strict=True):
            for _, (x, y, w, h), showing in boxes:
                whole = x > 0 and y > 0 and x + w < w_px and y + h < h_px
                if whole and min(w, h) >= MIN_PX and showing >= MIN_SHOWING:
                    out[p].append(camera.id)
    return out


def test_every_zone_and_door_of_the_example_store_is_seen_by_a_camera() -> None:
    layout = load_layout(STORE)
    seen = seen_by()
    blind = {p: layout.zone_at(*p) for p, cameras in seen.items() if not cameras}
    assert not blind, f"seen by no camera: {blind}"
    zones = {layout.zone_at(*p) for p in seen}
    assert zones >= {z.id for z in layout.zones}  # the grid reached every zone
    for line in layout.lines:
        if line.kind in ("entrance", "exit", "entrance_exit"):
            on = [p for p in seen if LineString(line.points).distance(Point(p)) < 1e-9]
            assert len(on) == 5 and all(seen[p] for p in on), line.id


def test_the_front_and_back_views_overlap_where_shoppers_cross_between_them() -> None:
    """A shopper walking from the front of the shop into an aisle is seen whole by two
    cameras at once somewhere on the way: the hand-off joins them there."""
    seen = seen_by()
    twice = {p for p, cameras in seen.items() if len({c.split("-")[1] for c in cameras}) == 2}
    layout = load_layout(STORE)
    for zone in ("aisle-1", "aisle-2", "aisle-3", "sf-drinks", "sf-g2-east", "sf-meals"):
        assert any(layout.zone_at(*p) == zone and 2.5 < p[1] < 4.0 for p in twice), zone
