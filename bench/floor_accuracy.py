"""The floor adapters against the simulator's truth: every camera of a store, from boxes.

    .venv/bin/python bench/floor_accuracy.py [--minutes 10] [--shoppers 40] [--seed 1]
        [--jitter 0.02] [--drop 0.05] [--store examples/stores/convenience.yaml]

A simulated store's visitors are filmed by every camera of the layout without rasterising
a picture (``simulator.render.truth_boxes``: the boxes the rendered video's ground truth
would hold). Those boxes, as perfect detections or with jitter (a share of the box's size,
Gaussian per side) and dropped boxes, go through the adapters from per-camera tracking to
events (``adapters.store_floor``), and the events are set beside the simulator's own
(``simulator/eyes/accuracy.py``, shared with ``bench/video_accuracy.py`` and ``aisle
simulate --video``):

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
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.store_floor import FloorSettings, StoreFloor  # noqa: E402
from adapters.tracking import Tracked  # noqa: E402
from core import events as ev  # noqa: E402
from core.layout import Layout, load_layout  # noqa: E402
from simulator.day import Run, simulate  # noqa: E402
from simulator.eyes import accuracy  # noqa: E402
from simulator.eyes.accuracy import Figures  # noqa: E402
from simulator.render import RenderOptions, truth_boxes  # noqa: E402

STORE = ROOT / "examples" / "stores" / "convenience.yaml"


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


# -- comparing (simulator/eyes/accuracy.py) -----------------------------------------------


def truth_rows(filmed: Filmed) -> dict[str, np.ndarray]:
    """Each camera's boxes as MOTChallenge ground-truth rows, frames counted from 0 as the
    adapters are fed them here."""
    out = {}
    for camera, boxes in filmed.boxes.items():
        ids: dict[str, int] = {}
        out[camera] = np.array(
            [
                (k, ids.setdefault(track, len(ids) + 1), x, y, w, h, 1.0)
                for k, rows in enumerate(boxes)
                for track, (x, y, w, h), _ in rows
            ],
            dtype=float,
        ).reshape(-1, 7)
    return out


def compare(filmed: Filmed, adapted: Adapted) -> Figures:
    gt = truth_rows(filmed)
    return accuracy.compare(
        filmed.layout,
        filmed.origin,
        filmed.run.events,
        adapted.events,
        {camera: (gt[camera], adapted.tracked[camera]) for camera in gt},
        visitors=len(filmed.run.visitors),
        seconds=adapted.seconds,
    )


def report(f: Figures) -> str:
    return "\n".join(accuracy.figures_lines(f))


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
