"""The merge of a store's two streams: its order is a function of the streams alone."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from core.merge import _release, merged

WINDOW = 20


def _spec(queues, horizons, window, limit, out):  # type: ignore[no-untyped-def]
    """The rule as first written (comprehensions, ``any``, ``min`` with a key): the
    specification the loop in ``core.merge`` must keep to."""
    while len(out) < limit:
        fronts = [q[0][0] for q in queues if q]
        if not fronts:
            return None
        until = min(fronts) + window
        if any(not q and h <= until for q, h in zip(queues, horizons, strict=True)):
            return until
        i = min(
            (k for k, q in enumerate(queues) if q and q[0][0] <= until),
            key=lambda k: (queues[k][0][1], k),
        )
        out.append((i, queues[i].popleft()[2]))
    return None


@st.composite
def streams(draw: st.DrawFn) -> list[list[tuple[int, float, str]]]:
    """Up to three streams, arrivals growing along each, event times anywhere (ties
    included, to test the tie-break by stream)."""
    out = []
    for s in range(draw(st.integers(1, 3))):
        gaps = draw(st.lists(st.integers(0, 30), max_size=25))
        arrival, items = 0, []
        for n, gap in enumerate(gaps):
            arrival += gap
            items.append((arrival, float(draw(st.integers(0, 40))), f"{s}:{n}"))
        out.append(items)
    return out


@settings(max_examples=300, deadline=None)
@given(
    streams(),
    st.lists(st.sampled_from([0.0, 10.0, 50.0, 400.0, float("inf")]), min_size=3, max_size=3),
    st.integers(1, 80),
)
def test_release_keeps_to_the_specification(
    data: list[list[tuple[int, float, str]]], horizons: list[float], limit: int
) -> None:
    ours, spec = [deque(s) for s in data], [deque(s) for s in data]
    got: list[tuple[int, str]] = []
    want: list[tuple[int, str]] = []
    h = horizons[: len(data)]
    assert _release(ours, h, WINDOW, limit, got) == _spec(spec, h, WINDOW, limit, want)
    assert got == want
    assert [list(q) for q in ours] == [list(q) for q in spec]


@settings(max_examples=200, deadline=None)
@given(streams())
def test_merged_keeps_each_stream_in_order_and_loses_nothing(
    data: list[list[tuple[int, float, str]]],
) -> None:
    out = merged(data, WINDOW)
    assert sorted(item for _, item in out) == sorted(i[2] for s in data for i in s)
    for k, s in enumerate(data):
        assert [item for i, item in out if i == k] == [i[2] for i in s]


def test_within_the_window_the_older_event_goes_first() -> None:
    samples = [(0, 5.0, "sample"), (100, 9.0, "late sample")]
    events = [(15, 1.0, "entered")]  # stored 15 ns after the sample, but older
    assert [x for _, x in merged([samples, events], WINDOW)] == [
        "entered",
        "sample",
        "late sample",
    ]
    events = [(25, 1.0, "entered")]  # past the window: arrival order wins
    assert [x for _, x in merged([samples, events], WINDOW)] == [
        "sample",
        "entered",
        "late sample",
    ]


def test_a_quiet_stream_holds_the_merge_until_its_horizon_passes() -> None:
    queues = [deque([(100, 1.0, "a")]), deque()]
    out: list[tuple[int, str]] = []
    assert _release(queues, [0.0, 120.0], WINDOW, 10, out) == 120  # not known past 120
    assert out == []
    assert _release(queues, [0.0, 121.0], WINDOW, 10, out) is None
    assert out == [(0, "a")]
