"""The event log: one interface, a JetStream implementation and an in-memory one.

The log is the one source of truth. Publishing is idempotent by event id; reading is by
store, by type, from a stream sequence or from a time; consumers ack explicitly, after
their effect is committed. An event that breaks its schema never reaches the business
stream: it goes to the dead-letter subject with the reason, and the caller gets
``Rejected``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import groupby
from typing import Protocol

import msgspec

from core.events import RAW_TYPES, SAMPLE_TYPES, STORE_PATTERN, AnyEvent, Event, EventError
from core.merge import merged


class Stream(StrEnum):
    """Which stream a read looks at."""

    EVENTS = "events"  # business events, raw and derived
    SAMPLES = "samples"  # position samples: high volume, short retention
    DEADLETTER = "deadletter"


def stream_for_type(event_type: str) -> Stream:
    return Stream.SAMPLES if event_type in SAMPLE_TYPES else Stream.EVENTS


def stream_for_types(types: Iterable[str] | None) -> Stream:
    """The one stream that holds ``types``; position samples are never mixed with the rest."""
    kinds = {stream_for_type(t) for t in types or ()}
    if len(kinds) > 1:
        raise ValueError("position samples live in their own stream: read them separately")
    return kinds.pop() if kinds else Stream.EVENTS


_loose = msgspec.json.Decoder(dict)
_store = re.compile(STORE_PATTERN)


def store_of(payload: bytes) -> str:
    """The store a refused payload names, if it names a valid one: its dead letters go there."""
    try:
        store = _loose.decode(payload).get("store")
    except msgspec.DecodeError:
        return "_unknown"
    return store if isinstance(store, str) and _store.match(store) else "_unknown"


@dataclass(frozen=True, slots=True)
class Record:
    """An event as the log holds it: with its stream sequence and arrival time."""

    seq: int
    event: AnyEvent
    stored_ns: int = 0  # arrival in the log, ns since the epoch (not the event time)

    @property
    def stored_at(self) -> datetime:
        return datetime.fromtimestamp(self.stored_ns / 1e9, UTC)


@dataclass(frozen=True, slots=True)
class Published:
    """The log's acknowledgement; ``duplicate`` means the event was already there.

    ``preempted_by``: the sequence of another message the server had taken under this
    event's ``Nats-Msg-Id`` (a forgery or a collision); the event was then stored again
    under a fresh message id, at ``seq``. 0 when nothing stood in its way.
    """

    id: str
    stream: str
    seq: int
    duplicate: bool = False
    preempted_by: int = 0


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """What the dead-letter subject keeps: the refused bytes, untouched, and why."""

    store: str
    field: str
    reason: str
    payload: bytes
    source: str = ""
    # The refused payload's size when it was over the server's limit: ``payload`` then
    # keeps only its start (a whole one could not be stored), 0 when it is whole.
    size: int = 0


class Rejected(EventError):
    """The event broke its schema; it was kept on the dead-letter subject, not published."""

    def __init__(self, error: EventError, deadletter_seq: int | None) -> None:
        super().__init__(error.field, error.reason)
        self.deadletter_seq = deadletter_seq


class PublishError(RuntimeError):
    """The log did not confirm a publish before the deadline; the event may be retried.

    ``confirmed`` holds, for each event given, the log's acknowledgement if one came
    before it gave up, else None (empty when unknown): a caller that keeps its own queue
    (``core.outbox``) drops what is stored and has only the rest in doubt.
    """

    def __init__(self, message: str, confirmed: Sequence[Published | None] = ()) -> None:
        super().__init__(message)
        self.confirmed = tuple(confirmed)


@dataclass(frozen=True, slots=True)
class StreamStats:
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int
    subjects: dict[str, int] = field(default_factory=dict)
    replicas: int = 1
    leader: str = ""  # the server that leads the stream, on a cluster
    lagging: list[str] = field(default_factory=list)  # replicas behind the leader or offline
    lag: dict[str, int] = field(default_factory=dict)  # consumer -> messages it has yet to get


def stores_of(stats: Iterable[StreamStats]) -> list[str]:
    """The stores the streams hold messages of (the second token of every subject)."""
    found = {
        subject.split(".")[1] for s in stats for subject in s.subjects if subject.count(".") >= 2
    }
    return sorted(found - {"_unknown"})


class Delivery(Protocol):
    """A record handed to a durable consumer; ack it once its effect is committed."""

    record: Record

    async def ack(self) -> None: ...

    async def nak(self, delay_s: float | None = None) -> None: ...


class Consumer(Protocol):
    name: str

    async def fetch(self, batch: int = 100, timeout_s: float = 1.0) -> list[Delivery]:
        """Up to ``batch`` deliveries; an empty list when nothing arrived in ``timeout_s``."""
        ...

    async def close(self) -> None: ...


class EventLog(Protocol):
    async def publish(self, event: Event) -> Published: ...

    async def publish_many(self, events: Sequence[Event]) -> list[Published]:
        """Publish all, pipelined; every one is confirmed (or rejected) when this returns."""
        ...

    async def publish_raw(self, payload: bytes, *, source: str = "") -> Published:
        """Validate bytes from outside; refused ones go to the dead letters (``Rejected``)."""
        ...

    def replay(
        self,
        *,
        store: str | None = None,
        types: Iterable[str] | None = None,
        from_seq: int | None = None,
        from_time: datetime | None = None,
    ) -> AsyncIterator[Record]:
        """What the log holds now, oldest first; ends at the newest record at the start.

        ``from_time`` is the log's arrival time, not the event time.
        """
        ...

    def tail(
        self,
        *,
        store: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
    ) -> AsyncIterator[Record]:
        """New records as they arrive, until cancelled; with ``since`` (the log's arrival
        time), those stored from then first."""
        ...

    def deadletters(
        self, *, store: str | None = None, late: bool = False
    ) -> AsyncIterator[tuple[int, DeadLetter]]:
        """Refused payloads; with ``late``, events the engine found too late to apply."""
        ...

    async def consumer(
        self, name: str, *, store: str | None = None, types: Iterable[str] | None = None
    ) -> Consumer:
        """A durable consumer: it resumes where it left off, across restarts."""
        ...

    async def stats(self) -> list[StreamStats]: ...

    async def close(self) -> None: ...


async def publish_in_order(log: EventLog, events: Sequence[Event], lot: int = 5000) -> None:
    """Publish ``events`` so that the log stores them in this order across its two streams.

    The engine service merges a store's two streams by arrival (``read_arrived``). Sent
    pipelined in bulk, one stream's messages can be stored tens of milliseconds behind the
    other's, and the service would apply them in that order: events late that came in
    time. Here each run of one stream's events goes pipelined (a stream keeps its order)
    and is confirmed before the next run, of the other stream, is sent: what a store's
    adapters delivering as things happen give the log, and what a backfill should do.
    """
    for _, run in groupby(events, key=lambda e: stream_for_type(e.type)):
        batch = list(run)
        for i in range(0, len(batch), lot):
            await log.publish_many(batch[i : i + lot])


async def read_arrived(log: EventLog, store: str) -> list[AnyEvent]:
    """A store's raw events in the order the engine service applies them: the two streams
    merged as ``core.merge`` merges them live, by arrival; what the log's replay leaves out
    (a payload on another type's or store's subject, one dated past ``max_future_s`` after
    it was stored) the service sets aside too. This defines what an uninterrupted run of the
    service derives: the one order every replay of a store's log (what-if, QA scenarios,
    the demo) applies."""
    business = sorted(RAW_TYPES - SAMPLE_TYPES)
    streams = []
    for types in (business, sorted(SAMPLE_TYPES)):
        replay = log.replay(store=store, types=types)
        streams.append([(r.stored_ns, r.event.at.timestamp(), r.event) async for r in replay])
    return [e for _, e in merged(streams)]
