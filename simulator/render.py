"""Rendered camera frames with MOTChallenge ground truth, to measure the vision adapters on.

``render_camera`` draws what one camera of a layout would see of people the simulator
places on the floor, writes it as a video, and writes beside it where each person is drawn.
The adapters are scored against those boxes, so the boxes come from the drawn pixels
themselves (each person is rasterised into a mask, and the box is the mask's extent), not
from a second estimate of where a person ought to appear.

How the picture is made, and why:

- One camera model for every kind of camera: the layout's floor homography plus the
  camera's position give a full pinhole projection (``simulator.figures.projection``).
  Overhead cameras then show the top-down blob of shoulders and head, angled ones an
  upright figure, and both show the parallax a real lens does.
- The background (floor, floor tiles, zones tinted by kind, shelves as 3-D blocks with
  product bands) is drawn once per video by projecting polygons point by point, each clipped
  at the camera's near plane first, so angled views that reach the horizon draw correctly.
  Straight lines stay straight under a projection, so projecting the corners is exact; a
  raster warped with ``cv2.warpPerspective`` would have had to be huge for a supermarket
  and would blur near the horizon. The shelves also leave a depth buffer behind.
- People go through a per-frame depth buffer that starts as the shelves' (each body part
  carries one depth, that of its centre), and each pixel keeps its owner. Occlusion between
  people, and by shelves, is therefore settled pixel by pixel, and the visibility column
  counts exactly the pixels that show.
- A consequence the adapters must live with, as with a real lens: a camera 3.2 m up sees a
  1.7 m person's head twice as far from the image centre as the feet, so an overhead
  box's centre is not the feet; the feet (the floor point ``to_floor`` is for) sit at the
  inner end of the figure. In the example convenience store (wide lenses), people more
  than about 1.8 m north or south of the point under a camera, or 3.2 m east or west, are
  cut by the image border.
- Shelf heights are not in the layout: a footprint polygon is a gondola of ``GONDOLA_M``;
  a two-point footprint (a fridge door, a wall rack) is a unit ``WALL_UNIT_M`` high and
  ``WALL_UNIT_DEPTH_M`` deep behind its front edge, on the side away from its zone.
- Lighting (``RenderOptions.lighting``): a fixed vignette, a slow drift of brightness
  (two slow sines, ±12 % together) and now and then a flicker of a few frames; sensor noise
  is Gaussian per channel. Both draw on generators seeded from ``RenderOptions.seed`` only,
  so a render is repeatable. The noise comes from a bank rendered once, read at a random
  row offset per frame: fresh noise per frame costs more than all the drawing.

Ground truth: one line per visible person per frame, ``frame,id,x,y,w,h,1,1,visibility``.
``frame`` counts from 1; ``id`` numbers tracks from 1 in order of first appearance, and
``<gt>.ids.json`` maps each id back to its track. The box is the person's full extent,
occluded parts included, clipped to the image, in 0-based pixels: ``x, y`` is the top-left
pixel, ``w, h`` the size in pixels (add 1 to x and y for tools that count from 1).
``visibility`` is, as in MOT16, the share of the person's pixels that are seen: hidden by
nearer people or shelves, or cut by the image border, counts as not seen. People below
``min_visibility`` and people entirely outside the image are left out (counted in
``RenderStats.skipped``) but still drawn.

The video is MPEG-4 Part 2 (``mp4v``) in ``video_path``; where this OpenCV build cannot
write it, Motion-JPEG in ``video_path`` with the suffix ``.avi`` (``RenderStats`` says which).
Decoded frames are identical for identical inputs and seed.

The ground truth alone (``video_path=None``, or ``truth_boxes`` in memory) takes the same
path through the same scene, people rasterised into masks through the same depth buffer,
and skips what only pixels need: drawing the background and the figures' colours,
lighting, noise and the encoder. Its boxes and visibilities are those of the video.

Its speed, as measured: ``docs/benchmarks-history.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.layout import Camera, Layout, Shelf
from simulator.figures import (
    NEAR_M,
    Part,
    figure,
    initial_heading,
    look_for,
    project,
    projection,
)

__all__ = [
    "GONDOLA_M",
    "WALL_UNIT_DEPTH_M",
    "WALL_UNIT_M",
    "Person",
    "RenderOptions",
    "RenderStats",
    "TruthBox",
    "render_camera",
    "truth_boxes",
]

GONDOLA_M = 1.6
WALL_UNIT_M = 2.0
WALL_UNIT_DEPTH_M = 0.5
TILE_M = 0.6

BGR = tuple[int, int, int]
_WALL: BGR = (72, 74, 80)
_FLOOR: BGR = (182, 186, 188)
_GROUT: BGR = (160, 164, 167)
_TINT_ALPHA = 0.35
_ZONE_TINT: dict[str, BGR] = {
    "aisle": (196, 200, 200),
    "shelf_front": (150, 205, 235),
    "checkout_queue": (235, 195, 140),
    "exit_gate": (140, 215, 140),
    "staff_only": (140, 140, 215),
    "entrance": (215, 215, 140),
}
_SHELF_BODY: tuple[BGR, ...] = ((205, 205, 200), (110, 140, 170), (150, 115, 85))
_PRODUCTS: tuple[BGR, ...] = (
    (50, 60, 190),
    (180, 120, 40),
    (60, 170, 80),
    (40, 200, 230),
    (200, 200, 210),
    (150, 60, 140),
    (30, 120, 220),
    (90, 90, 90),
)
_LIGHT = np.array([0.6, -0.8])  # horizontal direction the shelves' sides are lit from


@dataclass(frozen=True)
class Person:
    track: str  # the pseudonymous id the simulator uses
    x: float  # floor position, metres
    y: float
    height_m: float = 1.7
    colour: tuple[int, int, int] | None = None  # BGR shirt; None: derived from track


@dataclass(frozen=True)
class RenderOptions:
    seed: int = 0
    lighting: bool = True  # vignette, slow brightness drift, a flicker now and then
    occlusion: bool = True  # shelves and nearer people hide what is behind them
    noise_sigma: float = 2.0  # sensor noise, grey levels; 0 for none
    min_visibility: float = 0.25  # below this a person is left out of the ground truth


TruthBox = tuple[str, tuple[int, int, int, int], float]
"""One person in one frame's ground truth: track, box (x, y, w, h in pixels), visibility."""


@dataclass(frozen=True)
class RenderStats:
    frames: int  # frames rendered (video frames written, when there is a video)
    boxes: int  # ground-truth lines written
    skipped: int  # people in the input left out: outside the image or below min_visibility
    video_path: Path | None  # where the video went (the suffix changes on the MJPG fallback)
    codec: str  # "mp4v", or "MJPG" where this OpenCV cannot write mp4v; "" with no video


def truth_boxes(
    layout: Layout,
    camera_id: str,
    frames: Iterable[tuple[float, Sequence[Person]]],
    options: RenderOptions = RenderOptions(),
) -> Iterator[list[TruthBox]]:
    """``render_camera``'s ground truth without the video: one list of boxes per frame.

    Boxes come in input order; the same inputs give the boxes and visibilities the video's
    ground-truth file holds.
    """
    scene = _Scene(layout, layout.camera(camera_id), options, draw=False)
    for t, people in frames:
        yield scene.boxes(t, people)


def render_camera(
    layout: Layout,
    camera_id: str,
    frames: Iterable[tuple[float, Sequence[Person]]],
    video_path: Path | None,
    gt_path: Path,
    options: RenderOptions = RenderOptions(),
) -> RenderStats:
    """Render ``frames`` (time in seconds, people on the floor) as seen by one camera.

    One video frame per item, at the camera's fps; the caller samples the times. With
    ``video_path`` None only the ground truth is written (the same boxes, much faster).
    """
    camera = layout.camera(camera_id)
    gt_path = Path(gt_path)
    scene = _Scene(layout, camera, options, draw=video_path is not None)
    writer: cv2.VideoWriter | None = None
    codec = ""
    if video_path is not None:
        writer, video_path, codec = _open_writer(Path(video_path), camera)
    ids: dict[str, int] = {}
    n_frames = n_boxes = n_skipped = 0
    gt_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with gt_path.open("w", encoding="utf-8", newline="\n") as gt:
            for t, people in frames:
                n_frames += 1
                if writer is not None:
                    image, boxes = scene.frame(t, people)
                    writer.write(image)
                else:
                    boxes = scene.boxes(t, people)
                n_skipped += len(people) - len(boxes)
                lines = []
                for track, (x, y, w, h), vis in boxes:
                    pid = ids.setdefault(track, len(ids) + 1)
                    lines.append((pid, f"{n_frames},{pid},{x},{y},{w},{h},1,1,{vis:.4f}\n"))
                gt.writelines(line for _, line in sorted(lines))
                n_boxes += len(lines)
    finally:
        if writer is not None:
            writer.release()
    id_map = {str(pid): track for track, pid in ids.items()}
    gt_path.with_suffix(".ids.json").write_text(json.dumps(id_map, indent=1) + "\n")
    return RenderStats(n_frames, n_boxes, n_skipped, video_path, codec)


def _open_writer(path: Path, camera: Camera) -> tuple[cv2.VideoWriter, Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (camera.image.width, camera.image.height)
    for codec, out in (("mp4v", path), ("MJPG", path.with_suffix(".avi"))):
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*codec), camera.fps, size)
        if writer.isOpened():
            return writer, out, codec
        writer.release()
    raise RuntimeError(f"this OpenCV build can write neither mp4v nor MJPG video to {path}")


# -- one camera's scene ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sprite:
    """One person rasterised over the part of the image their figure covers."""

    where: tuple[slice, slice]  # the window of the image
    colours: np.ndarray | None  # BGR; None when only the ground truth is made
    depth: np.ndarray  # float32, metres along the optical axis, per pixel
    mask: np.ndarray  # 255 where the figure is
    full: int  # pixels of the whole figure, the part outside the image included
    box: tuple[int, int, int, int]  # x, y, w, h of the mask in the image


class _Scene:
    """The per-video state: the background, the depth buffers, and where each track faces."""

    def __init__(
        self, layout: Layout, camera: Camera, options: RenderOptions, draw: bool = True
    ) -> None:
        self.options = options
        self.draw = draw  # False: boxes only, no pixels
        self.p = projection(camera)
        self.size = (camera.image.width, camera.image.height)
        w, h = self.size
        self.background, self.shelf_depth = _background(layout, camera, self.p)
        self.shade = _vignette(w, h) if options.lighting and draw else None
        if self.shade is not None:
            self.background = (self.background * self.shade[..., None]).astype(np.uint8)
        self.depth = np.empty((h, w), np.float32)  # per frame: the nearest surface so far
        self.owner = np.empty((h, w), np.int32)  # per frame: whose pixel it is, 0 nobody's
        self.headings: dict[str, tuple[float, float, float]] = {}  # track: x, y, heading
        self.light = _Lighting(options.seed, camera.fps) if options.lighting and draw else None
        self.noise = _noise_bank(options.seed, w, h, options.noise_sigma) if draw else None
        self.noise_rng = np.random.default_rng([options.seed, 2])

    def heading(self, person: Person) -> float:
        """People face the way they last walked; someone who has not moved keeps facing."""
        last = self.headings.get(person.track)
        if last is None:
            heading = initial_heading(person.track)
        else:
            dx, dy = person.x - last[0], person.y - last[1]
            heading = math.atan2(dy, dx) if dx * dx + dy * dy > 1e-4 else last[2]
        self.headings[person.track] = (person.x, person.y, heading)
        return heading

    def frame(
        self, t: float, people: Sequence[Person]
    ) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int], float]]]:
        """The image and the ground-truth boxes (track, box, visibility) for one instant.

        Boxes come in input order, so ids are numbered by first appearance in the input.
        """
        sprites = self.sprites(t, people)
        image = self.background.copy()
        boxes = self.visible(sprites, self.composite(image, [s[3] for s in sprites]))
        if self.light is not None:
            cv2.convertScaleAbs(image, dst=image, alpha=self.light.gain(t))
        if self.noise is not None:
            off = int(self.noise_rng.integers(0, self.noise.shape[0] - image.shape[0] + 1))
            image = cv2.add(image, self.noise[off : off + image.shape[0]], dtype=cv2.CV_8U)
        return image, boxes

    def boxes(self, t: float, people: Sequence[Person]) -> list[TruthBox]:
        """The ground-truth boxes alone for one instant: ``frame`` without the pixels."""
        sprites = self.sprites(t, people)
        return self.visible(sprites, self.composite(None, [s[3] for s in sprites]))

    def sprites(self, t: float, people: Sequence[Person]) -> list[tuple[float, int, str, _Sprite]]:
        """Everyone in view rasterised, nearest first (the least overdraw), with their order."""
        if len({p.track for p in people}) != len(people):
            raise ValueError(f"a track appears twice in the frame at t={t}")
        sprites = []
        for order, person in enumerate(people):
            look = look_for(person.track, person.colour)
            parts = figure(self.p, person.x, person.y, person.height_m, self.heading(person), look)
            sprite = self.rasterise(parts) if parts is not None else None
            if sprite is not None:
                mid = np.array([[person.x, person.y, person.height_m / 2]])
                sprites.append((float(project(self.p, mid)[1][0]), order, person.track, sprite))
        sprites.sort()
        return sprites

    def visible(
        self, sprites: list[tuple[float, int, str, _Sprite]], shown: list[int]
    ) -> list[TruthBox]:
        """The boxes of the people shown enough, in input order."""
        boxes = []
        for (_, order, track, sprite), seen in zip(sprites, shown, strict=True):
            visibility = seen / sprite.full
            if visibility >= self.options.min_visibility:
                boxes.append((order, (track, sprite.box, visibility)))
        return [box for _, box in sorted(boxes)]

    def composite(self, image: np.ndarray | None, sprites: list[_Sprite]) -> list[int]:
        """Draw the people over the background; how many pixels of each are seen.

        With occlusion, a pixel goes to whatever is nearest there (shelf or body part), so
        the result does not depend on the order; without, people are simply painted far to
        near and only the image border hides anything. With no image, only the counts.
        """
        if not self.options.occlusion:
            for s in reversed(sprites):
                if image is not None and s.colours is not None:
                    cv2.copyTo(s.colours, s.mask, image[s.where])
            return [cv2.countNonZero(s.mask) for s in sprites]
        for s in sprites:  # only where someone is drawn: nothing else is read
            np.copyto(self.depth[s.where], self.shelf_depth[s.where])
            self.owner[s.where] = 0
        for n, s in enumerate(sprites, start=1):
            nearest = cv2.bitwise_and(s.mask, cv2.compare(s.depth, self.depth[s.where], cv2.CMP_LT))
            if image is not None and s.colours is not None:
                cv2.copyTo(s.colours, nearest, image[s.where])
            cv2.copyTo(s.depth, nearest, self.depth[s.where])
            self.owner[s.where][nearest > 0] = n
        return [int(np.count_nonzero(self.owner[s.where] == n)) for n, s in enumerate(sprites, 1)]

    def rasterise(self, parts: list[Part]) -> _Sprite | None:
        """A person's pixels, depths and box; None when no pixel of them is in the image."""
        w, h = self.size
        pts = np.vstack([part.hull for part in parts])
        x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if ix0 >= ix1 or iy0 >= iy1 or (x1 - x0) * (y1 - y0) > 16 * w * h:
            return None  # outside the image, or (figure() refuses most) right at the lens
        colours = np.zeros((y1 - y0, x1 - x0, 3), np.uint8) if self.draw else None
        depth = np.zeros((y1 - y0, x1 - x0), np.float32)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        origin = np.array([x0, y0], np.float32)
        for part in parts:  # bottom up: each part over the ones below it
            poly = np.round((part.hull - origin) * 16).astype(np.int32)
            if colours is not None:
                cv2.fillConvexPoly(colours, poly, part.colour, cv2.LINE_8, 4)
            cv2.fillConvexPoly(depth, poly, part.depth, cv2.LINE_8, 4)
            cv2.fillConvexPoly(mask, poly, 255, cv2.LINE_8, 4)
        full = cv2.countNonZero(mask)
        inner = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        seen = mask[inner]
        if full == 0 or cv2.countNonZero(seen) == 0:
            return None
        if colours is not None:
            colours = colours[inner]
            if self.shade is not None:  # the vignette, at the person's place
                colours = cv2.convertScaleAbs(
                    colours, alpha=float(self.shade[(iy0 + iy1) // 2, (ix0 + ix1) // 2])
                )
            colours = np.ascontiguousarray(colours)
        bx, by, bw, bh = cv2.boundingRect(seen)
        return _Sprite(
            where=(slice(iy0, iy1), slice(ix0, ix1)),
            colours=colours,
            depth=np.ascontiguousarray(depth[inner]),
            mask=np.ascontiguousarray(seen),
            full=full,
            box=(int(ix0 + bx), int(iy0 + by), int(bw), int(bh)),
        )


# -- lighting and noise ------------------------------------------------------------------------


class _Lighting:
    """A brightness gain per frame: slow drift, and flickers drawn in frame order."""

    def __init__(self, seed: int, fps: float) -> None:
        rng = np.random.default_rng([seed, 1])
        self.phase = rng.uniform(0, 2 * math.pi, 2)
        self.rng = rng
        self.fps = fps
        self.flicker_left = 0
        self.flicker_gain = 1.0

    def gain(self, t: float) -> float:
        drift = 1 + 0.08 * math.sin(2 * math.pi * t / 47 + self.phase[0])
        drift += 0.04 * math.sin(2 * math.pi * t / 11 + self.phase[1])
        if self.flicker_left == 0 and self.rng.random() < 1 / (12 * self.fps):  # ~every 12 s
            self.flicker_left = int(self.rng.integers(1, 5))
            self.flicker_gain = float(self.rng.choice([0.7, 0.8, 1.2]))
        if self.flicker_left:
            self.flicker_left -= 1
            return drift * self.flicker_gain
        return drift


def _vignette(w: int, h: int) -> np.ndarray:
    """A lens falloff: full brightness in the middle, 78 % in the corners."""
    u = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    v = (np.arange(h, dtype=np.float32) - h / 2) / (h / 2)
    r2 = (u[None, :] ** 2 + v[:, None] ** 2) / 2
    return 1 - 0.22 * r2


def _noise_bank(seed: int, w: int, h: int, sigma: float) -> np.ndarray | None:
    """Twice a frame's rows of noise; each frame reads a random window of it."""
    if sigma <= 0:
        return None
    rng = np.random.default_rng([seed, 3])
    bank = rng.standard_normal((2 * h, w, 3), dtype=np.float32) * sigma
    return np.round(bank).astype(np.int16)


# -- the background ----------------------------------------------------------------------------


def _background(layout: Layout, camera: Camera, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The empty store as the camera sees it, and the depth of the shelves at each pixel."""
    w, h = camera.image.width, camera.image.height
    image = np.full((h, w, 3), _WALL, np.uint8)
    depth = np.full((h, w), np.inf, np.float32)
    floor = np.zeros((h, w), np.uint8)
    _fill(floor, p, _on_floor(layout.floor), 255)
    tiles = np.full((h, w, 3), _FLOOR, np.uint8)
    xs, ys = [q[0] for q in layout.floor], [q[1] for q in layout.floor]
    for gx in np.arange(math.ceil(min(xs) / TILE_M) * TILE_M, max(xs), TILE_M):
        _line(tiles, p, (gx, min(ys)), (gx, max(ys)), _GROUT)
    for gy in np.arange(math.ceil(min(ys) / TILE_M) * TILE_M, max(ys), TILE_M):
        _line(tiles, p, (min(xs), gy), (max(xs), gy), _GROUT)
    np.copyto(image, tiles, where=floor[..., None] > 0)
    for zone in sorted(layout.zones, key=lambda z: -z.area):  # small zones tint on top
        _tint(image, p, _on_floor(zone.polygon), _ZONE_TINT[zone.kind])
    centre = np.array(camera.position[:2])
    for shelf in layout.shelves:
        for quad, colour in _shelf_faces(layout, shelf, centre, camera.position[2]):
            _face(image, depth, p, quad, colour)
    return image, depth


def _on_floor(ring: Sequence[Sequence[float]]) -> np.ndarray:
    return np.column_stack([np.asarray(ring, float), np.zeros(len(ring))])


def _clip_near(p: np.ndarray, poly: np.ndarray, closed: bool = True) -> np.ndarray:
    """The part of a 3-D polygon (or, not closed, a segment) in front of the near plane.

    Sutherland–Hodgman against one plane: the depth is linear in 3-D, so each crossing is
    found by linear interpolation of the vertices' depths.
    """
    d = poly @ p[2, :3] + p[2, 3] - NEAR_M
    if d.min() >= 0:
        return poly
    out = []
    n = len(poly) if closed else len(poly) - 1
    for i in range(n):
        j = (i + 1) % len(poly)
        if d[i] >= 0:
            out.append(poly[i])
        if (d[i] >= 0) != (d[j] >= 0):
            out.append(poly[i] + (poly[j] - poly[i]) * (d[i] / (d[i] - d[j])))
    if not closed and d[-1] >= 0:
        out.append(poly[-1])
    return np.array(out).reshape(-1, 3)


def _pixels(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Fixed-point pixels (4 fractional bits) for OpenCV's sub-pixel drawing."""
    return np.round(project(p, poly)[0] * 16).astype(np.int32)


def _fill(image: np.ndarray, p: np.ndarray, poly: np.ndarray, colour: BGR | int) -> None:
    poly = _clip_near(p, poly)
    if len(poly) >= 3:
        cv2.fillPoly(image, [_pixels(p, poly)], colour, cv2.LINE_8, 4)


def _line(image: np.ndarray, p: np.ndarray, a: Sequence[float], b: Sequence[float], colour: BGR):
    seg = _clip_near(p, np.array([[a[0], a[1], 0.0], [b[0], b[1], 0.0]]), closed=False)
    if len(seg) == 2:
        q = _pixels(p, seg)
        cv2.line(image, tuple(map(int, q[0])), tuple(map(int, q[1])), colour, 1, cv2.LINE_AA, 4)


def _tint(image: np.ndarray, p: np.ndarray, poly: np.ndarray, tint: BGR) -> None:
    poly = _clip_near(p, poly)
    if len(poly) < 3:
        return
    box = _clipped_box(project(p, poly)[0], image.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    q = _pixels(p, poly) - np.array([x0, y0]) * 16
    cv2.fillPoly(mask, [q], 1, cv2.LINE_8, 4)
    roi = image[y0:y1, x0:x1]
    blended = cv2.addWeighted(roi, 1 - _TINT_ALPHA, np.full_like(roi, tint), _TINT_ALPHA, 0)
    np.copyto(roi, blended, where=mask[..., None] > 0)


def _clipped_box(uv: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    h, w = shape[:2]
    x0, y0 = np.floor(uv.min(axis=0)).astype(int)
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _face(
    image: np.ndarray, depth: np.ndarray, p: np.ndarray, quad: np.ndarray, colour: BGR
) -> None:
    """Draw a planar 3-D polygon through the depth buffer.

    The reciprocal of depth is affine in pixel coordinates across a plane, so three or more
    projected corners give the depth of every pixel of the face exactly.
    """
    poly = _clip_near(p, quad)
    if len(poly) < 3:
        return
    uv, w = project(p, poly)
    box = _clipped_box(uv, image.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    coef = np.linalg.lstsq(np.column_stack([uv, np.ones(len(uv))]), 1 / w, rcond=None)[0]
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [_pixels(p, poly) - np.array([x0, y0]) * 16], 1, cv2.LINE_8, 4)
    us = np.arange(x0, x1, dtype=np.float32)
    vs = np.arange(y0, y1, dtype=np.float32)
    inv = coef[0] * us[None, :] + coef[1] * vs[:, None] + coef[2]
    with np.errstate(divide="ignore"):
        d = np.where(inv > 0, 1 / inv, np.inf).astype(np.float32)
    win = (mask > 0) & (d < depth[y0:y1, x0:x1])
    image[y0:y1, x0:x1][win] = colour
    depth[y0:y1, x0:x1][win] = d[win]


def _stable(*keys: object) -> int:
    return hashlib.blake2b(repr(keys).encode(), digest_size=4).digest()[0]


def _solid(layout: Layout, shelf: Shelf) -> tuple[np.ndarray, float]:
    """The shelf's footprint as a counter-clockwise ring, and its height."""
    fp = np.asarray(shelf.footprint, float)
    if len(fp) == 2:
        a, b = fp
        normal = np.array([b[1] - a[1], a[0] - b[0]]) / np.linalg.norm(b - a)
        zone = np.asarray(layout.zone(shelf.zone).polygon, float).mean(axis=0)
        if normal @ (zone - (a + b) / 2) > 0:
            normal = -normal  # the unit stands behind its front edge, away from the shoppers
        fp = np.array([a, b, b + normal * WALL_UNIT_DEPTH_M, a + normal * WALL_UNIT_DEPTH_M])
        height = WALL_UNIT_M
    else:
        height = GONDOLA_M
    x, y = fp[:, 0], fp[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) < 0:
        fp = fp[::-1]
    return fp, height


def _shelf_faces(
    layout: Layout, shelf: Shelf, eye: np.ndarray, eye_z: float
) -> list[tuple[np.ndarray, BGR]]:
    """The faces the camera can see, as planar quads: the top, and sides in bands.

    Long sides carry bands of products between shelf boards, so a shelf has the texture
    of a shelf; the depth buffer, not this list's order, settles what hides what.
    """
    ring, height = _solid(layout, shelf)
    body = np.array(_SHELF_BODY[_stable(shelf.id) % len(_SHELF_BODY)], float)
    faces: list[tuple[np.ndarray, BGR]] = []
    if eye_z > height:
        top = np.column_stack([ring, np.full(len(ring), height)])
        faces.append((top, _bgr(body)))
    for i in range(len(ring)):
        a, b = ring[i], ring[(i + 1) % len(ring)]
        length = float(np.linalg.norm(b - a))
        normal = np.array([b[1] - a[1], a[0] - b[0]]) / length
        if normal @ (eye - (a + b) / 2) <= 0:
            continue  # faces away from the camera
        light = 0.72 + 0.25 * max(0.0, float(normal @ _LIGHT))
        if length < 0.8:
            faces.append((_quad(a, b, 0.0, height), _bgr(body * light)))
            continue
        faces.append((_quad(a, b, 0.0, 0.12), _bgr(body * light * 0.5)))  # kick plate
        z = 0.12
        level = 0
        while z < height - 0.05:
            top_z = min(z + 0.37, height)
            n_seg = max(1, round(length / 0.3))
            for k in range(n_seg):
                pa, pb = a + (b - a) * k / n_seg, a + (b - a) * (k + 1) / n_seg
                colour = np.array(_PRODUCTS[_stable(shelf.id, i, level, k) % len(_PRODUCTS)])
                faces.append((_quad(pa, pb, z, top_z), _bgr(colour * light)))
            if top_z < height:
                faces.append((_quad(a, b, top_z, min(top_z + 0.03, height)), _bgr(body * light)))
            z = top_z + 0.03
            level += 1
    return faces


def _quad(a: np.ndarray, b: np.ndarray, z0: float, z1: float) -> np.ndarray:
    return np.array([[a[0], a[1], z0], [b[0], b[1], z0], [b[0], b[1], z1], [a[0], a[1], z1]])


def _bgr(c: np.ndarray) -> BGR:
    b, g, r = (int(min(255, max(0, round(v)))) for v in c)
    return b, g, r
