"""Sensor noise: turn what perfect sensors would report into what real vision adapters report.

``apply(events, profile, seed=...)`` takes a clean event stream of a simulated store (raw
events in event-time order) and returns the noisy one in *delivery* order. Each kind of noise
is one small function below, each off by default (``OFF``); ``DEFAULT`` is a realistic but
moderate profile. The same input, profile and seed give the same output, byte for byte.

Every random choice is a function of (seed, part, what it is about) alone: the clean event's
id (and a sample's place in it), a track and a minute, a camera. So switching one part on
does not change what another part does, and adding visits to a stream does not change the
noise on the others (except id switches, which need two people in one frame).

A changed event (moved, renamed, re-timed) is a different report of the occurrence, so it gets
a fresh content id (``ev.new``); only a retried publish (``duplicate_same_id``) repeats the
exact event, id and all.

Who absorbs what downstream:

- the log (``Nats-Msg-Id``) and the engine drop a repeated id: ``duplicate_same_id``;
- the engine's allowed lateness absorbs late delivery and clock skew when it is at least
  ``late_s + 2 * clock_skew_s`` (2.4 s at ``DEFAULT``);
- the carts pack nets out false picks, which come with their put-back of the same SKU;
- heatmaps and dwell are estimates: missed detections and duplicate samples move dwell by
  their share, fragments and id switches add to distinct-visitor counts;
- double picks, and a missed zone pair at the exit gate (the cart never closes), are receipt
  errors that ``bench/receipt_accuracy.py`` counts; ``DEFAULT`` keeps them within its 0.1 %
  budget (about 0.03 % each).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from core import events as ev
from core.layout import Layout

__all__ = ["DEFAULT", "NEW_ID_TYPES", "OFF", "NoiseProfile", "apply"]

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, Meta(ge=0.0, le=3600.0)]
MetresSigma = Annotated[float, Meta(ge=0.0, le=100.0)]

NEW_ID_TYPES = frozenset({"position.samples"})
"""Types ``duplicate_new_id`` may report twice. Two overlapping cameras seeing the same frame
is harmless for samples (the copy has the same frame, tracks and positions from another
source: detectable, and distinct-visitor counts do not move). A business event reported twice
is not: a second pick is a real receipt error (``double_pick``), a second zone or door event
counts footfall or closes a cart twice."""


class NoiseProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How noisy the sensors are. Every part is off (0) unless set."""

    missed_detection: Probability = 0.0  # a position sample (one person, one frame) is not reported
    missed_zone_event: Probability = 0.0  # a zone.entered/exited pair is missed (both dropped)
    false_pick: Probability = 0.0  # per pick: a neighbouring SKU is picked and put back (brushed)
    duplicate_same_id: Probability = 0.0  # an event is delivered twice, same id (retried publish)
    duplicate_new_id: Probability = 0.0  # a NEW_ID_TYPES event also comes from a second camera
    double_pick: Probability = 0.0  # a pick also comes from a second camera: a new id, counted
    late_s: Seconds = 0.0  # late events are delivered up to this long after their event time
    late_fraction: Probability = 0.0  # the share of events delivered late
    fragmentation: Probability = 0.0  # per track and minute: the track gets a new id from then on
    id_switch: Probability = 0.0  # per frame with 2+ people: the two closest swap ids from then on
    clock_skew_s: Seconds = 0.0  # each source's clock is off by a fixed amount in [-skew, +skew]
    jitter_m: MetresSigma = 0.0  # gaussian sigma added to each x and y of position samples


OFF = NoiseProfile()

DEFAULT = NoiseProfile(
    # Overhead cameras lose a person in a few frames in a hundred (occluded by another
    # shopper or a shelf edge, a dropped frame).
    missed_detection=0.02,
    # Zone events come from a whole track with hysteresis, not one frame: a pair is lost only
    # when the track is lost for the whole stay. Each lost exit-gate pair loses a receipt, so
    # this stays within the accuracy budget (~11 pairs a visit, one at the gate: ~0.03 %).
    missed_zone_event=0.0003,
    # A hand brushing the next product is seen as a pick, retracted within seconds: one
    # pick in fifty.
    false_pick=0.02,
    # At-least-once publishing: a lost ack makes the adapter retry about one event in a hundred.
    duplicate_same_id=0.01,
    # The example stores' cameras overlap along the aisles; one frame in twenty is reported
    # by both before the adapters' fusion drops it.
    duplicate_new_id=0.05,
    # Fusion rarely fails on a pick (it is matched by shelf, SKU and time); each failure is a
    # wrong receipt: ~2.6 picks a visit give ~0.03 % of receipts.
    double_pick=0.0001,
    # Edge adapters batch and the store uplink hiccups: one event in twenty arrives up to 2 s
    # late.
    late_s=2.0,
    late_fraction=0.05,
    # A track breaks after a long occlusion or between cameras about once in fifty
    # track-minutes: a few visits in a hundred see one.
    fragmentation=0.02,
    # Id switches need two people close together; one in five hundred shared frames (about one
    # every four minutes of company at 2 frames a second).
    id_switch=0.002,
    # Cameras keep NTP time, but cheap ones drift by a tenth of a second or two between syncs.
    clock_skew_s=0.2,
    # The floor point under a person moves with their pose: about 5 cm.
    jitter_m=0.05,
)


# -- random draws -------------------------------------------------------------------------


class _Dice:
    """The random draws of one part of the noise, each keyed by what it is about.

    A draw is a hash of (seed, part, key), not the next number of a shared stream, so one
    part's draws do not shift when another part adds or drops events.
    """

    def __init__(self, seed: int, part: str) -> None:
        self._prefix = msgspec.msgpack.encode((seed, part))

    def _digest(self, key: tuple[Any, ...]) -> bytes:
        data = self._prefix + msgspec.msgpack.encode(key)
        return hashlib.blake2b(data, digest_size=16).digest()

    def random2(self, *key: Any) -> tuple[float, float]:
        """Two independent uniform numbers in [0, 1)."""
        d = self._digest(key)
        return (
            (int.from_bytes(d[:8]) >> 11) / 2.0**53,
            (int.from_bytes(d[8:]) >> 11) / 2.0**53,
        )

    def random(self, *key: Any) -> float:
        return self.random2(*key)[0]

    def gauss2(self, *key: Any) -> tuple[float, float]:
        """Two independent standard normal numbers (Box-Muller)."""
        u, v = self.random2(*key)
        r = math.sqrt(-2.0 * math.log(1.0 - u))
        return r * math.cos(2 * math.pi * v), r * math.sin(2 * math.pi * v)

    def rng(self, *key: Any) -> random.Random:
        """A generator of its own, for the rarer draws that want ``choice`` or ``uniform``."""
        return random.Random(int.from_bytes(self._digest(key)))

    def token(self, *key: Any) -> str:
        return self._digest(key).hex()[:12]


# -- what flows between the parts ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Report:
    """One event on its way to delivery."""

    event: ev.Event
    key: tuple[Any, ...]  # the clean event's id, plus a tag for a report noise added
    true_at: float  # when it really happened (POSIX seconds); the event time may be skewed
    delay: float = 0.0  # seconds from true_at to delivery

    def told(self, event: ev.Event) -> _Report:
        """This report, carrying ``event`` instead."""
        return _Report(event, self.key, self.true_at, self.delay)


Reports = list[_Report]


def _data(e: ev.Event) -> Any:
    """The type-specific fields (every raw event type has ``data``)."""
    return e.data  # type: ignore[attr-defined]


def _rebuild(e: ev.Event, **changes: Any) -> ev.Event:
    """The same report with some fields changed: another report, so a fresh content id."""
    fields = {"store": e.store, "at": e.at, "source": e.source, "subject": e.subject}
    return ev.new(type(e), **(fields | {"data": _data(e)} | changes))


def _with_samples(r: _Report, samples: tuple[ev.PositionSample, ...]) -> _Report:
    data = ev.PositionData(frame=_data(r.event).frame, samples=samples)
    return r.told(_rebuild(r.event, data=data))


def _second_camera(layout: Layout | None, e: ev.Event, zone: str | None, rng: random.Random) -> str:
    """Another camera that could have seen the same thing: one seeing ``zone``, if known."""
    cams = [c for c in layout.cameras if c.id != e.source] if layout else []
    seeing = [c.id for c in cams if zone in c.sees]
    if seeing or cams:
        return rng.choice(seeing or [c.id for c in cams])
    return f"{e.source[:126]}-2"


# -- the parts, in the order apply runs them ----------------------------------------------


def _track_noise(reports: Reports, fragmentation: float, id_switch: float, seed: int) -> Reports:
    """Fragmentation and id switches: a camera's track ids drift from the people they follow.

    Each camera (the samples' subject) labels each person; a fragment gives a person a fresh
    label, a switch swaps the labels of the two closest people in a frame, both for the rest
    of the visit. A frame is one camera's samples at one time, over however many events.
    Only position samples change: business events keep their shopper ids.
    """
    frag, switch = _Dice(seed, "fragmentation"), _Dice(seed, "id_switch")
    frames: dict[tuple[str, str, float], list[int]] = {}
    for i, r in enumerate(reports):
        if r.event.type == "position.samples":
            frames.setdefault((r.event.store, r.event.subject, r.true_at), []).append(i)
    label: dict[tuple[str, str, str], str] = {}  # (store, camera, true track) -> reported id
    since: dict[tuple[str, str, str], tuple[float, int]] = {}  # first seen, minutes checked
    out = list(reports)
    for (store, cam, at), indices in frames.items():
        people = {
            (store, cam, s.track): (s.x, s.y)
            for i in indices
            for s in _data(reports[i].event).samples
        }
        for person in people:
            first, checked = since.setdefault(person, (at, 0))
            label.setdefault(person, person[2])
            for minute in range(checked + 1, int((at - first) // 60) + 1):
                if frag.random(*person, minute) < fragmentation:
                    label[person] = "trk-" + frag.token(*person, minute)
                since[person] = (first, minute)
        if len(people) >= 2 and switch.random(store, cam, at) < id_switch:
            a, b = min(
                ((p, q) for p in people for q in people if p < q),
                key=lambda pq: math.dist(people[pq[0]], people[pq[1]]),
            )
            label[a], label[b] = label[b], label[a]
        for i in indices:
            samples = _data(reports[i].event).samples
            renamed = tuple(
                ev.PositionSample(label[(store, cam, s.track)], s.x, s.y) for s in samples
            )
            if renamed != samples:
                out[i] = _with_samples(reports[i], renamed)
    return out


def _jitter(reports: Reports, sigma: float, seed: int) -> Reports:
    """Gaussian noise of ``sigma`` metres on every x and y, kept to the millimetre."""
    dice = _Dice(seed, "jitter")

    def move(v: float, d: float) -> float:
        return min(1e5, max(-1e5, round(v + sigma * d, 3)))

    out = []
    for r in reports:
        if r.event.type == "position.samples":
            samples = tuple(
                ev.PositionSample(s.track, move(s.x, dx), move(s.y, dy))
                for j, s in enumerate(_data(r.event).samples)
                for dx, dy in [dice.gauss2(*r.key, j)]
            )
            r = _with_samples(r, samples)
        out.append(r)
    return out


def _missed_detections(reports: Reports, p: float, seed: int) -> Reports:
    """Each person in each frame goes unreported with probability ``p``; an empty frame too."""
    dice = _Dice(seed, "missed_detection")
    out = []
    for r in reports:
        if r.event.type == "position.samples":
            samples = _data(r.event).samples
            kept = tuple(s for j, s in enumerate(samples) if dice.random(*r.key, j) >= p)
            if not kept:
                continue
            if len(kept) < len(samples):
                r = _with_samples(r, kept)
        out.append(r)
    return out


def _missed_zone_events(reports: Reports, p: float, seed: int) -> Reports:
    """A zone.entered is missed with probability ``p``, and then so is its zone.exited."""
    dice = _Dice(seed, "missed_zone_event")
    missing: dict[tuple[str, str, str], bool] = {}  # (store, subject, zone) -> entry missed
    out = []
    for r in reports:
        e = r.event
        if e.type in ("zone.entered", "zone.exited"):
            where = (e.store, e.subject, _data(e).zone)
            if e.type == "zone.entered":
                missing[where] = dice.random(*r.key) < p
                if missing[where]:
                    continue
            elif missing.pop(where, False):
                continue
        out.append(r)
    return out


def _false_picks(reports: Reports, p: float, seed: int, layout: Layout) -> Reports:
    """After a pick, with probability ``p``: a neighbouring SKU of the same shelf is picked
    (0.2-1.5 s later) and put back (1-4 s after that), as when a hand brushes a product."""
    dice = _Dice(seed, "false_pick")
    shelves = {s.id: s for s in layout.shelves}
    out = []
    for r in reports:
        out.append(r)
        e = r.event
        if e.type != "item.picked" or dice.random(*r.key) >= p:
            continue
        picked = _data(e)
        shelf = shelves.get(picked.shelf)
        skus = shelf.skus if shelf else ()
        if picked.sku not in skus:
            continue
        i = skus.index(picked.sku)
        neighbours = [skus[j] for j in (i - 1, i + 1) if 0 <= j < len(skus)]
        if not neighbours:
            continue
        rng = dice.rng(*r.key)
        item = ev.ItemData(sku=rng.choice(neighbours), shelf=picked.shelf)
        touch = round(rng.uniform(0.2, 1.5), 3)
        steps = ((ev.ItemPicked, touch), (ev.ItemPutBack, touch + round(rng.uniform(1.0, 4.0), 3)))
        for cls, dt in steps:
            brushed = ev.new(
                cls,
                store=e.store,
                at=e.at + timedelta(seconds=dt),
                source=e.source,
                subject=e.subject,
                data=item,
            )
            out.append(_Report(brushed, (*r.key, "false_pick", cls.type), r.true_at + dt))
    return out


def _second_reports(
    reports: Reports,
    p: float,
    seed: int,
    part: str,
    types: frozenset[str],
    zone_of: Callable[[ev.Event], str | None],
    layout: Layout | None,
) -> Reports:
    """With probability ``p``, an event of ``types`` is reported again by a second camera:
    the same occurrence (time, subject, data) from another source, so a new id."""
    dice = _Dice(seed, part)
    out = []
    for r in reports:
        out.append(r)
        e = r.event
        if e.type in types and dice.random(*r.key) < p:
            cam = _second_camera(layout, e, zone_of(e), dice.rng(*r.key))
            camera_subject = e.subject == e.source or bool(
                layout and any(c.id == e.subject for c in layout.cameras)
            )
            again = _rebuild(e, source=cam, subject=cam if camera_subject else e.subject)
            out.append(_Report(again, (*r.key, part), r.true_at))
    return out


def _double_picks(reports: Reports, p: float, seed: int, layout: Layout | None) -> Reports:
    """A pick reported by two cameras: a real receipt error, the benchmark counts it."""

    def zone_of(e: ev.Event) -> str | None:
        shelves = {s.id: s.zone for s in layout.shelves} if layout else {}
        return shelves.get(_data(e).shelf)

    return _second_reports(
        reports, p, seed, "double_pick", frozenset({"item.picked"}), zone_of, layout
    )


def _duplicates_new_id(reports: Reports, p: float, seed: int, layout: Layout | None) -> Reports:
    """A frame reported by two overlapping cameras (only ``NEW_ID_TYPES``)."""

    def zone_of(e: ev.Event) -> str | None:
        samples = _data(e).samples
        return layout.zone_at(samples[0].x, samples[0].y) if layout and samples else None

    return _second_reports(reports, p, seed, "duplicate_new_id", NEW_ID_TYPES, zone_of, layout)


def _clock_skew(reports: Reports, skew: float, seed: int) -> Reports:
    """Each source's clock is off by one fixed amount in [-skew, +skew] (to the millisecond);
    its events carry the skewed time, and are still delivered when they really happened."""
    dice = _Dice(seed, "clock_skew")
    offsets: dict[tuple[str, str], float] = {}
    out = []
    for r in reports:
        e = r.event
        clock = (e.store, e.source)
        if clock not in offsets:
            offsets[clock] = round((2 * dice.random(*clock) - 1) * skew, 3)
        if offsets[clock]:
            r = r.told(_rebuild(e, at=e.at + timedelta(seconds=offsets[clock])))
        out.append(r)
    return out


def _duplicates_same_id(reports: Reports, p: float, seed: int) -> Reports:
    """A retried publish: the very same event delivered again, right after (or late)."""
    dice = _Dice(seed, "duplicate_same_id")
    out = []
    for r in reports:
        out.append(r)
        if dice.random(*r.key) < p:
            out.append(replace(r, key=(*r.key, "again")))
    return out


def _late_delivery(reports: Reports, late_s: float, fraction: float, seed: int) -> Reports:
    """A ``fraction`` of the events is delivered up to ``late_s`` after it happened."""
    dice = _Dice(seed, "late")
    out = []
    for r in reports:
        late, how = dice.random2(*r.key)
        out.append(replace(r, delay=late_s * (1.0 - how)) if late < fraction else r)
    return out


# -- the whole ----------------------------------------------------------------------------


def _check(profile: NoiseProfile, layout: Layout | None, events: Sequence[ev.Event]) -> None:
    try:
        msgspec.convert(msgspec.to_builtins(profile), NoiseProfile)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid noise profile: {exc}") from None
    if profile.false_pick and layout is None:
        raise ValueError(
            "false_pick needs the store layout: the neighbouring SKUs are its shelves'"
        )
    derived = next((e for e in events if e.derived), None)
    if derived is not None:
        raise ValueError(f"noise applies to raw events only, got {derived.type} {derived.id}")


def apply(
    events: Sequence[ev.Event], profile: NoiseProfile, *, seed: int, layout: Layout | None = None
) -> list[ev.Event]:
    """The noisy reports of a clean raw event stream (in event-time order), in delivery order.

    ``layout`` gives false picks their neighbouring SKUs (required for ``false_pick``) and
    second reports a real second camera (without it: ``<source>-2``). With ``OFF`` the
    input comes back unchanged.
    """
    _check(profile, layout, events)
    if profile == OFF:
        return list(events)
    p = profile
    reports = [_Report(e, (e.id,), e.at.timestamp()) for e in events]
    if p.fragmentation or p.id_switch:
        reports = _track_noise(reports, p.fragmentation, p.id_switch, seed)
    if p.jitter_m:
        reports = _jitter(reports, p.jitter_m, seed)
    if p.missed_detection:
        reports = _missed_detections(reports, p.missed_detection, seed)
    if p.missed_zone_event:
        reports = _missed_zone_events(reports, p.missed_zone_event, seed)
    if p.false_pick:
        assert layout is not None  # _check
        reports = _false_picks(reports, p.false_pick, seed, layout)
    if p.double_pick:
        reports = _double_picks(reports, p.double_pick, seed, layout)
    if p.duplicate_new_id:
        reports = _duplicates_new_id(reports, p.duplicate_new_id, seed, layout)
    if p.clock_skew_s:
        reports = _clock_skew(reports, p.clock_skew_s, seed)
    if p.duplicate_same_id:
        reports = _duplicates_same_id(reports, p.duplicate_same_id, seed)
    if p.late_s and p.late_fraction:
        reports = _late_delivery(reports, p.late_s, p.late_fraction, seed)
    reports.sort(key=lambda r: r.true_at + r.delay)  # stable: ties keep the stream's order
    return [r.event for r in reports]
