"""The hand-off across cameras, on floor sightings directly (no video).

The floor is the convenience store's; its door lines are at y = 0 (the entrance for x in
0.6..1.8, the exit for x in 1.8..3.0). Cameras are named "A" and "B"; each path is a
camera track's foot points, one per frame at 10 frames/s, None where it is not seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from adapters.handoff import Ended, Handoff, HandoffSettings, Sighting, TrackKey
from core.layout import load_layout

LAYOUT = load_layout(Path(__file__).resolve().parent.parent / "examples/stores/convenience.yaml")
DT = 0.1

Point = tuple[float, float]
Path_ = Sequence[Point | None]


def line(a: Point, b: Point, frames: int) -> list[Point | None]:
    return [
        (a[0] + (b[0] - a[0]) * k / (frames - 1), a[1] + (b[1] - a[1]) * k / (frames - 1))
        for k in range(frames)
    ]


def gap(frames: int) -> list[Point | None]:
    return [None] * frames


class Run:
    """The hand-off fed the paths; what it said, per camera track."""

    def __init__(
        self, paths: dict[tuple[str, int], Path_], settings: HandoffSettings | None = None
    ) -> None:
        self.handoff = Handoff(LAYOUT.lines, settings)
        self.fused: dict[tuple[str, int], set[TrackKey]] = {ck: set() for ck in paths}
        self.by_frame: dict[int, dict[TrackKey, Point]] = {}
        self.born: list[TrackKey] = []
        self.ended: list[Ended] = []
        frames = max(len(p) for p in paths.values())
        for k in range(frames + 700):  # and long enough after for every track to end
            at = (k + 1) * DT
            sightings = [
                Sighting(camera=c, track=t, frame=k, at=at, x=p[k][0], y=p[k][1])
                for (c, t), p in paths.items()
                if k < len(p) and p[k] is not None
            ]
            step = self.handoff.update(at, sightings)
            self.born += step.born
            self.ended += step.ended
            self.by_frame[k] = {p.key: (p.x, p.y) for p in step.points}
            for p in step.points:
                for ck in p.tracks:
                    self.fused[ck].add(p.key)
            assert sum(len(p.tracks) for p in step.points) == len(sightings)

    def one(self, *camera_tracks: tuple[str, int]) -> TrackKey:
        """The one fused track all these camera tracks were joined to."""
        keys = set().union(*(self.fused[ck] for ck in camera_tracks))
        assert len(keys) == 1, keys
        return keys.pop()


def test_a_person_walking_from_one_cameras_view_into_the_next_keeps_one_track() -> None:
    walk = line((2.0, 1.0), (6.0, 1.0), 40)  # A sees x < 4.5, B sees x > 3.5
    run = Run(
        {
            ("A", 1): [p if p and p[0] < 4.5 else None for p in walk],
            ("B", 7): [p if p and p[0] > 3.5 else None for p in walk],
        }
    )
    run.one(("A", 1), ("B", 7))
    assert len(run.born) == 1


def test_in_the_overlap_a_person_is_one_point_however_many_cameras_see_them() -> None:
    walk = line((2.0, 1.0), (6.0, 1.0), 40)
    shifted = [(p[0] + 0.2, p[1] - 0.1) if p else None for p in walk]  # B's estimate is off
    run = Run({("A", 1): walk, ("B", 7): shifted})
    key = run.one(("A", 1), ("B", 7))
    for k in range(5, 40):
        assert list(run.by_frame[k]) == [key]
        x, _ = run.by_frame[k][key]
        assert walk[k] is not None and walk[k][0] < x < walk[k][0] + 0.2


def test_two_people_crossing_in_the_overlap_keep_their_own_tracks() -> None:
    east = line((2.0, 1.0), (6.0, 1.6), 40)
    west = line((6.0, 1.6), (2.0, 1.0), 40)
    run = Run(
        {
            ("A", 1): [p if p and p[0] < 4.5 else None for p in east],
            ("B", 1): [p if p and p[0] > 3.5 else None for p in east],
            ("A", 2): [p if p and p[0] < 4.5 else None for p in west],
            ("B", 2): [p if p and p[0] > 3.5 else None for p in west],
        }
    )
    assert run.one(("A", 1), ("B", 1)) != run.one(("A", 2), ("B", 2))


def test_a_cameras_tracker_swapping_two_people_is_undone_by_the_other_camera() -> None:
    east = line((2.0, 1.0), (6.0, 1.6), 40)
    west = line((6.0, 1.6), (2.0, 1.0), 40)
    # A swaps the ids where they meet (frame 20); B, which sees both throughout, does not.
    run = Run(
        {
            ("A", 1): east[:20] + west[20:],
            ("A", 2): west[:20] + east[20:],
            ("B", 1): east,
            ("B", 2): west,
        }
    )
    first, second = run.by_frame[5], run.by_frame[35]
    assert set(first) == set(second) and len(first) == 2
    for key, (x, _) in first.items():
        heading_east = x < 3.0
        assert (second[key][0] > 5.0) == heading_east  # each kept its own person
    assert run.handoff.splits >= 1


def test_a_person_hidden_for_long_away_from_the_doors_is_found_again() -> None:
    # into a blind spot at a shelf for 25 s, out of it 0.6 m further on, seen by another camera
    run = Run(
        {
            ("A", 1): line((2.0, 1.0), (1.0, 3.0), 20),
            ("B", 4): gap(270) + line((1.0, 3.6), (1.0, 5.0), 15),
        }
    )
    run.one(("A", 1), ("B", 4))
    assert run.ended and not run.ended[0].door


def test_two_people_hidden_in_two_places_are_each_found_where_they_were() -> None:
    run = Run(
        {
            ("A", 1): line((2.0, 1.0), (1.0, 3.0), 20),
            ("A", 2): line((4.0, 1.0), (5.5, 3.0), 20),
            ("B", 1): gap(200) + line((5.4, 3.5), (5.4, 4.5), 10),
            ("B", 2): gap(210) + line((1.0, 3.5), (1.0, 4.5), 10),
        }
    )
    assert run.one(("A", 1), ("B", 2)) != run.one(("A", 2), ("B", 1))


def test_a_person_walking_out_through_a_door_is_over_soon_and_near_the_door() -> None:
    run = Run({("A", 1): line((2.4, 2.0), (2.4, 0.4), 16)})
    (ended,) = run.ended
    assert ended.door
    last_seen = 16 * DT
    over_at = next(k for k in range(len(run.by_frame)) if not run.handoff.active) * DT
    assert over_at - last_seen < HandoffSettings().door_s


def test_someone_coming_in_where_another_just_went_out_is_someone_else() -> None:
    run = Run(
        {
            ("A", 1): line((2.4, 2.0), (2.4, 0.4), 16),  # out through the exit
            ("A", 2): gap(20) + line((1.2, 0.4), (1.2, 2.0), 16),  # in 0.4 s later, 1.2 m off
        }
    )
    assert run.one(("A", 1)) != run.one(("A", 2))
    assert len(run.born) == 2


def test_coming_in_by_the_entrance_as_another_leaves_by_the_exit_beside_it_is_two_people() -> None:
    out = line((2.3, 2.0), (2.3, 0.35), 12)  # last seen 0.35 m inside the exit door
    run = Run({("A", 1): out, ("A", 2): gap(12) + line((1.33, 0.35), (1.33, 2.0), 12)})
    assert run.one(("A", 1)) != run.one(("A", 2))  # 0.97 m apart, one frame after


def test_a_person_standing_near_the_door_and_hidden_a_moment_keeps_their_track() -> None:
    run = Run({("A", 1): [(2.4, 0.6)] * 10, ("A", 2): gap(15) + [(2.45, 0.6)] * 10})
    run.one(("A", 1), ("A", 2))


def test_one_camera_never_sees_one_person_twice_in_a_frame() -> None:
    run = Run({("A", 1): [(2.0, 2.0)] * 10, ("A", 2): gap(3) + [(2.1, 2.0)] * 7})
    assert run.one(("A", 1)) != run.one(("A", 2))


def test_the_same_sightings_give_the_same_fused_tracks() -> None:
    paths: dict[tuple[str, int], Path_] = {
        ("A", 1): line((2.0, 1.0), (6.0, 1.6), 40),
        ("B", 3): line((6.0, 1.6), (2.0, 1.0), 40),
        ("A", 2): gap(5) + line((1.2, 0.4), (3.0, 2.0), 20),
    }
    a, b = Run(paths), Run(paths)
    assert a.by_frame == b.by_frame and a.born == b.born and a.ended == b.ended


def test_bad_input_is_refused_with_what_was_wrong() -> None:
    h = Handoff(LAYOUT.lines)
    h.update(1.0, [])
    with pytest.raises(ValueError, match=r"does not come after 1\.0 s"):
        h.update(1.0, [])
    s = Sighting(camera="A", track=1, frame=0, at=2.0, x=1.0, y=1.0)
    with pytest.raises(ValueError, match="camera A track 1 twice"):
        h.update(2.0, [s, s])
    with pytest.raises(ValueError, match=r"a sighting at 2\.0 s in the instant at 3\.0 s"):
        h.update(3.0, [s])
    with pytest.raises(ValueError, match="gate_m"):
        HandoffSettings(gate_m=-1.0)


def test_a_person_seen_only_cut_by_the_image_border_joins_the_one_seen_whole_not_a_new_one() -> (
    None
):
    """Cut by the border, a foot point may be far off: near the door, B's clipped view of
    the person A sees whole is not someone coming in, and alone it starts a track only
    after ``clipped_birth_s``."""
    walk = line((1.2, 0.3), (1.2, 2.5), 30)  # in through the entrance
    handoff = Handoff(LAYOUT.lines)
    born: list[TrackKey] = []
    fused: dict[str, set[TrackKey]] = {"A": set(), "B": set()}
    for k, (x, y) in enumerate(p for p in walk if p is not None):
        at = (k + 1) * DT
        step = handoff.update(
            at,
            [
                Sighting(camera="A", track=1, frame=k, at=at, x=x, y=y),
                Sighting(camera="B", track=4, frame=k, at=at, x=x + 0.75, y=y, weight=0.02),
            ],
        )
        born += step.born
        for p in step.points:
            for camera, _ in p.tracks:
                fused[camera].add(p.key)
    assert len(born) == 1 and fused["A"] == fused["B"] == set(born)
    alone = Handoff(LAYOUT.lines)
    births = []
    for k in range(30):
        at = (k + 1) * DT
        step = alone.update(
            at, [Sighting(camera="B", track=4, frame=k, at=at, x=1.2, y=0.5, weight=0.02)]
        )
        births += [(at, key) for key in step.born]
    wait = HandoffSettings().clipped_birth_s
    assert len(births) == 1 and births[0][0] == pytest.approx(DT + wait)


Weighed = tuple[float, float, float] | None


def weighed(
    paths: dict[tuple[str, int], Sequence[Weighed]],
) -> tuple[Handoff, list[TrackKey], list[Ended], dict[tuple[str, int], set[TrackKey]]]:
    """The hand-off fed paths of (x, y, weight): its births, ends and each track's joins."""
    handoff = Handoff(LAYOUT.lines)
    born: list[TrackKey] = []
    ended: list[Ended] = []
    fused: dict[tuple[str, int], set[TrackKey]] = {ck: set() for ck in paths}
    for k in range(max(len(p) for p in paths.values()) + 50):
        at = (k + 1) * DT
        sightings = [
            Sighting(camera=c, track=t, frame=k, at=at, x=p[k][0], y=p[k][1], weight=p[k][2])
            for (c, t), p in paths.items()
            if k < len(p) and p[k] is not None
        ]
        step = handoff.update(at, sightings)
        born += step.born
        ended += step.ended
        for p in step.points:
            for ck in p.tracks:
                fused[ck].add(p.key)
    return handoff, born, ended + handoff.close(), fused


def seen(path: Path_, weight: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> list[Weighed]:
    """A path as one camera sees it: every point, shifted, with a weight."""
    return [None if p is None else (p[0] + dx, p[1] + dy, weight) for p in path]


def test_a_view_cut_by_the_border_a_metre_off_never_parts_the_person_seen_whole() -> None:
    """At the gate, a camera that sees a shopper cut by its border puts their feet a metre
    off: that link must not part them from the camera that sees them whole, or the
    whole view, left over by the door, starts a track that came in through the exit."""
    out = line((2.4, 2.0), (2.4, 0.3), 18)
    handoff, born, ended, fused = weighed(
        {("A", 1): seen(out), ("B", 5): seen(out, 0.02, dx=0.1, dy=0.9)}
    )
    assert handoff.splits == 0
    assert len(born) == 1 and fused[("A", 1)] == fused[("B", 5)] == set(born)
    assert len(ended) == 1 and ended[0].door


def test_two_fused_tracks_following_one_person_are_merged_into_the_older() -> None:
    """B first puts the person 1.5 m off (a fused track of its own), then where A does:
    two tracks of one person, no camera in common, are one after ``merge_s``."""
    walk = line((4.0, 2.6), (4.0, 5.0), 40)
    off = [1.5] * 10 + [1.5 * (1 - k / 6) for k in range(6)] + [0.05] * 24
    b: list[Weighed] = [None] * 4 + [
        None if p is None else (p[0] + d, p[1], 1.0) for p, d in zip(walk[4:], off[4:], strict=True)
    ]
    handoff, born, ended, fused = weighed({("A", 1): seen(walk), ("B", 2): b})
    assert len(born) == 2 and handoff.merges == 1
    older, younger = born
    merged = [e for e in ended if e.key == younger]
    assert len(merged) == 1 and merged[0].merged_into == older and not merged[0].door
    assert fused[("A", 1)] == {older} and fused[("B", 2)] == {older, younger}
    assert [e.key for e in ended if e.merged_into is None] == [older]


def test_two_people_side_by_side_seen_by_both_cameras_are_never_merged() -> None:
    left, right = line((3.8, 2.6), (3.8, 5.0), 40), line((4.1, 2.6), (4.1, 5.0), 40)
    paths = {("A", 1): left, ("A", 2): right, ("B", 1): left, ("B", 2): right}
    handoff, born, ended, fused = weighed({ck: seen(p) for ck, p in paths.items()})
    assert handoff.merges == 0 and len(born) == 2
    assert not any(e.merged_into for e in ended)
    assert fused[("A", 1)] == fused[("B", 1)] != fused[("A", 2)] == fused[("B", 2)]
