"""Walkable floor and paths: around shelves, through doors the right way, staff rooms."""

from __future__ import annotations

import itertools
import math
from functools import cache
from pathlib import Path

import pytest
from shapely.geometry import LineString, Polygon

from core.layout import Layout, load_layout
from simulator.floor import Floor

ROOT = Path(__file__).resolve().parent.parent


@cache
def store(name: str) -> Layout:
    return load_layout(ROOT / "examples" / "stores" / f"{name}.yaml")


def door(layout: Layout, kind: str) -> tuple[float, float]:
    line = next(ln for ln in layout.lines if ln.kind == kind)
    (x0, y0), (x1, y1) = line.points
    return (x0 + x1) / 2, (y0 + y1) / 2


def shelf_fronts(layout: Layout) -> list[tuple[float, float]]:
    return [
        (z.shape.centroid.x, z.shape.centroid.y) for z in layout.zones if z.kind == "shelf_front"
    ]


def crossings(layout: Layout, path: list[tuple[float, float]]) -> list[tuple[str, int]]:
    out = []
    for a, b in itertools.pairwise(path):
        for line in layout.lines:
            if line.kind != "passby" and (way := line.crossing(a, b)):
                out.append((line.id, way))
    return out


@pytest.mark.parametrize("name", ["convenience", "supermarket"])
def test_paths_go_around_shelves(name: str) -> None:
    layout = store(name)
    floor = Floor(layout)
    shelves = [
        Polygon(s.footprint) if len(s.footprint) > 2 else LineString(s.footprint)
        for s in layout.shelves
    ]
    entrance = door(layout, "entrance")
    start = (entrance[0], entrance[1] - 1.0)
    goals = shelf_fronts(layout)[:12]
    for goal in goals:
        path = floor.path(start, goal)
        assert path[0] == start and path[-1] == goal
        walk = LineString(path)
        assert not any(walk.crosses(s) or walk.within(s) for s in shelves if s.area), goal
        length = walk.length
        assert length >= math.dist(start, goal) - 1e-9


def test_shoppers_come_in_by_the_entrance_and_leave_by_the_exit() -> None:
    layout = store("convenience")
    floor = Floor(layout)
    outside = (2.4, -1.0)  # in front of the exit door
    inside = (6.5, 3.0)
    assert crossings(layout, floor.path(outside, inside)) == [("entrance", 1)]
    out = crossings(layout, floor.path((1.2, 1.0), (1.2, -1.0)))  # just inside the entrance
    assert out == [("exit", -1)]
    thief = Floor(layout, any_door=True)
    assert crossings(layout, thief.path((1.2, 1.0), (1.2, -1.0))) == [("entrance", -1)]


def test_staff_rooms_are_for_staff() -> None:
    layout = store("convenience")
    room = next(z for z in layout.zones if z.kind == "staff_only").shape.centroid
    assert not Floor(layout).walkable((room.x, room.y))
    assert Floor(layout, staff=True).walkable((room.x, room.y))
    staff_path = Floor(layout, staff=True).path((3.0, 2.0), (room.x, room.y))
    assert layout.zone_at(*staff_path[-1]) == "stock-room"
