"""Counting tracks across a line with hysteresis: the hard cases, and the laws behind them.

The line runs from (0, 0) to (4, 0) with the inside on its left, so "in" is y > 0; the
band is 0.3 m and a track may hand over to a new id within 1 m and 2 s. Tracks are
sampled at 10 frames/s; ``None`` is a frame in which the track was not seen.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.crossings import LineCounter, LineCrossing, TrackId
from core.layout import Line

L = 4.0
BAND = 0.3
DT = 0.1

Point = tuple[float, float]
Path = Sequence[Point | None]


def counter() -> LineCounter:
    return LineCounter(
        "door", (0.0, 0.0), (L, 0.0), "left", band=BAND, handover_distance=1.0, handover_s=2.0
    )


def feed(paths: dict[TrackId, Path], line: LineCounter | None = None) -> list[LineCrossing]:
    """Every track's path, frame by frame; the crossings counted."""
    line = line or counter()
    crossings = []
    for i in range(max(len(p) for p in paths.values())):
        points = {t: p[i] for t, p in paths.items() if i < len(p) and p[i] is not None}
        crossings += line.update(i * DT, points)  # type: ignore[arg-type]
    return crossings


def walk(a: Point, b: Point, steps: int) -> list[Point | None]:
    return [
        (a[0] + (b[0] - a[0]) * k / steps, a[1] + (b[1] - a[1]) * k / steps)
        for k in range(steps + 1)
    ]


def via(*points: Point, steps: int = 10) -> list[Point | None]:
    out: list[Point | None] = []
    for a, b in itertools.pairwise(points):
        out += walk(a, b, steps)[:-1]
    return [*out, points[-1]]


def jitter(path: list[Point | None], amplitude: float, seed: int) -> list[Point | None]:
    rng = random.Random(seed)
    return [
        None
        if p is None
        else (p[0] + rng.uniform(-amplitude, amplitude), p[1] + rng.uniform(-amplitude, amplitude))
        for p in path
    ]


def drop(path: list[Point | None], share: float, seed: int) -> list[Point | None]:
    """Drops a share of the frames at random, never the first or the last."""
    rng = random.Random(seed)
    return [
        p if i in (0, len(path) - 1) or rng.random() >= share else None for i, p in enumerate(path)
    ]


def stand(at: Point, frames: int, amplitude: float, seed: int) -> list[Point | None]:
    return jitter([at] * frames, amplitude, seed)


def directions(crossings: list[LineCrossing]) -> list[tuple[TrackId, str]]:
    return [(c.track, c.direction) for c in crossings]


OUT, IN = -2.0, 2.0

CASES: dict[str, tuple[dict[TrackId, Path], list[tuple[TrackId, str]]]] = {
    "walking in through the middle": ({1: via((2, OUT), (2, IN))}, [(1, "in")]),
    "walking out through the middle": ({1: via((2, IN), (2, OUT))}, [(1, "out")]),
    "touching the line without crossing": ({1: via((2, OUT), (2, 0), (2, OUT))}, []),
    "stepping just past the line, inside the band, and back": (
        {1: via((2, OUT), (2, 0.25), (2, OUT))},
        [],
    ),
    "passing beside the line's far end": ({1: via((5, OUT), (5, IN))}, []),
    "passing beside the line's near end": ({1: via((-0.5, OUT), (-0.5, IN))}, []),
    "passing a hand's breadth beside an end": ({1: via((4.1, OUT), (4.1, IN))}, []),
    "crossing a hand's breadth inside an end": ({1: via((3.9, OUT), (3.9, IN))}, [(1, "in")]),
    "going round an end and along behind the line": (
        {1: via((4.5, OUT), (4.5, 0.2), (2, 0.2), (2, IN))},
        [],
    ),
    "a shallow crossing, nearly along the line, with jitter": (
        {1: jitter(via((0.1, -0.6), (3.9, 0.6), steps=80), 0.05, seed=1)},
        [(1, "in")],
    ),
    "a V through the line, deep enough to be inside": (
        {1: via((2, OUT), (2.5, 1.0), (3, OUT))},
        [(1, "in"), (1, "out")],
    ),
    "a V whose tip stays in the band": ({1: via((2, OUT), (2.5, 0.2), (3, OUT))}, []),
    "standing on the line with jitter": ({1: stand((2, 0), 200, 0.25, seed=2)}, []),
    "hesitating on the line with jitter, then going in": (
        {1: via((2, OUT), (2, 0)) + stand((2, 0), 100, 0.25, seed=3) + via((2, 0), (2, IN))},
        [(1, "in")],
    ),
    "hesitating on the line with jitter, then going back": (
        {1: via((2, OUT), (2, 0)) + stand((2, 0), 100, 0.25, seed=4) + via((2, 0), (2, OUT))},
        [],
    ),
    "two people crossing side by side": (
        {1: via((1.8, OUT), (1.8, IN)), 2: via((2.3, OUT), (2.3, IN))},
        [(1, "in"), (2, "in")],
    ),
    "two people crossing side by side in opposite directions": (
        {1: via((1.8, OUT), (1.8, IN)), 2: via((2.3, IN), (2.3, OUT))},
        [(1, "in"), (2, "out")],
    ),
    "a track that switches id on the line": (
        {1: via((2, OUT), (2, -0.05)), 2: [None] * 11 + via((2, 0.05), (2, IN))},
        [(2, "in")],
    ),
    "a track lost on the line for a second, then found under a new id": (
        {1: via((2, OUT), (2, -0.1)), 2: [None] * 21 + via((2.2, 0.1), (2, IN))},
        [(2, "in")],
    ),
    "a track that switches id while jittering on the line": (
        {
            1: via((2, OUT), (2, 0)) + stand((2, 0), 30, 0.2, seed=5),
            2: [None] * 41 + stand((2, 0), 30, 0.2, seed=6) + via((2, 0), (2, IN)),
        },
        [(2, "in")],
    ),
    "a track that switches id after crossing, still in the band": (
        {1: via((2, OUT), (2, 0.1)), 2: [None] * 11 + via((2, 0.15), (2, IN))},
        [(2, "in")],
    ),
    "frames dropped at random while crossing": (
        {1: drop(via((2, OUT), (2, IN), steps=40), 0.5, seed=7)},
        [(1, "in")],
    ),
    "frames dropped at random while jittering on the line": (
        {
            1: drop(
                via((2, OUT), (2, 0)) + stand((2, 0), 100, 0.25, seed=8) + via((2, 0), (2, IN)),
                0.5,
                seed=9,
            )
        },
        [(1, "in")],
    ),
    "every frame dropped between the two sides": (
        {1: [(2, OUT), *[None] * 20, (2, IN)]},
        [(1, "in")],
    ),
    "first seen on the line, then walking out": ({1: via((2, 0.1), (2, OUT))}, [(1, "out")]),
    "first seen on the line, then walking in": ({1: via((2, 0.1), (2, IN))}, []),
    "walking along the line inside the band": (
        {1: jitter(via((-1, 0), (5, 0), steps=60), 0.2, seed=10)},
        [],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_hard_case_is_counted_once_or_not_at_all(case: str) -> None:
    paths, expected = CASES[case]
    assert directions(feed(paths)) == expected


def test_the_crossing_is_dated_when_the_path_crossed_the_line() -> None:
    # y goes -2.0, -1.8, ... so the line is crossed at the tenth step (0.0 at t = 1.0 s).
    (crossing,) = feed({1: via((2, -2.05), (2, 1.95), steps=20)})
    assert crossing.at == pytest.approx(10.25 * DT)
    assert crossing.settled_at == pytest.approx(12 * DT)  # the first point 0.3 m inside


def test_the_counter_keeps_totals_in_each_direction() -> None:
    line = counter()
    feed({1: via((2, OUT), (2, IN)), 2: via((1, OUT), (1, IN)), 3: via((3, IN), (3, OUT))}, line)
    assert (line.ins, line.outs) == (2, 1)


def test_a_layout_line_counts_into_its_in_side() -> None:
    line = Line(id="front", kind="entrance", points=((0.0, 0.0), (0.0, 2.0)), in_side="right")
    crossings = feed({1: via((-2, 1), (2, 1))}, LineCounter.of(line))
    assert directions(crossings) == [(1, "in")]
    assert crossings[0].line == "front"


def test_in_image_coordinates_a_line_drawn_downwards_has_its_right_on_the_left_of_the_picture() -> (
    None
):
    # TUD-Campus's line: x = 320 drawn from the top of the image down, in = to the right.
    line = LineCounter("x320", (320, 0), (320, 480), "right", band=10)
    assert line.offset((400, 200)) > 0 > line.offset((200, 200))


def test_a_track_going_back_in_time_is_refused() -> None:
    line = counter()
    line.update(1.0, {1: (2.0, -2.0)})
    with pytest.raises(ValueError, match=r"track 1 at 0\.5 s is not after"):
        line.update(0.5, {1: (2.0, -1.0)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"b": (0.0, 0.0)}, "must differ"),
        ({"band": -1.0}, "band"),
        ({"band": math.nan}, "band"),
        ({"handover_s": 5.0, "forget_s": 1.0}, "forget_s"),
    ],
)
def test_a_bad_line_is_refused_with_what_was_wrong(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "line": "door",
        "a": (0.0, 0.0),
        "b": (L, 0.0),
        "in_side": "left",
        "band": BAND,
    }
    with pytest.raises(ValueError, match=message):
        LineCounter(**{**args, **kwargs})  # type: ignore[arg-type]


def test_a_point_that_is_not_finite_is_refused() -> None:
    with pytest.raises(ValueError, match="track 7"):
        counter().update(0.0, {7: (math.nan, 1.0)})


def test_tracks_unseen_for_long_are_forgotten() -> None:
    line = LineCounter("door", (0, 0), (L, 0), "left", band=BAND, forget_s=10.0)
    line.update(0.0, {1: (2.0, -2.0)})
    line.update(11.0, {2: (1.0, -2.0)})
    # Track 1 is a stranger now: first seen inside, nothing to count.
    assert line.update(12.0, {1: (2.0, 2.0)}) == []


# -- laws -------------------------------------------------------------------------------

inside_extent = st.floats(0.0, L)
anywhere = st.floats(-3.0, 3.0)
start_out = st.tuples(inside_extent, st.floats(-3.0, -BAND))
end_in = st.tuples(inside_extent, st.floats(BAND, 3.0))
middles = st.lists(st.tuples(inside_extent, anywhere), max_size=30)


@settings(max_examples=300, deadline=None)
@given(start=start_out, middle=middles, end=end_in, dropped=st.sets(st.integers(0, 29)))
def test_a_path_that_ends_beyond_the_band_on_the_other_side_nets_exactly_one_crossing(
    start: Point, middle: list[Point], end: Point, dropped: set[int]
) -> None:
    kept = [p for i, p in enumerate(middle) if i not in dropped]
    crossings = feed({1: [start, *kept, end]})
    ins = sum(c.direction == "in" for c in crossings)
    outs = len(crossings) - ins
    assert ins - outs == 1
    # Crossings alternate, starting with the one into the side the path ends on.
    assert [c.direction for c in crossings] == ["in", "out"] * outs + ["in"]


@settings(max_examples=300, deadline=None)
@given(
    start=start_out, middle=middles, end=end_in, split=st.integers(0, 30), gap=st.integers(1, 19)
)
def test_a_path_that_changes_id_on_the_way_still_nets_exactly_one_crossing(
    start: Point, middle: list[Point], end: Point, split: int, gap: int
) -> None:
    path = [start, *middle, end]
    split = min(split, len(path) - 1)
    first, rest = path[: split + 1], path[split + 1 :]
    # The new id appears near where the old one was last seen, within the hand-over.
    x, y = first[-1]
    resumed = [(min(max(x + 0.3, 0.0), L), y), *rest]
    if rest:
        resumed.append(rest[-1])
    else:
        resumed.append(end)
    crossings = feed({1: first, 2: [None] * (len(first) + gap - 1) + resumed})
    ins = sum(c.direction == "in" for c in crossings)
    assert ins - (len(crossings) - ins) == 1


@settings(max_examples=200, deadline=None)
@given(
    start=start_out,
    middle=st.lists(
        st.tuples(inside_extent, st.floats(-BAND, BAND, exclude_max=True, exclude_min=True)),
        max_size=40,
    ),
)
def test_a_path_that_never_leaves_the_band_after_its_start_counts_nothing(
    start: Point, middle: list[Point]
) -> None:
    assert feed({1: [start, *middle]}) == []


beside = st.one_of(st.floats(-5.0, -1e-6), st.floats(L + 1e-6, L + 5.0))


@settings(max_examples=200, deadline=None)
@given(points=st.lists(st.tuples(beside, anywhere), min_size=1, max_size=40))
def test_a_path_that_stays_beside_one_end_counts_nothing(points: list[Point]) -> None:
    left = [p for p in points if p[0] < 0]
    right = [p for p in points if p[0] > L]
    assert feed({1: left or [(-1.0, 0.0)], 2: right or [(L + 1.0, 0.0)]}) == []
