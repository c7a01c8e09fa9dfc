"""What the engine-service tests share: a store day, an engine process, "caught up", and
what an uninterrupted run derives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from core import events as ev
from core.jetstream import JetStreamLog
from core.layout import Layout, load_layout
from core.log import read_arrived
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from rules.service.metrics import EngineMetrics
from rules.service.partition import SOURCE_IDLE_S, ServiceConfig
from rules.service.worker import Worker
from simulator import noise
from simulator.day import simulate

ROOT = Path(__file__).resolve().parent.parent
PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
LAYOUT_FILE = ROOT / "examples" / "stores" / "convenience.yaml"
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
LATENESS_S = noise.DEFAULT.late_s + 2 * noise.DEFAULT.clock_skew_s


@cache
def layout(store: str = "corner-01") -> Layout:
    base = load_layout(LAYOUT_FILE)
    if store == base.store.id:
        return base
    return msgspec.structs.replace(base, store=msgspec.structs.replace(base.store, id=store))


def store_day(
    store: str = "corner-01",
    *,
    hours: float = 2,
    shoppers: int = 60,
    seed: int = 3,
    noisy: bool = True,
) -> list[ev.Event]:
    """A simulated day of one store, in delivery order (with the default sensor noise)."""
    lay = layout(store)
    events = simulate(lay, OPEN, hours=hours, shoppers=shoppers, seed=seed).events
    return noise.apply(events, noise.DEFAULT, seed=seed, layout=lay) if noisy else events


async def publish(
    log: JetStreamLog, events: list[ev.Event], chunk: int = 100, pause_s: float = 0.0
) -> None:
    for i in range(0, len(events), chunk):
        await log.publish_many(events[i : i + chunk])
        if pause_s:
            await asyncio.sleep(pause_s)


def engine(lateness_s: float = LATENESS_S, source_idle_s: float = SOURCE_IDLE_S) -> Engine:
    """The standard packs, as the service runs them (no members: the CLI's default)."""
    return Engine(
        load_rules(PACKS, Reference.of(layout())),
        lateness_s=lateness_s,
        source_idle_s=source_idle_s,
    )


async def uninterrupted(log: JetStreamLog, store: str, lateness_s: float = LATENESS_S) -> list[str]:
    """The ids an engine that never stopped derives from what the log holds for ``store``."""
    return [d.id for d in engine(lateness_s).process(await read_arrived(log, store)).derived]


def late_by_source(metrics: EngineMetrics, store: str) -> dict[str, float]:
    """The worker's late count for ``store``, per source label."""
    return {
        s.labels["source"]: s.value
        for family in metrics.late.collect()
        for s in family.samples
        if s.name.endswith("_total") and s.labels["store"] == store
    }


async def derived_ids(log: JetStreamLog, store: str) -> list[str]:
    return [r.event.id async for r in log.replay(store=store, types=sorted(ev.DERIVED_TYPES))]


async def settled(log: JetStreamLog, stores: list[str], timeout_s: float = 120.0) -> None:
    """Wait until each store's engine consumers (both streams) have nothing pending or
    unacked, and nothing new is derived for a second."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        seen = dict.fromkeys(stores, 0)
        pending = 0
        for stream in (log.config.events_stream, log.config.samples_stream):
            for info in await log.js.consumers_info(stream):
                store = _store_of(info.name, stores)
                if store is not None:
                    seen[store] += 1
                    pending += (info.num_pending or 0) + (info.num_ack_pending or 0)
        if pending == 0 and all(n >= 2 for n in seen.values()):
            total = sum([len(await derived_ids(log, s)) for s in stores])
            if total == last:
                return
            last = total
        else:
            last = -1
        await asyncio.sleep(1.0)
    raise TimeoutError(f"the engine did not catch up on {stores} within {timeout_s}s")


def _store_of(consumer: str, stores: list[str]) -> str | None:
    for s in stores:
        if consumer.startswith(f"engine_{s}_"):
            return s
    return None


def engine_process(
    url: str,
    prefix: str,
    worker: str,
    *args: str,
    logs: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``aisle engine run`` as its own process, against ``url`` under ``prefix``; its JSON
    logs are appended to ``logs``."""
    env = {**os.environ, "AISLE_NATS_URL": url, "AISLE_PREFIX": prefix, **(env or {})}
    cmd = [str(Path(sys.executable).parent / "aisle"), "engine", "run", "--worker", worker,
           "--lateness", str(LATENESS_S), "--layout", str(LAYOUT_FILE), *args]  # fmt: skip
    if logs is None:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    with logs.open("ab") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)


@dataclass(frozen=True)
class Publisher:
    """One adapter publishing its own events, in order, each ``delay`` after it has it (a
    delay drawn in ``[low_s, high_s]``, but never before the one it published last), with a
    ``store.heartbeat`` every ``heartbeat_s`` of event time under its own name."""

    name: str
    types: frozenset[str] | None  # None: every type no other publisher takes
    low_s: float
    high_s: float
    heartbeat_s: float = 0.0


def by_publishers(
    events: list[ev.Event],
    publishers: list[Publisher],
    *,
    seed: int = 1,
    source: Callable[[Publisher, ev.Event], str] | None = None,
    lead_s: float = 0.0,
    until_s: float = 0.0,
) -> list[tuple[float, Publisher, ev.Event]]:
    """When each event reaches the log, in arrival order: ``(seconds after the adapters start,
    its publisher, the event)``. ``source`` renames an event's source (its id kept, so
    runs compare); heartbeats run from ``lead_s`` before the first event (the adapters are
    up before the store opens) to ``until_s`` after the last."""
    rng = random.Random(seed)
    first, last = events[0].at.timestamp(), events[-1].at.timestamp()
    origin = first - lead_s
    have = {p.name: first for p in publishers}  # the newest event time each has had
    sent = {p.name: 0.0 for p in publishers}  # when each published last
    beat = {p.name: origin for p in publishers}
    out: list[tuple[float, Publisher, ev.Event]] = []

    def send(p: Publisher, e: ev.Event) -> None:
        sent[p.name] = max(sent[p.name], e.at.timestamp() - origin + rng.uniform(p.low_s, p.high_s))
        out.append((sent[p.name], p, e))

    def beats(upto: float) -> None:
        for p in publishers:
            while p.heartbeat_s and beat[p.name] + p.heartbeat_s <= min(upto, have[p.name]):
                beat[p.name] += p.heartbeat_s
                at = datetime.fromtimestamp(beat[p.name], UTC)
                hb = ev.new(ev.StoreHeartbeat, store=events[0].store, at=at, source=p.name,
                            subject=p.name)  # fmt: skip
                send(p, hb)

    for e in events:
        p = next((q for q in publishers if q.types and e.type in q.types), None) or next(
            q for q in publishers if q.types is None
        )
        t = e.at.timestamp()
        for q in publishers:  # the adapters' clocks run on as the store's does
            have[q.name] = max(have[q.name], t)
        beats(t)
        send(p, msgspec.structs.replace(e, source=source(p, e)) if source else e)
    for q in publishers:
        have[q.name] = last + until_s
    beats(last + until_s)
    out.sort(key=lambda x: x[0])
    return out


@contextlib.asynccontextmanager
async def running(
    log: JetStreamLog, name: str = "w1", packs: list[Path] = PACKS, **options: object
) -> AsyncIterator[Worker]:
    """A worker in this process, stopped cleanly afterwards; ``options`` are ServiceConfig's."""
    settings: dict[str, object] = {"lateness_s": LATENESS_S, "lease_ttl_s": 3.0, **options}
    config = ServiceConfig(worker=name, **settings)  # type: ignore[arg-type]
    worker = Worker(log, Reference.of(layout()), config, packs=packs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    while worker.engine is None and not task.done():
        await asyncio.sleep(0.01)
    try:
        yield worker
    finally:
        stop.set()
        await task
