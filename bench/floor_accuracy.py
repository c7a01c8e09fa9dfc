"""The floor adapters against the simulator's truth: every camera of a store, from boxes.

    .venv/bin/python bench/floor_accuracy.py [--minutes 10] [--shoppers 40] [--seed 1]
        [--jitter 0.02] [--drop 0.05] [--store examples/stores/convenience.yaml]

A simulated store's visitors are filmed by every camera of the layout without rasterising
a picture (``simulator.render.truth_boxes``: the boxes the rendered video's ground truth
would hold). Those boxes, as perfect detections or with jitter (a share of the box's size,
Gaussian per side) and dropped boxes, go through the adapters from per-camera tracking to
events (``adapters.store_floor``), and the events are set beside the simulator's own:

- entries and exits: each adapter crossing paired with a true one of the same line within
  ``PAIR_S``; unpaired adapter crossings are double counts (or false ones);
- zone visits: the true visits of at least ``MIN_VISIT_S`` (the traffic pack's
  ``min_dwell``), each with the adapter visit of the same zone by the same person that
  overlaps it most (an adapter subject is a person by the majority of its samples); the
  share whose dwell is within 1 s;
- the heatmap: dwell per 0.5 m cell from the position samples, as the heatmap pack counts
  it, the adapters' against the truth's (Pearson r);
- tracking: per camera, MOTA and IDF1 against the boxes (IoU 0.5); on the floor, MOTA,
  IDF1 and the id switches of the fused tracks against the true positions (0.75 m), which
  is what the cross-camera hand-off gains or loses.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.store_floor import FloorSettings, StoreFloor  # noqa: E402
from adapters.track_scoring import FloorRow, MotScore, rows_of, score, score_floor  # noqa: E402
from adapters.tracking import Tracked  # noqa: E402
from core import events as ev  # noqa: E402
from core.layout import Layout, load_layout  # noqa: E402
from simulator.day import Run, simulate  # noqa: E402
from simulator.render import RenderOptions, truth_boxes  # noqa: E402

STORE = ROOT / "examples" / "stores" / "convenience.yaml"
PAIR_S = 2.0
MIN_VISIT_S = 10.0
CELL_M = 0.5
DWELL_CAP_S = 2.0
FLOOR_MATCH_M = 0.75


class Figures(msgspec.Struct, kw_only=True):
    """What one run measured."""

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
    """Wall-clock seconds, boxes to events (the boxes' making not included)."""

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


class Filmed(msgspec.Struct, kw_only=True):
    """A simulated run filmed by every camera: boxes per camera per frame."""

    layout: Layout
    run: Run
    origin: datetime
    times: dict[str, list[float]]
    boxes: dict[str, list[list[tuple[str, tuple[int, int, int, int], float]]]]


def film(
    layout: Layout,
    minutes: float,
    shoppers: int,
    seed: int,
    min_visibility: float = RenderOptions.min_visibility,
) -> Filmed:
    """Simulate ``minutes`` of the store and take every camera's ground-truth boxes."""
    start = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo(layout.store.timezone))
    run = simulate(layout, start, hours=minutes / 60, shoppers=shoppers, seed=seed)
    origin = min(v.start for v, t in zip(run.visitors, run.truth, strict=True) if t.path)
    options = RenderOptions(seed=seed, min_visibility=min_visibility)
    times: dict[str, list[float]] = {}
    boxes = {}
    for camera in layout.cameras:
        frames = list(run.people(camera.fps))
        times[camera.id] = [t for t, _ in frames]
        boxes[camera.id] = list(truth_boxes(layout, camera.id, frames, options))
    return Filmed(layout=layout, run=run, origin=origin, times=times, boxes=boxes)


def detections(
    filmed: Filmed, jitter: float, drop: float, seed: int
) -> Iterator[tuple[str, int, float, np.ndarray, np.ndarray]]:
    """Every camera's frames in time order: (camera, frame, time, xyxy boxes, scores)."""
    rng = np.random.default_rng(seed)
    order = sorted((t, camera, k) for camera, ts in filmed.times.items() for k, t in enumerate(ts))
    for t, camera, k in order:
        rows = filmed.boxes[camera][k]
        xyxy = np.array([(x, y, x + w, y + h) for _, (x, y, w, h), _ in rows], dtype=float).reshape(
            -1, 4
        )
        if len(xyxy) and jitter > 0:
            size = np.c_[xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]]
            xyxy += rng.normal(0.0, jitter, xyxy.shape) * np.tile(size, 2)
            xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2] + 1.0)
        keep = rng.random(len(xyxy)) >= drop
        yield camera, k, t, xyxy[keep], np.full(int(keep.sum()), 0.95)


class Adapted(msgspec.Struct, kw_only=True):
    events: list[ev.Event]
    tracked: dict[str, list[Tracked]]
    seconds: float


def adapt(
    filmed: Filmed,
    jitter: float = 0.0,
    drop: float = 0.0,
    seed: int = 1,
    settings: FloorSettings | None = None,
) -> Adapted:
    """Run the floor adapters over every camera's boxes."""
    tracked: dict[str, list[Tracked]] = {c: [] for c in filmed.times}
    floor = StoreFloor(
        filmed.layout,
        filmed.origin,
        settings,
        on_tracked=lambda camera, ts: tracked[camera].extend(ts),
    )
    began = time.perf_counter()
    events: list[ev.Event] = []
    for camera, frame, t, xyxy, scores in detections(filmed, jitter, drop, seed):
        events += floor.frame(camera, frame, t, xyxy, scores)
    events += floor.close()
    return Adapted(events=events, tracked=tracked, seconds=time.perf_counter() - began)


# -- comparing ---------------------------------------------------------------------------------


def _seconds(filmed: Filmed, at: datetime) -> float:
    return (at - filmed.origin).total_seconds()


def _pairs(
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


def crossings(filmed: Filmed, events: Sequence[ev.Event], kind: type) -> list[tuple[float, str]]:
    return [(_seconds(filmed, e.at), e.data.line) for e in events if isinstance(e, kind)]


def visits(filmed: Filmed, events: Sequence[ev.Event]) -> list[tuple[str, str, float, float]]:
    """(subject, zone, entered, exited) from zone.entered and zone.exited pairs."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for e in sorted(events, key=lambda e: e.at):
        if isinstance(e, ev.ZoneEntered):
            open_[(e.subject, e.data.zone)] = _seconds(filmed, e.at)
        elif isinstance(e, ev.ZoneExited):
            began = open_.pop((e.subject, e.data.zone), None)
            if began is not None:
                out.append((e.subject, e.data.zone, began, _seconds(filmed, e.at)))
    return out


def samples(filmed: Filmed, events: Sequence[ev.Event]) -> list[FloorRow]:
    """(frame, track, x, y) of every position sample on the store's floor."""
    return [
        (e.data.frame, s.track, s.x, s.y)
        for e in events
        if isinstance(e, ev.PositionSamples)
        for s in e.data.samples
        if filmed.layout.zone_at(s.x, s.y) is not None
    ]


def cell_dwell(rows: Sequence[FloorRow], frame_s: float) -> Counter[tuple[int, int]]:
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


def compare(filmed: Filmed, adapted: Adapted) -> Figures:
    truth_events, events = filmed.run.events, adapted.events
    te = crossings(filmed, truth_events, ev.ShopperEntered)
    ge = crossings(filmed, events, ev.ShopperEntered)
    tx = crossings(filmed, truth_events, ev.ShopperExited)
    gx = crossings(filmed, events, ev.ShopperExited)
    true_rows, got_rows = samples(filmed, truth_events), samples(filmed, events)
    person = who(true_rows, got_rows)
    mine: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for subject, zone, a, b in visits(filmed, events):
        if subject in person:
            mine.setdefault((person[subject], zone), []).append((a, b))
    long_visits = [v for v in visits(filmed, truth_events) if v[3] - v[2] >= MIN_VISIT_S]
    found = within = 0
    for visitor, zone, a, b in long_visits:
        overlaps = [(min(b, d) - max(a, c), c, d) for c, d in mine.get((visitor, zone), [])]
        overlaps = [o for o in overlaps if o[0] > 0]
        if overlaps:
            found += 1
            _, c, d = max(overlaps)
            within += abs((d - c) - (b - a)) <= 1.0
    frame_s = 0.5
    truth_cells, got_cells = cell_dwell(true_rows, frame_s), cell_dwell(got_rows, frame_s)
    cells = sorted(set(truth_cells) | set(got_cells))
    r = float(np.corrcoef([truth_cells[c] for c in cells], [got_cells[c] for c in cells])[0, 1])
    per_visitor = Counter(person.values())
    cameras = {}
    for camera, boxes in filmed.boxes.items():
        ids: dict[str, int] = {}
        gt = np.array(
            [
                (k, ids.setdefault(track, len(ids) + 1), x, y, w, h, 1.0)
                for k, rows in enumerate(boxes)
                for track, (x, y, w, h), _ in rows
            ],
            dtype=float,
        ).reshape(-1, 7)
        cameras[camera] = score(gt, rows_of(adapted.tracked[camera]))
    return Figures(
        minutes=(max(max(t) for t in filmed.times.values())) / 60,
        visitors=len(filmed.run.visitors),
        true_entries=len(te),
        entries=len(ge),
        entries_paired=_pairs(te, ge, PAIR_S),
        true_exits=len(tx),
        exits=len(gx),
        exits_paired=_pairs(tx, gx, PAIR_S),
        true_visits=len(long_visits),
        visits_found=found,
        visits_within_1s=within,
        heatmap_r=r,
        floor=score_floor(true_rows, got_rows, FLOOR_MATCH_M),
        subjects=len({row[1] for row in got_rows}),
        subjects_per_visitor=(sum(per_visitor.values()) / len(per_visitor)) if person else 0.0,
        cameras=cameras,
        seconds=adapted.seconds,
    )


def report(f: Figures) -> str:
    lines = [
        f"{f.minutes:.1f} simulated minutes, {f.visitors} visitors, "
        f"boxes to events in {f.seconds:.1f} s",
        f"entries  {f.entries:4d} of {f.true_entries:4d} true, {f.entries_paired} paired "
        f"within {PAIR_S:g} s: {100 * f.entries_right:.1f} % right",
        f"exits    {f.exits:4d} of {f.true_exits:4d} true, {f.exits_paired} paired "
        f"within {PAIR_S:g} s: {100 * f.exits_right:.1f} % right",
        f"zone visits of {MIN_VISIT_S:g} s or more: {f.visits_found} of {f.true_visits} found, "
        f"{100 * f.dwell_within_1s:.1f} % with the dwell within 1 s",
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
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--shoppers", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jitter", type=float, default=0.0, help="box jitter, share of size")
    parser.add_argument("--drop", type=float, default=0.0, help="share of boxes dropped")
    parser.add_argument("--min-visibility", type=float, default=RenderOptions.min_visibility)
    args = parser.parse_args()
    layout = load_layout(args.store)
    began = time.perf_counter()
    filmed = film(layout, args.minutes, args.shoppers, args.seed, args.min_visibility)
    print(f"boxes of {len(filmed.times)} cameras in {time.perf_counter() - began:.1f} s")
    figures = compare(filmed, adapt(filmed, args.jitter, args.drop, args.seed))
    print(report(figures))


if __name__ == "__main__":
    main()
