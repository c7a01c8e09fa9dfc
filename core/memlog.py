"""An in-memory ``EventLog`` for unit tests of pure logic.

It keeps the contract of the JetStream log (validation and dead letters, de-duplication by
id, sequences per stream, durable consumers that resume) without a server. Integration
tests use the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from core import events as ev
from core.log import (
    DeadLetter,
    Delivery,
    Published,
    Record,
    Rejected,
    Stream,
    StreamStats,
    store_of,
    stream_for_type,
    stream_for_types,
)


class MemoryLog:
    def __init__(self, prefix: str = "aisle") -> None:
        self.prefix = prefix
        self.records: dict[Stream, list[Record]] = {s: [] for s in (Stream.EVENTS, Stream.SAMPLES)}
        self.letters: list[DeadLetter] = []
        self._ids: set[str] = set()
        self._offsets: dict[str, int] = {}  # durable consumer name -> next index
        self._new = asyncio.Condition()

    async def publish(self, event: ev.Event) -> Published:
        return (await self.publish_many((event,)))[0]

    async def publish_many(self, events: Sequence[ev.Event]) -> list[Published]:
        checked = [self._check(ev.encode(e), e.source) for e in events]  # all, before any
        return [await self._append(e) for e in checked]

    async def publish_raw(self, payload: bytes, *, source: str = "") -> Published:
        return await self._append(self._check(payload, source))

    def _check(self, payload: bytes, source: str) -> ev.AnyEvent:
        try:
            return ev.decode(payload)
        except ev.EventError as exc:
            letter = DeadLetter(
                store=store_of(payload),
                field=exc.field,
                reason=exc.reason,
                payload=payload,
                source=source,
            )
            self.letters.append(letter)
            raise Rejected(exc, len(self.letters)) from None

    async def _append(self, event: ev.AnyEvent) -> Published:
        stream = stream_for_type(event.type)
        records = self.records[stream]
        if event.id in self._ids:
            seq = next(r.seq for r in records if r.event.id == event.id)
            return Published(event.id, stream.value, seq, duplicate=True)
        self._ids.add(event.id)
        records.append(Record(len(records) + 1, event, time.time_ns()))
        async with self._new:
            self._new.notify_all()
        return Published(event.id, stream.value, len(records))

    def _select(
        self, store: str | None, types: Iterable[str] | None, from_seq: int | None
    ) -> list[Record]:
        wanted = set(types or ())
        return [
            r
            for r in self.records[stream_for_types(types)][(from_seq or 1) - 1 :]
            if (store is None or r.event.store == store) and (not wanted or r.event.type in wanted)
        ]

    async def replay(
        self,
        *,
        store: str | None = None,
        types: Iterable[str] | None = None,
        from_seq: int | None = None,
        from_time: datetime | None = None,
    ) -> AsyncIterator[Record]:
        for r in self._select(store, types, from_seq):
            if from_time is None or r.stored_at >= from_time:
                yield r

    async def tail(
        self,
        *,
        store: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
    ) -> AsyncIterator[Record]:
        seen = len(self.records[stream_for_types(types)])
        if since is not None:
            for r in self._select(store, types, 1):
                if r.stored_at >= since:
                    yield r
        while True:
            async with self._new:
                await self._new.wait()
            fresh = self._select(store, types, seen + 1)
            seen = len(self.records[stream_for_types(types)])
            for r in fresh:
                yield r

    async def deadletters(
        self, *, store: str | None = None, late: bool = False
    ) -> AsyncIterator[tuple[int, DeadLetter]]:
        for i, letter in enumerate(self.letters, 1):
            if not late and (store is None or letter.store == store):
                yield i, letter

    async def consumer(
        self, name: str, *, store: str | None = None, types: Iterable[str] | None = None
    ) -> MemoryConsumer:
        return MemoryConsumer(self, name, store, list(types or ()))

    async def stats(self) -> list[StreamStats]:
        return [
            StreamStats(s.value, len(r), 0, 1 if r else 0, len(r), 0)
            for s, r in self.records.items()
        ]

    async def close(self) -> None:
        pass


class MemoryDelivery:
    def __init__(self, consumer: MemoryConsumer, record: Record) -> None:
        self.consumer = consumer
        self.record = record

    async def ack(self) -> None:
        self.consumer.unacked.discard(self.record.seq)

    async def nak(self, delay_s: float | None = None) -> None:
        self.consumer.redeliver.append(self.record)


class MemoryConsumer:
    """Resumes from the last fetched sequence; nak'd records come back first."""

    def __init__(self, log: MemoryLog, name: str, store: str | None, types: list[str]) -> None:
        self.log = log
        self.name = name
        self.store = store
        self.types = types
        self.unacked: set[int] = set()
        self.redeliver: list[Record] = []

    async def fetch(self, batch: int = 100, timeout_s: float = 1.0) -> list[Delivery]:
        start = self.log._offsets.get(self.name, 1)
        fresh = self.log._select(self.store, self.types, start)[
            : max(batch - len(self.redeliver), 0)
        ]
        records, self.redeliver = [*self.redeliver, *fresh][:batch], []
        if fresh:
            self.log._offsets[self.name] = fresh[-1].seq + 1
        self.unacked.update(r.seq for r in records)
        return [MemoryDelivery(self, r) for r in records]

    async def close(self) -> None:
        pass
