"""Events from fused floor tracks, on floor sightings directly (no video).

The store is the convenience store: the entrance door is y = 0 for x in 0.6..1.8, the exit
door y = 0 for x in 1.8..3.0, the pavement's passby line x = 5 for y in -3.0..-0.3.
Sightings come from cameras "A" and "B" at 10 frames/s, one point per frame, None where
not seen; time 0 is ORIGIN.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.floor_events import EventSettings, FloorEvents, subject_of
from adapters.handoff import Handoff, Sighting
from core import events as ev
from core.layout import load_layout

LAYOUT = load_layout(Path(__file__).resolve().parent.parent / "examples/stores/convenience.yaml")
ORIGIN = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
DT = 0.1

Point = tuple[float, float]


def line(a: Point, b: Point, frames: int) -> list[Point | None]:
    return [
        (a[0] + (b[0] - a[0]) * k / (frames - 1), a[1] + (b[1] - a[1]) * k / (frames - 1))
        for k in range(frames)
    ]


def via(*points: Point, m_s: float = 1.0) -> list[Point | None]:
    """A walk through ``points`` at ``m_s`` (one point per frame)."""
    out: list[Point | None] = []
    for a, b in itertools.pairwise(points):
        frames = max(2, round(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5 / (m_s * DT)) + 1)
        out += line(a, b, frames)[1:] if out else line(a, b, frames)
    return out


def stand(at: Point, seconds: float) -> list[Point | None]:
    return [at] * round(seconds / DT)


def gap(seconds: float) -> list[Point | None]:
    return [None] * round(seconds / DT)


def run(
    paths: dict[tuple[str, int], Sequence[Point | None]],
    settings: EventSettings | None = None,
    after_s: float = 80.0,
) -> list[ev.Event]:
    """Every event the paths make, the end of the input included."""
    handoff = Handoff(LAYOUT.lines)
    maker = FloorEvents(LAYOUT, ORIGIN, settings)
    out: list[ev.Event] = []
    frames = max(len(p) for p in paths.values()) + round(after_s / DT)
    for k in range(frames):
        at = k * DT
        sightings = [
            Sighting(camera=c, track=t, frame=k, at=at, x=p[k][0], y=p[k][1])
            for (c, t), p in paths.items()
            if k < len(p) and p[k] is not None
        ]
        out += maker.update(at, handoff.update(at, sightings))
    return out + maker.close(handoff.close())


def seconds(e: ev.Event) -> float:
    return round((e.at - ORIGIN).total_seconds(), 3)


def of(events: list[ev.Event], kind: type) -> list[ev.Event]:
    return [e for e in events if isinstance(e, kind)]


def test_a_shopper_seen_from_just_inside_the_door_comes_in_and_goes_out_through_the_doors() -> None:
    walk = via((1.2, 0.4), (1.2, 2.0), (2.4, 2.0), (2.4, 0.4))  # in, across, out by the gate
    events = run({("A", 1): walk})
    (came,) = of(events, ev.ShopperEntered)
    (went,) = of(events, ev.ShopperExited)
    assert (came.data.line, went.data.line) == ("entrance", "exit")
    assert came.subject == went.subject and re.fullmatch(r"v-[0-9a-f]{16}", came.subject)
    # dated where the path meets the door, at the pace assumed from door to first sight
    assert seconds(came) == pytest.approx(-0.4 / 1.2, abs=0.05)
    assert seconds(went) == pytest.approx((len(walk) - 1) * DT + 0.4 / 1.2, abs=0.05)
    assert came.source == went.source == "fusion"


def test_a_shopper_followed_twice_for_a_while_still_comes_in_once_and_goes_out_once() -> None:
    """B first puts the shopper 1.5 m off, a fused track of its own, then where A does:
    the duplicate is merged, and the one shopper leaves through the exit once."""
    walk = via((1.2, 0.4), (1.2, 2.0), (4.0, 2.0), (4.0, 3.5), (2.4, 2.0), (2.4, 0.4))
    first = 20  # B sees the shopper from here on, 1.5 m north of where they are at first
    off = [1.5] * 10 + [1.5 * (1 - k / 6) for k in range(6)]
    b: list[Point | None] = [None] * first
    for k, p in enumerate(walk[first:]):
        assert p is not None
        b.append((p[0], p[1] + (off[k] if k < len(off) else 0.03)))
    events = run({("A", 1): walk, ("B", 2): b})
    (came,) = of(events, ev.ShopperEntered)
    (went,) = of(events, ev.ShopperExited)
    assert came.subject == went.subject
    assert not of(events, ev.PasserbySeen)
    sampled = [{x.track for x in e.data.samples} for e in of(events, ev.PositionSamples)]
    assert max(len(s) for s in sampled) == 2 and len(sampled[-1]) <= 1  # two for a while
    assert len(set().union(*sampled)) == 2  # the shopper and, a while, the duplicate


def test_a_door_the_cameras_see_is_counted_where_the_path_crosses_it() -> None:
    events = run({("A", 1): via((1.2, -1.0), (1.2, 2.0))})
    (came,) = of(events, ev.ShopperEntered)
    assert seconds(came) == pytest.approx(1.0, abs=0.06)  # y = 0 after 1 m at 1 m/s
    assert not of(events, ev.ShopperExited)


def test_someone_first_seen_in_the_middle_of_the_store_did_not_come_in_by_a_door() -> None:
    events = run({("A", 1): via((4.0, 2.0), (6.0, 2.0))})
    assert not of(events, ev.ShopperEntered) and not of(events, ev.ShopperExited)


def test_a_passer_by_on_the_pavement_is_seen_once_and_one_who_comes_in_is_a_shopper() -> None:
    passer = via((7.0, -1.5), (3.5, -1.5))
    shopper = gap(1.0) + via((7.0, -1.6), (4.0, -1.6), (1.2, -1.0), (1.2, 1.5))
    events = run({("A", 1): passer, ("A", 2): shopper})
    (seen,) = of(events, ev.PasserbySeen)
    (came,) = of(events, ev.ShopperEntered)
    assert seen.data.line == "pavement" and seen.subject != came.subject
    crossed_at = 2.0  # x = 5 after 2 m
    assert seconds(seen) == pytest.approx(crossed_at + EventSettings().capture_s, abs=0.1)


def test_a_shopper_who_leaves_and_walks_past_is_no_passer_by() -> None:
    walk = via((1.2, 1.0), (2.4, 1.0), (2.4, -1.5), (7.0, -1.5))
    events = run({("A", 1): walk})
    assert len(of(events, ev.ShopperExited)) == 1
    assert not of(events, ev.PasserbySeen)


def test_a_zone_visit_comes_with_its_dwell_and_brushing_a_zone_is_no_visit() -> None:
    shelf = (5.4, 4.2)  # the front of gondola 2's east side
    walk = via((6.5, 3.0), shelf) + stand(shelf, 20.0) + via(shelf, (6.5, 3.0))
    brush = via((1.3, 3.0), (1.3, 4.0), m_s=1.5)  # along sf-drinks' edge (x <= 1.1), 0.2 m off
    events = run({("A", 1): walk, ("B", 1): brush})
    visits = {
        (e.data.zone, e.type): e for e in events if isinstance(e, ev.ZoneEntered | ev.ZoneExited)
    }
    entered, exited = visits[("sf-g2-east", "zone.entered")], visits[("sf-g2-east", "zone.exited")]
    inside = sum(DT for p in walk if p is not None and LAYOUT.zone("sf-g2-east").contains(*p))
    assert inside > 20.0
    assert exited.data.dwell_s == pytest.approx(inside, abs=0.5)
    assert exited.data.dwell_s == pytest.approx(seconds(exited) - seconds(entered), abs=0.002)
    assert ("sf-drinks", "zone.entered") not in visits


def test_a_person_two_cameras_see_is_one_position_sample_every_half_second() -> None:
    walk = via((2.0, 1.0), (4.0, 1.0))
    events = run({("A", 1): walk, ("B", 5): [(p[0] + 0.1, p[1]) if p else None for p in walk]})
    frames = of(events, ev.PositionSamples)
    assert [f.data.frame for f in frames] == list(range(len(frames)))
    assert [seconds(f) for f in frames] == [0.5 * f.data.frame for f in frames]
    assert all(f.subject == "floor" and len(f.data.samples) == 1 for f in frames[:4])
    assert {s.track for f in frames for s in f.data.samples} == {frames[0].data.samples[0].track}


def test_a_person_walking_out_of_sight_is_sampled_walking_on_then_standing_a_while() -> None:
    shelf = (1.28, 3.32)  # on from (2, 1) through (1.5, 2.6), 0.75 m further
    seen = via((2.0, 1.0), (1.5, 2.6))  # 1 m/s towards the shelf, lost 0.75 m short of it
    walk = seen + gap(10.0) + via((1.0, 3.5), (1.0, 5.0))
    settings = EventSettings(stand_s=9.5)
    frames = of(run({("A", 1): walk}, settings), ev.PositionSamples)
    lost_at = (len(seen) - 1) * DT
    hidden = [f for f in frames if lost_at + 1.5 <= seconds(f) <= lost_at + 9.5]
    assert len(hidden) == 16 and all(len(f.data.samples) == 1 for f in hidden)
    for f in hidden:
        sample = f.data.samples[0]
        assert ((sample.x - shelf[0]) ** 2 + (sample.y - shelf[1]) ** 2) ** 0.5 < 0.35
    assert len({(f.data.samples[0].x, f.data.samples[0].y) for f in hidden}) == 1  # standing
    # By default, only stand_s: one lost for longer is no sample (a ghost would heat a cell)
    frames = of(run({("A", 1): walk}), ev.PositionSamples)
    stand_s = EventSettings().stand_s
    after = [f for f in frames if lost_at + stand_s + 0.6 <= seconds(f) <= lost_at + 9.5]
    assert not any(f.data.samples for f in after)
    assert any(f.data.samples for f in frames if seconds(f) <= lost_at + stand_s)
    assert any(f.data.samples for f in frames if seconds(f) > lost_at + 11.0)  # found again


def test_a_quiet_store_still_has_a_heartbeat_every_second() -> None:
    events = run({("A", 1): gap(1.0)}, after_s=10.0)
    beats = of(events, ev.StoreHeartbeat)
    assert [seconds(b) for b in beats] == [float(k) for k in range(len(beats))]
    assert len(beats) >= 10 and not of(events, ev.PositionSamples)


def test_coming_back_in_after_going_out_is_a_new_visit_with_a_new_subject() -> None:
    walk = via((1.2, 1.5), (1.2, -1.5)) + stand((1.2, -1.5), 2.0) + via((1.2, -1.5), (1.2, 1.5))
    events = run({("A", 1): walk})
    went, came = of(events, ev.ShopperExited), of(events, ev.ShopperEntered)
    assert len(went) == len(came) == 1 and went[0].subject != came[0].subject
    assert seconds(went[0]) < seconds(came[0])


def test_the_events_leave_in_time_order_valid_and_the_same_every_time() -> None:
    paths: dict[tuple[str, int], Sequence[Point | None]] = {
        ("A", 1): via((1.2, 0.4), (1.2, 2.0), (5.4, 4.2)) + stand((5.4, 4.2), 12.0),
        ("B", 2): gap(3.0) + via((7.0, -1.5), (3.0, -1.5)),
        ("A", 3): gap(5.0) + via((1.2, 0.4), (2.4, 1.7), (2.4, 0.4)),
    }
    first, again = run(paths), run(paths)
    assert [e.id for e in first] == [e.id for e in again]
    assert [e.at for e in first] == sorted(e.at for e in first)
    for e in first:
        assert ev.validate(e) == e
    kinds = {e.type for e in first}
    assert {"shopper.entered", "shopper.exited", "passerby.seen", "zone.entered"} <= kinds
    assert {"zone.exited", "position.samples", "store.heartbeat"} <= kinds


def test_subjects_are_per_visit_hashes_of_where_the_track_began() -> None:
    a = subject_of("corner-01", ("cam-front-west", 27, 0))
    assert a == subject_of("corner-01", ("cam-front-west", 27, 0))
    assert len({a, subject_of("corner-01", ("cam-front-west", 27, 0), 1)}) == 2
    assert a != subject_of("corner-02", ("cam-front-west", 27, 0))
    assert a != subject_of("corner-01", ("cam-front-west", 28, 0))


def test_bad_settings_and_input_are_refused() -> None:
    with pytest.raises(ValueError, match="sample_s"):
        EventSettings(sample_s=0.0)
    with pytest.raises(ValueError, match="time zone"):
        FloorEvents(LAYOUT, ORIGIN.replace(tzinfo=None))
    maker = FloorEvents(LAYOUT, ORIGIN)
    handoff = Handoff(LAYOUT.lines)
    maker.update(1.0, handoff.update(1.0, []))
    with pytest.raises(ValueError, match="does not come after"):
        maker.update(1.0, handoff.update(2.0, []))
