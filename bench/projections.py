"""Messages per second through the read-model projections, against reading the same
messages from the log, and against the engine service deriving them, in one run.

    .venv/bin/python bench/projections.py [--stores 2] [--hours 4] [--shoppers 150]
        [--database URL] [--batch 500] [--profile FILE]

It simulates store days (with the default sensor noise) and publishes their raw events
into an embedded nats-server in a temporary folder. The engine service (``aisle engine
run``, one worker in its own process, the standard packs) then catches up with that
backlog and publishes what it derives: ``engine`` is its catch-up, from its consumers'
creation to when they have nothing pending or unacknowledged (the service's own
measure, as in ``bench/engine_latency.py``). ``replay`` is the business stream read
once, whole (``log.replay``); ``project`` is every projection caught up from the first
message into a fresh database (a SQLite file in the temporary folder, or ``--database``,
which should name an empty database or schema). Each figure is stream messages per
second of wall time; ``applied`` counts the events the projections applied (the receipts
projection reads picks and metrics too, so an event may count for two). The ratio is
``replay`` over ``project``, from the same server in the same process.

``keep-up`` is the time the engine service took to derive the days over the time the
projections took to apply what it published: above 1, the projections keep up with the
engine's catch-up. ``keep-up (CPU)`` sets the CPU seconds of the two processes against
each other (the worker's, read from /proc, and this one's, threads included; neither
counts nats-server's, nor PostgreSQL's server): on a machine shared with other work,
wall times move with the load, CPU seconds much less. ``keep-up (rules)`` sets the
projections against the rules alone deriving the same days in this process
(``Engine.process`` in lots of 500, without reading or writing the log), a bound the
service does not reach. ``--profile`` runs the projections under
cProfile, their database work in the event loop's thread rather than in worker threads
(cProfile sees one thread), and writes its statistics to the file.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_latency import EngineProcess, drained, ready, wait_until
from bench.stamp import print_stamp
from core import events as ev
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.layout import load_layout
from core.log import publish_in_order
from core.natsd import EmbeddedNats
from readmodels import runner
from readmodels.database import check_schema, make_engine
from readmodels.runner import ProjectionService
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from rules.service.partition import SOURCE_IDLE_S
from simulator import noise
from simulator.day import simulate, standard_packs

ROOT = Path(__file__).resolve().parent.parent
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
T = TypeVar("T")
LATENESS_S = 2.0  # `aisle engine run`'s default, for the rules here and the service


def store_days(stores: int, hours: float, shoppers: int) -> tuple[list[list[ev.Event]], float]:
    """Each store's day in lots: raw events, then what the rules derived from them (as the
    engine service configures them); and the seconds the rules took to derive them (the
    engine without the log)."""
    base = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    lots, rules_s = [], 0.0
    for n in range(stores):
        store = f"bench-{n:02d}"
        layout = msgspec.structs.replace(base, store=msgspec.structs.replace(base.store, id=store))
        raw = simulate(layout, OPEN, hours=hours, shoppers=shoppers, seed=n + 1).events
        raw = noise.apply(raw, noise.DEFAULT, seed=n + 1, layout=layout)
        rules = Engine(
            load_rules(standard_packs(), Reference.of(layout)),
            lateness_s=LATENESS_S,
            source_idle_s=SOURCE_IDLE_S,
        )
        for i in range(0, len(raw), 500):
            lot = raw[i : i + 500]
            start = time.perf_counter()
            derived = rules.process(lot).derived
            rules_s += time.perf_counter() - start
            lots.append([*lot, *derived])
    return lots, rules_s


async def engine_service(
    log: JetStreamLog, url: str, stores: int, logs: Path
) -> tuple[float, float]:
    """Seconds ``aisle engine run`` took to catch up with the log's raw events, from its
    consumers' creation until they have nothing pending or unacknowledged; and the CPU
    seconds its process spent meanwhile."""
    worker = EngineProcess(
        url, log.config.prefix, [f"bench-{n:02d}" for n in range(stores)], LATENESS_S, logs
    )
    try:
        opened = await wait_until(lambda: ready(log, stores, worker), 120, 0.02)
        cpu = worker.cpu_s()
        done = await wait_until(lambda: drained(log, stores, worker), 1200, 0.05)
        cpu = worker.cpu_s() - cpu
    finally:
        worker.stop()
    return done - opened, cpu


async def measure(
    url: str,
    lots: list[list[ev.Event]],
    rules_s: float,
    database: str,
    args: argparse.Namespace,
    folder: Path,
) -> None:
    log = await JetStreamLog.open(
        await connect(url), LogConfig(prefix="bench", publish_deadline_s=60)
    )
    rules_derived = sum(e.derived for lot in lots for e in lot)
    try:
        for lot in lots:  # the raw events: the engine service derives the rest
            await publish_in_order(log, [e for e in lot if not e.derived])
        engine_s, engine_cpu = await engine_service(log, url, args.stores, folder / "engine.log")
        stream = await log.js.stream_info(log.config.events_stream)
        messages = stream.state.messages
        derived = sum(
            n
            for s in await log.stats()
            if s.name == log.config.events_stream
            for subject, n in s.subjects.items()
            if subject.split(".", 2)[2] in ev.DERIVED_TYPES
        )
        start = time.perf_counter()
        read = sum([1 async for _ in log.replay()])
        replay = read / (time.perf_counter() - start)
        db = make_engine(database)
        check_schema(db)
        service = ProjectionService(log, db, batch=args.batch)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            runner.asyncio = _Inline()  # type: ignore[assignment]
        start, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        await service.run(until_caught_up=True)
        took, cpu = time.perf_counter() - start, time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        applied = sum(p.applied for p in service.progress)
        project = messages / took
        print(f"{'stream messages':<16} {messages:>10,}  ({derived:,} derived by the engine "
              f"service, {rules_derived:,} by the rules in process)")  # fmt: skip
        print(f"{'engine':<16} {engine_s:>10.1f} s  (the engine service's catch-up; "
              f"{engine_cpu:.1f} s CPU in its process)")  # fmt: skip
        print(f"{'replay':<16} {replay:>10,.0f} messages/s")
        print(f"{'project':<16} {project:>10,.0f} messages/s  ({applied:,} events applied, "
              f"{applied / took:,.0f}/s, {took:.1f} s; {cpu:.1f} s CPU here)")  # fmt: skip
        print(f"{'ratio':<16} {replay / project:>10.1f}x  (replay / project)")
        print(f"{'keep-up':<16} {engine_s / took:>10.2f}x  (the engine service's catch-up over "
              "the projections': above 1, the projections keep up)")  # fmt: skip
        print(f"{'keep-up (CPU)':<16} {engine_cpu / cpu:>10.2f}x  (the same, in CPU seconds of "
              "the two processes: less moved by the machine's load)")  # fmt: skip
        print(f"{'keep-up (rules)':<16} {rules_s / took:>10.2f}x  (the rules derived the same "
              f"days in {rules_s:.1f} s in process, without the log)")  # fmt: skip
        for p in service.progress:
            print(f"  {p.name:<10} {p.applied:>8,} applied")
    finally:
        await log.delete_streams()
        await log.close()


class _Inline:
    """``asyncio`` for the projections' runner, its ``to_thread`` run in the calling thread
    (for ``--profile``: the profiler follows one thread)."""

    def __getattr__(self, name: str) -> object:
        return getattr(asyncio, name)

    @staticmethod
    async def to_thread(func: Callable[..., T], /, *args: object) -> T:
        return func(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # type: ignore[union-attr]
    parser.add_argument("--stores", type=int, default=2)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--shoppers", type=int, default=150)
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: SQLite file)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--profile", type=Path, help="cProfile the projections into this file")
    args = parser.parse_args()
    print_stamp()
    lots, rules_s = store_days(args.stores, args.hours, args.shoppers)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats") as server:
        folder = Path(tmp)
        database = args.database or f"sqlite:///{folder / 'readmodels.db'}"
        asyncio.run(measure(server.url, lots, rules_s, database, args, folder))


if __name__ == "__main__":
    main()
