"""Zone presence with inertia: arrivals and departures that do not flicker, and the dwell.

The zone is the square (0, 0)-(4, 4) with a 0.2 m margin; a track must be in for 1 s to
arrive and out for 1 s to depart. Tracks are sampled at 10 frames/s unless stated; ``None``
is a frame in which the track was not seen.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.crossings import TrackId
from adapters.presence import ZoneArrival, ZoneDeparture, ZonePresence
from core.layout import Zone

SQUARE = [(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0)]
DT = 0.1

Point = tuple[float, float]
Change = ZoneArrival | ZoneDeparture


def zone(**settings: float) -> ZonePresence:
    return ZonePresence(
        "aisle-1", SQUARE, **{"enter_s": 1.0, "exit_s": 1.0, "margin": 0.2, **settings}
    )  # type: ignore[arg-type]


def feed(
    paths: dict[TrackId, Sequence[Point | None]],
    presence: ZonePresence | None = None,
    dt: float = DT,
) -> list[Change]:
    presence = presence or zone()
    changes: list[Change] = []
    for i in range(max(len(p) for p in paths.values())):
        points = {t: p[i] for t, p in paths.items() if i < len(p) and p[i] is not None}
        changes += presence.update(i * dt, points)  # type: ignore[arg-type]
    return changes


def summary(
    changes: list[Change],
) -> list[tuple[str, TrackId, float] | tuple[str, TrackId, float, float]]:
    out: list[tuple[str, TrackId, float] | tuple[str, TrackId, float, float]] = []
    for c in changes:
        if isinstance(c, ZoneArrival):
            out.append(("arrived", c.track, round(c.at, 6)))
        else:
            out.append(("departed", c.track, round(c.at, 6), round(c.dwell_s, 6)))
    return out


def hold(point: Point, frames: int) -> list[Point | None]:
    return [point] * frames


def jitter(point: Point, frames: int, amplitude: float, seed: int) -> list[Point | None]:
    rng = random.Random(seed)
    return [
        (
            point[0] + rng.uniform(-amplitude, amplitude),
            point[1] + rng.uniform(-amplitude, amplitude),
        )
        for _ in range(frames)
    ]


OUTSIDE, INSIDE, EDGE = (-2.0, 2.0), (2.0, 2.0), (0.0, 2.0)


def test_a_shopper_who_walks_in_and_stays_arrives_when_first_seen_inside() -> None:
    assert summary(feed({1: hold(OUTSIDE, 5) + hold(INSIDE, 30)})) == [("arrived", 1, 0.5)]


def test_a_visit_departs_with_its_dwell_from_first_in_to_first_out() -> None:
    changes = feed({1: hold(OUTSIDE, 5) + hold(INSIDE, 30) + hold(OUTSIDE, 20)})
    assert summary(changes) == [("arrived", 1, 0.5), ("departed", 1, 3.5, 3.0)]
    assert changes[1].entered_at == pytest.approx(0.5)  # type: ignore[union-attr]


def test_a_step_inside_shorter_than_the_minimum_is_no_visit() -> None:
    assert feed({1: hold(OUTSIDE, 5) + hold(INSIDE, 9) + hold(OUTSIDE, 30)}) == []


def test_a_step_outside_shorter_than_the_minimum_keeps_the_visit_and_its_dwell() -> None:
    path = (
        hold(OUTSIDE, 5)
        + hold(INSIDE, 20)
        + hold(OUTSIDE, 9)
        + hold(INSIDE, 20)
        + hold(OUTSIDE, 20)
    )
    assert summary(feed({1: path})) == [("arrived", 1, 0.5), ("departed", 1, 5.4, 4.9)]


def test_brushing_the_edge_from_outside_is_no_visit() -> None:
    # Walking along the outside of an edge, dipping up to 0.15 m in, never for long.
    rng = random.Random(1)
    path = [(rng.uniform(-0.2, 0.15), 0.5 + 0.03 * i) for i in range(100)]
    assert feed({1: path}) == []


def test_standing_on_the_edge_with_jitter_changes_nothing_whichever_side_it_started() -> None:
    assert feed({1: hold(OUTSIDE, 5) + jitter(EDGE, 200, 0.15, seed=2)}) == []
    changes = feed({1: hold(INSIDE, 20) + jitter(EDGE, 200, 0.15, seed=3)})
    assert summary(changes) == [("arrived", 1, 0.0)]


def test_frames_dropped_neither_break_nor_extend_a_run() -> None:
    path: list[Point | None] = [
        *hold(OUTSIDE, 5),
        INSIDE,
        None,
        None,
        INSIDE,
        None,
        None,
        None,
        None,
        None,
        None,
        INSIDE,
    ]
    assert summary(feed({1: path})) == [("arrived", 1, 0.5)]
    short: list[Point | None] = [
        *hold(OUTSIDE, 5),
        INSIDE,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ]
    assert feed({1: short + [None] * 5}) == []


def test_a_camera_sampled_every_four_seconds_arrives_on_its_second_sample_inside() -> None:
    changes = feed({1: [OUTSIDE, INSIDE, INSIDE, INSIDE, OUTSIDE, OUTSIDE]}, dt=4.0)
    assert summary(changes) == [("arrived", 1, 4.0), ("departed", 1, 16.0, 12.0)]


def test_a_minimum_number_of_samples_can_be_asked_for_as_well() -> None:
    presence = zone(enter_s=0.0, exit_s=0.0, enter_samples=3, exit_samples=2)
    changes = feed(
        {1: [OUTSIDE, INSIDE, INSIDE, INSIDE, OUTSIDE, INSIDE, OUTSIDE, OUTSIDE]}, presence
    )
    assert summary(changes) == [("arrived", 1, 0.1), ("departed", 1, 0.6, 0.5)]


def test_a_track_lost_inside_departs_at_its_last_sample_inside_once_lost_long_enough() -> None:
    presence = zone(lost_s=2.0)
    changes = feed({1: hold(INSIDE, 30), 2: hold(OUTSIDE, 60)}, presence)
    assert summary(changes) == [("arrived", 1, 0.0), ("departed", 1, 2.9, 2.9)]
    assert presence.present == frozenset()


def test_a_track_lost_while_leaving_departs_when_it_was_first_seen_out() -> None:
    changes = feed(
        {1: hold(INSIDE, 30) + hold(OUTSIDE, 5), 2: hold(OUTSIDE, 100)}, zone(lost_s=2.0)
    )
    assert summary(changes)[-1] == ("departed", 1, 3.0, 3.0)


def test_the_end_of_the_stream_departs_everyone_present() -> None:
    presence = zone()
    feed(
        {1: hold(INSIDE, 30), 2: hold(OUTSIDE, 30), 3: hold(OUTSIDE, 15) + hold(INSIDE, 15)},
        presence,
    )
    assert presence.present == frozenset({1, 3})
    assert summary(presence.close()) == [("departed", 1, 2.9, 2.9), ("departed", 3, 2.9, 1.4)]
    assert presence.present == frozenset()


def test_a_track_ended_by_its_caller_departs_at_once_dated_as_a_lost_one() -> None:
    presence = zone(lost_s=60.0)
    feed(
        {1: hold(INSIDE, 30), 2: hold(INSIDE, 30) + hold(OUTSIDE, 5), 3: hold(OUTSIDE, 40)},
        presence,
    )
    assert summary([d for t in (1, 2, 3) if (d := presence.end(t)) is not None]) == [
        ("departed", 1, 2.9, 2.9),
        ("departed", 2, 3.0, 3.0),
    ]
    assert presence.present == frozenset()
    assert presence.end(1) is None  # forgotten: ending it again departs nothing
    assert summary(presence.update(4.0, {1: INSIDE})) == []  # a new track under that id


def test_two_shoppers_in_one_zone_are_counted_apart() -> None:
    changes = feed(
        {1: hold(OUTSIDE, 5) + hold(INSIDE, 30), 2: hold(OUTSIDE, 15) + hold((1.0, 1.0), 30)}
    )
    assert summary(changes) == [("arrived", 1, 0.5), ("arrived", 2, 1.5)]


def test_a_layout_zone_gives_a_presence_with_floor_defaults() -> None:
    layout_zone = Zone(id="dairy", kind="aisle", polygon=tuple(SQUARE))
    presence = ZonePresence.of(layout_zone)
    assert summary(feed({7: hold(INSIDE, 20)}, presence)) == [("arrived", 7, 0.0)]
    assert presence.zone == "dairy"


@pytest.mark.parametrize(
    ("polygon", "settings", "message"),
    [
        ([(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)], {}, "not a valid area"),
        ([(0.0, 0.0), (2.0, 2.0), (2.0, 0.0), (0.0, 2.0)], {}, "not a valid area"),
        (SQUARE, {"enter_s": -1.0}, "enter_s"),
        (SQUARE, {"margin": math.inf}, "margin"),
        (SQUARE, {"lost_s": 0.0}, "lost_s"),
        (SQUARE, {"exit_samples": 0}, "exit_samples"),
    ],
)
def test_a_bad_zone_is_refused_with_what_was_wrong(
    polygon: list[Point], settings: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ZonePresence("z", polygon, **settings)  # type: ignore[arg-type]


def test_a_track_going_back_in_time_is_refused() -> None:
    presence = zone()
    presence.update(1.0, {1: INSIDE})
    with pytest.raises(ValueError, match="track 1"):
        presence.update(1.0, {1: INSIDE})


# -- laws -------------------------------------------------------------------------------

points = st.one_of(st.none(), st.tuples(st.floats(-2.0, 6.0), st.floats(-2.0, 6.0)))


@settings(max_examples=300, deadline=None)
@given(
    paths=st.lists(st.lists(points, max_size=60), min_size=1, max_size=3),
    step=st.sampled_from([0.1, 0.5, 4.0]),
)
def test_each_tracks_visits_alternate_and_every_departure_closes_its_arrival(
    paths: list[list[Point | None]], step: float
) -> None:
    presence = zone(lost_s=3.0)
    changes = feed(dict(enumerate(paths)), presence, dt=step) + presence.close()
    for track in range(len(paths)):
        mine = [c for c in changes if c.track == track]
        assert [type(c) for c in mine] == [ZoneArrival, ZoneDeparture] * (len(mine) // 2)
        for arrival, departure in zip(mine[::2], mine[1::2], strict=True):
            assert departure.entered_at == arrival.at  # type: ignore[union-attr]
            assert departure.dwell_s == departure.at - arrival.at >= 0  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(
    outside=st.integers(1, 30),
    inside=st.integers(10, 100),
    after=st.integers(10, 60),
    dropped=st.sets(st.integers(0, 200)),
)
def test_a_clean_visit_gives_one_arrival_and_one_departure_with_the_true_dwell(
    outside: int, inside: int, after: int, dropped: set[int]
) -> None:
    path = hold(OUTSIDE, outside) + hold(INSIDE, inside) + hold(OUTSIDE, after)
    # Frames dropped at random, but never the first one on each side of an edge.
    keep = {0, outside, outside + inside}
    path = [p if i in keep or i not in dropped else None for i, p in enumerate(path)]
    presence = zone(exit_s=0.0)
    changes = feed({1: path}, presence) + presence.close()
    seen_in = [i for i, p in enumerate(path) if p == INSIDE]
    if (seen_in[-1] - seen_in[0]) * DT < 1.0:
        assert changes == []
        return
    arrival, departure = changes
    assert isinstance(arrival, ZoneArrival) and isinstance(departure, ZoneDeparture)
    assert departure.dwell_s == pytest.approx(inside * DT)
