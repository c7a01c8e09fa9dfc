"""How many load-cell readings the shelf adapter takes a second, on one core: the JSON
lines parsed (``adapters/readings.py``), and the readings through the levels, units and
attribution (``adapters/shelf.py``, the floor's position samples fed between them).

    .venv/bin/python bench/shelf_throughput.py [--minutes 30] [--shoppers 20] [--repeat 3]

The readings are the simulator's for the convenience store's five weighed slots at 10 a
second (``simulator/loadcells.py``). A store with N cells at 10 Hz needs 10 N readings a
second: the figures say how many cells one process can follow.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.readings import LineReader  # noqa: E402
from adapters.shelf import ShelfAdapter  # noqa: E402
from bench import stamp  # noqa: E402
from core import events as ev  # noqa: E402
from core.layout import load_layout  # noqa: E402
from simulator.day import simulate  # noqa: E402
from simulator.loadcells import CellNoise, readings  # noqa: E402

START = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--shoppers", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stamp.print_stamp()
    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    hours = args.minutes / 60
    run = simulate(layout, START, hours=hours, shoppers=args.shoppers, seed=1)
    end = START + timedelta(hours=hours + 0.1)
    cells = list(readings(layout, run.events, START, end, seed=1, noise=CellNoise(depth=20)))
    data = b"".join(msgspec.json.encode(r) + b"\n" for r in cells)
    floor = [e for e in run.events if isinstance(e, ev.PositionSamples | ev.ShopperEntered)]
    print(f"{len(cells):,} readings ({len(data) / 1e6:.1f} MB), {len(floor):,} floor events")
    for k in range(args.repeat):
        reader = LineReader("bench")
        t0 = time.perf_counter()
        got = []
        for i in range(0, len(data), 65536):
            got += reader.feed(data[i : i + 65536])
        parse = time.perf_counter() - t0
        adapter = ShelfAdapter(layout)
        merged = heapq.merge(
            ((r.at, 1, r) for r in got), ((e.at, 0, e) for e in floor), key=lambda x: x[:2]
        )
        made = 0
        t0 = time.perf_counter()
        for _, _, x in merged:
            if isinstance(x, ev.ShopperEntered):
                adapter.entered(x)
            elif isinstance(x, ev.PositionSamples):
                adapter.samples(x)
                made += len(adapter.release())
            else:
                made += len(adapter.reading(x.sensor, x.at, x.grams))
        made += len(adapter.flush())
        took = time.perf_counter() - t0
        print(
            f"run {k + 1}: parse {len(got) / parse:,.0f} readings/s; "
            f"adapter {len(got) / took:,.0f} readings/s ({made} events)"
        )


if __name__ == "__main__":
    main()
