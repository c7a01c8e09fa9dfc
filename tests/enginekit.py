"""What the engine-service tests share: a store day, an engine process, "caught up", and
what an uninterrupted run derives."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
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


def engine(lateness_s: float = LATENESS_S) -> Engine:
    """The standard packs, as the service runs them (no members: the CLI's default)."""
    return Engine(load_rules(PACKS, Reference.of(layout())), lateness_s=lateness_s)


async def uninterrupted(log: JetStreamLog, store: str, lateness_s: float = LATENESS_S) -> list[str]:
    """The ids an engine that never stopped derives from what the log holds for ``store``."""
    return [d.id for d in engine(lateness_s).process(await read_arrived(log, store)).derived]


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
