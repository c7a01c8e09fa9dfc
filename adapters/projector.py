"""From a person's box in one camera to where they stand on the floor.

The layout calibrates a camera with a floor homography; together with the camera's
position that fixes where any point at any height appears: a point at height z above floor
point F is on the ray from the camera through F's "shadow" G = C + (F - C) * cz / (cz - z),
C being the point under the camera and cz its height, and G shows at ``to_image(G)``.

A box's feet are therefore not a fixed point of the box. Seen from above, a standing person
is drawn along the line from the camera's nadir outwards, feet nearest to it, head furthest
(``simulator/render.py``); seen at an angle, upright with the feet at the bottom. Rather
than a rule per kind of camera, the projector fits a standing person: it looks for the
floor point whose model figure (a few horizontal discs from the feet to the top of the
head) has the box that best matches the observed one, where both are clipped to the image.
A person cut by the image border is then placed by the sides that are seen: for an
overhead camera, the feet end and the two sides along the body.

The search is coarse to fine over a small grid around a first guess (the point of the box
nearest the nadir's image), all candidates at once with numpy.
"""

from __future__ import annotations

import math

import numpy as np

from adapters.tracking import Box
from core.layout import Camera

__all__ = ["DEFAULT_HEIGHT_M", "Projector"]

DEFAULT_HEIGHT_M = 1.7
"""The height of the standing person the projector fits (the simulator draws 1.7 m)."""

# The figure as discs: (height as a share of the person's, radius in metres). Feet and legs,
# hips, shoulders with the arms, the head's middle and its top; radii are the renderer's
# across-shoulders and front-to-back extents averaged, as the heading is unknown.
_DISCS = ((0.0, 0.12), (0.47, 0.17), (0.80, 0.22), (0.94, 0.10), (1.0, 0.0))
_RIM = 12
_ANGLES = np.linspace(0.0, 2.0 * math.pi, _RIM, endpoint=False)
_RING = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)
# Coarse to fine: (half-width of the search square in metres, step in metres).
_STAGES = ((0.6, 0.1), (0.1, 0.02), (0.02, 0.005))
_BORDER_PX = 0.5
_BORDER_SHARE = 0.05


class Projector:
    """One camera's boxes to foot points in floor metres (the layout's plane)."""

    def __init__(self, camera: Camera, height_m: float = DEFAULT_HEIGHT_M) -> None:
        cz = camera.position[2]
        if not (math.isfinite(height_m) and 0.5 <= height_m <= 2.5):
            raise ValueError(f"camera {camera.id}: a height of {height_m!r} m is not in [0.5, 2.5]")
        if cz <= height_m + 0.1:
            raise ValueError(
                f"camera {camera.id}: mounted {cz} m up, not above the heads of people "
                f"{height_m} m tall; the projector needs a camera above head height"
            )
        self.camera = camera
        self.height_m = height_m
        self._centre = np.array(camera.position[:2], dtype=float)
        self._to_image = np.linalg.inv(camera.homography.matrix)
        self._size = (float(camera.image.width), float(camera.image.height))
        z = np.array([share * height_m for share, _ in _DISCS])
        stretch = np.repeat(cz / (cz - z), _RIM)  # the shadow's scale, per rim point
        rim = np.concatenate([radius * _RING for _, radius in _DISCS])  # (m, 2)
        # A rim point of a person standing at F has its shadow at base + stretch * F, so
        # the homography's three rows are affine in F too: row(base) + stretch * row(F).
        base = self._centre * (1.0 - stretch[:, None]) + stretch[:, None] * rim
        self._stretch = stretch
        self._rows = base @ self._to_image[:, :2].T + self._to_image[:, 2]  # (m, 3)
        # The homogeneous w of floor points in front of the camera has one sign.
        seen = camera.calibration.points[0].floor
        self._front = float(np.sign(self._to_image[2] @ np.array([seen[0], seen[1], 1.0])))
        nadir = self._to_image @ np.array([*self._centre, 1.0])
        self._nadir = nadir[:2] / nadir[2] if abs(nadir[2]) > 1e-12 else None
        self._smallest: float | None = None

    def clipped(self, box: Box) -> bool:
        """Whether a box touches the image border (the person may be cut by it): comes
        within ``_BORDER_SHARE`` of its own size of it (a detector's box of someone cut
        by the border need not end on the last pixel)."""
        w, h = self._size
        mx = max(_BORDER_PX, _BORDER_SHARE * (box[2] - box[0]))
        my = max(_BORDER_PX, _BORDER_SHARE * (box[3] - box[1]))
        return box[0] <= mx or box[1] <= my or box[2] >= w - mx or box[3] >= h - my

    def foot(self, box: Box) -> tuple[float, float]:
        """Where the person in ``box`` (x1, y1, x2, y2 pixels) stands, in floor metres."""
        observed = np.asarray(box, dtype=float)
        best = self._guess(observed)
        for half, step in _STAGES:
            offsets = np.arange(-half, half + step / 2, step)
            grid = np.stack(np.meshgrid(offsets, offsets), axis=-1).reshape(-1, 2)
            candidates = best + grid
            cost = ((self._boxes(candidates) - observed) ** 2).sum(axis=1)
            best = candidates[int(np.argmin(cost))]
        return float(best[0]), float(best[1])

    def feet(self, boxes: np.ndarray) -> np.ndarray:
        """``foot`` for an (n, 4) array of boxes: an (n, 2) array of floor points."""
        rows = np.asarray(boxes, dtype=float).reshape(-1, 4)
        return np.array([self.foot(tuple(row)) for row in rows], dtype=float).reshape(-1, 2)

    def box_of(self, x: float, y: float) -> Box:
        """The box (clipped to the image) the model person standing at (x, y) would have."""
        b = self._boxes(np.array([[x, y]], dtype=float))[0]
        return float(b[0]), float(b[1]), float(b[2]), float(b[3])

    def smallest_area(self) -> float:
        """The area in pixels of the smallest whole person this camera sees, over the floor
        its calibration marks span (under an overhead camera, the one at the nadir)."""
        if self._smallest is None:
            floor = np.array([p.floor for p in self.camera.calibration.points], dtype=float)
            xs = np.linspace(floor[:, 0].min(), floor[:, 0].max(), 9)
            ys = np.linspace(floor[:, 1].min(), floor[:, 1].max(), 9)
            grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
            b = self._boxes(grid)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            self._smallest = float(area[np.isfinite(area)].min())
        return self._smallest

    def _guess(self, box: np.ndarray) -> np.ndarray:
        """The point of the box nearest the nadir's image, on the floor: within a body's
        width of the feet for a camera looking down, the bottom middle for an angled one."""
        if self._nadir is None:
            u, v = (box[0] + box[2]) / 2.0, box[3]
        else:
            u = min(max(self._nadir[0], box[0]), box[2])
            v = min(max(self._nadir[1], box[1]), box[3])
        return np.array(self.camera.to_floor(float(u), float(v)), dtype=float)

    def _boxes(self, feet: np.ndarray) -> np.ndarray:
        """The clipped image boxes of the model person standing at each of (n, 2) points."""
        linear = feet @ self._to_image[:, :2].T  # (n, 3)
        u, v, w = (
            self._rows[None, :, k] + self._stretch[None, :] * linear[:, k, None] for k in range(3)
        )
        ahead = w * self._front > 1e-9
        behind = ~ahead.all(axis=1)
        w = np.where(ahead, w, self._front)
        u, v = u / w, v / w
        out = np.stack([u.min(axis=1), v.min(axis=1), u.max(axis=1), v.max(axis=1)], axis=1)
        width, height = self._size
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0.0, width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0.0, height)
        out[behind] = np.inf
        return out
