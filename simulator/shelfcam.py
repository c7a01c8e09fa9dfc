"""Rendered shelf-camera video: a shelf front with its facings, and arms that reach into
its slots, take a facing or put one back, with the ground truth of who reached where.

What a shelf camera of the layout (``ShelfCamera``) would see, drawn flat: the camera
faces the shelf front, so the slots are the boxes the layout gives, each holding its
facings side by side. A pick empties the rightmost full facing of the slot at the moment
the hand is deepest in it; a put-back fills the leftmost empty one. A reach that takes
nothing (the shopper looks and thinks better of it) leaves the facings as they were.

The arm comes up from the bottom edge at the image column of the shopper's floor point
along the front (``ShelfCamera.column_of``), so two shoppers at one shelf reach in from
where each stands. The hand is an articulated drawing (palm, four fingers of three
segments, a thumb, knuckle creases), skin-toned, seen palm-on: MediaPipe's palm
detector finds it at the size drawn here (``HAND_PX``), and not when drawn much larger,
so the size is part of the model, not a style choice (``docs/adapters.md``).

Lighting drifts slowly and sensor noise is Gaussian per pixel, both seeded, so the
adapter's change test has to tell a facing's change from noise, as with a real camera.

Ground truth (``<video>.truth.json``): one entry per reach, ``subject``, ``sku``,
``slot`` (index into the camera's slots), ``action`` (``picked``, ``put_back`` or
``none``), ``qty``, ``first``/``deepest``/``last`` frame (0-based), ``column``, and
``seen`` (False: the arm was left out of the picture, a hand the camera could not see,
while the facings changed).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from core import events as ev
from core.layout import Layout, ShelfCamera

__all__ = [
    "HAND_PX",
    "Reach",
    "ReachTruth",
    "draw_hand",
    "reaches_from_events",
    "render_shelf_camera",
]

HAND_PX = 40.0  # the hand's scale: palm width is about 0.9 of it, wrist to fingertip 2.3
REACH_S = 1.6  # in, hold, out
_SKINS: tuple[tuple[int, int, int], ...] = ((150, 180, 225), (120, 150, 200), (95, 120, 165))
_BACK = (70, 70, 74)  # the shelf's back panel, seen where a facing is gone
_SHELF = (200, 200, 196)
_EDGE = (150, 150, 146)

Action = Literal["picked", "put_back", "none"]


@dataclass(frozen=True, slots=True)
class Reach:
    """One reach to script: ``subject`` stands at floor point ``at_floor`` and, from
    ``start_s``, reaches into the slot of ``sku``."""

    subject: str
    sku: str
    start_s: float
    action: Action
    at_floor: tuple[float, float]
    qty: int = 1
    seen: bool = True  # False: the arm is not drawn (a hand the camera cannot see)


@dataclass(frozen=True, slots=True)
class ReachTruth:
    subject: str
    sku: str
    slot: int
    action: Action
    qty: int
    first: int
    deepest: int
    last: int
    column: float
    seen: bool = True


def _color(sku: str) -> tuple[int, int, int]:
    h = hashlib.sha256(sku.encode()).digest()
    return int(40 + h[0] % 180), int(40 + h[1] % 180), int(60 + h[2] % 180)


def _facing_boxes(box: Sequence[float], facings: int) -> list[tuple[int, int, int, int]]:
    x0, y0, x1, y1 = box
    w = (x1 - x0) / facings
    return [
        (round(x0 + k * w) + 2, round(y0) + 4, round(x0 + (k + 1) * w) - 2, round(y1) - 2)
        for k in range(facings)
    ]


def _draw_facing(img: np.ndarray, fb: tuple[int, int, int, int], sku: str) -> None:
    """A package: a body in the SKU's colour, a lighter label band and a dark logo."""
    x0, y0, x1, y1 = fb
    color = _color(sku)
    cv2.rectangle(img, (x0, y0), (x1, y1), color, -1)
    light = tuple(min(255, c + 70) for c in color)
    h = y1 - y0
    cv2.rectangle(img, (x0 + 3, y0 + h // 3), (x1 - 3, y0 + h // 2), light, -1)
    cx, cy = (x0 + x1) // 2, y0 + (2 * h) // 3
    cv2.circle(img, (cx, cy), max(3, (x1 - x0) // 5), tuple(c // 3 for c in color), -1)
    cv2.rectangle(img, (x0, y0), (x1, y1), (30, 30, 30), 1)


def draw_hand(
    img: np.ndarray,
    wrist: tuple[float, float],
    angle_deg: float,
    scale: float = HAND_PX,
    skin: tuple[int, int, int] = _SKINS[0],
    arm_from: tuple[float, float] | None = None,
) -> None:
    """Draw a forearm (from ``arm_from`` to the wrist) and an open hand whose fingers point
    ``angle_deg`` from straight up (clockwise positive), palm toward the camera."""
    a = math.radians(angle_deg)
    up = np.array([math.sin(a), -math.cos(a)])
    right = np.array([math.cos(a), math.sin(a)])
    base = np.array(wrist, dtype=float)

    def p(u: float, v: float) -> tuple[int, int]:
        q = base + scale * (u * right + v * up)
        return round(q[0]), round(q[1])

    dark = tuple(int(c * 0.75) for c in skin)
    if arm_from is not None:
        start = (round(arm_from[0]), round(arm_from[1]))
        cv2.line(img, start, p(0, 0), dark, int(scale * 0.95), cv2.LINE_AA)
        cv2.line(img, start, p(0, 0), skin, int(scale * 0.85), cv2.LINE_AA)
    palm = np.array([p(-0.45, 0), p(0.45, 0), p(0.55, 0.9), p(-0.55, 0.9)], np.int32)
    cv2.fillConvexPoly(img, palm, skin, cv2.LINE_AA)
    cv2.polylines(img, [palm], True, dark, 2, cv2.LINE_AA)
    fingers = (
        (-0.42, 0.9, -8.0, (0.45, 0.3, 0.25)),
        (-0.14, 0.95, -2.0, (0.5, 0.33, 0.27)),
        (0.14, 0.95, 2.0, (0.47, 0.3, 0.25)),
        (0.42, 0.88, 9.0, (0.38, 0.25, 0.2)),
    )
    for u, v, spread, segments in fingers:
        d = math.radians(spread)
        width = 0.24
        for s in segments:
            u1, v1 = u + s * math.sin(d), v + s * math.cos(d)
            cv2.line(img, p(u, v), p(u1, v1), dark, max(1, int(scale * width) + 2), cv2.LINE_AA)
            cv2.line(img, p(u, v), p(u1, v1), skin, max(1, int(scale * width)), cv2.LINE_AA)
            u, v = u1, v1
            width *= 0.92
    u, v = 0.45, 0.15
    for s, bend in ((0.4, 50.0), (0.35, 35.0), (0.3, 20.0)):
        d = math.radians(bend)
        u1, v1 = u + s * math.sin(d), v + s * math.cos(d)
        cv2.line(img, p(u, v), p(u1, v1), dark, int(scale * 0.27) + 2, cv2.LINE_AA)
        cv2.line(img, p(u, v), p(u1, v1), skin, int(scale * 0.25), cv2.LINE_AA)
        u, v = u1, v1
    for u in (-0.28, 0.0, 0.28):
        cv2.line(img, p(u, 0.6), p(u, 0.9), dark, 1, cv2.LINE_AA)


def _background(cam: ShelfCamera) -> np.ndarray:
    """The shelf without its goods: the front panel, the back panel in each slot box and
    the shelf edges under the slots."""
    w, h = cam.image.width, cam.image.height
    img = np.full((h, w, 3), _SHELF, np.uint8)
    for view in cam.slots:
        x0, y0, x1, y1 = (round(c) for c in view.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), _BACK, -1)
        cv2.rectangle(img, (x0 - 4, y1), (x1 + 4, y1 + 10), _EDGE, -1)
    return img


def render_shelf_camera(
    layout: Layout,
    camera_id: str,
    reaches: Sequence[Reach],
    video_path: Path,
    *,
    seconds: float | None = None,
    stock: dict[str, int] | None = None,
    seed: int = 0,
    noise: float = 3.0,
) -> list[ReachTruth]:
    """Render ``reaches`` as seen by shelf camera ``camera_id`` into ``video_path`` (MJPG
    ``.avi``), write ``<video_path>.truth.json``, and return the truth. ``stock``: full
    facings per SKU at the start (default: all full). Reaches into one slot must not
    overlap in time (a hand cannot take from a slot another hand is in)."""
    cam = layout.shelf_camera(camera_id)
    shelf = layout.shelf(cam.shelf)
    facings = {s.sku: s.facings for s in shelf.slots}
    slot_of = {v.sku: i for i, v in enumerate(cam.slots)}
    for r in reaches:
        if r.sku not in slot_of:
            raise ValueError(f"reach of {r.subject!r}: camera {camera_id!r} shows no {r.sku!r}")
        if r.qty < 1:
            raise ValueError(f"reach of {r.subject!r}: qty {r.qty} is not a positive count")
    full = {v.sku: (stock or {}).get(v.sku, facings[v.sku]) for v in cam.slots}
    for sku, n in full.items():
        if not 0 <= n <= facings[sku]:
            raise ValueError(f"stock of {sku!r}: {n} is not in 0..{facings[sku]}")
    fps = cam.fps
    end_s = max((r.start_s + REACH_S for r in reaches), default=0.0) + 1.5
    n_frames = math.ceil((seconds if seconds is not None else end_s) * fps)
    truth = []
    level = dict(full)
    for r in sorted(reaches, key=lambda r: r.start_s):
        first = round(r.start_s * fps)
        # what the facings can show: a pick from an empty slot, or a put-back into a
        # full one, changes nothing, and the truth says so
        step = {"picked": -r.qty, "put_back": r.qty, "none": 0}[r.action]
        moved = min(facings[r.sku], max(0, level[r.sku] + step)) - level[r.sku]
        level[r.sku] += moved
        truth.append(
            ReachTruth(
                subject=r.subject,
                sku=r.sku,
                slot=slot_of[r.sku],
                action=r.action if moved else "none",
                qty=abs(moved) if moved else r.qty,
                first=first,
                deepest=first + round(REACH_S * fps / 2),
                last=first + round(REACH_S * fps),
                column=cam.column_of(*r.at_floor),
                seen=r.seen,
            )
        )
    rng = np.random.default_rng(seed)
    bank = rng.normal(0.0, noise, (cam.image.height * 2, cam.image.width, 3)).astype(np.float32)
    back = _background(cam)
    video_path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(video_path),
        cv2.VideoWriter_fourcc(*"MJPG"),
        fps,
        (cam.image.width, cam.image.height),
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {video_path}")
    try:
        for f in range(n_frames):
            for t in truth:
                if f == t.deepest and t.action != "none":
                    step = -t.qty if t.action == "picked" else t.qty
                    full[t.sku] = min(facings[t.sku], max(0, full[t.sku] + step))
            img = back.copy()
            for view in cam.slots:
                for k, fb in enumerate(_facing_boxes(view.box, facings[view.sku])):
                    if k < full[view.sku]:
                        _draw_facing(img, fb, view.sku)
            for t in truth:
                if t.seen and t.first <= f <= t.last:
                    _draw_reach(img, cam, t, f)
            light = 1.0 + 0.04 * math.sin(2 * math.pi * f / (fps * 7.0))
            row = int(rng.integers(0, cam.image.height))
            frame = img.astype(np.float32) * light + bank[row : row + cam.image.height]
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    Path(f"{video_path}.truth.json").write_text(
        json.dumps({"camera": camera_id, "reaches": [asdict(t) for t in truth]}, indent=1)
    )
    return truth


def reaches_from_events(
    layout: Layout, camera_id: str, events: Iterable[ev.Event], start: datetime
) -> list[Reach]:
    """The simulator's picks and put-backs at the camera's shelf as reaches, the hand
    deepest in the slot at the event's time, each from where its shopper stood then (the
    latest position sample at or before it). A reach into a slot another hand is still in
    waits until that one is out. ``start``: the video's first frame."""
    cam = layout.shelf_camera(camera_id)
    shown = {v.sku for v in cam.slots}
    where: dict[str, tuple[float, float]] = {}
    busy: dict[str, float] = {}
    out = []
    for e in sorted(events, key=lambda e: e.at):
        if isinstance(e, ev.PositionSamples):
            for sample in e.data.samples:
                where[sample.track] = (sample.x, sample.y)
            continue
        if not isinstance(e, ev.ItemPicked | ev.ItemPutBack):
            continue
        if e.data.shelf != cam.shelf or e.data.sku not in shown:
            continue
        if e.subject not in where:
            raise ValueError(
                f"{e.type} {e.id} at {e.at.isoformat()}: no position of {e.subject!r} before it"
            )
        at_s = max((e.at - start).total_seconds() - REACH_S / 2, busy.get(e.data.sku, 0.0))
        busy[e.data.sku] = at_s + REACH_S + 0.2
        action: Action = "picked" if isinstance(e, ev.ItemPicked) else "put_back"
        out.append(Reach(e.subject, e.data.sku, at_s, action, where[e.subject], e.data.qty))
    return out


def _draw_reach(img: np.ndarray, cam: ShelfCamera, t: ReachTruth, f: int) -> None:
    """The arm from the bottom edge at the shopper's column toward the slot: out over the
    first half, back over the second, fingertips a third of the way into the slot at the
    deepest."""
    x0, y0, x1, y1 = cam.slots[t.slot].box
    target = ((x0 + x1) / 2, y1 - (y1 - y0) / 3)
    shoulder = (t.column, cam.image.height + HAND_PX * 2)
    span = max(1, t.last - t.first)
    k = (f - t.first) / span
    depth = math.sin(math.pi * k)  # 0 at the ends, 1 at the deepest
    hand_len = 2.3 * HAND_PX
    dx, dy = target[0] - shoulder[0], target[1] - shoulder[1]
    dist = math.hypot(dx, dy)
    reach = max(0.0, dist - hand_len) * (0.35 + 0.65 * depth)
    wrist = (shoulder[0] + dx / dist * reach, shoulder[1] + dy / dist * reach)
    angle = math.degrees(math.atan2(dx, -dy))
    skin = _SKINS[int(hashlib.sha256(t.subject.encode()).digest()[0]) % len(_SKINS)]
    draw_hand(img, wrist, angle, HAND_PX, skin, arm_from=shoulder)
