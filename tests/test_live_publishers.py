"""A store day published live by several adapters, each with its own delay, into a running
engine service: the service derives what a replay of the finished log derives, and the
store's true receipts, with no event set aside as late."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from itertools import groupby

import pytest

from core import events as ev
from core import log as log_module
from core import merge
from core.jetstream import JetStreamLog, connect
from core.log import read_arrived
from rules.reference import Reference
from rules.service import partition
from rules.service.metrics import EngineMetrics
from rules.service.partition import ServiceConfig
from rules.service.worker import Worker
from simulator import noise
from simulator.day import simulate
from tests.enginekit import (
    LATENESS_S,
    OPEN,
    PACKS,
    Publisher,
    by_publishers,
    engine,
    late_by_source,
    layout,
    settled,
)

STORE = "corner-01"
SPEEDUP = 240.0  # seconds of event time per second of wall time, while publishing
CAMERAS = frozenset(
    {"position.samples", "zone.entered", "zone.exited", "passerby.seen", "face.matched"}
)
PUBLISHERS = [
    # The vision pipeline (frames, zones) runs some seconds behind the sensors.
    Publisher("cameras", CAMERAS, 3.0, 4.5, heartbeat_s=2.0),
    Publisher("shelves", frozenset({"item.picked", "item.put_back"}), 0.0, 1.5, heartbeat_s=2.0),
    Publisher("door", None, 0.0, 1.5, heartbeat_s=2.0),
]
OUTCOMES = ("receipt.issued", "alert.raised", "alert.resolved")


def source(p: Publisher, e: ev.Event) -> str:
    """The adapter's name; a second camera's report keeps that camera's."""
    return e.source if e.source.startswith("cam-") else p.name


async def publish_live(
    url: str, log: JetStreamLog, plan: list[tuple[float, Publisher, ev.Event]]
) -> None:
    """Each publisher on a connection of its own; the plan's arrivals at ``SPEEDUP`` times
    real time, in the plan's order.

    Each run of one publisher's events to one stream is confirmed before the next is sent,
    so the log holds them in the planned order: the server may stamp two streams' messages,
    or two connections', some milliseconds apart, which at this speed would be seconds of
    event time (at a real adapter's pace, a few milliseconds).
    """
    logs = {
        p.name: await JetStreamLog.open(await connect(url, name=f"adapter-{p.name}"), log.config)
        for p in PUBLISHERS
    }
    began = time.monotonic()
    try:
        for (name, _), run in groupby(plan, key=lambda x: (x[1].name, _stream(x[2]))):
            items = list(run)
            due = items[0][0] / SPEEDUP - (time.monotonic() - began)
            if due > 0:
                await asyncio.sleep(due)
            await logs[name].publish_many([e for _, _, e in items])
    finally:
        for mine in logs.values():
            await mine.close()


def _stream(e: ev.Event) -> bool:
    return e.type in ev.SAMPLE_TYPES


def outcomes(derived: list[ev.Event]) -> list[str]:
    return sorted(d.id for d in derived if d.type in OUTCOMES)


@pytest.fixture
def at_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The merge's window, a wall-time span, shrunk by ``SPEEDUP`` as event time is, live
    and in the replay: at 20 ms it would hold seconds of this test's event time, in which
    the merge puts one stream's messages before the other's by event time, across
    publishers (at a real adapter's pace, 20 ms of event time)."""
    window = partial(merge.ArrivalMerge, window_ns=int(merge.WINDOW_NS / SPEEDUP))
    monkeypatch.setattr(partition, "ArrivalMerge", window)
    monkeypatch.setattr(
        log_module, "merged", partial(merge.merged, window_ns=window.keywords["window_ns"])
    )


async def test_a_day_published_by_adapters_with_their_own_delays_derives_what_a_replay_does(
    jslog: JetStreamLog, at_speed: None
) -> None:
    run = simulate(layout(STORE), OPEN, hours=1.5, shoppers=45, seed=3)
    events = noise.apply(run.events, noise.DEFAULT, seed=3, layout=layout(STORE))
    plan = by_publishers(events, PUBLISHERS, source=source, lead_s=30.0, until_s=30.0)
    url = jslog.nc.connected_url.geturl()  # type: ignore[union-attr]
    metrics = EngineMetrics()
    config = ServiceConfig(worker="w1", lateness_s=LATENESS_S, lease_ttl_s=3.0)
    worker = Worker(jslog, Reference.of(layout(STORE)), config, packs=PACKS, metrics=metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await publish_live(url, jslog, plan)
        await settled(jslog, [STORE])
    finally:
        stop.set()
        await task
    late = late_by_source(metrics, STORE)
    live = [r.event async for r in jslog.replay(store=STORE, types=sorted(ev.DERIVED_TYPES))]
    replay = engine().process(await read_arrived(jslog, STORE)).derived
    # The same events with no delays at all, in event time: what the delays must not change.
    calm = engine().process(sorted((e for _, _, e in plan), key=lambda e: e.at)).derived
    receipts = [d for d in live if isinstance(d, ev.ReceiptIssued)]
    assert (late, len(receipts)) == ({}, len(run.receipts())), "late by source; receipts"
    assert len(receipts) > 30
    assert [d.id for d in live] == [d.id for d in replay]
    assert outcomes(live) == outcomes(calm)
