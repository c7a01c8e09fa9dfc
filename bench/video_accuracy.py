"""The eyes end to end on rendered video: a busy hour of a store, every camera filmed, the
floor adapters on the film, the standard packs on both sides.

    .venv/bin/python bench/video_accuracy.py [--minutes 60] [--shoppers 120] [--seed 1]
        [--opens 2026-11-28T17:00] [--fps N] [--detector mog2] [--out DIR] [--junit FILE]
        [--store examples/stores/convenience.yaml]

What ``aisle simulate --video`` runs (``simulator/eyes/``), on an embedded nats-server in
a folder of its own, with the figures the issue asks for: the report's rows (footfall,
entries and exits paired within 2 s with no double counts, passers-by, zone visits and
their dwell, queue waits, the heatmap pack's cells) and, from the same comparison,
per-camera MOTA and IDF1 against the rendered MOTChallenge ground truth, the fused floor
tracks' MOTA, IDF1 and cross-camera id switches. ``--fps`` films and processes every
camera at that rate instead of the layout's (a long span costs less, the trackers see
people move further between frames). The film is kept in ``--out`` and reused by a run
of the same request. The figures go to stdout, as text and as a Markdown table for
``docs/benchmarks.md``; progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.pipeline import AdaptProgress  # noqa: E402
from bench import stamp  # noqa: E402
from core.config import Settings  # noqa: E402
from core.layout import Layout, load_layout  # noqa: E402
from simulator.day import standard_packs  # noqa: E402
from simulator.eyes import accuracy, report  # noqa: E402
from simulator.eyes.video import (  # noqa: E402
    DETECTORS,
    Checked,
    Request,
    at_fps,
    check_video,
    film,
)

STORE = ROOT / "examples" / "stores" / "convenience.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--shoppers", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--opens", default="2026-11-28T17:00", help="local time: the evening rush")
    parser.add_argument("--fps", type=float, default=None, help="film every camera at this rate")
    parser.add_argument("--detector", choices=DETECTORS, default="mog2")
    parser.add_argument("--out", type=Path, default=ROOT / ".aisle" / "video-accuracy")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes")
    parser.add_argument("--junit", type=Path, default=None)
    parser.add_argument("--again", action="store_true", help="report the last run again")
    args = parser.parse_args()
    stamp.print_stamp()

    layout = at_fps(load_layout(args.store), args.fps)
    start = datetime.fromisoformat(args.opens).replace(tzinfo=ZoneInfo(layout.store.timezone))
    request = Request(
        layout=layout,
        start=start,
        hours=args.minutes / 60,
        shoppers=args.shoppers,
        seed=args.seed,
        packs=tuple(standard_packs()),
        detector=args.detector,
    )
    folder = args.out / request.key
    began = time.perf_counter()

    def rendered(camera: str, frames: int) -> None:
        took = time.perf_counter() - began
        print(f"rendered {camera}: {frames:,} frames ({took:.0f} s)", file=sys.stderr, flush=True)

    saved = folder / "checked.pickle"
    if args.again:  # the report of the last run of this request, by this code
        with saved.open("rb") as f:
            checked = pickle.load(f)
        _report(args, layout, start, checked, 0.0)
        return
    the = film(request, folder, args.workers, rendered)
    filmed_s = time.perf_counter() - began
    total = sum(the.frames.values())
    print(
        f"film {'reused' if the.reused else 'made'} in {filmed_s:.0f} s: {folder}, "
        f"{total:,} frames, {the.crossings} true door crossings",
        file=sys.stderr,
        flush=True,
    )
    shown = [0.0]

    def progress(p: AdaptProgress) -> None:
        now = time.monotonic()
        if now - shown[0] >= 30:
            shown[0] = now
            print(
                f"adapters: {p.total_frames:,} of {total:,} frames, {p.fps:.1f} frames/s, "
                f"{sum(p.events.values()):,} events",
                file=sys.stderr,
                flush=True,
            )

    with tempfile.TemporaryDirectory(prefix="aisle-video-bench-") as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AISLE_")}
        settings = Settings.from_env({**env, "AISLE_DATA_DIR": data})
        checked = asyncio.run(check_video(settings, the, progress))
    with saved.open("wb") as f:  # to report again (--again) without the hours
        pickle.dump(checked, f)
    _report(args, layout, start, checked, filmed_s)


def _report(
    args: argparse.Namespace, layout: Layout, start: datetime, checked: Checked, filmed_s: float
) -> None:
    the = checked.film
    total = sum(the.frames.values())
    figures = report.figures_of(checked)
    rows = report.rows(checked, figures)
    print(
        f"{args.store.name}, {args.minutes:g} min from {start.isoformat()}, {args.shoppers} "
        f"shoppers, seed {args.seed}, {args.detector}, cameras at "
        f"{', '.join(sorted({f'{c.fps:g}' for c in layout.cameras}))} frames/s; "
        f"{the.crossings} true door crossings; film {filmed_s:.0f} s, adapters "
        f"{checked.seconds:.0f} s ({total / checked.seconds:.1f} frames/s)"
    )
    print("\n".join(accuracy.figures_lines(figures)))
    print()
    print(report.markdown(rows))
    if args.junit is not None:
        report.write_junit(args.junit, rows, checked.video.store, checked.seconds)


if __name__ == "__main__":
    main()
