"""Messages per second through the read-model projections, against reading the same
messages from the log, in one run.

    .venv/bin/python bench/projections.py [--stores 2] [--hours 4] [--shoppers 150]
        [--database URL] [--batch 500]

It simulates store days (with the default sensor noise), derives their events with the
standard packs, and publishes raw and derived events into an embedded nats-server in a
temporary folder, as the engine service leaves them. ``replay`` is the business stream
read once, whole (``log.replay``); ``project`` is every projection caught up from the
first message into a fresh database (a SQLite file in the temporary folder, or
``--database``, which should name an empty database or schema). Each figure is stream
messages per second of wall time; ``applied`` counts the events the projections applied
(the receipts projection reads picks and metrics too, so an event may count for two).
The ratio is ``replay`` over ``project``, from the same server in the same process.
``keep-up`` is the time the rules took to derive the days (in process, without reading or
writing the log, so faster than the engine service's catch-up) over the time the
projections took to apply them: above 1, the projections keep up with the engine.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stamp import print_stamp
from core import events as ev
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.layout import load_layout
from core.log import publish_in_order
from core.natsd import EmbeddedNats
from readmodels.database import check_schema, make_engine
from readmodels.runner import ProjectionService
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from simulator import noise
from simulator.day import simulate, standard_packs

ROOT = Path(__file__).resolve().parent.parent
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


def store_days(stores: int, hours: float, shoppers: int) -> tuple[list[list[ev.Event]], float]:
    """Each store's day in lots: raw events, then what the rules derived from them; and
    the seconds the rules took to derive them (the engine without the log)."""
    base = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    lots, rules_s = [], 0.0
    for n in range(stores):
        store = f"bench-{n:02d}"
        layout = msgspec.structs.replace(base, store=msgspec.structs.replace(base.store, id=store))
        raw = simulate(layout, OPEN, hours=hours, shoppers=shoppers, seed=n + 1).events
        raw = noise.apply(raw, noise.DEFAULT, seed=n + 1, layout=layout)
        rules = Engine(load_rules(standard_packs(), Reference.of(layout)), lateness_s=5.0)
        for i in range(0, len(raw), 500):
            lot = raw[i : i + 500]
            start = time.perf_counter()
            derived = rules.process(lot).derived
            rules_s += time.perf_counter() - start
            lots.append([*lot, *derived])
    return lots, rules_s


async def measure(
    url: str, lots: list[list[ev.Event]], rules_s: float, database: str, batch: int
) -> None:
    log = await JetStreamLog.open(
        await connect(url), LogConfig(prefix="bench", publish_deadline_s=60)
    )
    try:
        for lot in lots:
            await publish_in_order(log, lot)
        messages = (await log.js.stream_info(log.config.events_stream)).state.messages
        start = time.perf_counter()
        read = sum([1 async for _ in log.replay()])
        replay = read / (time.perf_counter() - start)
        db = make_engine(database)
        check_schema(db)
        service = ProjectionService(log, db, batch=batch)
        start = time.perf_counter()
        await service.run(until_caught_up=True)
        took = time.perf_counter() - start
        applied = sum(p.applied for p in service.progress)
        project = messages / took
        print(f"{'stream messages':<16} {messages:>10,}")
        print(f"{'replay':<16} {replay:>10,.0f} messages/s")
        print(f"{'project':<16} {project:>10,.0f} messages/s  ({applied:,} events applied, "
              f"{applied / took:,.0f}/s, {took:.1f} s)")  # fmt: skip
        print(f"{'ratio':<16} {replay / project:>10.1f}x  (replay / project)")
        print(f"{'keep-up':<16} {rules_s / took:>10.2f}x  (the rules derived the same days in "
              f"{rules_s:.1f} s without the log: above 1, the projections keep up)")  # fmt: skip
        for p in service.progress:
            print(f"  {p.name:<10} {p.applied:>8,} applied")
    finally:
        await log.delete_streams()
        await log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # type: ignore[union-attr]
    parser.add_argument("--stores", type=int, default=2)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--shoppers", type=int, default=150)
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: SQLite file)")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    print_stamp()
    lots, rules_s = store_days(args.stores, args.hours, args.shoppers)
    with tempfile.TemporaryDirectory() as folder, EmbeddedNats(Path(folder) / "nats") as server:
        database = args.database or f"sqlite:///{Path(folder) / 'readmodels.db'}"
        asyncio.run(measure(server.url, lots, rules_s, database, args.batch))


if __name__ == "__main__":
    main()
