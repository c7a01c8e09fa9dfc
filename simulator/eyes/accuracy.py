"""The floor adapters' events set beside the simulator's true ones, event by event.

Shared by ``bench/floor_accuracy.py`` (boxes without pixels), ``bench/video_accuracy.py``
and ``aisle simulate --video`` (rendered video):

- entries and exits: each adapter crossing paired with a true one of the same line within
  ``PAIR_S``; unpaired adapter crossings are double counts (or false ones);
- zone visits: the true visits of at least ``MIN_VISIT_S`` (the traffic pack's
  ``min_dwell``), each with the adapter visit of the same zone by the same person that
  overlaps it most (an adapter subject is a person by the majority of its samples); the
  share whose dwell is within ``DWELL_WITHIN_S``;
- the heatmap: dwell per 0.5 m cell from the position samples, as the heatmap pack counts
  it, the adapters' against the truth's (Pearson r);
- tracking: per camera, MOTA and IDF1 against the ground-truth boxes (IoU 0.5); on the
  floor, MOTA, IDF1 and the id switches of the fused tracks against the true positions
  (``FLOOR_MATCH_M``), which is what the cross-camera hand-off gains or loses.

Times are seconds from ``origin``, the first arrival: the rendered video's time zero, and
the zero of both the simulator's and the adapters' position sample frames.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec
import numpy as np

from adapters.track_scoring import FloorRow, MotScore, rows_of, score, score_floor
from adapters.tracking import Tracked
from core import events as ev
from core.layout import Layout

__all__ = [
    "CELL_M",
    "DWELL_WITHIN_S",
    "FLOOR_MATCH_M",
    "MIN_VISIT_S",
    "PAIR_S",
    "Figures",
    "cell_dwell",
    "compare",
    "crossings",
    "figures_lines",
    "pairs",
    "samples",
    "visits",
    "who",
]

PAIR_S = 2.0
MIN_VISIT_S = 10.0
DWELL_WITHIN_S = 1.0
CELL_M = 0.5
DWELL_CAP_S = 2.0
FLOOR_MATCH_M = 0.75
FRAME_S = 0.5
"""The position samples' period (the simulator's frame, the adapters' ``sample_s``)."""


class Figures(msgspec.Struct, kw_only=True):
    """What one comparison measured."""

    minutes: float
    visitors: int
    true_entries: int
    entries: int
    entries_paired: int
    true_exits: int
    exits: int
    exits_paired: int
    true_visits: int
    visits_found: int
    visits_within_1s: int
    heatmap_r: float
    floor: MotScore
    subjects: int
    subjects_per_visitor: float
    cameras: dict[str, MotScore]
    seconds: float
    """Wall-clock seconds the adapters took (what they were given to work on varies)."""

    @property
    def entries_right(self) -> float:
        return _share(self.entries_paired, max(self.true_entries, self.entries))

    @property
    def exits_right(self) -> float:
        return _share(self.exits_paired, max(self.true_exits, self.exits))

    @property
    def dwell_within_1s(self) -> float:
        return _share(self.visits_within_1s, self.true_visits)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def _seconds(origin: datetime, at: datetime) -> float:
    return (at - origin).total_seconds()


def pairs(
    truth: Sequence[tuple[float, str]], got: Sequence[tuple[float, str]], within: float
) -> int:
    """How many of ``got`` pair one-to-one with ``truth`` (same key, times within)."""
    free = sorted(truth)
    paired = 0
    for at, key in sorted(got):
        best = None
        for i, (t, k) in enumerate(free):
            if k == key and abs(t - at) <= within and (best is None or abs(t - at) < best[0]):
                best = (abs(t - at), i)
        if best is not None:
            free.pop(best[1])
            paired += 1
    return paired


def crossings(origin: datetime, events: Sequence[ev.Event], kind: type) -> list[tuple[float, str]]:
    """(seconds, line) of every event of ``kind`` (entries or exits)."""
    return [(_seconds(origin, e.at), e.data.line) for e in events if isinstance(e, kind)]


def visits(origin: datetime, events: Sequence[ev.Event]) -> list[tuple[str, str, float, float]]:
    """(subject, zone, entered, exited) from zone.entered and zone.exited pairs."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for e in sorted(events, key=lambda e: e.at):
        if isinstance(e, ev.ZoneEntered):
            open_[(e.subject, e.data.zone)] = _seconds(origin, e.at)
        elif isinstance(e, ev.ZoneExited):
            began = open_.pop((e.subject, e.data.zone), None)
            if began is not None:
                out.append((e.subject, e.data.zone, began, _seconds(origin, e.at)))
    return out


def samples(layout: Layout, events: Sequence[ev.Event]) -> list[FloorRow]:
    """(frame, track, x, y) of every position sample on the store's floor."""
    return [
        (e.data.frame, s.track, s.x, s.y)
        for e in events
        if isinstance(e, ev.PositionSamples)
        for s in e.data.samples
        if layout.zone_at(s.x, s.y) is not None
    ]


def cell_dwell(rows: Sequence[FloorRow], frame_s: float = FRAME_S) -> Counter[tuple[int, int]]:
    """Dwell per cell as the heatmap pack counts it: the time since the person's previous
    sample, if at most the cap, in the cell of the later sample."""
    dwell: Counter[tuple[int, int]] = Counter()
    last: dict[str, int] = {}
    for frame, track, x, y in sorted(rows):
        before = last.get(track)
        gap = (frame - before) * frame_s if before is not None else math.inf
        if gap <= DWELL_CAP_S:
            dwell[(math.floor(x / CELL_M), math.floor(y / CELL_M))] += gap
        last[track] = frame
    return dwell


def who(truth: Sequence[FloorRow], got: Sequence[FloorRow]) -> dict[str, str]:
    """Each adapter subject's person: the true track nearest most of its samples."""
    by_frame: dict[int, list[FloorRow]] = {}
    for row in truth:
        by_frame.setdefault(row[0], []).append(row)
    votes: dict[str, Counter[str]] = {}
    for frame, subject, x, y in got:
        near = [
            (math.hypot(x - tx, y - ty), track)
            for _, track, tx, ty in by_frame.get(frame, [])
            if math.hypot(x - tx, y - ty) <= FLOOR_MATCH_M
        ]
        if near:
            votes.setdefault(subject, Counter())[min(near)[1]] += 1
    return {subject: c.most_common(1)[0][0] for subject, c in votes.items()}


def correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson r; NaN when either side is constant or there are fewer than two values."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def compare(
    layout: Layout,
    origin: datetime,
    truth_events: Sequence[ev.Event],
    events: Sequence[ev.Event],
    cameras: Mapping[str, tuple[np.ndarray, Sequence[Tracked]]],
    *,
    visitors: int,
    seconds: float,
) -> Figures:
    """The adapters' ``events`` against the simulator's ``truth_events``; ``cameras``: per
    camera, its MOTChallenge ground truth rows (frame, id, x, y, w, h, 1) and what its
    tracker made of the same frames (frame numbers counted alike)."""
    te = crossings(origin, truth_events, ev.ShopperEntered)
    ge = crossings(origin, events, ev.ShopperEntered)
    tx = crossings(origin, truth_events, ev.ShopperExited)
    gx = crossings(origin, events, ev.ShopperExited)
    true_rows, got_rows = samples(layout, truth_events), samples(layout, events)
    person = who(true_rows, got_rows)
    mine: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for subject, zone, a, b in visits(origin, events):
        if subject in person:
            mine.setdefault((person[subject], zone), []).append((a, b))
    long_visits = [v for v in visits(origin, truth_events) if v[3] - v[2] >= MIN_VISIT_S]
    found = within = 0
    for visitor, zone, a, b in long_visits:
        overlaps = [(min(b, d) - max(a, c), c, d) for c, d in mine.get((visitor, zone), [])]
        overlaps = [o for o in overlaps if o[0] > 0]
        if overlaps:
            found += 1
            _, c, d = max(overlaps)
            within += abs((d - c) - (b - a)) <= DWELL_WITHIN_S
    truth_cells, got_cells = cell_dwell(true_rows), cell_dwell(got_rows)
    cells = sorted(set(truth_cells) | set(got_cells))
    r = correlation([truth_cells[c] for c in cells], [got_cells[c] for c in cells])
    per_visitor = Counter(person.values())
    scores = {camera: score(gt, rows_of(tracked)) for camera, (gt, tracked) in cameras.items()}
    times = [e.at for e in truth_events]
    return Figures(
        minutes=(max(times) - origin).total_seconds() / 60 if times else 0.0,
        visitors=visitors,
        true_entries=len(te),
        entries=len(ge),
        entries_paired=pairs(te, ge, PAIR_S),
        true_exits=len(tx),
        exits=len(gx),
        exits_paired=pairs(tx, gx, PAIR_S),
        true_visits=len(long_visits),
        visits_found=found,
        visits_within_1s=within,
        heatmap_r=r,
        floor=score_floor(true_rows, got_rows, FLOOR_MATCH_M),
        subjects=len({row[1] for row in got_rows}),
        subjects_per_visitor=(sum(per_visitor.values()) / len(per_visitor)) if person else 0.0,
        cameras=scores,
        seconds=seconds,
    )


def figures_lines(f: Figures) -> list[str]:
    """The figures as a few lines of text (the benches' report)."""
    return [
        f"{f.minutes:.1f} simulated minutes, {f.visitors} visitors, "
        f"adapters took {f.seconds:.1f} s",
        f"entries  {f.entries:4d} of {f.true_entries:4d} true, {f.entries_paired} paired "
        f"within {PAIR_S:g} s: {100 * f.entries_right:.1f} % right",
        f"exits    {f.exits:4d} of {f.true_exits:4d} true, {f.exits_paired} paired "
        f"within {PAIR_S:g} s: {100 * f.exits_right:.1f} % right",
        f"zone visits of {MIN_VISIT_S:g} s or more: {f.visits_found} of {f.true_visits} found, "
        f"{100 * f.dwell_within_1s:.1f} % with the dwell within {DWELL_WITHIN_S:g} s",
        f"heatmap cell dwell: r = {f.heatmap_r:.3f}",
        f"floor (all cameras fused): MOTA {f.floor.mota:.3f}, IDF1 {f.floor.idf1:.3f}, "
        f"{f.floor.switches} id switches; {f.subjects} subjects, "
        f"{f.subjects_per_visitor:.2f} per visitor seen",
        "per camera: "
        + "; ".join(
            f"{camera} MOTA {s.mota:.3f} IDF1 {s.idf1:.3f} ({s.switches} sw)"
            for camera, s in f.cameras.items()
        ),
    ]
