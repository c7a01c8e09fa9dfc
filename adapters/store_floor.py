"""A store's cameras to floor events in one place: track, project, hand off, make events.

Per camera, a ``CameraTracker`` and a ``Projector``; per store, the ``Handoff`` and the
``FloorEvents``. Cameras are fed frame by frame (boxes and scores, as a detector gives
them), in any interleaving as long as each camera's own frames come in order. A tracker
emits some boxes late (the frames before a track's id, a short gap filled), so sightings
wait ``reorder_s`` before the hand-off takes them in time order: the hand-off runs at the
pace of the slowest camera that is still sending (one ``stall_s`` behind the others stops
holding them back). A sighting that comes later than that is dropped and counted.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from datetime import datetime

import msgspec
import numpy as np

from adapters.floor_events import EventSettings, FloorEvents
from adapters.handoff import Handoff, HandoffSettings, Sighting
from adapters.projector import DEFAULT_HEIGHT_M, Projector
from adapters.tracking import Box, CameraTracker, Tracked, TrackerSettings
from core import events as ev
from core.layout import Layout

__all__ = ["FloorSettings", "StoreFloor", "StoreFloorStats"]


class FloorSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything from boxes to events; ``tracker.fps`` is each camera's own from the layout."""

    tracker: TrackerSettings = TrackerSettings()
    handoff: HandoffSettings = HandoffSettings()
    events: EventSettings = EventSettings()
    height_m: float = DEFAULT_HEIGHT_M
    """The height of the standing person the projector fits."""
    clipped_weight: float = 0.02
    """How much a foot point from a box cut by the image border counts (a whole one: 1)."""
    reorder_s: float | None = None
    """How long sightings wait to be put in time order; None: what each camera's tracker
    can emit late (its longest filled gap, or the frames before a track's id), plus a frame."""
    stall_s: float = 5.0
    """A camera this far behind the newest frame no longer holds the others back."""

    def __post_init__(self) -> None:
        if self.handoff.door_m != self.events.door_m:
            raise ValueError(
                f"floor settings: handoff.door_m {self.handoff.door_m} and events.door_m "
                f"{self.events.door_m} differ; near a door must mean one thing"
            )
        if self.events.hold_s < self.handoff.door_s:
            raise ValueError(
                f"floor settings: events.hold_s {self.events.hold_s} is shorter than "
                f"handoff.door_s {self.handoff.door_s}: exits would leave out of order"
            )
        if not 0.0 <= self.clipped_weight <= 1.0:
            raise ValueError(f"floor setting clipped_weight: {self.clipped_weight} not in [0, 1]")
        for name in ("reorder_s", "stall_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value <= 3600):
                raise ValueError(f"floor setting {name}: {value!r} is not in [0, 3600]")


class StoreFloorStats(msgspec.Struct, kw_only=True):
    frames: int = 0
    boxes: int = 0
    sightings: int = 0
    late_sightings: int = 0
    """Sightings that came after the hand-off had passed their time, dropped."""


class _Camera:
    def __init__(self, tracker: CameraTracker, projector: Projector, late_s: float) -> None:
        self.tracker = tracker
        self.projector = projector
        self.late_s = late_s
        self.last = -math.inf


class StoreFloor:
    """The floor events of a store's cameras (all of the layout's, or those named)."""

    def __init__(
        self,
        layout: Layout,
        origin: datetime,
        settings: FloorSettings | None = None,
        cameras: Iterable[str] | None = None,
        on_tracked: Callable[[str, list[Tracked]], None] | None = None,
    ) -> None:
        self.settings = s = settings or FloorSettings()
        self.stats = StoreFloorStats()
        self._cameras: dict[str, _Camera] = {}
        for camera_id in cameras if cameras is not None else [c.id for c in layout.cameras]:
            camera = layout.camera(camera_id)
            tracking = msgspec.structs.replace(s.tracker, fps=camera.fps)
            late = max(tracking.max_gap_s, (tracking.confirm_frames - 1) / camera.fps)
            self._cameras[camera_id] = _Camera(
                CameraTracker(tracking), Projector(camera, s.height_m), late + 1.0 / camera.fps
            )
        if not self._cameras:
            raise ValueError(f"store {layout.store.id}: no cameras to take frames from")
        self.reorder_s = (
            s.reorder_s
            if s.reorder_s is not None
            else max(c.late_s for c in self._cameras.values())
        )
        self.handoff = Handoff(layout.lines, s.handoff)
        self.events = FloorEvents(layout, origin, s.events)
        self._on_tracked = on_tracked
        self._pending: list[tuple[float, str, int, Sighting]] = []
        self._done = -math.inf

    def frame(
        self,
        camera: str,
        frame: int,
        at: float,
        boxes: np.ndarray | Iterable[Box],
        scores: np.ndarray | Iterable[float],
    ) -> list[ev.Event]:
        """One camera frame's person boxes (x1, y1, x2, y2 pixels) at ``at`` seconds of
        source time; the events that can leave now, in time order."""
        cam = self._cameras.get(camera)
        if cam is None:
            raise KeyError(f"camera {camera!r} is not one of {sorted(self._cameras)}")
        tracked = cam.tracker.update(frame, at, boxes, scores)
        cam.last = at
        self.stats.frames += 1
        self.stats.boxes += len(tracked)
        if self._on_tracked is not None:
            self._on_tracked(camera, tracked)
        for t in tracked:
            x, y = cam.projector.foot(t.box)
            weight = self.settings.clipped_weight if cam.projector.clipped(t.box) else 1.0
            s = Sighting(
                camera=camera, track=t.track, frame=t.frame, at=t.at, x=x, y=y, weight=weight
            )
            if t.at <= self._done:
                self.stats.late_sightings += 1
                continue
            heapq.heappush(self._pending, (t.at, camera, t.track, s))
            self.stats.sightings += 1
        return self._advance(self._clock())

    def close(self) -> list[ev.Event]:
        """The end of every camera's input: the events still held."""
        out = self._advance(math.inf)
        return out + self.events.close(self.handoff.close())

    def _clock(self) -> float:
        """How far every sighting is known: the slowest camera still sending, less reorder_s."""
        newest = max(c.last for c in self._cameras.values())
        stall = newest - self.settings.stall_s
        sending = [c.last for c in self._cameras.values() if c.last >= stall]
        return min(sending) - self.reorder_s

    def _advance(self, clock: float) -> list[ev.Event]:
        out: list[ev.Event] = []
        while self._pending and self._pending[0][0] <= clock:
            at = self._pending[0][0]
            group = []
            while self._pending and self._pending[0][0] == at:
                group.append(heapq.heappop(self._pending)[3])
            out += self._instant(at, group)
        if math.isfinite(clock) and clock > self._done:
            out += self._instant(clock, [])  # time passes for the lost and the clocks
        return out

    def _instant(self, at: float, sightings: list[Sighting]) -> list[ev.Event]:
        self._done = at
        step = self.handoff.update(at, sightings)
        return self.events.update(at, step)
