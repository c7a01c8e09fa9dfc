"""The store's floor drawn over a camera's frames: tracked boxes, the layout's lines and
zones, the calibration points and a floor grid, all through supervision's annotators and
drawing functions.

For ``aisle adapt --annotate`` (what the adapter saw and made of it) and ``aisle adapt
--check`` (whether the calibration puts the floor where the picture shows it). Floor
points are taken to the image through the inverse of the camera's homography; a shape
with a point behind the camera (an angled camera's view stops at its horizon) is left
out rather than drawn folded over.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv

from adapters.detection import PERSON, Frame
from adapters.tracking import Tracked
from core.layout import Camera, Layout

__all__ = ["AnnotatedVideo", "FloorOverlay", "tracked_detections"]

Image = npt.NDArray[np.uint8]

DOOR = sv.Color.GREEN
PASSBY = sv.Color.YELLOW
GRID = sv.Color.from_hex("#9aa0a6")
ZONES = sv.ColorPalette.DEFAULT
_FAR = 4.0  # a projected point this many image sizes away is clipped (OpenCV wants int32)


def tracked_detections(tracked: Iterable[Tracked]) -> sv.Detections:
    """A frame's tracked boxes as ``sv.Detections`` with their track ids."""
    rows = list(tracked)
    if not rows:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([t.box for t in rows], dtype=np.float32),
        confidence=np.array([t.score for t in rows], dtype=np.float32),
        class_id=np.full(len(rows), PERSON, dtype=int),
        tracker_id=np.array([t.track for t in rows], dtype=int),
    )


class FloorOverlay:
    """One camera's view of the layout: floor metres to pixels, and what to draw."""

    def __init__(self, layout: Layout, camera: Camera) -> None:
        self.layout = layout
        self.camera = camera
        self.size = (camera.image.width, camera.image.height)
        self._to_image = camera.homography.inverse().matrix
        centre = np.array([self.size[0] / 2, self.size[1] / 2, 1.0])
        floor = camera.homography.matrix @ centre
        self._front = float(np.sign((self._to_image @ floor)[2]))  # w's sign in front
        resolution = self.size
        self.thickness = sv.calculate_optimal_line_thickness(resolution)
        self.text_scale = sv.calculate_optimal_text_scale(resolution)

    def pixels(self, points: Sequence[Sequence[float]]) -> npt.NDArray[np.int32] | None:
        """Floor points (metres) as pixels; None if one of them is behind the camera."""
        floor = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        h = np.c_[floor, np.ones(len(floor))] @ self._to_image.T
        if np.any(h[:, 2] * self._front <= 1e-9):
            return None
        uv = h[:, :2] / h[:, 2:3]
        w, hh = self.size
        uv[:, 0] = uv[:, 0].clip(-_FAR * w, (1 + _FAR) * w)
        uv[:, 1] = uv[:, 1].clip(-_FAR * hh, (1 + _FAR) * hh)
        return np.round(uv).astype(np.int32)

    def zones(self, image: Image) -> Image:
        """The zones the camera sees, lightly filled and named, and every counting line."""
        seen = set(self.camera.sees)
        for k, zone in enumerate(self.layout.zones):
            if zone.id not in seen:
                continue
            poly = self.pixels(zone.polygon)
            if poly is None:
                continue
            color = ZONES.by_idx(k)
            image = sv.draw_filled_polygon(image, poly, color=color, opacity=0.12)
            image = sv.draw_polygon(image, poly, color=color, thickness=1)
            anchor = self.pixels([zone.shape.representative_point().coords[0]])
            if anchor is not None and self._inside(anchor[0]):
                image = sv.draw_text(
                    image,
                    zone.id,
                    sv.Point(int(anchor[0][0]), int(anchor[0][1])),
                    text_color=color,
                    text_scale=self.text_scale * 0.6,
                    text_padding=2,
                )
        for line in self.layout.lines:
            ends = self.pixels(line.points)
            if ends is None:
                continue
            color = PASSBY if line.kind == "passby" else DOOR
            a, b = (sv.Point(int(x), int(y)) for x, y in ends)
            image = sv.draw_line(image, a, b, color=color, thickness=self.thickness + 1)
        return image

    def grid(self, image: Image, step_m: float = 1.0) -> Image:
        """Floor lines every ``step_m`` metres over the store's floor plan."""
        xs = [p[0] for p in self.layout.floor]
        ys = [p[1] for p in self.layout.floor]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        lines = [((x, y0), (x, y1)) for x in np.arange(np.ceil(x0), x1 + 1e-9, step_m)]
        lines += [((x0, y), (x1, y)) for y in np.arange(np.ceil(y0), y1 + 1e-9, step_m)]
        for a, b in lines:
            ends = self.pixels([a, b])
            if ends is not None:
                p, q = (sv.Point(int(x), int(y)) for x, y in ends)
                image = sv.draw_line(image, p, q, color=GRID, thickness=1)
        outline = self.pixels(self.layout.floor)
        if outline is not None:
            image = sv.draw_polygon(image, outline, color=sv.Color.WHITE, thickness=2)
        return image

    def calibration(self, image: Image) -> Image:
        """Each calibration point: its pixel (a ring) and where its floor point lands
        through the fitted homography (a dot), joined when they differ."""
        for j, point in enumerate(self.camera.calibration.points):
            u, v = point.image
            given = sv.Point(round(u), round(v))
            landed = self.pixels([point.floor])
            image = sv.draw_text(
                image,
                str(j + 1),
                sv.Point(given.x + 14, given.y - 14),
                text_color=sv.Color.WHITE,
                background_color=sv.Color.BLACK,
                text_scale=self.text_scale * 0.6,
                text_padding=2,
            )
            if landed is not None:
                at = sv.Point(int(landed[0][0]), int(landed[0][1]))
                image = sv.draw_line(image, given, at, color=sv.Color.RED, thickness=1)
                image = sv.draw_filled_rectangle(
                    image, sv.Rect(at.x - 3, at.y - 3, 7, 7), color=sv.Color.RED
                )
            ring = sv.Rect(given.x - 8, given.y - 8, 17, 17)
            image = sv.draw_rectangle(image, ring, color=sv.Color.WHITE, thickness=2)
        return image

    def _inside(self, p: npt.NDArray[np.int32]) -> bool:
        return 0 <= p[0] < self.size[0] and 0 <= p[1] < self.size[1]


class AnnotatedVideo:
    """A video of what one camera's adapter saw: its processed frames with the layout's
    zones and lines, and the tracked people boxed and labelled with their track ids."""

    def __init__(self, layout: Layout, camera: Camera, path: Path, fps: float) -> None:
        self.overlay = FloorOverlay(layout, camera)
        self.path = path
        info = sv.VideoInfo(width=camera.image.width, height=camera.image.height, fps=fps)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = sv.VideoSink(str(path), info)
        self._sink.__enter__()  # RuntimeError when OpenCV cannot write there
        self._boxes = sv.BoxAnnotator(
            color_lookup=sv.ColorLookup.TRACK, thickness=self.overlay.thickness
        )
        self._labels = sv.LabelAnnotator(
            color_lookup=sv.ColorLookup.TRACK, text_scale=self.overlay.text_scale * 0.7
        )
        self.frames = 0

    def write(self, frame: Frame, tracked: Iterable[Tracked]) -> None:
        image = self.overlay.zones(frame.image.copy())
        people = tracked_detections(tracked)
        if len(people):
            image = self._boxes.annotate(image, people)
            labels = [f"#{t}" for t in people.tracker_id]  # type: ignore[union-attr]
            image = self._labels.annotate(image, people, labels=labels)
        stamp = f"{frame.at:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f"  frame {frame.number}"
        scale = self.overlay.text_scale * 0.6
        (w, h), _ = cv2.getTextSize(stamp, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        image = sv.draw_text(  # the anchor is the text's centre: put its corner at (8, 8)
            image,
            stamp,
            sv.Point(8 + w // 2 + 4, 8 + h // 2 + 4),
            text_color=sv.Color.WHITE,
            background_color=sv.Color.BLACK,
            text_scale=scale,
            text_padding=4,
        )
        self._sink.write_frame(image)
        self.frames += 1

    def close(self) -> None:
        self._sink.__exit__(None, None, None)
