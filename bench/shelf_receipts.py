"""Receipts from the shelves (issue 16): rendered shelf-camera video and simulated weight
sensors in, receipts out, against the simulator's true carts; with both, with the weight
sensors alone and with the shelf cameras alone.

    nice -n 10 .venv/bin/python bench/shelf_receipts.py [--shoppers 500] [--hours 15] \\
        [--seed 1] [--fps 5] [--workers 2] [--save readings.pickle | --load readings.pickle]

**The store.** The example convenience store with every slot weighed (a load cell under
each) and every shelf filmed (a shelf camera facing its front, 640x480, its slots' boxes
side by side across the image, as wide as their facings): the layout is built here from
``examples/stores/convenience.yaml``.

**Weights.** ``simulator/loadcells.py``'s readings of every cell for the whole day, 10
a second within 20 s of a hand on the slot and one a second otherwise (noise, drift,
the hand on the shelf), through ``ShelfAdapter`` with the
simulator's position samples and entries, merged in time. Each slot holds 40 units a
facing at the start, so that none runs empty in the day (no restocking is simulated). A
product put back on a shelf with no slot of its own lands on one of that shelf's slots
(``strays``); the shelf cameras' renderer does not draw those (it draws a slot's own
goods), so the cameras alone miss them.

**Cameras.** Rendering and reading a whole day of seven shelf cameras is out of reach on
this CPU (the script prints the cost a frame; docs/benchmarks.md has the arithmetic), so
only the frames around the shelf interactions are rendered: the simulator's picks and
put-backs at each shelf become reaches (``reaches_from_events``), reaches less than
``--gap`` seconds apart make one clip, and each clip is rendered from a second before its
first reach (0.6 s) to a second after its last, with the slot's facings full (a put-back's slot with
a facing free for it, as a faced-up shelf would be), written to an MJPG file, decoded and
read by ``ShelfWatch`` (MediaPipe hands) with the simulator's positions of that time.
Each worker process has one hand tracker, reset at each clip's first frames (no hand).

**Receipts.** The day's events with the simulator's picks and put-backs replaced by what
the adapters made of them, in event-time order, through the standard rule packs
(``bench/receipt_accuracy.py``'s ``derive``), compared with the true carts
(``compare_receipts``: exactly one receipt with every true line and quantity). Every
wrong cart is listed with its cause: a change sent to review (and why), a pick or
put-back given to another cart, one no adapter found, one found that did not happen.
The floor's positions are the simulator's, not tracked from rendered floor video.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import multiprocessing as mp
import pickle
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.attribution import Positions  # noqa: E402
from adapters.shelf import ShelfAdapter  # noqa: E402
from adapters.shelfcam import HandFinder, ShelfReading, ShelfWatch, watch_video  # noqa: E402
from adapters.shelfcam_events import CameraEvents  # noqa: E402
from bench import stamp  # noqa: E402
from bench.receipt_accuracy import count, derive  # noqa: E402
from core import events as ev  # noqa: E402
from core.layout import Layout, load_layout_text  # noqa: E402
from simulator.day import Run, simulate  # noqa: E402
from simulator.loadcells import CellNoise, readings  # noqa: E402
from simulator.scenario_report import CartReceipts, compare_receipts  # noqa: E402
from simulator.shelfcam import REACH_S, Reach, reaches_from_events, render_shelf_camera  # noqa: E402
from simulator.shoppers import Store  # noqa: E402

EXAMPLE = ROOT / "examples" / "stores" / "convenience.yaml"
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
TARGET = 0.995
# 40 units a facing: no slot runs empty in the day; a reading a second far from any hand
NOISE = CellNoise(depth=40, quiet_hz=1.0)
MODES = ("weights and cameras", "weights alone", "cameras alone")
MOVES = (ev.ItemPicked, ev.ItemPutBack)


def shelved_layout(fps: float, source: Path = EXAMPLE) -> tuple[Layout, str]:
    """The example store with a load cell under every slot and a shelf camera facing
    every shelf; the layout and its YAML text (for worker processes)."""
    doc = yaml.safe_load(source.read_text())
    zones = {z["id"]: z for z in doc["zones"]}
    cams = []
    for shelf in doc["shelves"]:
        for i, slot in enumerate(shelf["slots"]):
            slot.setdefault("sensor", f"{shelf['id']}-w{i + 1}")
        cams.append(_camera(shelf, zones[shelf["zone"]], fps))
    doc["shelf_cameras"] = cams
    text = yaml.safe_dump(doc, sort_keys=False)
    return load_layout_text(text, "shelved convenience store"), text


def _camera(shelf: dict, zone: dict, fps: float) -> dict:
    """A shelf camera facing ``shelf``'s front (its footprint's edge nearest the zone a
    shopper stands in), slots side by side, each box as wide as its facings."""
    pts = [tuple(p) for p in shelf["footprint"]]
    if len(pts) == 2:
        span = pts
    else:
        zx = sum(p[0] for p in zone["polygon"]) / len(zone["polygon"])
        zy = sum(p[1] for p in zone["polygon"]) / len(zone["polygon"])
        edges = [(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
        span = list(
            min(
                edges,
                key=lambda e: math.hypot(
                    (e[0][0] + e[1][0]) / 2 - zx, (e[0][1] + e[1][1]) / 2 - zy
                ),
            )
        )
    slots = shelf["slots"]
    gap, left, right = 10, 20, 620
    per = (right - left - gap * (len(slots) - 1)) / sum(s["facings"] for s in slots)
    x, boxes = float(left), []
    for s in slots:
        w = per * s["facings"]
        boxes.append({"sku": s["sku"], "box": [round(x), 110, round(x + w), 250]})
        x += w + gap
    return {
        "id": f"shelfcam-{shelf['id']}",
        "shelf": shelf["id"],
        "image": {"width": 640, "height": 480},
        "fps": fps,
        "span": [list(p) for p in span],
        "slots": boxes,
    }


@dataclass(frozen=True, slots=True)
class Clip:
    """Frames of one shelf camera around a run of reaches close in time."""

    camera: str
    start: datetime  # the clip's first frame
    seconds: float
    reaches: tuple[Reach, ...]  # start_s from the clip's first frame
    stock: tuple[tuple[str, int], ...]
    positions: tuple[tuple[datetime, tuple[tuple[str, float, float], ...]], ...]
    seed: int


def clips_of(
    layout: Layout,
    run: Run,
    day_start: datetime,
    gap_s: float,
    lead_s: float = 0.6,
    tail_s: float = 1.0,
) -> list[Clip]:
    """Every shelf camera's clips: the reaches of the day's picks and put-backs at its
    shelf, those less than ``gap_s`` apart in one clip."""
    frames = [e for e in run.events if isinstance(e, ev.PositionSamples)]
    times = [e.at for e in frames]
    out: list[Clip] = []
    for cam in layout.shelf_cameras:
        facings = {s.sku: s.facings for s in layout.shelf(cam.shelf).slots}
        reaches = sorted(
            reaches_from_events(layout, cam.id, run.events, day_start), key=lambda r: r.start_s
        )
        runs: list[list[Reach]] = []
        for r in reaches:
            if runs and r.start_s < max(x.start_s for x in runs[-1]) + REACH_S + gap_s:
                runs[-1].append(r)
            else:
                runs.append([r])
        for group in runs:
            t0 = group[0].start_s - lead_s
            end = max(r.start_s for r in group) + REACH_S + tail_s
            start = day_start + timedelta(seconds=t0)
            backs = Counter(r.sku for r in group if r.action == "put_back")
            stock = tuple((sku, max(0, n - backs[sku])) for sku, n in facings.items())
            lo = bisect.bisect_left(times, start - timedelta(seconds=5))
            hi = bisect.bisect_right(times, start + timedelta(seconds=end - t0 + 1))
            positions = tuple(
                (f.at, tuple((s.track, s.x, s.y) for s in f.data.samples)) for f in frames[lo:hi]
            )
            out.append(
                Clip(
                    cam.id, start, end - t0,
                    tuple(replace(r, start_s=r.start_s - t0) for r in group),
                    stock, positions, seed=len(out),
                )
            )  # fmt: skip
    return out


_WORKER: dict[str, object] = {}


def _init_worker(layout_text: str, workdir: str) -> None:
    _WORKER["layout"] = load_layout_text(layout_text, "shelved convenience store")
    _WORKER["workdir"] = Path(workdir)


@dataclass(frozen=True, slots=True)
class Watched:
    readings: tuple[ShelfReading, ...]
    frames: int
    render_s: float
    read_s: float  # decoding and the shelf watch (MediaPipe hands, the slots' looks)


def watch_clip(clip: Clip) -> Watched:
    """Render one clip, decode it, and read it with the camera's shelf watch."""
    layout = _WORKER["layout"]
    assert isinstance(layout, Layout)
    finder = _WORKER.get("finder")
    if finder is None:
        finder = _WORKER["finder"] = HandFinder()
    assert isinstance(finder, HandFinder)
    path = Path(str(_WORKER["workdir"])) / f"clip-{clip.seed}.avi"
    began = time.perf_counter()
    render_shelf_camera(
        layout, clip.camera, clip.reaches, path, seconds=clip.seconds,
        stock=dict(clip.stock), seed=clip.seed,
    )  # fmt: skip
    rendered = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    positions = Positions(keep_s=3600, per_subject=10_000)
    for at, samples in clip.positions:
        positions.add(at, samples)
    watch = ShelfWatch(layout, clip.camera, finder=finder)
    got = watch_video(watch, frames, clip.start, positions)
    done = time.perf_counter()
    path.unlink(missing_ok=True)
    Path(f"{path}.truth.json").unlink(missing_ok=True)
    return Watched(tuple(got), len(frames), rendered - began, done - rendered)


def watch_all(clips: Sequence[Clip], layout_text: str, workers: int) -> list[Watched]:
    with tempfile.TemporaryDirectory(prefix="aisle-shelfclips-") as workdir:
        if workers <= 1:
            _init_worker(layout_text, workdir)
            return [watch_clip(c) for c in clips]
        ctx = mp.get_context("spawn")  # no mediapipe state forked into the workers
        with ctx.Pool(workers, _init_worker, (layout_text, workdir)) as pool:
            return list(pool.imap(watch_clip, clips, chunksize=4))


def weigh(
    layout: Layout, run: Run, start: datetime, end: datetime, seen: Iterable[ShelfReading],
    seed: int,
) -> tuple[list[ev.Event], list[ev.Event], int]:  # fmt: skip
    """The day's readings through two shelf adapters, one with the cameras' readings as
    evidence and one without: what each made, and the readings taken."""
    alone, fused = ShelfAdapter(layout), ShelfAdapter(layout)
    for r in sorted(seen, key=lambda r: r.started):
        fused.seen(r)
    cells = readings(layout, run.events, start, end, seed=seed, noise=NOISE, strays=True)
    floor = [e for e in run.events if isinstance(e, ev.PositionSamples | ev.ShopperEntered)]
    merged = heapq.merge(
        ((r.at, 1, r) for r in cells), ((e.at, 0, e) for e in floor), key=lambda x: x[:2]
    )
    out_alone: list[ev.Event] = []
    out_fused: list[ev.Event] = []
    n = 0
    for _, _, x in merged:
        if isinstance(x, ev.ShopperEntered):
            alone.entered(x)
            fused.entered(x)
        elif isinstance(x, ev.PositionSamples):
            alone.samples(x)
            fused.samples(x)
            out_alone += alone.release()
            out_fused += fused.release()
        else:
            n += 1
            out_alone += alone.reading(x.sensor, x.at, x.grams)
            out_fused += fused.reading(x.sensor, x.at, x.grams)
    return out_fused + fused.flush(), out_alone + alone.flush(), n


def film(run: Run, store: str, seen: Iterable[ShelfReading]) -> list[ev.Event]:
    """The cameras' readings alone to events, in the order of their reaches."""
    cams = CameraEvents(store)
    for e in run.events:
        if isinstance(e, ev.ShopperEntered):
            cams.entered(e)
    out: list[ev.Event] = []
    for r in sorted(seen, key=lambda r: r.started):
        out += cams.reading(r)
    return out


def receipts(store: Store, run: Run, made: list[ev.Event]) -> list[CartReceipts]:
    """The day's events with the true picks and put-backs replaced by ``made``, through
    the rule packs, against the true carts."""
    events = [e for e in run.events if not isinstance(e, MOVES)] + made
    events.sort(key=lambda e: e.at)
    return compare_receipts(run.receipts(), derive(store, run, events, lateness_s=2.0))


def causes(
    cart: CartReceipts, run: Run, made: Sequence[ev.Event], carts: dict[str, str]
) -> list[str]:
    """Why a cart's receipt is wrong: each true pick or put-back of a wrong line and what
    the adapters made of it, and each event made for the cart that matches no true one."""
    due, got = cart.due or {}, (cart.issued[0] if len(cart.issued) == 1 else {})
    wrong = {s for s in due.keys() | got.keys() if due.get(s, 0) != got.get(s, 0)}
    if len(cart.issued) > 1:
        return [f"{len(cart.issued)} receipts"]
    mine = lambda e: carts.get(e.subject, e.subject) == cart.cart  # noqa: E731
    truth = [e for e in run.events if isinstance(e, MOVES) and mine(e) and e.data.sku in wrong]
    found = [e for e in made if isinstance(e, MOVES) and e.data.sku in wrong]
    review = [e for e in made if isinstance(e, ev.ShelfUnresolved) and e.data.sku in wrong]
    out, used = [], set()
    for t in truth:
        what = f"{t.type.split('.')[1]} {t.data.sku} at {t.at:%H:%M:%S}"
        near = lambda e, t=t: abs((e.at - t.at).total_seconds()) <= 4 and e.id not in used  # noqa: E731
        same = [e for e in found if near(e) and type(e) is type(t) and e.data.shelf == t.data.shelf]
        ours = [e for e in same if mine(e)]
        if ours:
            used.add(ours[0].id)
            if ours[0].data.qty != t.data.qty:
                out.append(f"{what}: qty {ours[0].data.qty}, true {t.data.qty} ({ours[0].source})")
            continue
        if same:
            used.add(same[0].id)
            out.append(f"{what}: given to {same[0].subject} ({same[0].source})")
            continue
        held = [e for e in review if near(e) and e.data.shelf == t.data.shelf]
        if held:
            used.add(held[0].id)
            out.append(f"{what}: sent to review ({held[0].source}: {held[0].data.reason})")
            continue
        out.append(f"{what}: not found")
    for e in found:
        if mine(e) and e.id not in used:
            near = [
                t for t in run.events if isinstance(t, MOVES) and t.data.sku == e.data.sku
                and abs((t.at - e.at).total_seconds()) <= 4
            ]  # fmt: skip
            if not near:
                out.append(f"{e.type} {e.data.sku} at {e.at:%H:%M:%S} ({e.source}): never happened")
            elif not any(mine(t) for t in near):
                out.append(
                    f"{e.type} {e.data.sku} at {e.at:%H:%M:%S} ({e.source}): "
                    f"{near[0].subject}'s, given to this cart"
                )
    return out or ["(a line off with no pick or put-back to blame: the rules)"]


_KINDS = (  # a review reason's words, and its kind; the first that is in it
    ("is not sure either", "the camera unsure too"),
    ("but the load", "the camera and the load disagree"),
    ("no facing change", "the camera saw no facing change"),
    ("which product went back", "a put-back of one of two products of one weight"),
    ("weighs the same", "two SKUs fit"),
    ("not a whole number", "no whole number of units"),
    ("wrong slot", "a put-back of a product the cart does not hold"),
    ("no hand was seen", "a change with no hand seen"),
    ("nobody at the shelf", "nobody at the shelf"),
    ("not sure", "who took it is not sure"),
    ("faint", "a faint change"),
    ("emptied and filled", "facings emptied and filled in one reach"),
)


def _review_kind(reason: str) -> str:
    return next((kind for words, kind in _KINDS if words in reason), reason[:60])


def report(
    mode: str, compared: list[CartReceipts], run: Run, made: list[ev.Event],
    carts: dict[str, str],
) -> float:  # fmt: skip
    errors: Counter[str] = Counter()
    right = count(compared, errors)
    share = right / len(compared) if compared else 1.0
    verdict = "met" if share >= TARGET else "MISSED"
    kinds = Counter(e.type for e in made)
    print(
        f"\n{mode}: {right:,} of {len(compared):,} carts exactly right: {share:.2%} "
        f"(target {TARGET:.1%}: {verdict}); events made: "
        + ", ".join(f"{t} {n:,}" for t, n in sorted(kinds.items()))
    )
    reviews = Counter(
        _review_kind(e.data.reason) for e in made if isinstance(e, ev.ShelfUnresolved)
    )
    for kind, n in errors.most_common():
        print(f"  {kind}: {n:,}")
    for c in compared:
        if not c.right:
            print(f"  - {c.wrong()}")
            for why in causes(c, run, made, carts):
                print(f"      {why}")
    if reviews:
        print(f"  review items ({sum(reviews.values()):,}), by first reason:")
        for why, n in reviews.most_common(8):
            print(f"    {n:,}: {why}")
    return share


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shoppers", type=int, default=500)
    parser.add_argument("--hours", type=float, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fps", type=float, default=5.0, help="the shelf cameras' frame rate")
    parser.add_argument("--gap", type=float, default=2.0, help="reaches closer: one clip (s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", type=Path, help="keep the cameras' readings in this file")
    parser.add_argument(
        "--load", type=Path, help="the cameras' readings of a --save, not read again"
    )
    args = parser.parse_args(argv)
    stamp.print_stamp()
    layout, text = shelved_layout(args.fps)
    store = Store(layout)
    began = time.perf_counter()
    run = simulate(store, OPEN, hours=args.hours, shoppers=args.shoppers, seed=args.seed)
    moves = sum(isinstance(e, MOVES) for e in run.events)
    print(
        f"shelf receipts: {len(run.visitors):,} visits ({args.shoppers} shoppers, "
        f"{args.hours:g} h, seed {args.seed}), {len(run.receipts()):,} receipts due, "
        f"{moves:,} picks and put-backs; {len(layout.shelf_cameras)} shelf cameras at "
        f"{args.fps:g} frames/s, {sum(1 for s in layout.shelves for _ in s.slots)} weighed slots"
    )
    clips = clips_of(layout, run, OPEN, args.gap)
    t = time.perf_counter()
    if args.load is not None:
        watched, wall = pickle.loads(args.load.read_bytes())
    else:
        watched = watch_all(clips, text, args.workers)
        wall = time.perf_counter() - t
        if args.save is not None:
            args.save.write_bytes(pickle.dumps((watched, wall)))
    seen = [r for w in watched for r in w.readings]
    frames = sum(w.frames for w in watched)
    render_ms = 1000 * sum(w.render_s for w in watched) / max(1, frames)
    read_ms = 1000 * sum(w.read_s for w in watched) / max(1, frames)
    span = sum(c.seconds for c in clips)
    full = len(layout.shelf_cameras) * args.hours * 3600 * args.fps
    print(
        f"cameras: {len(clips):,} clips, {span / 60:,.1f} min of video, {frames:,} frames "
        f"rendered and read ({frames / full:.2%} of the day's {full:,.0f} frames of "
        f"{len(layout.shelf_cameras)} cameras); render {render_ms:.1f} ms a frame, decode and "
        f"shelf watch {read_ms:.1f} ms a frame; {wall:.0f} s with {args.workers} workers; "
        f"{len(seen):,} reaches read, "
        + ", ".join(f"{a} {n:,}" for a, n in sorted(Counter(r.action for r in seen).items()))
    )
    end = max(e.at for e in run.events) + timedelta(seconds=60)
    t = time.perf_counter()
    fused, alone, n = weigh(layout, run, OPEN, end, seen, args.seed)
    print(f"weights: {n:,} readings through two shelf adapters in {time.perf_counter() - t:.0f} s")
    carts = {
        e.subject: e.data.group
        for e in run.events
        if isinstance(e, ev.ShopperEntered) and e.data.group is not None
    }
    shares = {}
    for mode, made in zip(MODES, (fused, alone, film(run, layout.store.id, seen)), strict=True):
        shares[mode] = report(mode, receipts(store, run, made), run, made, carts)
    print(f"\ntook {time.perf_counter() - began:.0f} s")
    return shares


if __name__ == "__main__":
    main()
