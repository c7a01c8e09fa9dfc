"""What the outbox tests share with the producer they run as a subprocess."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from core import events as ev
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.log import EventLog
from core.outbox import LogFactory

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BUSINESS = ["item.picked", "zone.entered", "zone.exited"]
SAMPLES = ["position.samples"]


def produce(n: int, tag: str = "cam-1") -> list[ev.Event]:
    """What an adapter makes of a video: the same events, with the same ids, on every run;
    two stores, both streams, four types."""
    out: list[ev.Event] = []
    for i in range(n):
        base = {
            "store": f"s{i % 2}",
            "at": T0 + timedelta(milliseconds=40 * i),
            "source": tag,
            "subject": f"v-{i % 7}",
        }
        kind = i % 4
        if kind == 0:
            out.append(ev.new(ev.ZoneEntered, data=ev.ZoneData(zone=f"z{i % 3}"), **base))
        elif kind == 1:
            out.append(ev.new(ev.ZoneExited, data=ev.ZoneData(zone=f"z{i % 3}"), **base))
        elif kind == 2:
            sample = ev.PositionSample(f"t{i % 5}", 0.01 * i, 2.0)
            data = ev.PositionData(frame=i, samples=(sample,))
            out.append(ev.new(ev.PositionSamples, data=data, **{**base, "subject": tag}))
        else:
            data = ev.ItemData(sku=f"sku-{i % 11}", shelf="A1")
            out.append(ev.new(ev.ItemPicked, data=data, **base))
    return out


def opener(url: str, config: LogConfig) -> LogFactory:
    """A fresh log on a connection that does not reconnect by itself, as the outbox wants."""

    async def open_() -> EventLog:
        nc = await connect(url, name="outbox", reconnect=False, timeout_s=2.0)
        return await JetStreamLog.open(nc, config)

    return open_


def by_subject(events: list[ev.Event]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in events:
        out[(e.store, e.type)].append(e.id)
    return dict(out)


async def stored(log: EventLog, stores: list[str]) -> dict[tuple[str, str], list[str]]:
    """Each subject's event ids as the log holds them, in the log's order."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for store in stores:
        for types in (BUSINESS, SAMPLES):
            async for r in log.replay(store=store, types=types):
                out[(r.event.store, r.event.type)].append(r.event.id)
    return dict(out)
