"""Projections over the log, exactly once: each reads its event types through a durable
JetStream consumer and commits every batch, its rows and its stream position, in one
database transaction.

After a crash the rows and the position are both there or both not: a projection starts
its consumer again right after the position the database holds, so no event is applied
twice and none is skipped. An event stored twice in the log (a resend past the server's
duplicate window) is applied once: each projection remembers the ids it applied
(``Applied``). The position is written by compare-and-set, so a second process running
the same projection on the same stores stops instead of applying events twice.

A message a projection cannot apply (not a valid event, not on its own subject, an event
that contradicts the read models) is recorded with the reason (``Rejection``) in the
same transaction, and kept on the dead-letter subject: derived and operator events by the
projection, raw ones by the engine, which reads them first. The projection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.js.errors
import sqlalchemy as sa
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlmodel import Session, col, select

from core import events as ev
from core.jetstream import JetStreamLog, SubjectFilter
from core.log import DeadLetter, Stream
from core.puller import ConsumerGone, Delivered, DeliveryGap, Puller
from readmodels import bulk, retention
from readmodels.alerts import Alerts
from readmodels.dbfile import DatabaseFile
from readmodels.measures import Heatmaps, Metrics
from readmodels.projection import Projection, Unexpected
from readmodels.receipts import Receipts
from readmodels.tables import Applied, Position, Rejection
from readmodels.visits import Visits

log = logging.getLogger("aisle.projections")

ALL_STORES = "*"
CONSUMER_PREFIX = "projections_"


def projections() -> tuple[Projection, ...]:
    """Every read model, in the order they are reported."""
    return (Visits(), Receipts(), Alerts(), Metrics(), Heatmaps())


def by_name(names: Iterable[str]) -> tuple[Projection, ...]:
    """The projections named (all of them for none); ``ValueError`` names an unknown one."""
    known = {p.name: p for p in projections()}
    wanted = list(names)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"no projection {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in wanted) if wanted else tuple(known.values())


class PositionMoved(RuntimeError):
    """Another process moved this projection's position: two would apply events twice."""


class ScopeConflict(RuntimeError):
    """The projection already follows the log with another scope (every store, or one)."""


def consumer_name(projection: str, scope: str) -> str:
    return f"{CONSUMER_PREFIX}{projection}_{'all' if scope == ALL_STORES else scope}"


@dataclass(frozen=True, slots=True)
class Item:
    """One message of a batch: the event, or why it is not one."""

    seq: int
    subject: str
    payload: bytes
    event: ev.Event | None  # None: refused (``error``), or not this projection's
    error: ev.EventError | None = None


@dataclass
class Progress:
    """Where a projection stands, for a progress line."""

    name: str
    seq: int = 0
    applied: int = 0
    pending: int = 0  # messages the consumer has not delivered yet
    rejected: int = 0
    caught_up: bool = False


@dataclass
class _Outcome:
    seq: int
    applied: int
    rejected: int = 0
    letters: list[Rejection] = field(default_factory=list)  # to keep as dead letters


class ProjectionRunner:
    """One projection on one scope: its consumer, its batches, its position."""

    def __init__(
        self,
        projection: Projection,
        log: JetStreamLog,
        db: Engine,
        *,
        scope: str = ALL_STORES,
        batch: int = 500,
        lock: asyncio.Lock | None = None,
    ) -> None:
        self.projection = projection
        self.log = log
        self.db = db
        self.scope = scope
        self.batch = batch
        self.lock = lock or asyncio.Lock()  # shared where the database has one writer
        self.stream = log.config.events_stream
        self.progress = Progress(projection.name)
        self.consumer = consumer_name(projection.name, scope)
        self._puller: Puller | None = None
        self._wanted: SubjectFilter | None = None
        prefix, store = log.config.prefix, scope
        self._subjects = {f"{prefix}.{store}.{t}" for t in projection.types}
        self._mine = SubjectFilter(self._subjects)

    # -- the database side (runs in a thread) ----------------------------------------------

    def _position(self) -> int:
        with Session(self.db) as s, s.begin():
            name = self.projection.name
            # A write first: SQLite then takes its write lock now, waiting for it, where a
            # read that turns into a write fails at once if another process wrote between.
            s.execute(
                update(Position)
                .where(col(Position.projection) == name, col(Position.scope) == self.scope)
                .values(stream=Position.stream)
                .execution_options(synchronize_session=False)
            )
            others = s.exec(
                select(Position.scope).where(
                    Position.projection == name, Position.scope != self.scope
                )
            ).all()
            clash = [o for o in others if ALL_STORES in (o, self.scope)]
            if clash:
                what = "every store" if clash[0] == ALL_STORES else f"store {clash[0]}"
                raise ScopeConflict(
                    f"projection {name} already follows {what} in this database: run it "
                    f"the same way (one process per store, or one for every store), or "
                    "`aisle projections rebuild`"
                )
            pos = s.get(Position, (name, self.scope))
            if pos is None:
                pos = Position(projection=name, scope=self.scope, stream=self.stream)
                s.add(pos)
            if pos.stream != self.stream:
                raise ScopeConflict(
                    f"projection {name} in this database was projected from stream "
                    f"{pos.stream}, not {self.stream} (another AISLE_PREFIX): use a database "
                    "of its own for each deployment"
                )
            self.progress.seq, self.progress.applied = pos.seq, pos.events
            return pos.seq

    def _commit(self, items: Sequence[Item]) -> _Outcome:
        """Apply a batch and move the position past it, in one transaction."""
        name = self.projection.name
        last = items[-1].seq
        expected = self.progress.seq
        with Session(self.db) as s, s.begin():
            # Compare-and-set, first: it takes the write lock (SQLite) or the row's (PG) at
            # once; if another process has moved the position, nothing here commits.
            self._move(s, expected, expected, 0)
            wants, checks_first = self.projection.wants, self.projection.checks_first
            events = [i.event for i in items if i.event is not None]
            done = _applied(s, name, events)
            applied: list[dict[str, str]] = []
            letters = []
            todo: list[tuple[Item, ev.Event]] = []
            for item in items:
                e = item.event
                if e is None:
                    if item.error is not None:
                        letters.append(self._reject(s, item, item.error))
                elif (e.id, e.type) not in done and wants(e):  # else: stored twice, or not its
                    done.add((e.id, e.type))
                    todo.append((item, e))
            refused = None
            if checks_first:  # it checks each event before it writes: one savepoint a batch
                try:
                    with s.begin_nested():
                        refused = self.projection.apply_all(s, [(i.seq, e) for i, e in todo])
                except (IntegrityError, DataError):  # a row the tables refuse: which one?
                    refused = None
            if refused is None:
                refused = self._one_by_one(s, todo)
            for n, (item, e) in enumerate(todo):
                if n in refused:
                    letters.append(self._reject(s, item, refused[n]))
                else:
                    applied.append({"projection": name, "event_id": e.id, "type": e.type})
            bulk.insert(s, _APPLIED, applied)
            self._move(s, expected, last, len(applied))
        return _Outcome(last, len(applied), len(letters), [r for r in letters if r.deadletter])

    def _one_by_one(self, s: Session, todo: list[tuple[Item, ev.Event]]) -> dict[int, Unexpected]:
        """Each event in a savepoint of its own: those the projection or the database
        refuse (by their index in ``todo``) wrote nothing."""
        refused: dict[int, Unexpected] = {}
        for n, (item, e) in enumerate(todo):
            try:
                with s.begin_nested():
                    self.projection.apply(s, item.seq, e)
            except Unexpected as exc:
                refused[n] = exc
            except (IntegrityError, DataError) as exc:
                refused[n] = Unexpected("$", f"the database refused it: {exc.orig}")
        return refused

    def _move(self, s: Session, expected: int, seq: int, applied: int) -> None:
        """Move the position from ``expected`` to ``seq``, or raise ``PositionMoved``."""
        name = self.projection.name
        moved = s.execute(
            update(Position)
            .where(
                col(Position.projection) == name,
                col(Position.scope) == self.scope,
                col(Position.seq) == expected,
            )
            .values(seq=seq, events=Position.events + applied, updated_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            found = s.exec(
                select(Position.seq).where(
                    Position.projection == name, Position.scope == self.scope
                )
            ).first()
            raise PositionMoved(
                f"projection {name} ({self.scope}): another process moved its position to "
                f"{found} (this one was at {expected}): run one process per projection and "
                "store, or stop the other before a rebuild"
            )

    def _reject(self, s: Session, item: Item, error: ev.EventError) -> Rejection:
        kind = item.subject.split(".", 2)[-1]
        store = item.subject.split(".", 2)[1] if item.subject.count(".") >= 2 else "_unknown"
        row = Rejection(
            projection=self.projection.name,
            seq=item.seq,
            store=store,
            subject=item.subject[:256],
            event_id=item.event.id if item.event is not None else None,
            field=error.field[:256],
            reason=error.reason,
            # The engine reads raw subjects first and keeps what it refuses there.
            deadletter=kind not in ev.RAW_TYPES,
        )
        s.merge(row)
        log.warning(
            "event not applied",
            extra={
                "projection": self.projection.name,
                "seq": item.seq,
                "field": error.field,
                "error": error.reason,
            },
        )
        return row

    def _unpublished(self) -> list[Rejection]:
        with Session(self.db) as s:
            return list(
                s.exec(
                    select(Rejection).where(
                        Rejection.projection == self.projection.name,
                        col(Rejection.deadletter).is_(True),
                        col(Rejection.published).is_(False),
                    )
                )
            )

    def _published(self, seqs: list[int]) -> None:
        with Session(self.db) as s, s.begin():
            s.execute(
                update(Rejection)
                .where(
                    col(Rejection.projection) == self.projection.name,
                    col(Rejection.seq).in_(seqs),
                )
                .values(published=True)
            )

    # -- the log side ------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the consumer right after the position the database holds; send the dead
        letters a crash left unsent."""
        async with self.lock:
            seq = await asyncio.to_thread(self._position)
        last = (await self.log.js.stream_info(self.stream)).state.last_seq
        if seq > last:
            raise ScopeConflict(
                f"projection {self.projection.name} has read the log up to sequence {seq}, "
                f"but stream {self.stream} ends at {last}: the stream was made again; "
                "`aisle projections rebuild`"
            )
        puller, client_filter = await self.log.engine_consumer(
            self.consumer,
            Stream.EVENTS,
            store=self.scope,
            types=sorted(self.projection.types),
            start_seq=seq + 1,
        )
        self._puller, self._wanted = puller, client_filter and self._mine
        await self._send(await asyncio.to_thread(self._unpublished))

    async def step(self, timeout_s: float = 1.0) -> int:
        """Apply what the consumer has now (waiting up to ``timeout_s`` for something, once
        it has nothing: 0 for no wait); returns how many messages it considered."""
        assert self._puller is not None
        done = await self._puller.poll(self.batch)
        msgs = self._puller.take()
        if not msgs and not done:
            done = await self._puller.poll(self.batch)
            msgs = self._puller.take()
        if not msgs:
            self.progress.pending, self.progress.caught_up = 0, done
            if done and timeout_s > 0:
                await self._puller.wait(timeout_s)
                msgs = self._puller.take()
            if not msgs:
                return 0
        msgs = [d for d in msgs if d.seq > self.progress.seq]  # redelivered: applied already
        if not msgs:
            return 0
        items = [self._item(d) for d in msgs]
        async with self.lock:
            outcome = await asyncio.to_thread(self._commit, items)
        p = self.progress
        p.seq, p.applied = outcome.seq, p.applied + outcome.applied
        p.pending, p.caught_up = msgs[-1].pending, False
        p.rejected += outcome.rejected
        await self._send(outcome.letters)
        await msgs[-1].msg.ack()  # cumulative: the batch is in the database
        return len(msgs)

    def _item(self, d: Delivered) -> Item:
        subject = d.msg.subject
        if self._wanted is not None and not self._wanted(subject):
            return Item(d.seq, subject, b"", None)  # not ours: an older server read wider
        try:
            e = ev.decode(d.msg.data)
            ev.check_subject(e, subject)
            ev.check_time(e, d.ns / 1e9, self.log.config.max_future_s)
        except ev.EventError as exc:
            return Item(
                d.seq, subject, d.msg.data, None, ev.subject_fault(d.msg.data, subject) or exc
            )
        return Item(d.seq, subject, d.msg.data, e)

    async def _send(self, letters: list[Rejection]) -> None:
        """Keep refused messages on the dead-letter subject, then mark them sent. A crash
        in between sends them again at the next start: the server's duplicate window
        drops the copy (a dead letter's message id is a hash of its payload)."""
        if not letters:
            return
        payloads = await self._payloads(letters)
        await self.log.set_aside(
            [
                DeadLetter(
                    store=r.store,
                    field=r.field,
                    reason=f"{r.reason} (projection {r.projection}, seq {r.seq})",
                    payload=payloads.get(r.seq, b""),
                    source=f"projection:{r.projection}",
                )
                for r in letters
            ]
        )
        async with self.lock:
            await asyncio.to_thread(self._published, [r.seq for r in letters])

    async def _payloads(self, letters: list[Rejection]) -> dict[int, bytes]:
        """The refused messages' bytes, as the stream holds them."""
        out = {}
        for r in letters:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await self.log.js.get_msg(self.stream, r.seq)
                out[r.seq] = msg.data or b""
        return out

    async def close(self) -> None:
        if self._puller is not None:
            puller, self._puller = self._puller, None
            with contextlib.suppress(Exception):  # the connection may be going
                await puller.stop()


def _applied(s: Session, projection: str, events: list[ev.Event]) -> set[tuple[str, str]]:
    if not events:
        return set()
    rows = s.execute(
        sa.select(_APPLIED.c.event_id, _APPLIED.c.type).where(
            _APPLIED.c.projection == projection,
            bulk.among(s, _APPLIED.c.event_id, {e.id for e in events}),
        )
    )
    return {(i, t) for i, t in rows}


_APPLIED: sa.Table = Applied.__table__  # type: ignore[attr-defined]


class ProjectionService:
    """Every projection (or those given) on one scope, in one process."""

    def __init__(
        self,
        log: JetStreamLog,
        db: Engine,
        *,
        scope: str = ALL_STORES,
        selected: Sequence[Projection] | None = None,
        batch: int = 500,
    ) -> None:
        self.file = DatabaseFile.of(db)  # a SQLite file deleted under us ends the run
        # SQLite has one writer: the runners take turns. PostgreSQL takes their
        # transactions side by side (each writes its own tables and position row), so
        # one runner's round trips and the server's work overlap another's Python.
        shared = asyncio.Lock() if db.dialect.name == "sqlite" else None
        self.log, self.db, self.lock = log, db, shared
        self.pruned_at = -retention.EVERY_S  # monotonic: the first round prunes
        self.runners = [
            ProjectionRunner(p, log, db, scope=scope, batch=batch, lock=shared)
            for p in (selected or projections())
        ]

    @property
    def progress(self) -> list[Progress]:
        return [r.progress for r in self.runners]

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        until_caught_up: bool = False,
        on_progress: Callable[[list[Progress]], None] | None = None,
        every_s: float = 1.0,
    ) -> None:
        """Follow the log until ``stop`` is set, or (``until_caught_up``) until every
        projection has applied what the log held when it last looked."""
        stop = stop or asyncio.Event()
        for r in self.runners:
            await _retrying(r.open, r, stop)
        tasks = [asyncio.create_task(self._follow(r, stop, until_caught_up)) for r in self.runners]
        try:
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=every_s, return_when=asyncio.FIRST_EXCEPTION)
                self.file.check()
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                if on_progress is not None:
                    on_progress(self.progress)
                if not until_caught_up and time.monotonic() - self.pruned_at >= retention.EVERY_S:
                    await self.prune()
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            for r in self.runners:
                await r.close()

    async def prune(self) -> dict[str, int]:
        """What is past the log's retention (``readmodels.retention``), now."""
        self.pruned_at = time.monotonic()
        async with self.lock or contextlib.nullcontext():
            done = await asyncio.to_thread(
                retention.prune, self.db, self.log.config, datetime.now(UTC)
            )
        if done:
            log.info("read models pruned past the log's retention", extra={"deleted": done})
        return done

    async def _follow(
        self, r: ProjectionRunner, stop: asyncio.Event, until_caught_up: bool
    ) -> None:
        while not stop.is_set():
            try:
                # Caught up means the server had nothing more when asked: no wait then.
                n = await r.step(timeout_s=0.0 if until_caught_up else 1.0)
            except ConsumerGone:
                raise PositionMoved(
                    f"projection {r.projection.name} ({r.scope}): another process took its "
                    "consumer over: run one process per projection and store"
                ) from None
            except DeliveryGap as exc:  # or a consumer changed by another: read again
                log.warning(
                    "deliveries lost; reading again from the position",
                    extra={
                        "projection": r.projection.name,
                        "seq": r.progress.seq,
                        "error": str(exc),
                    },
                )
                await r.close()
                await _retrying(r.open, r, stop)
                continue
            except OperationalError as exc:  # locked by another process, a disk error
                _database_away(r, exc)
                await r.close()
                await _retrying(r.open, r, stop, first_s=1.0)
                continue
            if until_caught_up and not n and r.progress.caught_up:
                return


def _database_away(r: ProjectionRunner, exc: OperationalError) -> None:
    log.warning(
        "the read models' database refused the batch; reading again from the position",
        extra={"projection": r.projection.name, "seq": r.progress.seq, "error": str(exc.orig)},
    )


async def _retrying(
    open_: Callable[[], Awaitable[None]],
    r: ProjectionRunner,
    stop: asyncio.Event,
    first_s: float = 0.0,
    most_s: float = 30.0,
) -> None:
    """``open_`` until the database lets it (a lock another process holds, a disk that
    came back): a projection waits for its database rather than end, and says so."""
    wait = first_s
    while True:
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                return
        try:
            await open_()
            return
        except OperationalError as exc:
            _database_away(r, exc)
            wait = min(most_s, max(1.0, wait * 2))


def delete_positions(db: Engine, names: Iterable[str]) -> None:
    """Forget where the projections named stand (their rows are being dropped)."""
    with Session(db) as s, s.begin():
        s.execute(delete(Position).where(col(Position.projection).in_(list(names))))
