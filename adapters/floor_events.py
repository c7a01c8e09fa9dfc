"""Events from fused floor tracks: entries, exits, passers-by, zones, positions, heartbeats.

The input is the hand-off's fused tracks, one instant at a time (``adapters.handoff``);
the output is ``core.events`` raw events, the same types and conventions as the
simulator's, so the standard rule packs read them unchanged:

- **Subjects.** Each fused track is one visit, named ``v-`` and 16 hex digits of a hash of
  the store and the track's first sighting (camera, frame, camera track) and the visit's
  number: pseudonymous, new for every visit, never derived from how a person looks, and
  the same every time the same video is processed. A fused track that comes back in after
  leaving starts a new visit.
- **Doors.** ``shopper.entered`` and ``shopper.exited`` are crossings of the layout's door
  lines, counted by ``LineCounter`` (hysteresis), in to enter and out to leave, whatever
  the line's kind (as the simulator counts them). Cameras rarely see past a door: a
  fused track that is born inside the store near a door came in through it (unless the
  nearest door is exit-only: then it is someone found again), and one that
  ended near a door (``Ended.door``) went out. Such a track's path is extended to a point
  just outside the nearest door, straight through the door line, at ``walk_m_s``, and
  the counter decides as for any other path. So a door that a camera does see is counted
  from the real crossing, and one it does not from where people appear and vanish.
- **Passers-by.** A track that crosses a ``passby`` line and has not come in within
  ``capture_s`` (or is over before) is one ``passerby.seen``, dated when that was decided,
  so that the output stays in time order; a shopper who walks past after leaving is not
  counted again.
- **Zones.** ``ZonePresence`` per zone (every zone, as the simulator emits every zone a
  person is in): ``zone.entered`` at the arrival, ``zone.exited`` at the departure with
  ``dwell_s``. A track lost in the store keeps its zones until it is found elsewhere or
  is over.
- **Positions.** Every ``sample_s`` of source time, one ``position.samples`` (subject
  ``floor``) holds every fused track once, however many cameras see it: where it was last
  seen, smoothed (``adapters.smoothing``). A track lost in the store away from the doors
  is carried on along its heading for ``coast_s`` and then held there, since a person out
  of view is mostly one who walked on to a shelf and stands there; it keeps its zones
  that way until it is found or over, and its samples for ``stand_s``.
- **Heartbeats.** A ``store.heartbeat`` every ``heartbeat_s`` of source time moves the
  store's event time on when nobody is about.

Events are dated in source time (``origin`` plus the seconds the instants carry) and held
back ``hold_s`` so that they leave in time order under one ``source``; an event decided
later than that (a track lost for long) is dated at the oldest time still open.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from adapters.crossings import LineCounter, LineCrossing
from adapters.handoff import Ended, Step, TrackKey, near_door, to_segment
from adapters.presence import ZoneArrival, ZoneDeparture, ZonePresence
from adapters.smoothing import SmoothingSettings, TrackSmoother
from core import events as ev
from core.layout import Layout, Line

__all__ = ["EventSettings", "FloorEventStats", "FloorEvents", "subject_of"]

Point = tuple[float, float]
TRAIL_S = 0.6
"""How much of a track's recent path its heading is taken over."""
DOOR_KINDS = ("entrance", "exit", "entrance_exit")


class EventSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How fused tracks become events (distances in metres, times in seconds)."""

    source: str = "fusion"
    """The events' ``source``: the adapter that fuses the store's cameras."""
    sample_s: float = 0.5
    """Position samples: one ``position.samples`` this often (the simulator's rate)."""
    heartbeat_s: float = 1.0
    """A ``store.heartbeat`` this often."""
    hold_s: float = 3.0
    """Events are held this long to leave in time order (above ``door_s`` of the hand-off)."""
    door_m: float = 1.2
    """A track born or ended this near a door line came in or went out through it."""
    walk_m_s: float = 1.2
    """The pace assumed between a door and where a track was first or last seen."""
    band_m: float = 0.3
    """The door and passby lines' hysteresis band."""
    capture_s: float = 10.0
    """A track that crossed a passby line and came in within this is no passer-by."""
    zone_enter_s: float = 1.0
    zone_exit_s: float = 1.0
    zone_margin_m: float = 0.2
    coast_s: float = 1.0
    """Out of sight, a track walks on along its last heading this long, then stands."""
    stand_s: float = 3.0
    """...and is in the position samples for this long after it was last seen: where the
    cameras see all of the floor, one lost for longer is mostly a ghost (a duplicate the
    hand-off has not yet given up), whose standing would heat a cell nobody is in."""
    smoothing: SmoothingSettings = SmoothingSettings()

    def __post_init__(self) -> None:
        if not 1 <= len(self.source) <= 128:
            raise ValueError(f"event setting source: {self.source!r} is not 1 to 128 characters")
        for name in (
            "sample_s",
            "heartbeat_s",
            "hold_s",
            "door_m",
            "walk_m_s",
            "band_m",
            "capture_s",
            "zone_enter_s",
            "zone_exit_s",
            "zone_margin_m",
            "coast_s",
            "stand_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 86_400):
                raise ValueError(f"event setting {name}: {value!r} is not in [0, 86400]")
        for name in ("sample_s", "heartbeat_s", "walk_m_s"):
            if getattr(self, name) < 0.01:
                raise ValueError(f"event setting {name}: {getattr(self, name)!r} is below 0.01")


class FloorEventStats(msgspec.Struct, kw_only=True):
    """What the event maker did, for a progress line and the accuracy report."""

    visits: int = 0
    door_births: int = 0
    door_ends: int = 0
    passers_by: int = 0
    redated: int = 0
    """Events decided after ``hold_s`` and dated at the oldest time still open."""


def subject_of(store: str, key: TrackKey, visit: int = 0) -> str:
    """The pseudonymous subject of a fused track's ``visit``-th visit."""
    return "v-" + ev.event_id("visit", store, *key, visit)[:16]


class _Visit(msgspec.Struct, kw_only=True):
    key: TrackKey
    index: int  # the counters' and zones' id for this track
    subject: str
    visit: int = 0
    entered: bool = False
    exited: bool = False
    point: Point | None = None  # smoothed, last seen
    at: float = -math.inf
    passby_at: float | None = None  # when it crossed a passby line, pending a decision
    passby_line: str = ""
    passer: bool = False  # counted as a passer-by already
    held: bool | None = None  # whether, out of sight, it is held where last seen
    trail: deque[tuple[float, float, float]] = msgspec.field(default_factory=deque)


class FloorEvents:
    """One store's events from its fused tracks. Feed every hand-off step in time order."""

    def __init__(
        self, layout: Layout, origin: datetime, settings: EventSettings | None = None
    ) -> None:
        if origin.tzinfo is None:
            raise ValueError("floor events: the origin must carry a time zone")
        self.settings = s = settings or EventSettings()
        if s.hold_s < s.zone_enter_s or s.hold_s < s.zone_exit_s:
            raise ValueError("event setting hold_s: shorter than a zone's enter_s or exit_s")
        self.layout = layout
        self.store = layout.store.id
        self.origin = origin
        self.stats = FloorEventStats()
        self.doors = tuple(line for line in layout.lines if line.kind in DOOR_KINDS)
        # The hand-off has joined the tracks already: the counters hand nothing over.
        self._door_counters = [
            LineCounter.of(line, band=s.band_m, handover_distance=0.0, handover_s=0.0)
            for line in self.doors
        ]
        self._passby = [
            LineCounter.of(line, band=s.band_m, handover_distance=0.0, handover_s=0.0)
            for line in layout.lines
            if line.kind == "passby"
        ]
        self._zones = [
            ZonePresence.of(
                zone,
                enter_s=s.zone_enter_s,
                exit_s=s.zone_exit_s,
                margin=s.zone_margin_m,
                lost_s=86_400.0,  # tracks end when the hand-off says so
            )
            for zone in layout.zones
        ]
        self._smoother = TrackSmoother(s.smoothing)
        self._visits: dict[TrackKey, _Visit] = {}
        self._by_index: dict[int, _Visit] = {}
        self._made = 0
        self._now = -math.inf
        self._next_sample = 0
        self._next_beat = 0
        self._out: list[tuple[float, str, ev.Event]] = []  # a heap by time, then id
        self._open = -math.inf  # events before this time have left

    # -- the input ---------------------------------------------------------------------------

    def update(self, at: float, step: Step) -> list[ev.Event]:
        """One instant of the hand-off; the events that can leave now, in time order."""
        if not math.isfinite(at) or at <= self._now:
            raise ValueError(f"floor events: instant {at} s does not come after {self._now} s")
        self._now = at
        self._tick(at, inclusive=False)  # the samples due before this instant's points
        for key in step.born:
            self._born(key)
        points: dict[int, Point] = {}
        births: list[tuple[_Visit, Point]] = []
        for p in step.points:
            visit = self._visits[p.key]
            point = self._smoother(p.key, at, (p.x, p.y))
            if visit.point is None:
                births.append((visit, point))
            visit.point, visit.at, visit.held = point, at, None
            visit.trail.append((at, *point))
            while visit.trail[0][0] < at - TRAIL_S:
                visit.trail.popleft()
            points[visit.index] = point
        for visit, point in births:
            self._from_door(visit, point, at)
        for counter in self._door_counters:
            self._doors(counter.update(at, points))
        for counter in self._passby:
            self._passed(counter.update(at, points))
        # A track out of sight away from the doors walks on, then stands (``_where``): a
        # visit under way ends once the person is found outside it, or the track is over.
        held = {
            v.index: self._where(v, at)
            for v in self._visits.values()
            if v.point is not None and v.at < at and self._shown(v, at)
        }
        for zone in self._zones:
            self._zoned(zone.update(at, points | held))
        for ended in step.ended:
            self._ended(ended, at)
        self._decide_passers(at)
        self._tick(at, inclusive=True)
        return self._release(at - self.settings.hold_s)

    def close(self, ended: Sequence[Ended] = ()) -> list[ev.Event]:
        """The end of the input (with the hand-off's last ended tracks): everything left."""
        for e in ended:
            self._ended(e, self._now)
        self._decide_passers(math.inf)
        return self._release(math.inf)

    # -- visits --------------------------------------------------------------------------------

    def _born(self, key: TrackKey) -> None:
        visit = _Visit(key=key, index=self._made, subject=subject_of(self.store, key))
        self._made += 1
        self._visits[key] = visit
        self._by_index[visit.index] = visit
        self.stats.visits += 1

    def _door(self, point: Point) -> tuple[Line, LineCounter] | None:
        """The door line nearest ``point``, if within ``door_m`` and not settled outside."""
        best: tuple[float, int] | None = None
        for i, (line, counter) in enumerate(zip(self.doors, self._door_counters, strict=True)):
            if counter.offset(point) <= -self.settings.band_m:
                continue
            d = to_segment(line, *point)
            if d <= self.settings.door_m and (best is None or d < best[0]):
                best = (d, i)
        return None if best is None else (self.doors[best[1]], self._door_counters[best[1]])

    def _outside(self, door: tuple[Line, LineCounter], point: Point) -> Point:
        """A point just outside a door line, past its band: from a point inside, on the
        straight way through the door; from one on the line, straight out."""
        line, counter = door
        (ax, ay), (bx, by) = line.points
        dx, dy = bx - ax, by - ay
        along = ((point[0] - ax) * dx + (point[1] - ay) * dy) / (dx * dx + dy * dy)
        along = min(max(along, 0.05), 0.95)  # through the door, not past its post
        qx, qy = ax + along * dx, ay + along * dy
        beyond = self.settings.band_m + 0.05
        if counter.offset(point) > 0:
            ux, uy = qx - point[0], qy - point[1]
        else:  # the inward normal, reversed
            inward = counter.offset((qx - dy, qy + dx)) > 0
            ux, uy = (dy, -dx) if inward else (-dy, dx)
        norm = math.hypot(ux, uy) or 1.0
        return qx + ux / norm * beyond, qy + uy / norm * beyond

    def _from_door(self, visit: _Visit, point: Point, at: float) -> None:
        """A track born inside near a door came in through it: its path starts outside."""
        door = self._door(point)
        if door is None or door[0].kind == "exit":
            return  # nobody comes in by an exit-only door: a track found again, not a visit
        outside = self._outside(door, point)
        before = at - math.dist(outside, point) / self.settings.walk_m_s
        self.stats.door_births += 1
        for counter in self._door_counters:
            self._doors(counter.update(before, {visit.index: outside}))

    def _ended(self, ended: Ended, now: float) -> None:
        visit = self._visits.pop(ended.key, None)
        if visit is None:
            return
        point = visit.point
        if ended.door and point is not None and (door := self._door(point)) is not None:
            outside = self._outside(door, point)
            after = visit.at + math.dist(outside, point) / self.settings.walk_m_s
            self.stats.door_ends += 1
            for counter in self._door_counters:
                self._doors(counter.update(after, {visit.index: outside}))
        for zone in self._zones:
            departure = zone.end(visit.index)
            if departure is not None:
                self._zoned([departure], visit)
        merged = ended.merged_into is not None  # a duplicate: the person is still about
        if visit.passby_at is not None and not visit.entered and not visit.passer and not merged:
            self._passer(visit, now)
        self._smoother.end(ended.key)
        del self._by_index[visit.index]

    # -- lines -------------------------------------------------------------------------------

    def _doors(self, crossings: list[LineCrossing]) -> None:
        for c in crossings:
            visit = self._by_index.get(int(c.track))
            if visit is None:
                continue
            if c.direction == "in":
                if visit.exited:  # back in after leaving: a new visit
                    visit.visit += 1
                    visit.subject = subject_of(self.store, visit.key, visit.visit)
                    visit.exited = False
                    self.stats.visits += 1
                visit.entered = True
                data: msgspec.Struct = ev.EntryData(line=c.line)
                self._emit(ev.ShopperEntered, c.at, visit.subject, data)
            else:
                visit.exited = True
                self._emit(ev.ShopperExited, c.at, visit.subject, ev.ExitData(line=c.line))

    def _passed(self, crossings: list[LineCrossing]) -> None:
        for c in crossings:
            visit = self._by_index.get(int(c.track))
            if visit is not None and visit.passby_at is None and not visit.entered:
                visit.passby_at, visit.passby_line = c.at, c.line

    def _decide_passers(self, now: float) -> None:
        for visit in list(self._visits.values()):
            if visit.passby_at is None or visit.passer or visit.entered:
                continue
            decided = visit.passby_at + self.settings.capture_s
            if decided <= now:
                self._passer(visit, decided)

    def _passer(self, visit: _Visit, at: float) -> None:
        visit.passer = True
        self.stats.passers_by += 1
        data = ev.PasserbyData(line=visit.passby_line)
        self._emit(ev.PasserbySeen, at, visit.subject, data)

    # -- zones -------------------------------------------------------------------------------

    def _zoned(
        self, changes: Sequence[ZoneArrival | ZoneDeparture], visit: _Visit | None = None
    ) -> None:
        for change in changes:
            who = visit or self._by_index.get(int(change.track))
            if who is None:
                continue
            if isinstance(change, ZoneArrival):
                self._emit(ev.ZoneEntered, change.at, who.subject, ev.ZoneData(zone=change.zone))
            else:
                at = change.at
                if at < self._open:  # decided late (a track lost for long): the oldest open time
                    at = self._open
                    self.stats.redated += 1
                dwell = round(max(0.0, at - change.entered_at), 3)
                data = ev.ZoneExitData(zone=change.zone, dwell_s=dwell)
                self._emit(ev.ZoneExited, at, who.subject, data)

    # -- positions and heartbeats ------------------------------------------------------------

    def _tick(self, now: float, inclusive: bool) -> None:
        s = self.settings

        def due(at: float) -> bool:
            return at <= now if inclusive else at < now

        while due(self._next_beat * s.heartbeat_s):
            at = self._next_beat * s.heartbeat_s
            self._emit(ev.StoreHeartbeat, at, s.source, ev.HeartbeatData())
            self._next_beat += 1
        while due(self._next_sample * s.sample_s):
            at = self._next_sample * s.sample_s
            samples = [
                ev.PositionSample(v.subject, round(x, 3), round(y, 3))
                for v in sorted(self._visits.values(), key=lambda v: v.index)
                if v.point is not None and self._shown(v, at)
                for x, y in [self._where(v, at)]
            ]
            for start in range(0, len(samples), ev.MAX_SAMPLES):
                chunk = tuple(samples[start : start + ev.MAX_SAMPLES])
                data = ev.PositionData(frame=self._next_sample, samples=chunk)
                self._emit(ev.PositionSamples, at, "floor", data)
            self._next_sample += 1

    def _shown(self, visit: _Visit, at: float) -> bool:
        """Seen lately, or lost away from the doors (held where it was last seen)."""
        if at - visit.at <= self.settings.sample_s:
            return True
        if at - visit.at > self.settings.stand_s:
            return False
        if visit.held is None:
            assert visit.point is not None
            visit.held = not near_door(self.doors, *visit.point, self.settings.door_m)
        return visit.held

    def _where(self, visit: _Visit, at: float) -> Point:
        """Where a track is taken to be: where last seen, or, out of sight, carried on along
        its last heading for up to ``coast_s`` and then standing (a person walking into a
        blind spot mostly walks on to the shelf they were heading for)."""
        assert visit.point is not None
        coast = min(at - visit.at, self.settings.coast_s)
        if coast <= 0 or len(visit.trail) < 2:
            return visit.point
        (t0, x0, y0), (t1, x1, y1) = visit.trail[0], visit.trail[-1]
        if t1 - t0 < TRAIL_S / 3:
            return visit.point
        return x1 + (x1 - x0) / (t1 - t0) * coast, y1 + (y1 - y0) / (t1 - t0) * coast

    # -- the output --------------------------------------------------------------------------

    def _emit(self, cls: type[ev.RawEvent], at: float, subject: str, data: msgspec.Struct) -> None:
        if at < self._open:
            at = self._open
            self.stats.redated += 1
        when = self.origin + timedelta(seconds=round(at, 6))
        event = ev.new(
            cls, store=self.store, at=when, source=self.settings.source, subject=subject, data=data
        )
        heapq.heappush(self._out, (at, event.id, event))

    def _release(self, until: float) -> list[ev.Event]:
        out = []
        while self._out and self._out[0][0] <= until:
            out.append(heapq.heappop(self._out)[2])
        if until > self._open:
            self._open = until
        return out
