"""Snapshots of the engine's state: how long one takes and one restore takes, and its size.

    .venv/bin/python bench/snapshots.py [--events 1000000] [--rounds 5]

The state is the one the engine benchmark (``bench/engine_throughput.py``) leaves after its
workload: all standard packs, a day-long heatmap with the visitors of every cell. A
checkpoint of the engine service writes one store's snapshot; a store's new owner
restores it once.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stamp  # noqa: E402
from bench.engine_throughput import PACKS, engine_for  # noqa: E402
from bench.engine_throughput import scripted_workload as workload  # noqa: E402
from core.layout import load_layout  # noqa: E402
from rules.snapshot import restore, snapshot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--rounds", type=int, default=5, help="snapshots and restores; the best counts"
    )
    args = parser.parse_args()
    stamp.print_stamp()
    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml").prepare()
    events, counted = workload(layout, args.events)
    engine = engine_for(PACKS, layout)
    for i in range(0, len(events), 1000):
        engine.process(events[i : i + 1000])
    store = layout.store.id
    taken, restored = float("inf"), float("inf")
    data = b""
    for _ in range(args.rounds):
        gc.collect()
        start = time.perf_counter()
        data = snapshot(engine, [store])
        taken = min(taken, time.perf_counter() - start)
        fresh = engine_for(PACKS, layout)
        gc.collect()
        start = time.perf_counter()
        restore(fresh, data)
        restored = min(restored, time.perf_counter() - start)
        del fresh
    print(
        f"state after {counted:,} events: snapshot {taken * 1000:.0f} ms, "
        f"restore {restored * 1000:.0f} ms, {len(data) / 1e6:.2f} MB (best of {args.rounds})"
    )


if __name__ == "__main__":
    main()
