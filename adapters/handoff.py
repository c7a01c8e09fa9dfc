"""One shopper, one track, across cameras: the cameras' tracks joined on the floor.

Each camera tracks people in its own image; the floor is what the cameras share. A fused
track gathers the camera tracks (links) that follow one person, and its position at an
instant is the weighted mean of its links' latest foot points (a person cut by the image
border counts less than one seen whole). A camera track that the fusion has not seen
before is joined, on the floor, to the nearest fused track within reach:

- **Gating.** Within ``gate_m`` of where the fused track was last seen, plus what a person
  walks (``walk_m_s``) in the time it has been unseen. A fused track that this camera sees
  as someone else in the same frame is not a candidate: one camera does not see one person
  twice. The cheapest pairs are joined first; a camera track left over starts a new fused
  track (a birth).
- **People appear and disappear at doors.** A fused track lost near a door (``door_m`` of
  a door line) is over after ``door_s`` unseen: the person left. One lost anywhere else
  waits ``unseen_s`` to be found again, because the person is still in the store: behind
  a shelf, in a blind spot between two cameras' views, hidden by others in a queue. And
  near a door, a camera track joins only a fused track lost within ``birth_m`` of it: one
  further away is a new person coming in, not one found again; except at an exit-only
  door (the layout's ``exit`` kind), by which nobody comes in.
- **Splits and duplicates.** Links of one fused track that come apart (further than
  ``split_m``, between foot points of people seen whole) are joined afresh. Two fused
  tracks that follow one person, each through cameras the other has none of, within
  ``merge_m`` for ``merge_s``, are merged into the one seen without a gap for longer.

The order of joins and births is fixed (by cost, then camera and track), so the same
sightings give the same fused tracks. A fused track is named by its first sighting
(camera, frame, track): the key ``floor_events`` derives the visit's subject from.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import msgspec

from core.layout import Line

__all__ = [
    "Ended",
    "FloorPoint",
    "Handoff",
    "HandoffSettings",
    "Sighting",
    "Step",
    "TrackKey",
    "near_door",
    "nearest_door",
    "to_segment",
]

TrackKey = tuple[str, int, int]
"""A fused track's first sighting: camera, frame, the camera tracker's id."""

Point = tuple[float, float]

TRAIL_S = 0.6
"""How much of a fused track's recent path its heading is taken over."""

MAX_FUSED = 10_000
"""Most fused tracks kept at once; beyond, the longest unseen are ended first."""


class HandoffSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How camera tracks are joined (distances in metres, times in seconds)."""

    gate_m: float = 1.0
    """How far from a fused track's last position a camera track may join it."""
    walk_m_s: float = 1.5
    """How fast an unseen person may have walked: the gate grows by this while unseen."""
    live_s: float = 0.3
    """A link's foot point counts for the fused position for this long after it was seen."""
    door_m: float = 1.2
    """Near a door: within this of a door line's segment."""
    door_s: float = 2.0
    """A fused track lost near a door is over (the person left) after this long unseen."""
    leave_s: float = 0.5
    """One lost near a door while walking out through it (``leave_m_s`` or faster towards
    the outside) is over after this, and nobody coming in there can be it."""
    leave_m_s: float = 0.3
    unseen_s: float = 60.0
    """A fused track lost elsewhere in the store is over after this long unseen."""
    birth_m: float = 0.6
    """Near a door, a camera track joins no fused track further than this: it is a birth."""
    split_m: float = 0.8
    """Links of one fused track further apart than this follow two people: they are joined
    afresh (a camera's tracker swapped two people's ids, or a join was wrong)."""
    link_s: float = 10.0
    """A camera track unseen for this long is forgotten (its tracker dropped it long ago)."""
    clipped_birth_s: float = 2.0
    """A camera track seen only cut by the image border (a sighting's weight below 1) joins
    a fused track, but starts one only after this long: its foot point may be far off, and
    a camera that sees the person whole starts the track where they are."""
    merge_m: float = 0.4
    """Two fused tracks within this of each other for ``merge_s``, with no camera in common
    (no camera sees them as two people), follow one person: one is merged into the other,
    the one seen without a gap for longer. A duplicate (after two people crossed, a camera
    track joined the wrong fused track and the other was left to start afresh) otherwise
    lasts until the person leaves, and leaves twice; two people this close are seen as two
    by any camera that sees both."""
    merge_s: float = 0.5
    """How long two fused tracks must duplicate each other before they are merged."""

    def __post_init__(self) -> None:
        for name in msgspec.structs.fields(self):
            value = getattr(self, name.name)
            if not (math.isfinite(value) and 0 <= value <= 86_400):
                raise ValueError(f"handoff setting {name.name}: {value!r} is not in [0, 86400]")


class Sighting(msgspec.Struct, frozen=True, kw_only=True):
    """One camera track's foot point at one frame."""

    camera: str
    track: int
    frame: int
    at: float
    x: float
    y: float
    weight: float = 1.0
    """How much this foot point counts against other cameras' (0 to 1)."""


class FloorPoint(msgspec.Struct, frozen=True, kw_only=True):
    """A fused track seen at one instant."""

    key: TrackKey
    at: float
    x: float
    y: float
    camera: str
    """The camera whose foot point counted most."""
    tracks: tuple[tuple[str, int], ...] = ()
    """The camera tracks (camera, tracker id) whose foot points made it."""


class Ended(msgspec.Struct, frozen=True, kw_only=True):
    """A fused track that is over: where and when it was last seen."""

    key: TrackKey
    at: float
    x: float
    y: float
    door: bool
    """Whether it was lost near a door (the person most likely left)."""
    merged_into: TrackKey | None = None
    """The fused track it was found to duplicate and was merged into (``door`` is then
    False: the person is still there, under the other track)."""


class Step(msgspec.Struct, kw_only=True):
    """What one instant changed: the fused tracks seen, the new ones, the ones over."""

    points: list[FloorPoint]
    born: list[TrackKey]
    ended: list[Ended]


class _Link(msgspec.Struct):
    fused: _Fused
    frame: int
    at: float
    x: float
    y: float
    weight: float


class _Fused(msgspec.Struct):
    key: TrackKey
    order: int
    at: float
    x: float
    y: float
    links: dict[tuple[str, int], _Link]
    trail: deque[tuple[float, float, float]]  # (at, x, y) over the last TRAIL_S
    seen_from: float = -math.inf  # since when it has been seen without a gap
    over: bool = False
    guess: tuple[float, float] | None = None  # where a split track is looked for, this instant


def near_door(doors: Iterable[Line], x: float, y: float, within: float) -> bool:
    """Whether (x, y) is within ``within`` metres of one of the door lines' segments."""
    return any(to_segment(line, x, y) <= within for line in doors)


def nearest_door(doors: Iterable[Line], x: float, y: float, within: float) -> Line | None:
    """The door line whose segment is nearest (x, y), if within ``within`` metres."""
    best: tuple[float, Line] | None = None
    for line in doors:
        d = to_segment(line, x, y)
        if d <= within and (best is None or d < best[0]):
            best = (d, line)
    return None if best is None else best[1]


def to_segment(line: Line, x: float, y: float) -> float:
    """The distance from (x, y) to a line's segment, in metres."""
    (ax, ay), (bx, by) = line.points
    dx, dy = bx - ax, by - ay
    along = ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)
    along = min(max(along, 0.0), 1.0)
    return math.hypot(x - ax - along * dx, y - ay - along * dy)


class Handoff:
    """The fused tracks of one store's cameras. Feed it every instant, in time order."""

    def __init__(self, doors: Sequence[Line], settings: HandoffSettings | None = None) -> None:
        self.settings = settings or HandoffSettings()
        self.doors = tuple(d for d in doors if d.kind in ("entrance", "exit", "entrance_exit"))
        self._fused: dict[TrackKey, _Fused] = {}
        self._links: dict[tuple[str, int], _Link] = {}
        self._born = 0
        self._now = -math.inf
        self._held: dict[tuple[str, int], float] = {}  # clipped camera tracks not yet born
        self.splits = 0
        """How many times a fused track's links were joined afresh."""
        self.merges = 0
        """How many fused tracks were found to duplicate another and merged into it."""
        self._close: dict[tuple[TrackKey, TrackKey], tuple[float, float]] = {}
        # pairs of fused tracks close with cameras apart: since when, last checked

    def update(self, at: float, sightings: Iterable[Sighting]) -> Step:
        """Every camera's sightings at one instant; the fused tracks they make."""
        if not math.isfinite(at) or at <= self._now:
            raise ValueError(f"handoff: instant {at} s does not come after {self._now} s")
        self._now = at
        touched: dict[TrackKey, _Fused] = {}
        unknown: list[Sighting] = []
        seen: set[tuple[str, int]] = set()
        for s in sorted(sightings, key=lambda s: (s.camera, s.track)):
            self._check(at, s, seen)
            link = self._links.get((s.camera, s.track))
            if link is None or link.fused.over:
                unknown.append(s)
                continue
            link.frame, link.at, link.x, link.y, link.weight = s.frame, at, s.x, s.y, s.weight
            touched[link.fused.key] = link.fused
        for fused in list(touched.values()):
            unknown += self._split(at, fused, touched)
        born: list[TrackKey] = []
        for s, fused in self._join(at, unknown):
            if fused is None:
                fused = self._twin(s, [self._fused[k] for k in born])
            if fused is None and s.weight < 1.0:
                first = self._held.setdefault((s.camera, s.track), at)
                if at - first < self.settings.clipped_birth_s:
                    continue  # not yet: a camera that sees them whole may start them
            self._held.pop((s.camera, s.track), None)
            if fused is None:
                key = (s.camera, s.frame, s.track)
                fused = _Fused(
                    key=key, order=self._born, at=at, x=s.x, y=s.y, links={}, trail=deque()
                )
                self._born += 1
                self._fused[key] = fused
                born.append(key)
            link = _Link(fused=fused, frame=s.frame, at=at, x=s.x, y=s.y, weight=s.weight)
            fused.links[(s.camera, s.track)] = link
            self._links[(s.camera, s.track)] = link
            touched[fused.key] = fused
        points = [self._place(at, f) for f in sorted(touched.values(), key=lambda f: f.order)]
        merged = self._merge(at, [self._fused[p.key] for p in points])
        points = [p for p in points if p.key not in {e.key for e in merged}]
        if len(self._held) > MAX_FUSED or any(
            at - t > self.settings.link_s + self.settings.clipped_birth_s
            for t in self._held.values()
        ):
            stale = at - self.settings.link_s - self.settings.clipped_birth_s
            self._held = {k: t for k, t in self._held.items() if t >= stale}
            while len(self._held) > MAX_FUSED:
                del self._held[min(self._held, key=lambda k: (self._held[k], k))]
        return Step(points=points, born=born, ended=merged + self._expire(at))

    def close(self) -> list[Ended]:
        """The end of the input: every fused track is over."""
        return self._expire(math.inf)

    @property
    def active(self) -> int:
        """How many fused tracks are not over (seen, or lost and waiting)."""
        return len(self._fused)

    def _check(self, at: float, s: Sighting, seen: set[tuple[str, int]]) -> None:
        if s.at != at:
            raise ValueError(f"handoff: a sighting at {s.at} s in the instant at {at} s")
        if (s.camera, s.track) in seen:
            raise ValueError(f"handoff: camera {s.camera} track {s.track} twice at {at} s")
        seen.add((s.camera, s.track))
        if not (math.isfinite(s.x) and math.isfinite(s.y) and 0.0 <= s.weight <= 1.0):
            raise ValueError(
                f"handoff: camera {s.camera} track {s.track} at ({s.x}, {s.y}) with weight "
                f"{s.weight} is not a finite point with a weight in [0, 1]"
            )

    def _split(self, at: float, fused: _Fused, touched: dict[TrackKey, _Fused]) -> list[Sighting]:
        """The sightings of a fused track whose links disagree, taken off it to be joined
        afresh; the fused track stays one candidate among the others."""
        live = [(ck, link) for ck, link in fused.links.items() if link.at == at]
        # A foot point from a box cut by the image border may lie a metre off: it counts
        # for little in the position and never parts the links of people seen whole.
        whole = [link for _, link in live if link.weight >= 1.0] or [link for _, link in live]
        far = any(
            math.hypot(a.x - b.x, a.y - b.y) > self.settings.split_m
            for i, a in enumerate(whole)
            for b in whole[i + 1 :]
        )
        if not far:
            return []
        out = []
        for (camera, track), link in live:
            del fused.links[(camera, track)]
            del self._links[(camera, track)]
            out.append(
                Sighting(
                    camera=camera,
                    track=track,
                    frame=link.frame,
                    at=at,
                    x=link.x,
                    y=link.y,
                    weight=link.weight,
                )
            )
        del touched[fused.key]
        self.splits += 1
        # The mean of links that part follows neither person: the track is looked for where
        # it was heading before they parted (its older trail, carried on to now).
        (t0, x0, y0), (t1, x1, y1) = fused.trail[0], fused.trail[len(fused.trail) // 2]
        if t1 - t0 >= 0.1:
            w = (at - t0) / (t1 - t0)
            fused.guess = (x0 + w * (x1 - x0), y0 + w * (y1 - y0))
        return out

    def _join(self, at: float, unknown: list[Sighting]) -> list[tuple[Sighting, _Fused | None]]:
        """Each new camera track with the fused track it continues, or None (a birth)."""
        st = self.settings
        pairs: list[tuple[float, int, int, Sighting, _Fused]] = []
        for i, s in enumerate(unknown):
            door = nearest_door(self.doors, s.x, s.y, st.door_m)
            at_door = door is not None
            # Nobody comes in by an exit-only door: a track that starts there is someone
            # found again (walking out, the tracker lost them), however far they moved.
            way_in = door is not None and door.kind != "exit"
            for fused in self._fused.values():
                if any(
                    camera == s.camera and link.frame == s.frame
                    for (camera, _), link in fused.links.items()
                ):
                    continue  # this camera sees it as someone else in this very frame
                gap = at - fused.at
                if at_door and gap > st.live_s and self._leaving(fused):
                    continue  # it went out through the door: this is someone else
                x, y = fused.guess or (fused.x, fused.y)
                distance = math.hypot(s.x - x, s.y - y)
                reach = st.gate_m + st.walk_m_s * max(0.0, gap - st.live_s)
                if distance > reach or (way_in and distance > st.birth_m):
                    continue
                pairs.append((distance + 0.05 * gap, i, fused.order, s, fused))
        for fused in self._fused.values():
            fused.guess = None
        pairs.sort(key=lambda p: p[:3])
        joined: dict[int, _Fused] = {}
        taken: set[int] = set()
        for _, i, order, _, fused in pairs:
            if i not in joined and order not in taken:
                joined[i] = fused
                taken.add(order)
        return [(s, joined.get(i)) for i, s in enumerate(unknown)]

    def _twin(self, s: Sighting, newborn: list[_Fused]) -> _Fused | None:
        """A fused track born at this instant from another camera's sighting of the same
        person (the nearest within ``gate_m``): two cameras that first see someone at once."""
        best: tuple[float, _Fused] | None = None
        for fused in newborn:
            if any(camera == s.camera for camera, _ in fused.links):
                continue
            d = math.hypot(s.x - fused.x, s.y - fused.y)
            if d <= self.settings.gate_m and (best is None or d < best[0]):
                best = (d, fused)
        return None if best is None else best[1]

    def _place(self, at: float, fused: _Fused) -> FloorPoint:
        """The fused position: the weighted mean of the links seen within ``live_s``."""
        live = [
            (camera, link)
            for (camera, _), link in sorted(fused.links.items())
            if at - link.at <= self.settings.live_s
        ]
        total = sum(link.weight for _, link in live)
        if total > 0:
            x = sum(link.weight * link.x for _, link in live) / total
            y = sum(link.weight * link.y for _, link in live) / total
        else:
            x = sum(link.x for _, link in live) / len(live)
            y = sum(link.y for _, link in live) / len(live)
        camera = max(live, key=lambda cl: (cl[1].weight, cl[1].at, cl[0]))[0]
        if at - fused.at > self.settings.live_s or not math.isfinite(fused.seen_from):
            fused.seen_from = at
        fused.at, fused.x, fused.y = at, x, y
        fused.trail.append((at, x, y))
        while fused.trail[0][0] < at - TRAIL_S:
            fused.trail.popleft()
        tracks = tuple((c, t) for (c, t), link in sorted(fused.links.items()) if link.at == at)
        return FloorPoint(key=fused.key, at=at, x=x, y=y, camera=camera, tracks=tracks)

    def _merge(self, at: float, seen: list[_Fused]) -> list[Ended]:
        """The fused tracks seen now that have duplicated another for ``merge_s`` (within
        ``merge_m``, no camera seeing both whole among their live links), merged into it:
        the one seen without a gap for longer keeps both's links, the other is over."""
        st = self.settings
        cameras = {}  # the cameras that see each whole (a box cut by the border may be off)
        for f in seen:
            live = [(c, link) for (c, _), link in f.links.items() if at - link.at <= st.live_s]
            whole = {c for c, link in live if link.weight >= 1.0}
            cameras[f.key] = whole or {c for c, _ in live}
        due: list[tuple[float, int, int, _Fused, _Fused]] = []
        for i, a in enumerate(seen):
            for b in seen[i + 1 :]:
                pair = (a.key, b.key) if a.order < b.order else (b.key, a.key)
                d = math.hypot(a.x - b.x, a.y - b.y)
                if d > st.merge_m or cameras[a.key] & cameras[b.key]:
                    self._close.pop(pair, None)
                    continue
                held = self._close.get(pair)
                since = held[0] if held is not None and at - held[1] <= st.live_s else at
                self._close[pair] = (since, at)
                if at - since >= st.merge_s:
                    # The one seen without a gap for longer has followed this person longer:
                    # the other was lost, and picked them up when found (a wrong join).
                    old, young = sorted((a, b), key=lambda f: (f.seen_from, f.order))
                    due.append((d, old.order, young.order, old, young))
        out: list[Ended] = []
        gone: set[TrackKey] = set()
        for _, _, _, old, young in sorted(due, key=lambda p: p[:3]):
            if old.key in gone or young.key in gone:
                continue
            for ck, link in young.links.items():
                link.fused = old
                old.links[ck] = link
            young.links = {}
            gone.add(young.key)
            self.merges += 1
            out.append(msgspec.structs.replace(self._end(young.key, False), merged_into=old.key))
        if self._close:
            self._close = {
                pair: (since, last)
                for pair, (since, last) in self._close.items()
                if at - last <= st.live_s and pair[0] in self._fused and pair[1] in self._fused
            }
        return out

    def _expire(self, now: float) -> list[Ended]:
        st = self.settings
        ended = []
        for key, fused in list(self._fused.items()):
            for ck, link in list(fused.links.items()):
                if now - link.at > st.link_s:
                    del fused.links[ck]
                    del self._links[ck]
            gap = now - fused.at
            door = near_door(self.doors, fused.x, fused.y, st.door_m)
            wait = (st.leave_s if self._leaving(fused) else st.door_s) if door else st.unseen_s
            if gap > wait:
                ended.append(self._end(key, door))
        if len(self._fused) > MAX_FUSED:
            oldest = sorted(self._fused.values(), key=lambda f: (f.at, f.order))
            for fused in oldest[: len(self._fused) - MAX_FUSED]:
                door = near_door(self.doors, fused.x, fused.y, st.door_m)
                ended.append(self._end(fused.key, door))
        return ended

    def _leaving(self, fused: _Fused) -> bool:
        """Whether a fused track was last seen near a door walking out through it."""
        (t0, x0, y0), (t1, x1, y1) = fused.trail[0], fused.trail[-1]
        if t1 - t0 < TRAIL_S / 3:
            return False
        vx, vy = (x1 - x0) / (t1 - t0), (y1 - y0) / (t1 - t0)
        for line in self.doors:
            if to_segment(line, x1, y1) > self.settings.door_m:
                continue
            (ax, ay), (bx, by) = line.points
            length = math.hypot(bx - ax, by - ay)
            nx, ny = -(by - ay) / length, (bx - ax) / length  # the left of a→b
            outward = -1.0 if line.in_side == "left" else 1.0
            if outward * (vx * nx + vy * ny) >= self.settings.leave_m_s:
                return True
        return False

    def _end(self, key: TrackKey, door: bool) -> Ended:
        fused = self._fused.pop(key)
        fused.over = True
        for ck in fused.links:
            self._links.pop(ck, None)
        return Ended(key=key, at=fused.at, x=fused.x, y=fused.y, door=door)
