"""The walkable floor of a store, and shortest paths over it.

Simulated shoppers walk where people can walk: inside the store's outline, around the
shelves (with a little clearance), in and out only through its doors, and into staff-only
rooms only if they are staff. The floor is a grid of small cells; paths are shortest ways
over it, then pulled straight where the way is clear, as people walk.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from functools import cached_property

from shapely import prepared
from shapely.geometry import LineString, Point, Polygon

from core.layout import Layout

Pt = tuple[float, float]
Cell = tuple[int, int]

OUTSIDE_M = 2.0  # how far in front of the doors the pavement is walkable
CLEARANCE_M = 0.15  # how close to a shelf a person's centre comes
_STEPS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]


class NoPath(ValueError):
    """Two points of the floor are not connected (a layout with a closed-off area)."""


class Floor:
    def __init__(
        self,
        layout: Layout,
        *,
        staff: bool = False,
        any_door: bool = False,
        avoid: tuple[str, ...] = (),
        cell_m: float = 0.25,
    ) -> None:
        self.layout = layout
        self.cell_m = cell_m
        self.staff = staff
        self.any_door = any_door
        self.inside = prepared.prep(Polygon(layout.floor))
        doors = [ln for ln in layout.lines if ln.kind in ("entrance", "exit", "entrance_exit")]
        # A door along an avoided zone (a thief: the gate's exit) is no way out either.
        avoided = [z.shape.buffer(0.01) for z in layout.zones if z.kind in avoid]
        self.doors = [
            d
            for d in doors
            if not any(
                LineString(d.points).intersection(a).length > 0.5 * LineString(d.points).length
                for a in avoided
            )
        ]
        self.pavement = (
            prepared.prep(LineString([p for ln in doors for p in ln.points]).buffer(OUTSIDE_M))
            if doors
            else None
        )
        blocked = [
            Polygon(s.footprint).buffer(CLEARANCE_M)
            if len(s.footprint) > 2
            else LineString(s.footprint).buffer(CLEARANCE_M)
            for s in layout.shelves
        ]
        if not staff:
            blocked += [z.shape for z in layout.zones if z.kind == "staff_only"]
        blocked += [z.shape for z in layout.zones if z.kind in avoid]  # (a thief: the gate)
        self.blocked = [prepared.prep(b) for b in blocked]
        xs = [p[0] for p in layout.floor]
        ys = [p[1] for p in layout.floor]
        self.x0, self.y0 = min(xs) - OUTSIDE_M, min(ys) - OUTSIDE_M
        self.nx = math.ceil((max(xs) - min(xs) + 2 * OUTSIDE_M) / cell_m)
        self.ny = math.ceil((max(ys) - min(ys) + 2 * OUTSIDE_M) / cell_m)
        self._fields: dict[Cell, dict[Cell, Cell]] = {}

    # -- cells -------------------------------------------------------------------------------

    def centre(self, c: Cell) -> Pt:
        return self.x0 + (c[0] + 0.5) * self.cell_m, self.y0 + (c[1] + 0.5) * self.cell_m

    def cell(self, p: Pt) -> Cell:
        return int((p[0] - self.x0) / self.cell_m), int((p[1] - self.y0) / self.cell_m)

    @cached_property
    def _walkable(self) -> dict[Cell, bool]:
        """Walkable cells, and whether each is inside the store."""
        out: dict[Cell, bool] = {}
        for i in range(self.nx):
            for j in range(self.ny):
                p = Point(self.centre((i, j)))
                inside = self.inside.contains(p)
                if not inside and not (self.pavement and self.pavement.contains(p)):
                    continue
                if inside and any(b.contains(p) for b in self.blocked):
                    continue
                out[(i, j)] = inside
        return out

    def walkable(self, p: Pt) -> bool:
        return self.cell(p) in self._walkable

    def _passable(self, a: Pt, b: Pt, a_in: bool, b_in: bool) -> bool:
        """A step between two walkable points: through a wall only by a door, and the right
        way through it (in by an entrance, out by an exit; ``any_door`` for those who leave
        by the entrance)."""
        if a_in == b_in:
            return True
        for d in self.doors:
            way = d.crossing(a, b)
            if way > 0 and d.kind != "exit":
                return True
            if way < 0 and (d.kind != "entrance" or self.any_door):
                return True
        return False

    # -- paths -------------------------------------------------------------------------------

    def nearest(self, p: Pt) -> Cell:
        """The walkable cell nearest to ``p`` (a shelf-front centre may sit in the clearance)."""
        c = self.cell(p)
        if c in self._walkable:
            return c
        return min(self._walkable, key=lambda k: (k[0] - c[0]) ** 2 + (k[1] - c[1]) ** 2)

    def path(self, a: Pt, b: Pt) -> list[Pt]:
        """A shortest walkable path from ``a`` to ``b``, as the corners a person walks by."""
        start, goal = self.nearest(a), self.nearest(b)
        toward = self._field(goal)
        if start not in toward:
            raise NoPath(f"no walkable way from {a} to {b}")
        cells = [start]
        while cells[-1] != goal:
            cells.append(toward[cells[-1]])
        corners = self._smooth([self.centre(c) for c in cells])
        return [a, *corners[1:-1], b]

    def _field(self, goal: Cell) -> dict[Cell, Cell]:
        """For every cell that can reach ``goal``, its next cell on a shortest way there.

        One Dijkstra search back from each goal, kept: shoppers walk between a few dozen
        places (shelf fronts, the queue, the gate, the doors), so a search per goal serves
        every start, where a search per pair did not.
        """
        found = self._fields.get(goal)
        if found is not None:
            return found
        cells = self._walkable
        toward: dict[Cell, Cell] = {goal: goal}
        cost = {goal: 0.0}
        frontier = [(0.0, goal)]
        while frontier:
            g, c = heapq.heappop(frontier)
            if g > cost[c]:
                continue
            pc = self.centre(c)
            for dx, dy in _STEPS:
                n = (c[0] + dx, c[1] + dy)
                # The step is n -> c, towards the goal: a door only lets one way through.
                if n not in cells or not self._passable(self.centre(n), pc, cells[n], cells[c]):
                    continue
                ng = g + (1.4142 if dx and dy else 1.0)
                if ng < cost.get(n, math.inf):
                    cost[n] = ng
                    toward[n] = c
                    heapq.heappush(frontier, (ng, n))
        self._fields[goal] = toward
        return toward

    def clear(self, a: Pt, b: Pt) -> bool:
        """Whether a person can walk straight from ``a`` to ``b``: over walkable cells, and
        not across a corner of anything blocked (steps between cells can cut one)."""
        if a != b and any(k.intersects(LineString([a, b])) for k in self.blocked):
            return False
        n = max(1, int(math.dist(a, b) / (self.cell_m / 2)))
        prev, prev_in = a, self._walkable.get(self.cell(a))
        for k in range(1, n + 1):
            p = (a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n)
            inside = self._walkable.get(self.cell(p))
            if inside is None or prev_in is None or not self._passable(prev, p, prev_in, inside):
                return False
            prev, prev_in = p, inside
        return True

    def _smooth(self, points: Sequence[Pt]) -> list[Pt]:
        """String pulling: keep a corner only where the straight way is not clear."""
        if len(points) <= 2:
            return list(points)
        out = [points[0]]
        i = 0
        while i < len(points) - 1:
            j = len(points) - 1
            while j > i + 1 and not self.clear(points[i], points[j]):
                j -= 1
            out.append(points[j])
            i = j
        return out
