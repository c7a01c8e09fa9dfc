"""The camera model and the people drawn by ``simulator.render``.

A layout calibrates each camera with a floor homography only, which cannot say how tall
anything looks. But a homography and the camera's position together fix a full pinhole
projection (``projection``), so people and shelves are drawn as 3-D solids through the same
camera the adapters calibrate against: parallax, foreshortening and heights come out right
for overhead and angled cameras alike, with no per-kind scale guesses.

A person is a set of convex solids, each the hull of horizontal ellipses: two legs, two
arms, a torso from hips to shoulders, a neck, and a head sphere with a hair cap. Seen from straight
above that is the classic top-down blob (shoulder ellipse and head circle); seen from the
side it is an upright figure. The solid is rotationally simple on purpose: every part is
convex, so a part is one ``cv2.fillConvexPoly`` and the drawn pixels are exactly known.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import cv2
import numpy as np

from core.layout import Camera

__all__ = [
    "NEAR_M",
    "Look",
    "Part",
    "figure",
    "initial_heading",
    "look_for",
    "project",
    "projection",
]

NEAR_M = 0.1
"""Points closer than this to the camera plane (metres of depth) are not drawn."""

BGR = tuple[int, int, int]

_SHIRTS: tuple[BGR, ...] = (
    (40, 40, 200),  # red
    (170, 80, 30),  # blue
    (60, 140, 40),  # green
    (40, 190, 230),  # yellow
    (35, 35, 35),  # black
    (240, 240, 240),  # white
    (140, 40, 120),  # purple
    (30, 110, 230),  # orange
    (120, 120, 20),  # teal
    (90, 60, 150),  # maroon
)
_TROUSERS: tuple[BGR, ...] = (
    (90, 50, 20),  # navy
    (30, 30, 30),  # black
    (70, 100, 120),  # khaki
    (100, 95, 90),  # grey
    (30, 50, 100),  # brown
    (130, 80, 40),  # denim
)
_SKIN: tuple[BGR, ...] = ((150, 180, 230), (110, 150, 200), (75, 110, 160), (50, 70, 110))
_HAIR: tuple[BGR, ...] = ((20, 20, 25), (25, 45, 80), (40, 90, 150), (140, 140, 140), (15, 30, 50))


def projection(camera: Camera) -> np.ndarray:
    """The 3x4 pinhole projection (floor metres, height up → pixels) of ``camera``.

    The floor homography H is the projection's x, y and constant columns; the missing z
    column follows from the camera centre C being the projection's null vector:
    ``P @ (C, 1) = 0``. The result is scaled so the homogeneous w is the depth in metres
    along the optical axis (for a real pinhole) and positive in front of the camera.
    It is as good as the layout's ``position``: a position that disagrees with the
    calibration tilts the verticals, it does not move anything on the floor.
    """
    h = np.linalg.inv(camera.homography.matrix)  # floor → image
    cx, cy, cz = camera.position
    z_col = -(h @ np.array([cx, cy, 1.0])) / cz
    p = np.column_stack([h[:, 0], h[:, 1], z_col, h[:, 2]])
    p /= np.linalg.norm(p[2, :3])
    x0, y0 = camera.calibration.points[0].floor
    if p[2] @ np.array([x0, y0, 0.0, 1.0]) < 0:
        p = -p
    return p


def project(p: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (n, 2) and depths (n,) of 3-D points (n, 3)."""
    q = points @ p[:, :3].T + p[:, 3]
    w = q[:, 2]
    return q[:, :2] / w[:, None], w


@dataclass(frozen=True)
class Look:
    """What a track looks like: the same on every frame and every camera."""

    shirt: BGR
    trousers: BGR
    skin: BGR
    hair: BGR
    build: float  # scales shoulder width and girth: 0.85 slight .. 1.2 broad


def look_for(track: str, shirt: BGR | None = None) -> Look:
    """A look derived from the track id by a stable hash (Python's ``hash`` is salted)."""
    d = hashlib.blake2b(track.encode(), digest_size=8).digest()
    return Look(
        shirt=shirt if shirt is not None else _SHIRTS[d[0] % len(_SHIRTS)],
        trousers=_TROUSERS[d[1] % len(_TROUSERS)],
        skin=_SKIN[d[2] % len(_SKIN)],
        hair=_HAIR[d[3] % len(_HAIR)],
        build=0.85 + 0.35 * d[4] / 255,
    )


def initial_heading(track: str) -> float:
    """Which way someone faces before they have moved (radians)."""
    d = hashlib.blake2b(track.encode(), digest_size=8, person=b"heading").digest()
    return 2 * math.pi * d[0] / 256


@dataclass(frozen=True)
class Part:
    colour: BGR
    depth: float  # of the part's centre, metres along the optical axis
    hull: np.ndarray  # (k, 2) float32 pixels, convex


_N = 16
_T = np.linspace(0, 2 * math.pi, _N, endpoint=False)
_COS, _SIN = np.cos(_T), np.sin(_T)
_SPHERE = np.concatenate(
    [
        np.column_stack([_COS, _SIN, np.zeros(_N)]),
        np.column_stack([_COS, np.zeros(_N), _SIN]),
        np.column_stack([np.zeros(_N), _COS, _SIN]),
        np.column_stack([0.7 * _COS, 0.7 * _SIN, np.full(_N, 0.7)]),
        np.column_stack([0.7 * _COS, 0.7 * _SIN, np.full(_N, -0.7)]),
    ]
)
_CAP = _SPHERE[_SPHERE[:, 2] >= -0.05]  # the upper half: hair


def figure(
    p: np.ndarray, x: float, y: float, height: float, heading: float, look: Look
) -> list[Part] | None:
    """The parts of a person standing at (x, y), bottom up (the drawing order), in pixels.

    None when any part of the person is behind or too near the camera: a figure cut by the
    camera plane has no sensible box, and no camera in a store has anyone that close.
    Proportions are fixed fractions of the height (hips 0.47, shoulders 0.8); the build
    widens shoulders and girth. Drawing later parts over earlier ones is right for every
    camera mounted above head height, which is every store camera.
    """
    b = look.build
    fx, fy = math.cos(heading), math.sin(heading)  # facing
    sx, sy = fy, -fx  # across the shoulders
    r_head = 0.105 * math.sqrt(height / 1.7)
    z_head = height - r_head
    z_hip, z_sh, z_hand = 0.47 * height, 0.80 * height, 0.44 * height
    leg, arm = 0.075 * b, 0.045
    # Each limb, the torso and the neck join two ellipses: height, half-width across the
    # shoulders, half-depth along the facing, offset across the shoulders.
    rings = np.array(
        [
            [(0.0, leg, leg, -0.09 * b), (z_hip, leg, leg, -0.08 * b)],
            [(0.0, leg, leg, 0.09 * b), (z_hip, leg, leg, 0.08 * b)],
            [(z_hand, arm, arm, -0.25 * b), (z_sh - 0.05, arm, arm, -0.2 * b)],
            [(z_hand, arm, arm, 0.25 * b), (z_sh - 0.05, arm, arm, 0.2 * b)],
            [(z_hip, 0.18 * b, 0.12 * b, 0.0), (z_sh, 0.225 * b, 0.12 * b, 0.0)],
            [(z_sh, 0.05, 0.05, 0.0), (z_head - 0.5 * r_head, 0.05, 0.05, 0.0)],
        ]
    ).reshape(-1, 4)
    z, across, along, shift = rings.T
    side = shift[:, None] + across[:, None] * _COS
    ahead = along[:, None] * _SIN
    joined = np.stack(
        [x + side * sx + ahead * fx, y + side * sy + ahead * fy, np.repeat(z[:, None], _N, 1)],
        axis=-1,
    ).reshape(-1, 2 * _N, 3)
    head = np.array([x, y, z_head]) + r_head * _SPHERE
    hair = np.array([x, y, z_head]) + 1.03 * r_head * _CAP
    solids = [*joined, head, hair]
    colours = [look.trousers] * 2 + [look.shirt] * 3 + [look.skin] * 2 + [look.hair]
    centres = [z_hip / 2] * 2 + [z_sh] * 2 + [(z_hip + z_sh) / 2, z_sh, z_head, height]
    uv, w = project(p, np.vstack([*solids, [(x, y, c) for c in centres]]))
    if w.min() < NEAR_M:
        return None
    parts = []
    start = 0
    for colour, solid, depth in zip(colours, solids, w[-len(centres) :], strict=True):
        hull = cv2.convexHull(uv[start : start + len(solid)].astype(np.float32))
        parts.append(Part(colour, float(depth), hull.reshape(-1, 2)))
        start += len(solid)
    return parts
