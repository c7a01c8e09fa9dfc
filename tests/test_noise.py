"""Sensor noise: each part off by default, each doing what it says when on, deterministic."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import events as ev
from core.layout import Layout, load_layout
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from simulator import noise
from simulator.noise import DEFAULT, NEW_ID_TYPES, OFF, NoiseProfile
from simulator.scripted import plan, visit_events

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
BUSINESS = {"zone.entered", "zone.exited", "item.picked", "item.put_back"}
BUSINESS |= {"shopper.entered", "shopper.exited"}


@cache
def layout() -> Layout:
    return load_layout(ROOT / "examples" / "stores" / "convenience.yaml")


@cache
def clean(shoppers: int = 12, seed: int = 1) -> tuple[ev.Event, ...]:
    """A clean stream, one position event per shopper and frame (``subject`` "floor")."""
    events = [e for v in plan(layout(), shoppers, T0, seed) for e in visit_events(layout(), v)]
    return tuple(sorted(events, key=lambda e: e.at))


@cache
def by_camera(shoppers: int = 12, seed: int = 1) -> tuple[ev.Event, ...]:
    """The same stream as four cameras would report it: every visit's events come from one
    camera (its id as source), and a camera's frame holds everyone it sees then."""
    cams = [c.id for c in layout().cameras]
    visits = plan(layout(), shoppers, T0, seed)
    camera = {v.shopper: cams[i % 2] for i, v in enumerate(visits)}
    out: list[ev.Event] = []
    frames: dict[tuple[str, datetime], list[ev.PositionSample]] = defaultdict(list)
    for e in sorted((e for v in visits for e in visit_events(layout(), v)), key=lambda e: e.at):
        if isinstance(e, ev.PositionSamples):
            for s in e.data.samples:
                frames[(camera[s.track], e.at)].append(s)
        else:
            out.append(ev.new(type(e), **_fields(e, source=camera[e.subject])))
    for n, ((cam, at), samples) in enumerate(sorted(frames.items(), key=lambda f: f[0][1])):
        data = ev.PositionData(frame=n, samples=tuple(samples))
        out.append(
            ev.new(ev.PositionSamples, store="corner-01", at=at, source=cam, subject=cam, data=data)
        )
    return tuple(sorted(out, key=lambda e: e.at))


def _fields(e: ev.Event, **changes: object) -> dict[str, object]:
    fields = {"store": e.store, "at": e.at, "source": e.source, "subject": e.subject}
    return fields | {"data": e.data} | changes


def run(events: tuple[ev.Event, ...], seed: int = 7, **knobs: float) -> list[ev.Event]:
    return noise.apply(events, NoiseProfile(**knobs), seed=seed, layout=layout())


def of_type(events: list[ev.Event] | tuple[ev.Event, ...], *types: str) -> list[ev.Event]:
    return [e for e in events if e.type in types]


def samples(events: list[ev.Event] | tuple[ev.Event, ...]) -> list[ev.PositionSample]:
    return [s for e in of_type(events, "position.samples") for s in e.data.samples]


def digest(events: list[ev.Event]) -> str:
    return hashlib.sha256(b"\n".join(ev.encode(e) for e in events)).hexdigest()


def near(value: float, expected: float, tolerance: float) -> bool:
    return abs(value - expected) <= tolerance


# -- off, determinism, validity -----------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_off_returns_the_input_unchanged(seed: int) -> None:
    events = clean()
    out = noise.apply(events, OFF, seed=seed)
    assert len(out) == len(events) and all(a is b for a, b in zip(out, events, strict=True))
    assert NoiseProfile() == OFF


@pytest.mark.parametrize("knobs", [{"late_s": 5.0}, {"late_fraction": 1.0}])
def test_half_a_late_pair_changes_nothing(knobs: dict[str, float]) -> None:
    """Past the OFF shortcut, the noisy path is the identity when nothing has a rate."""
    out = run(clean(), **knobs)
    assert len(out) == len(clean()) and all(a is b for a, b in zip(out, clean(), strict=True))


def test_every_default_part_is_on() -> None:
    """DEFAULT is a profile of every kind of noise, not the identity in disguise."""
    assert all(v > 0 for v in msgspec.structs.asdict(DEFAULT).values())


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    events = by_camera()
    first = noise.apply(events, DEFAULT, seed=3, layout=layout())
    again = noise.apply(events, DEFAULT, seed=3, layout=layout())
    other = noise.apply(events, DEFAULT, seed=4, layout=layout())
    assert [ev.encode(e) for e in first] == [ev.encode(e) for e in again]
    assert digest(first) != digest(other)


def test_the_noise_does_not_depend_on_the_python_hash_seed() -> None:
    code = (
        "from tests.test_noise import DEFAULT, by_camera, digest, layout, noise;"
        "print(digest(noise.apply(by_camera(4), DEFAULT, seed=5, layout=layout())))"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=os.environ | {"PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert digests == {digest(noise.apply(by_camera(4), DEFAULT, seed=5, layout=layout()))}


profiles = st.builds(
    NoiseProfile,
    **{
        f.name: st.floats(0, 3.0 if f.name.endswith(("_s", "_m")) else 1.0)
        for f in msgspec.structs.fields(NoiseProfile)
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=profiles, seed=st.integers(0, 1000), cameras=st.booleans())
def test_any_profile_gives_valid_events_and_keeps_shopper_ids(
    profile: NoiseProfile, seed: int, cameras: bool
) -> None:
    events = by_camera(3) if cameras else clean(3)
    out = noise.apply(events, profile, seed=seed, layout=layout())
    for e in out:
        assert ev.validate(e) == e
    shoppers = {e.subject for e in events if e.type in BUSINESS}
    assert {e.subject for e in out if e.type in BUSINESS} <= shoppers
    assert noise.apply(events, profile, seed=seed, layout=layout()) == out


def test_a_profile_out_of_range_or_with_unknown_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="missed_detection"):
        noise.apply(clean(), NoiseProfile(missed_detection=1.5), seed=1)
    with pytest.raises(msgspec.ValidationError, match="unknown field `miss`"):
        msgspec.convert({"miss": 0.1}, NoiseProfile)
    with pytest.raises(ValueError, match="false_pick needs the store layout"):
        noise.apply(clean(), NoiseProfile(false_pick=0.1), seed=1)


def test_one_part_does_not_move_when_another_is_switched_on() -> None:
    events = by_camera()
    jitter = run(events, jitter_m=0.1)
    both = run(events, jitter_m=0.1, missed_detection=0.3, late_s=2, late_fraction=0.3)
    moved = {
        (e.at, s.track): (s.x, s.y)
        for e in jitter
        if e.type == "position.samples"
        for s in e.data.samples
    }
    kept = {
        (e.at, s.track): (s.x, s.y)
        for e in both
        if e.type == "position.samples"
        for s in e.data.samples
    }
    assert len(kept) < len(moved)
    assert all(moved[k] == xy for k, xy in kept.items())
    missed = run(events, missed_detection=0.3)
    assert {
        (e.at, s.track) for e in missed if e.type == "position.samples" for s in e.data.samples
    } == set(kept)


# -- each part alone ----------------------------------------------------------------------


def test_missed_detection_drops_its_share_of_samples_and_nothing_else() -> None:
    events = by_camera(20)
    out = run(events, missed_detection=0.5)
    assert near(len(samples(out)) / len(samples(events)), 0.5, 0.04)
    assert [e for e in out if e.type != "position.samples"] == [
        e for e in events if e.type != "position.samples"
    ]
    before = {(e.at, e.source): e for e in of_type(events, "position.samples")}
    for e in of_type(out, "position.samples"):
        original = before[(e.at, e.source)]
        assert set(e.data.samples) <= set(original.data.samples)
        assert (e.id == original.id) == (e.data == original.data)


def test_jitter_moves_positions_with_the_given_spread() -> None:
    events = clean(20)
    out = run(events, jitter_m=0.1)
    assert len(out) == len(events)
    dx, dy = [], []
    for a, b in zip(events, out, strict=True):
        if a.type != "position.samples":
            assert a is b
            continue
        assert a.id != b.id and a.at == b.at and a.data.frame == b.data.frame
        for s, t in zip(a.data.samples, b.data.samples, strict=True):
            assert s.track == t.track
            dx.append(t.x - s.x)
            dy.append(t.y - s.y)
    for d in (dx, dy):
        assert abs(statistics.fmean(d)) < 4 * 0.1 / math.sqrt(len(d))
        assert near(statistics.pstdev(d), 0.1, 0.01)


def test_clock_skew_shifts_each_source_by_one_constant() -> None:
    events = by_camera()
    out = run(events, clock_skew_s=0.5)
    assert len(out) == len(events)
    offsets: dict[str, set[timedelta]] = defaultdict(set)
    for a, b in zip(events, out, strict=True):  # delivered when they happened: same order
        assert (a.type, a.source, a.subject, a.data) == (b.type, b.source, b.subject, b.data)
        offsets[b.source].add(b.at - a.at)
        assert (b.id == a.id) == (b.at == a.at)
    assert len(offsets) == 2
    assert all(len(shifts) == 1 for shifts in offsets.values())
    shifts = {s for shifts in offsets.values() for s in shifts}
    assert len(shifts) == 2 and all(abs(s) <= timedelta(seconds=0.5) for s in shifts)


def test_late_delivery_reorders_within_late_s_and_keeps_event_times() -> None:
    events = clean(20)
    out = run(events, late_s=3.0, late_fraction=0.3)
    assert sorted(e.id for e in out) == sorted(e.id for e in events)
    assert set(out) == set(events)  # the very same events: times unchanged
    assert [e.id for e in out] != [e.id for e in events]
    newest, behind = out[0].at, []
    for e in out:
        newest = max(newest, e.at)
        behind.append((newest - e.at).total_seconds())
    assert max(behind) <= 3.0
    assert max(behind) > 2.0
    overtaken = sum(b > 0 for b in behind) / len(out)  # late past a later event
    assert 0.15 < overtaken <= 0.3


def test_duplicates_with_the_same_id_are_the_same_event_right_after() -> None:
    events = clean(20)
    out = run(events, duplicate_same_id=0.3)
    assert near(len(out) / len(events), 1.3, 0.03)
    assert [e for i, e in enumerate(out) if i == 0 or out[i - 1] is not e] == list(events)
    assert {e.id for e in out} == {e.id for e in events}


def test_duplicates_with_a_new_id_are_position_frames_from_a_second_camera() -> None:
    events = by_camera(20)
    out = run(events, duplicate_new_id=0.5)
    cams = {c.id for c in layout().cameras}
    before = Counter(e.type for e in events)
    after = Counter(e.type for e in out)
    assert {"position.samples"} == NEW_ID_TYPES
    assert {t: n for t, n in after.items() if t != "position.samples"} == {
        t: n for t, n in before.items() if t != "position.samples"
    }
    assert near(after["position.samples"] / before["position.samples"], 1.5, 0.05)
    originals = {e.id for e in events}
    for i, e in enumerate(out):
        if e.id in originals:
            continue
        first = out[i - 1]  # the camera that reported it first
        assert first.id in originals
        assert e.at == first.at and e.data == first.data
        assert e.source != first.source and e.source in cams and e.subject == e.source


def test_double_picks_are_a_second_camera_reporting_the_same_pick() -> None:
    events = clean(20)
    out = run(events, double_pick=1.0)
    picks = of_type(events, "item.picked")
    doubled = of_type(out, "item.picked")
    assert len(doubled) == 2 * len(picks)
    assert of_type(out, "item.put_back") == of_type(events, "item.put_back")
    for pick, twin in zip(doubled[::2], doubled[1::2], strict=True):
        assert pick in picks and twin.id != pick.id
        assert (twin.at, twin.subject, twin.data) == (pick.at, pick.subject, pick.data)
        zone = layout().shelf(pick.data.shelf).zone
        assert zone in layout().camera(twin.source).sees


def test_false_picks_come_with_their_put_back_of_a_neighbouring_sku() -> None:
    events = clean(20)
    out = run(events, false_pick=1.0)
    originals = set(events)
    added = [e for e in out if e not in originals]
    picks = of_type(events, "item.picked")
    assert len(added) == 2 * len(picks)  # every shelf here has neighbours
    extra_picks, extra_backs = of_type(added, "item.picked"), of_type(added, "item.put_back")
    assert Counter((e.subject, e.data) for e in extra_picks) == Counter(
        (e.subject, e.data) for e in extra_backs
    )
    for brush in extra_picks:
        assert any(
            (e.subject, e.data) == (brush.subject, brush.data)
            and timedelta(seconds=1) <= e.at - brush.at <= timedelta(seconds=4)
            for e in extra_backs
        )
        cause = next(
            p
            for p in picks
            if p.subject == brush.subject
            and timedelta(seconds=0.2) <= brush.at - p.at <= timedelta(seconds=1.5)
        )
        skus = layout().shelf(cause.data.shelf).skus
        assert brush.data.shelf == cause.data.shelf
        assert abs(skus.index(brush.data.sku) - skus.index(cause.data.sku)) == 1
    assert set(run(events, seed=8, false_pick=1.0)) - originals != set(added)  # seeded
    # The cart of every shopper is what it was: each brush is taken back.
    assert carts(out) == carts(events)
    assert [e.at for e in out] == sorted(e.at for e in out)  # delivered in time order


def carts(events: list[ev.Event] | tuple[ev.Event, ...]) -> dict[str, Counter[str]]:
    cart: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if e.type in ("item.picked", "item.put_back"):
            cart[e.subject][e.data.sku] += 1 if e.type == "item.picked" else -1
    return {k: +v for k, v in cart.items()}


def test_missed_zone_events_drop_whole_pairs() -> None:
    events = clean(20)
    out = run(events, missed_zone_event=0.5)
    zone_types = ("zone.entered", "zone.exited")
    assert [e for e in out if e.type not in zone_types] == [
        e for e in events if e.type not in zone_types
    ]
    kept = of_type(out, *zone_types)
    assert set(kept) <= set(events)
    assert near(len(kept) / len(of_type(events, *zone_types)), 0.5, 0.05)
    inside: dict[tuple[str, str], int] = defaultdict(int)
    for e in kept:
        inside[(e.subject, e.data.zone)] += 1 if e.type == "zone.entered" else -1
        assert inside[(e.subject, e.data.zone)] in (0, 1)
    assert set(inside.values()) == {0}


def test_fragmentation_renames_tracks_in_samples_only_at_minute_boundaries() -> None:
    events = clean(60)  # visits are short: 34 track-minute boundaries
    out = run(events, fragmentation=0.5)
    assert len(out) == len(events)
    labels: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for a, b in zip(events, out, strict=True):
        if a.type != "position.samples":
            assert a is b
            continue
        for s, t in zip(a.data.samples, b.data.samples, strict=True):
            assert (s.x, s.y) == (t.x, t.y)
            labels[s.track].append((a.at, t.track))
    breaks = boundaries = 0
    for track, seen in labels.items():
        first = seen[0][0]
        assert seen[0][1] == track  # a track starts under its own id
        minutes = int((seen[-1][0] - first).total_seconds() // 60)
        boundaries += minutes
        for (before, was), (at, now) in itertools.pairwise(seen):
            if now != was:
                breaks += 1
                # the first sample of a new minute of the track
                assert (at - first) // timedelta(minutes=1) > (before - first) // timedelta(
                    minutes=1
                )
                assert now not in labels  # a fresh id, not another shopper's
    assert boundaries > 30
    assert near(breaks / boundaries, 0.5, 0.25)


def test_id_switches_swap_the_ids_of_two_people_in_a_frame() -> None:
    events = by_camera(30)
    out = run(events, id_switch=0.05)
    assert len(out) == len(events)
    wrong = 0
    for a, b in zip(events, out, strict=True):
        if a.type != "position.samples":
            assert a is b
            continue
        true = [s.track for s in a.data.samples]
        told = [s.track for s in b.data.samples]
        assert len(set(told)) == len(told)  # never two people under one id
        if len(true) == 1:
            continue
        wrong += sum(t != s for s, t in zip(true, told, strict=True))
    assert wrong > 0
    # A frame is a camera's samples at one time, however many events carry them.
    assert run(clean(), id_switch=0.5) != list(clean())
    # Switches need company: one shopper alone is never renamed.
    assert run(clean(1), id_switch=1.0) == list(clean(1))


# -- what the pipeline absorbs ------------------------------------------------------------


def receipts(events: list[ev.Event], lateness_s: float) -> list[tuple[str, bytes]]:
    packs = [ROOT / "rules" / "packs" / "carts.yaml"]
    engine = Engine(load_rules(packs, Reference.of(layout())), lateness_s=lateness_s)
    out = engine.process(events).derived
    out += engine.advance("corner-01", events[-1].at.timestamp() + 3600).derived
    return sorted(
        (r.data.cart, msgspec.json.encode(r.data.lines)) for r in out if r.type == "receipt.issued"
    )


def test_the_absorbable_noise_leaves_receipts_exactly_as_they_were() -> None:
    """Late and out-of-order delivery, clock skew, retried publishes, false picks and all the
    position noise: the log and the carts pack absorb them, so the receipts are exact."""
    events = clean(30)
    absorbable = msgspec.structs.replace(DEFAULT, missed_zone_event=0.0, double_pick=0.0)
    lateness = absorbable.late_s + 2 * absorbable.clock_skew_s
    heavy = msgspec.structs.replace(
        absorbable, false_pick=0.5, duplicate_same_id=0.3, late_fraction=0.3
    )
    expected = receipts(list(events), 0.0)
    assert len(expected) >= 20
    for seed in (1, 2):
        out = noise.apply(events, heavy, seed=seed, layout=layout())
        assert receipts(out, lateness) == expected


def test_double_picks_and_missed_gate_events_are_receipt_errors() -> None:
    events = clean(30)
    expected = receipts(list(events), 0.0)
    doubled = receipts(run(events, double_pick=1.0), 0.0)
    assert doubled != expected and len(doubled) >= len(expected)  # emptied carts fill up
    missed = receipts(run(events, missed_zone_event=0.5), 0.0)
    assert len(missed) < len(expected)
