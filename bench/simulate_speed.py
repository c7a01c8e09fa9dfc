"""How fast the simulator makes store days: shopper-hours per second of wall time, without
and with publishing into JetStream (an embedded nats-server).

    .venv/bin/python bench/simulate_speed.py [--stores 20] [--shoppers 300] [--publish-stores 5]

A store day here is the example convenience store open 15 hours with 300 visitors (and
about twice as many passers-by). The 300-store chain of the issue is ``--stores 300``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stamp  # noqa: E402
from core.config import LogConfig  # noqa: E402
from core.jetstream import JetStreamLog, connect  # noqa: E402
from core.layout import load_layout  # noqa: E402
from core.natsd import EmbeddedNats  # noqa: E402
from simulator.day import Run, simulate  # noqa: E402
from simulator.shoppers import Store  # noqa: E402

OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


def stores(n: int) -> list[Store]:
    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    out = []
    for k in range(n):
        store = msgspec.structs.replace(layout.store, id=f"corner-{k:03d}")
        out.append(Store(msgspec.structs.replace(layout, store=store)))
    return out


def shopper_hours(run: Run) -> float:
    return sum(t.path[-1][0] for t in run.truth if t.path) / 3600


async def publish(url: str, runs: list[Run]) -> None:
    log = await JetStreamLog.open(await connect(url), LogConfig(prefix="simspeed"))
    for run in runs:
        for i in range(0, len(run.events), 5000):
            await log.publish_many(run.events[i : i + 5000])
    await log.delete_streams()
    await log.close()


def report(label: str, runs: list[Run], took: float) -> None:
    hours = sum(shopper_hours(r) for r in runs)
    events = sum(len(r.events) for r in runs)
    per_store = took / len(runs)
    print(
        f"  {label}: {hours:,.0f} shopper-hours in {took:.1f} s = "
        f"{hours / took:,.0f} shopper-hours/s; {events / took:,.0f} events/s; "
        f"{per_store:.2f} s per store day (300 stores: {300 * per_store / 60:.1f} min)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--shoppers", type=int, default=300)
    parser.add_argument("--publish-stores", type=int, default=5)
    args = parser.parse_args()
    stamp.print_stamp()
    chain = stores(args.stores)
    print(f"simulate speed: {args.stores} stores x 15 h x {args.shoppers} visitors")

    start = time.perf_counter()
    runs = [
        simulate(s, OPEN, hours=15, shoppers=args.shoppers, seed=k) for k, s in enumerate(chain)
    ]
    report("generating only", runs, time.perf_counter() - start)

    sample = runs[: args.publish_stores]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(tmp) as server:
        start = time.perf_counter()
        fresh = [
            simulate(s, OPEN, hours=15, shoppers=args.shoppers, seed=k)
            for k, s in enumerate(chain[: args.publish_stores])
        ]
        asyncio.run(publish(server.url, fresh))
        took = time.perf_counter() - start
    report("generating and publishing", sample, took)


if __name__ == "__main__":
    main()
