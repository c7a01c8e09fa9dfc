"""Counting tracks across a directed line, with hysteresis.

Pure geometry on anchor points (a track's feet), in any plane: floor metres in the store
pipeline, pixels on a single camera. The rules, chosen so that a person is counted once
per real passage and never for jitter:

- **A band.** A track is *settled* on a side only once its anchor is at least ``band``
  from the line. Points inside the band never change the settled side, so standing on the
  line, touching it or jittering across it counts nothing.
- **A passage is a change of settled side through the segment.** When a track settles on
  the other side, one crossing is counted if its path last crossed the (infinite) line
  between the segment's ends; a path around an end settles on the new side uncounted.
  The crossing's time is when the path crossed the line, not when it settled.
- **A V through the line** counts in then out when the track settles on the far side
  before it comes back, and nothing when the tip of the V stays inside the band: the
  person did, or did not, step through.
- **Birth on the line.** A track first seen inside the band takes the side its first
  point is on, so a person who steps off the line is counted from where they were seen.
- **Hand-over.** A track first seen within ``handover_distance`` and ``handover_s`` of the
  last point of a track that was not seen in that frame, and was last seen within
  ``handover_distance`` of the segment, continues that track's state; so a tracker that
  changes a person's id on the line counts them once.
- **Dropped frames** need nothing special: a step is tested as a segment however long.

"Left" follows ``core.layout.Line``: counter-clockwise of a→b in a y-up plane (the floor).
In image coordinates, where y points down, that is the visual right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import msgspec

from core.layout import Line

__all__ = ["Direction", "LineCounter", "LineCrossing", "TrackId"]

TrackId = int | str
Point = tuple[float, float]
Direction = Literal["in", "out"]

MAX_TRACKS = 100_000
"""Most tracks one counter remembers at once; the longest unseen are forgotten first."""


class LineCrossing(msgspec.Struct, frozen=True, kw_only=True):
    """One counted passage of a track through a line."""

    line: str
    track: TrackId
    direction: Direction
    at: float
    """When the path crossed the line (interpolated between the two points around it)."""
    settled_at: float
    """When the track settled on the new side, i.e. when the crossing became certain."""


class _State(msgspec.Struct):
    """What a counter remembers of one track."""

    settled: int  # +1 in, -1 out, 0 unknown (first seen exactly on the line)
    sign: int  # the side of the last point that was not exactly on the line, or 0
    signed_point: Point  # that point
    signed_at: float
    last_point: Point
    last_at: float
    crossed_at: float | None = None  # when the path last crossed the infinite line
    through: bool = False  # whether that crossing was between the segment's ends


class LineCounter:
    """Counts the tracks crossing one directed line segment a→b, in both directions."""

    def __init__(
        self,
        line: str,
        a: Point,
        b: Point,
        in_side: Literal["left", "right"],
        *,
        band: float,
        handover_distance: float = 0.0,
        handover_s: float = 0.0,
        forget_s: float = 60.0,
    ) -> None:
        length = math.dist(a, b)
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"line {line}: its two points {a} and {b} must differ")
        for name, value in (
            ("band", band),
            ("handover_distance", handover_distance),
            ("handover_s", handover_s),
            ("forget_s", forget_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"line {line}: {name} {value!r} is not a distance or time >= 0")
        if forget_s < handover_s:
            raise ValueError(f"line {line}: forget_s {forget_s} is shorter than handover_s")
        self.line = line
        self._a = (float(a[0]), float(a[1]))
        self._d = (float(b[0]) - self._a[0], float(b[1]) - self._a[1])
        self._length = length
        self._in_sign = 1 if in_side == "left" else -1
        self.band = band
        self.handover_distance = handover_distance
        self.handover_s = handover_s
        self.forget_s = forget_s
        self._tracks: dict[TrackId, _State] = {}
        self._now = -math.inf
        self.ins = 0
        self.outs = 0

    @classmethod
    def of(
        cls,
        line: Line,
        *,
        band: float = 0.3,
        handover_distance: float = 1.0,
        handover_s: float = 2.0,
        forget_s: float = 60.0,
    ) -> LineCounter:
        """A counter for a layout's line, with defaults in floor metres and seconds."""
        return cls(
            line.id,
            line.points[0],
            line.points[1],
            line.in_side,
            band=band,
            handover_distance=handover_distance,
            handover_s=handover_s,
            forget_s=forget_s,
        )

    def offset(self, point: Point) -> float:
        """Signed distance of a point from the line's infinite extension, positive inside."""
        dx, dy = self._d
        px, py = point[0] - self._a[0], point[1] - self._a[1]
        return self._in_sign * (dx * py - dy * px) / self._length

    def update(self, at: float, points: Mapping[TrackId, Point]) -> list[LineCrossing]:
        """Every track's anchor at one instant (one frame); the passages they complete.

        A track's points must come in time order; different tracks' need not (a tracker
        emits a filled gap after the frame that revealed it).
        """
        if not math.isfinite(at):
            raise ValueError(f"line {self.line}: time {at!r} is not finite")
        crossings: list[LineCrossing] = []
        newborn: list[tuple[TrackId, Point]] = []
        for track, raw in points.items():
            point = (float(raw[0]), float(raw[1]))
            if not (math.isfinite(point[0]) and math.isfinite(point[1])):
                raise ValueError(f"line {self.line}: track {track!r} at {point} is not finite")
            state = self._tracks.get(track)
            if state is None:
                newborn.append((track, point))
                continue
            if at <= state.last_at:
                raise ValueError(
                    f"line {self.line}: track {track!r} at {at} s is not after its "
                    f"last point at {state.last_at} s"
                )
            crossings.extend(self._step(track, state, at, point))
        for track, point in newborn:
            state = self._handover(at, point, points)
            if state is None:
                sign = _sign(self.offset(point))
                self._tracks[track] = _State(
                    settled=sign,
                    sign=sign,
                    signed_point=point,
                    signed_at=at,
                    last_point=point,
                    last_at=at,
                )
            else:
                self._tracks[track] = state
                crossings.extend(self._step(track, state, at, point))
        if at > self._now:
            self._now = at
            self._forget()
        return crossings

    def _step(self, track: TrackId, state: _State, at: float, point: Point) -> list[LineCrossing]:
        offset = self.offset(point)
        sign = _sign(offset)
        if sign and state.sign and sign != state.sign:
            self._crossed(state, at, point, offset)
        if sign:
            state.sign, state.signed_point, state.signed_at = sign, point, at
        state.last_point, state.last_at = point, at
        if not sign or abs(offset) < self.band or sign == state.settled:
            return []
        counted = state.settled != 0 and state.through and state.crossed_at is not None
        state.settled = sign
        if not counted:
            return []
        assert state.crossed_at is not None
        if sign > 0:
            self.ins += 1
        else:
            self.outs += 1
        return [
            LineCrossing(
                line=self.line,
                track=track,
                direction="in" if sign > 0 else "out",
                at=state.crossed_at,
                settled_at=at,
            )
        ]

    def _crossed(self, state: _State, at: float, point: Point, offset: float) -> None:
        """Record where and when the step from the last signed point crossed the line."""
        before = self.offset(state.signed_point)
        w = before / (before - offset)
        (x0, y0), (x1, y1) = state.signed_point, point
        x, y = x0 + w * (x1 - x0), y0 + w * (y1 - y0)
        dx, dy = self._d
        along = ((x - self._a[0]) * dx + (y - self._a[1]) * dy) / (self._length * self._length)
        # A crossing at an end counts, whichever way the last bit of rounding falls.
        state.through = -1e-9 <= along <= 1.0 + 1e-9
        state.crossed_at = state.signed_at + w * (at - state.signed_at)

    def _handover(self, at: float, point: Point, present: Mapping[TrackId, Point]) -> _State | None:
        """The state of the nearest recently lost track a new one continues, taken from it."""
        if self.handover_distance <= 0:
            return None
        best: TrackId | None = None
        best_distance = self.handover_distance
        for track, state in self._tracks.items():
            if track in present or not (0 < at - state.last_at <= self.handover_s):
                continue
            if self._distance(state.last_point) > self.handover_distance:
                continue  # lost away from the line: nothing of it can be pending here
            distance = math.dist(state.last_point, point)
            if distance <= best_distance:
                best, best_distance = track, distance
        return None if best is None else self._tracks.pop(best)

    def _distance(self, point: Point) -> float:
        """Distance from a point to the segment a→b."""
        dx, dy = self._d
        px, py = point[0] - self._a[0], point[1] - self._a[1]
        along = min(max((px * dx + py * dy) / (self._length * self._length), 0.0), 1.0)
        return math.hypot(px - along * dx, py - along * dy)

    def _forget(self) -> None:
        """Drop tracks unseen for ``forget_s``, and the oldest beyond ``MAX_TRACKS``."""
        stale = [t for t, s in self._tracks.items() if self._now - s.last_at > self.forget_s]
        for track in stale:
            del self._tracks[track]
        if len(self._tracks) > MAX_TRACKS:
            oldest = sorted(self._tracks, key=lambda t: self._tracks[t].last_at)
            for track in oldest[: len(self._tracks) - MAX_TRACKS]:
                del self._tracks[track]


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)
