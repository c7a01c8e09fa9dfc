"""Plane geometry for store layouts, written for the per-sample hot path.

The rules engine asks "which zone is this shopper in?" and "did this step cross the door?"
for every position sample, thousands of times a second per store. Shapely answers those
questions correctly but pays a few microseconds of object creation per call, so the hot
functions here are plain Python over tuples precomputed once, and shapely is used only at
load time (validation and building the grid index).

Conventions (see ``docs/layout.md``): floor coordinates are metres in a right-handed plan
frame (x to the right, y up the page), so "left of a directed segment" means
counter-clockwise from it. Image coordinates are pixels, u to the right and v down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

Point = tuple[float, float]
Edge = tuple[float, float, float, float]  # x at y_low, y_low, y_high, dx/dy

__all__ = [
    "Edge",
    "Homography",
    "Point",
    "ZoneIndex",
    "ring_area",
    "ring_contains",
    "ring_edges",
    "segment_crossing",
]


def ring_area(ring: Sequence[Sequence[float]]) -> float:
    """Unsigned area by the shoelace formula (the ring closes itself)."""
    total = 0.0
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i][0], ring[i][1]
        x2, y2 = ring[(i + 1) % n][0], ring[(i + 1) % n][1]
        total += x1 * y2 - x2 * y1
    return abs(total) / 2.0


def ring_edges(ring: Sequence[Sequence[float]]) -> tuple[Edge, ...]:
    """The non-horizontal edges of a ring, each stored from its lower end.

    Storing every edge bottom-up makes the crossing test compute bit-identical numbers for
    an edge shared by two adjacent zones, so a point on that edge lands in exactly one of
    them instead of in both or neither.
    """
    edges: list[Edge] = []
    n = len(ring)
    for i in range(n):
        x1, y1 = float(ring[i][0]), float(ring[i][1])
        x2, y2 = float(ring[(i + 1) % n][0]), float(ring[(i + 1) % n][1])
        if y1 == y2:
            continue  # a horizontal edge never crosses the horizontal ray
        if y1 > y2:
            x1, y1, x2, y2 = x2, y2, x1, y1
        edges.append((x1, y1, y2, (x2 - x1) / (y2 - y1)))
    return tuple(edges)


def ring_contains(edges: tuple[Edge, ...], x: float, y: float) -> bool:
    """Even-odd ray test (PNPOLY) with half-open edges.

    Points strictly inside are in, strictly outside are out; a point exactly on an edge is
    in for the bottom/left edges and out for the top/right ones, the same half-open rule
    as a pixel grid, so tiling zones never double-count a point.
    """
    inside = False
    for x0, y0, y1, k in edges:
        if y0 <= y < y1 and x < x0 + (y - y0) * k:
            inside = not inside
    return inside


def segment_crossing(
    a: Sequence[float],
    b: Sequence[float],
    inside_sign: int,
    p0: Sequence[float],
    p1: Sequence[float],
) -> int:
    """+1 if the step p0→p1 crosses segment a–b into its inside, -1 out of it, else 0.

    ``inside_sign`` is +1 when the inside is left of a→b and -1 when it is right. A point
    exactly on the line counts as outside, so a track whose sample lands on the door line
    is still counted once (outside→on is no crossing, on→inside is +1). The test of the
    step against the segment's extent is computed from the lexicographically smaller end,
    so swapping p0 and p1 gives exactly the opposite answer even in floating point.
    """
    ax, ay, bx, by = a[0], a[1], b[0], b[1]
    dx, dy = bx - ax, by - ay
    in0 = (dx * (p0[1] - ay) - dy * (p0[0] - ax)) * inside_sign > 0
    in1 = (dx * (p1[1] - ay) - dy * (p1[0] - ax)) * inside_sign > 0
    if in0 == in1:
        return 0
    q0, q1 = (p0, p1) if (p0[0], p0[1]) <= (p1[0], p1[1]) else (p1, p0)
    ex, ey = q1[0] - q0[0], q1[1] - q0[1]
    oa = ex * (ay - q0[1]) - ey * (ax - q0[0])
    ob = ex * (by - q0[1]) - ey * (bx - q0[0])
    if (oa > 0 and ob > 0) or (oa < 0 and ob < 0):
        return 0  # the step crosses the line's extension, beside the door
    return 1 if in1 else -1


class Homography:
    """A plane-to-plane projective map, applied in pure Python for single points.

    Calling numpy for one point costs microseconds of overhead; nine floats and two
    divisions cost a fraction of that, and adapters convert one detection at a time.
    """

    __slots__ = ("_h",)

    def __init__(self, matrix: Sequence[Sequence[float]] | np.ndarray) -> None:
        m = np.asarray(matrix, dtype=float).reshape(3, 3)
        if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-12 * np.abs(m).max() ** 3:
            raise ValueError("the homography matrix is singular")
        norm = float(np.linalg.norm(m))
        scale = m[2, 2] if abs(m[2, 2]) > 1e-9 * norm else norm  # h33 = 1 where possible
        self._h: tuple[float, ...] = tuple(float(v) for v in (m / scale).ravel())

    @property
    def matrix(self) -> np.ndarray:
        return np.array(self._h).reshape(3, 3)

    def inverse(self) -> Homography:
        return Homography(np.linalg.inv(self.matrix))

    def __call__(self, x: float, y: float) -> Point:
        a, b, c, d, e, f, g, h, i = self._h
        w = g * x + h * y + i
        if w == 0.0:
            raise ValueError(f"({x}, {y}) maps to infinity (it is on the horizon)")
        return ((a * x + b * y + c) / w, (d * x + e * y + f) / w)

    def apply_array(self, points: np.ndarray) -> np.ndarray:
        """Map an (n, 2) array at once; the way to convert a whole frame's detections."""
        p = np.asarray(points, dtype=float).reshape(-1, 2)
        q = np.hstack([p, np.ones((len(p), 1))]) @ self.matrix.T
        return q[:, :2] / q[:, 2:3]

    @classmethod
    def fit(cls, src: Sequence[Sequence[float]], dst: Sequence[Sequence[float]]) -> Homography:
        """The homography taking ``src`` to ``dst`` by normalised DLT (Hartley), least squares.

        Raises ``ValueError`` when the points do not pin down a unique homography: fewer
        than 4, all on one line, or (with 4) three of them on one line. Normalising both
        point sets first keeps the SVD well conditioned whether the inputs are pixels in
        the thousands or metres near zero, so one tolerance works for both.
        """
        s = np.asarray(src, dtype=float).reshape(-1, 2)
        d = np.asarray(dst, dtype=float).reshape(-1, 2)
        if len(s) != len(d) or len(s) < 4:
            raise ValueError(f"need at least 4 point pairs, got {min(len(s), len(d))}")
        for pts, what in ((s, "image"), (d, "floor")):
            if _spread(pts) < 1e-9:
                raise ValueError(f"the {what} points all lie on one line (or coincide)")
        ts, td = _normaliser(s), _normaliser(d)
        sn = _project(ts, s)
        dn = _project(td, d)
        rows = []
        for (x, y), (u, v) in zip(sn, dn, strict=True):
            rows.append([-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u])
            rows.append([0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v])
        _, sv, vt = np.linalg.svd(np.asarray(rows))
        # A unique solution needs an 8-dimensional row space: the 8th singular value is
        # well above zero. Three collinear points out of four drop it to zero.
        if sv[7] / sv[0] < 1e-7:
            raise ValueError(
                "the points do not determine a homography (three of them on one line?)"
            )
        h = np.linalg.inv(td) @ vt[-1].reshape(3, 3) @ ts
        try:
            return cls(h)
        except ValueError:
            raise ValueError("the points fit only a singular map (repeated points?)") from None


def _spread(points: np.ndarray) -> float:
    """The smaller principal extent of a point set relative to the larger; 0 if collinear."""
    centred = points - points.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    return float(sv[1] / sv[0]) if sv[0] > 0 else 0.0


def _normaliser(points: np.ndarray) -> np.ndarray:
    centre = points.mean(axis=0)
    scale = math.sqrt(2) / max(float(np.mean(np.linalg.norm(points - centre, axis=1))), 1e-12)
    return np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1]])


def _project(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    q = np.hstack([points, np.ones((len(points), 1))]) @ m.T
    return q[:, :2] / q[:, 2:3]


_Entry = tuple[str, tuple[Edge, ...] | None]  # zone id, edges to test (None: the cell is inside)


class ZoneIndex:
    """Which zones contain a point, answered from a uniform grid over the zones.

    Each cell lists the zones that touch it, most specific (smallest area, then file
    order) first, and marks the zones that cover the whole cell so that no polygon test
    is needed there. A lookup is a cell computation and, usually, one or two point-in-
    polygon tests over a handful of edges. It replaces a shapely ``STRtree`` query with a
    fresh ``Point`` for speed (``bench/micro/test_zone_index.py``; ``docs/benchmarks.md``).
    """

    __slots__ = ("_cell", "_cells", "_nx", "_ny", "_x0", "_y0")

    def __init__(
        self, zones: Sequence[tuple[str, Sequence[Sequence[float]]]], cell: float | None = None
    ) -> None:
        order = sorted(range(len(zones)), key=lambda i: (ring_area(zones[i][1]), i))
        shapes = [Polygon(zones[i][1]) for i in order]
        ids = [zones[i][0] for i in order]
        edges = [ring_edges(zones[i][1]) for i in order]
        if not shapes:
            self._x0 = self._y0 = 0.0
            self._cell, self._nx, self._ny = 1.0, 0, 0
            self._cells: list[tuple[_Entry, ...]] = []
            return
        x0, y0, x1, y1 = shapely.total_bounds(shapes)
        if cell is None:  # 0.5 m, coarser for huge stores so the grid stays under ~100k cells
            cell = max(0.5, math.sqrt((x1 - x0) * (y1 - y0) / 100_000))
        nx = max(1, math.ceil((x1 - x0) / cell))
        ny = max(1, math.ceil((y1 - y0) / cell))
        self._x0, self._y0, self._cell, self._nx, self._ny = x0, y0, cell, nx, ny
        cells: list[list[_Entry]] = [[] for _ in range(nx * ny)]
        eps = 1e-6  # cells are grown a hair so float rounding of the cell index is harmless
        for zid, shape, zedges in zip(ids, shapes, edges, strict=True):
            bx0, by0, bx1, by1 = shape.bounds
            i0, i1 = int((bx0 - x0) // cell), min(nx - 1, int((bx1 - x0) // cell))
            j0, j1 = int((by0 - y0) // cell), min(ny - 1, int((by1 - y0) // cell))
            ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1))
            ii, jj = ii.ravel(), jj.ravel()
            boxes = shapely.box(
                x0 + ii * cell - eps,
                y0 + jj * cell - eps,
                x0 + (ii + 1) * cell + eps,
                y0 + (jj + 1) * cell + eps,
            )
            shapely.prepare(shape)
            touches = shapely.intersects(shape, boxes)
            inside = shapely.contains_properly(shape, boxes)
            for i, j, t, full in zip(ii, jj, touches, inside, strict=True):
                if t:
                    cells[int(j) * nx + int(i)].append((zid, None if full else zedges))
        self._cells = [tuple(c) for c in cells]

    def zone_at(self, x: float, y: float) -> str | None:
        i = int((x - self._x0) // self._cell)
        j = int((y - self._y0) // self._cell)
        if not (0 <= i < self._nx and 0 <= j < self._ny):
            return None
        for zid, edges in self._cells[j * self._nx + i]:
            if edges is None or ring_contains(edges, x, y):
                return zid
        return None

    def zones_at(self, x: float, y: float) -> tuple[str, ...]:
        i = int((x - self._x0) // self._cell)
        j = int((y - self._y0) // self._cell)
        if not (0 <= i < self._nx and 0 <= j < self._ny):
            return ()
        return tuple(
            zid
            for zid, edges in self._cells[j * self._nx + i]
            if edges is None or ring_contains(edges, x, y)
        )
