"""Who is in a zone, with inertia: arrivals and departures that do not flicker.

Pure logic on anchor points, in any plane (floor metres in the store pipeline). A sample
is *in* (in the polygon, its edge included), *out* (beyond ``margin`` of the polygon) or in
the margin between. A track arrives once its samples have been *in*, unbroken, for
``enter_s`` seconds and ``enter_samples`` samples, and departs once they have been *out*
for ``exit_s`` and ``exit_samples`` (a sample in the margin neither ends nor extends a
departure under way). So a shopper brushing a zone's edge, or standing on it with jitter
smaller than the margin, changes nothing. Frames missing from a track are no evidence:
they neither reset nor extend a run.

An arrival is dated at the first sample of the run that confirmed it, a departure at the
first *out* sample of its run, and the departure carries the dwell between the two. A track
that stops being seen while present departs when it has been unseen for ``lost_s``, dated
at its last *in* sample (or at the first *out* sample of a departure under way).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import msgspec
import shapely
from shapely.geometry import Polygon

from adapters.crossings import TrackId
from core.layout import Zone

__all__ = ["ZoneArrival", "ZoneDeparture", "ZonePresence"]

Point = tuple[float, float]

MAX_TRACKS = 100_000
"""Most tracks one zone remembers at once; the longest unseen are forgotten first."""


class ZoneArrival(msgspec.Struct, frozen=True, kw_only=True):
    zone: str
    track: TrackId
    at: float
    """The first sample of the run of *in* samples that confirmed the arrival."""


class ZoneDeparture(msgspec.Struct, frozen=True, kw_only=True):
    zone: str
    track: TrackId
    at: float
    """The first *out* sample of the confirming run; for a lost track, its last *in* sample."""
    entered_at: float
    dwell_s: float
    """``at - entered_at``: how long the track was in the zone."""


Change = ZoneArrival | ZoneDeparture


class _State(msgspec.Struct):
    present: bool = False
    entered_at: float = 0.0
    run_start: float | None = None  # first sample of a run contrary to ``present``
    run_last: float = 0.0
    run_samples: int = 0
    last_at: float = -math.inf
    last_in_at: float = -math.inf


class ZonePresence:
    """Arrivals in and departures from one polygon zone, per track."""

    def __init__(
        self,
        zone: str,
        polygon: Sequence[Point] | Polygon,
        *,
        enter_s: float = 1.0,
        exit_s: float = 1.0,
        enter_samples: int = 1,
        exit_samples: int = 1,
        margin: float = 0.0,
        lost_s: float = 5.0,
    ) -> None:
        shape = polygon if isinstance(polygon, Polygon) else Polygon(polygon)
        if shape.is_empty or not shape.is_valid or shape.area <= 0:
            raise ValueError(f"zone {zone}: the polygon is not a valid area ({shape.wkt[:80]})")
        for name, value in (("enter_s", enter_s), ("exit_s", exit_s), ("margin", margin)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"zone {zone}: {name} {value!r} is not a time or distance >= 0")
        if not (math.isfinite(lost_s) and lost_s > 0):
            raise ValueError(f"zone {zone}: lost_s {lost_s!r} is not a time > 0")
        for name, count in (("enter_samples", enter_samples), ("exit_samples", exit_samples)):
            if not 1 <= count <= 10_000:
                raise ValueError(f"zone {zone}: {name} {count!r} is not a count in [1, 10000]")
        self.zone = zone
        self.enter_s, self.exit_s = enter_s, exit_s
        self.enter_samples, self.exit_samples = enter_samples, exit_samples
        self.lost_s = lost_s
        self._inner = shape
        self._outer = shape.buffer(margin) if margin > 0 else shape
        shapely.prepare(self._inner)
        shapely.prepare(self._outer)
        # A store has many zones and most points are far from any one: their bounds
        # answer for those without a call into GEOS.
        self._inner_box = shape.bounds
        self._outer_box = self._outer.bounds
        self._tracks: dict[TrackId, _State] = {}
        self._now = -math.inf

    @classmethod
    def of(
        cls,
        zone: Zone,
        *,
        enter_s: float = 1.0,
        exit_s: float = 1.0,
        enter_samples: int = 1,
        exit_samples: int = 1,
        margin: float = 0.2,
        lost_s: float = 5.0,
    ) -> ZonePresence:
        """A presence for a layout's zone, with defaults in floor metres and seconds."""
        return cls(
            zone.id,
            zone.polygon,
            enter_s=enter_s,
            exit_s=exit_s,
            enter_samples=enter_samples,
            exit_samples=exit_samples,
            margin=margin,
            lost_s=lost_s,
        )

    @property
    def present(self) -> frozenset[TrackId]:
        """The tracks in the zone now (arrived and not departed)."""
        return frozenset(t for t, s in self._tracks.items() if s.present)

    def update(self, at: float, points: Mapping[TrackId, Point]) -> list[Change]:
        """Every track's anchor at one instant; the arrivals and departures this confirms.

        Tracks unseen for ``lost_s`` by then depart (if present) and are forgotten.
        """
        if not math.isfinite(at):
            raise ValueError(f"zone {self.zone}: time {at!r} is not finite")
        changes: list[Change] = []
        for track, raw in points.items():
            x, y = float(raw[0]), float(raw[1])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"zone {self.zone}: track {track!r} at {raw} is not finite")
            state = self._tracks.setdefault(track, _State())
            if at <= state.last_at:
                raise ValueError(
                    f"zone {self.zone}: track {track!r} at {at} s is not after its "
                    f"last sample at {state.last_at} s"
                )
            state.last_at = at
            if _within(self._inner_box, x, y) and shapely.intersects_xy(self._inner, x, y):
                state.last_in_at = at
                change = self._evidence(track, state, at, inside=True)
            elif not (_within(self._outer_box, x, y) and shapely.intersects_xy(self._outer, x, y)):
                change = self._evidence(track, state, at, inside=False)
            else:
                change = None
                if not state.present:
                    state.run_start = None  # in the margin: an arrival needs unbroken *in*s
            if change is not None:
                changes.append(change)
        if at > self._now:
            self._now = at
            changes.extend(self._expire(at - self.lost_s))
        return changes

    def close(self) -> list[ZoneDeparture]:
        """The end of the stream: every present track departs, and all are forgotten."""
        return self._expire(math.inf)

    def end(self, track: TrackId) -> ZoneDeparture | None:
        """A track that is over (it left, or is lost for good): it departs if present, dated
        as a lost track is, and is forgotten. For a caller that knows before ``lost_s``."""
        state = self._tracks.pop(track, None)
        if state is None or not state.present:
            return None
        return self._departure(track, state, self._lost_at(state))

    def _evidence(self, track: TrackId, state: _State, at: float, inside: bool) -> Change | None:
        if inside == state.present:
            state.run_start = None  # agrees with the present state: any contrary run ends
            return None
        if state.run_start is None:
            state.run_start, state.run_samples = at, 0
        state.run_last = at
        state.run_samples += 1
        need_s, need_samples = (
            (self.enter_s, self.enter_samples) if inside else (self.exit_s, self.exit_samples)
        )
        if state.run_samples < need_samples or state.run_last - state.run_start < need_s:
            return None
        start, state.run_start = state.run_start, None
        state.present = inside
        if inside:
            state.entered_at = start
            return ZoneArrival(zone=self.zone, track=track, at=start)
        return self._departure(track, state, start)

    def _departure(self, track: TrackId, state: _State, at: float) -> ZoneDeparture:
        return ZoneDeparture(
            zone=self.zone,
            track=track,
            at=at,
            entered_at=state.entered_at,
            dwell_s=at - state.entered_at,
        )

    def _expire(self, before: float) -> list[ZoneDeparture]:
        departures = []
        gone = [t for t, s in self._tracks.items() if s.last_at < before]
        if len(self._tracks) - len(gone) > MAX_TRACKS:
            alive = sorted(
                (t for t in self._tracks if self._tracks[t].last_at >= before),
                key=lambda t: self._tracks[t].last_at,
            )
            gone += alive[: len(alive) - MAX_TRACKS]
        for track in gone:
            state = self._tracks.pop(track)
            if state.present:
                departures.append(self._departure(track, state, self._lost_at(state)))
        return departures

    @staticmethod
    def _lost_at(state: _State) -> float:
        """A departure under way is dated at its first out sample; else at the last in."""
        return state.run_start if state.run_start is not None else state.last_in_at


def _within(bounds: tuple[float, float, float, float], x: float, y: float) -> bool:
    """Whether the point is in the box (edges included, as ``intersects`` counts a
    polygon's edge): a point outside it is outside the polygon."""
    return bounds[0] <= x <= bounds[2] and bounds[1] <= y <= bounds[3]
