"""A producer's events on disk until the log has them: in order, bounded, crash-safe.

A camera keeps seeing while NATS is away, and an adapter killed mid-video is run again
over the same video. The outbox is what makes both harmless: ``put`` stores events in a
SQLite file (WAL mode) and returns; a sender publishes them, oldest first, and deletes
each only once the log has acknowledged it, remembering its id, so that the same event
put again (a re-run: ids are derived from the source) is not published twice. A full
buffer is refused to the producer (``OutboxFull``), never dropped. ``docs/log.md``
("Publishing through the outbox") states the guarantees and their limits.

Why SQLite rather than segment files of our own: one transaction deletes what was
acknowledged and remembers its ids; the ids remembered are a B-tree on disk, not a set
in memory; and a torn write is a transaction SQLite never committed. The file itself,
checked before use, is ``core/outboxfile.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from core import events as ev
from core.config import OutboxConfig
from core.log import EventLog, Published, PublishError, Rejected, stream_for_type
from core.outboxfile import OutboxCorrupt, OutboxError, open_file, transaction

__all__ = [
    "LogFactory",
    "Outbox",
    "OutboxConfig",
    "OutboxCorrupt",
    "OutboxError",
    "OutboxFull",
    "OutboxStatus",
]

log = logging.getLogger(__name__)

LogFactory = Callable[[], Awaitable[EventLog]]

_CLOCK_SKEW_S = 60.0  # between this machine and the server, when the stream is searched
_IN_WINDOW = 0.8  # a resend this far into the duplicate window is still dropped by it
_IN = 500  # ids per ``IN (...)`` query
_PRUNE_EVERY_S = 60.0
_FULL_EVERY_S = 10.0
_INCREMENTAL = 2  # SQLite's auto_vacuum mode that frees pages on request


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """What a producer shows (a progress line, metrics): depth, and what became of events.

    Counters run from ``open``. ``known``: put again when already waiting or published
    (skipped). ``refused``: refused by the log, so on its dead-letter subject.
    ``full``: puts refused (or held, with ``wait``) for want of room. ``unverified``:
    events sent again after the duplicate window without the stream being searched
    (the log could not be read): a copy stored before may stand beside them.
    ``reordered``: events the log stored after a later one of the same subject.
    """

    pending: int
    pending_bytes: int
    published: int
    duplicates: int
    known: int
    refused: int
    full: int
    unverified: int
    reordered: int
    connected: bool
    last_error: str


class OutboxFull(OutboxError):
    """No room for a put: nothing of it was stored. The producer waits or stops."""

    def __init__(self, message: str, *, pending: int, pending_bytes: int) -> None:
        super().__init__(message)
        self.pending = pending
        self.pending_bytes = pending_bytes


class _Row(NamedTuple):
    seq: int
    id: str
    payload: bytes
    sent_at: float | None
    event: ev.AnyEvent | None  # None: the payload is not a valid event
    error: str  # why not


class Outbox:
    """Events on disk until the log confirms them. ``Outbox.open``, then ``async with``.

    ``new_log`` makes a fresh log for each connection: after a failure the outbox
    closes the log it had and asks for another. Give it a connection that does not
    reconnect by itself (``core.jetstream.connect(..., reconnect=False)``): a client
    that resumes a lost connection sends what it had buffered, which may store a later
    event before an earlier one lost with the connection.
    """

    def __init__(
        self,
        path: Path,
        new_log: LogFactory,
        config: OutboxConfig,
        db: sqlite3.Connection,
        lock: int,
    ) -> None:
        self.path = path
        self.config = config
        self._new_log = new_log
        self._db = db
        self._lock = lock
        self._count, self._bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM pending"
        ).fetchone()
        self._log: EventLog | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something to send
        self._freed = asyncio.Event()  # room made, or everything sent
        self._fatal: OutboxError | None = None
        self._stored: dict[tuple[str, str], int] = {}  # subject -> last row stored new
        self._unchecked: set[int] = set()  # rows sent again without a search, counted once
        self._pruned = 0.0
        self._full_warned = -_FULL_EVERY_S
        self._trouble = ""
        self._published = self._duplicates = self._skipped = self._refused = 0
        self._full = self._unverified = self._reordered = 0
        if not self._count:
            self.reclaim()  # what a previous run left behind
        if self._count > config.max_events or self._bytes > config.max_bytes:
            log.warning(
                "outbox %s holds %d events (%d bytes), over its limits (%d events, %d "
                "bytes): puts are refused until the log has taken enough",
                path,
                self._count,
                self._bytes,
                config.max_events,
                config.max_bytes,
            )

    @classmethod
    def open(
        cls, path: str | Path, new_log: LogFactory, config: OutboxConfig | None = None
    ) -> Outbox:
        """Open (or create) the buffer at ``path``: checked, and recovered after a crash.

        One process at a time: a second one is refused (``OutboxError``). A file that is
        not an outbox or is damaged is refused (``OutboxCorrupt``); a torn last write,
        which a crash leaves, is dropped with a warning.
        """
        path = Path(path)
        config = config or OutboxConfig()
        db, lock = open_file(path, max_value_bytes=config.max_event_bytes, fsync=config.fsync)
        return cls(path, new_log, config, db, lock)

    async def __aenter__(self) -> Outbox:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start sending, in the background, until ``close``."""
        if self._sender is None:
            self._sender = asyncio.create_task(self._run(), name=f"outbox {self.path}")
            self._wake.set()

    async def close(self) -> None:
        """Stop sending and close the file; what is not sent stays for the next ``open``."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await self._drop_log()
        self._freed.set()  # a put waiting for room learns that the outbox is closed
        if self._lock >= 0:
            self._db.close()
            os.close(self._lock)
            self._lock = -1

    # -- the producer's side ------------------------------------------------------------------

    async def put(self, events: Iterable[ev.Event], *, wait: bool = False) -> int:
        """Store ``events`` for sending, all or none; return how many were new.

        An event already waiting or already published (its id remembered) is skipped: a
        re-run adds nothing. Without room for the new ones, ``OutboxFull`` (counted in
        ``status().full``, and logged); with ``wait``, the put waits until the log has
        taken enough. A put bigger than the whole buffer is refused even with ``wait``.
        """
        self._check_alive()
        given = 0
        fresh: dict[str, bytes] = {}
        for event in events:
            given += 1
            if event.id in fresh:
                continue
            payload = ev.encode(event)
            if len(payload) > self.config.max_event_bytes:
                raise ValueError(
                    f"event {event.id} is {len(payload)} bytes, over the outbox's limit of "
                    f"{self.config.max_event_bytes} bytes an event ({self.path})"
                )
            fresh[event.id] = payload
        known = self._known(list(fresh))
        new = [(i, p) for i, p in fresh.items() if i not in known]
        size = sum(len(p) for _, p in new)
        if not self._has_room(len(new), size):
            self._full += 1
            c = self.config
            why = (
                f"outbox {self.path} is full: {self._count} events ({self._bytes} bytes) wait "
                f"for the log, the limits are {c.max_events} events and {c.max_bytes} bytes; "
                f"a put of {len(new)} events ({size} bytes) "
            )
            never = len(new) > c.max_events or size > c.max_bytes
            if not wait or never or self._sender is None:
                self._warn_full(why + ("can never fit" if never else "is refused"))
                raise OutboxFull(
                    why + ("can never fit" if never else "was refused"),
                    pending=self._count,
                    pending_bytes=self._bytes,
                )
            self._warn_full(why + "waits for room")
            while not self._has_room(len(new), size):
                self._freed.clear()
                await self._freed.wait()
                self._check_alive()
        added = self._insert(new)
        self._skipped += given - added
        if added:
            self._wake.set()
        return added

    async def flush(self) -> None:
        """Wait until every event put so far is confirmed by the log (or refused by it)."""
        while self._count:
            self._check_alive()
            if self._sender is None:
                raise OutboxError(f"outbox {self.path} is not sending: call start() first")
            self._freed.clear()
            await self._freed.wait()
        self._check_alive()

    def status(self) -> OutboxStatus:
        return OutboxStatus(
            pending=self._count,
            pending_bytes=self._bytes,
            published=self._published,
            duplicates=self._duplicates,
            known=self._skipped,
            refused=self._refused,
            full=self._full,
            unverified=self._unverified,
            reordered=self._reordered,
            connected=self._log is not None and not self._trouble,
            last_error=str(self._fatal) if self._fatal else self._trouble,
        )

    def _check_alive(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._lock < 0:
            raise OutboxError(f"outbox {self.path} is closed")

    def _warn_full(self, why: str) -> None:
        """Once when the buffer fills, then at most every ``_FULL_EVERY_S`` while it stays
        full: a producer retrying a refused put would otherwise flood the log."""
        now = time.monotonic()
        if now - self._full_warned >= _FULL_EVERY_S:
            log.warning("%s (%d puts refused or held since open)", why, self._full)
            self._full_warned = now

    def _has_room(self, events: int, size: int) -> bool:
        c = self.config
        return self._count + events <= c.max_events and self._bytes + size <= c.max_bytes

    def _known(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), _IN):
            part = ids[i : i + _IN]
            marks = ",".join("?" * len(part))
            found.update(
                r[0]
                for r in self._db.execute(
                    f"SELECT id FROM pending WHERE id IN ({marks}) "
                    f"UNION ALL SELECT id FROM done WHERE id IN ({marks})",
                    part + part,
                )
            )
        return found

    def _insert(self, rows: list[tuple[str, bytes]]) -> int:
        if not rows:
            return 0
        try:
            with transaction(self._db):
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO pending (id, payload) VALUES (?, ?)", rows
                )
                added = self._db.total_changes - before
        except sqlite3.Error as exc:
            raise OutboxError(
                f"outbox {self.path}: {len(rows)} events not stored: {exc} (is the disk full?)"
            ) from exc
        self._count += added
        self._bytes += sum(len(p) for _, p in rows) if added == len(rows) else self._size()
        return added

    def _size(self) -> int:
        return int(
            self._db.execute("SELECT coalesce(sum(length(payload)), 0) FROM pending").fetchone()[0]
        )

    # -- the sender ---------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.1
        while True:
            if not self._count:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._log is None:
                    self._log = await self._new_log()
                await self._send_batch(self._log)
            except asyncio.CancelledError:
                raise
            except sqlite3.Error as exc:
                self._fatal = OutboxError(f"outbox {self.path}: the sender stopped: {exc}")
                log.error("%s", self._fatal)
                self._freed.set()
                return
            except Exception as exc:  # whatever the log or the connection raised
                self._failed(exc)
                await self._drop_log()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
            else:
                delay = 0.1
                if self._trouble:
                    log.info(
                        "outbox %s: the log is back; %d events wait to be sent",
                        self.path,
                        self._count,
                    )
                    self._trouble = ""

    def _failed(self, exc: Exception) -> None:
        why = f"{type(exc).__name__}: {exc}"
        if why != self._trouble:
            log.warning(
                "outbox %s: the log is unavailable (%s); %d events wait on disk, sent when "
                "it returns",
                self.path,
                why,
                self._count,
            )
        self._trouble = why

    async def _drop_log(self) -> None:
        log_, self._log = self._log, None
        if log_ is not None:
            with contextlib.suppress(Exception):  # a closed connection refuses to close
                await log_.close()

    async def _send_batch(self, log_: EventLog) -> None:
        rows = [
            _row(*r)
            for r in self._db.execute(
                "SELECT seq, id, payload, sent_at FROM pending ORDER BY seq LIMIT ?",
                (self.config.batch,),
            )
        ]
        now = time.time()
        window = self.config.duplicate_window_s * _IN_WINDOW
        stale = [r for r in rows if r.sent_at is not None and now - r.sent_at > window]
        if stale:
            held = await self._held(log_, stale)
            if held:
                self._settle([(r, None) for r in rows if r.seq in held])
                rows = [r for r in rows if r.seq not in held]
        if not rows:
            return
        if any(r.sent_at is None for r in rows):  # else marked with the last lot's acks
            with transaction(self._db):
                self._mark_sent(now, rows[-1].seq)
        run: list[_Row] = []
        for r in rows:
            if r.event is not None:
                run.append(r)
                continue
            await self._many(log_, run)
            run = []
            await self._raw(log_, r)
        await self._many(log_, run)

    async def _many(self, log_: EventLog, rows: list[_Row]) -> None:
        """Publish ``rows`` in one lot; a refused event is found by halving the lot, and
        goes to the dead letters (the log puts it there) while the others go on."""
        if not rows:
            return
        try:
            acks = await log_.publish_many([r.event for r in rows if r.event is not None])
        except Rejected as exc:
            if len(rows) == 1:
                self._refused_row(rows[0], f"{exc.field}: {exc.reason}")
                return
            mid = len(rows) // 2
            await self._many(log_, rows[:mid])
            await self._many(log_, rows[mid:])
            return
        except PublishError as exc:
            got = [(r, a) for r, a in zip(rows, exc.confirmed, strict=False) if a is not None]
            if got:
                self._settle(got)
            raise
        self._settle(list(zip(rows, acks, strict=True)), ahead=True)

    async def _raw(self, log_: EventLog, row: _Row) -> None:
        """A stored payload that is not a valid event: the log refuses it, with the reason,
        into the dead letters, and names this file and record as its source."""
        log.warning(
            "outbox %s: record seq %d is not a valid event (%s): it goes to the dead letters",
            self.path,
            row.seq,
            row.error,
        )
        try:
            ack = await log_.publish_raw(row.payload, source=f"outbox {self.path} seq {row.seq}")
        except Rejected as exc:
            self._refused_row(row, f"{exc.field}: {exc.reason}")
            return
        self._settle([(row, ack)])

    def _refused_row(self, row: _Row, why: str) -> None:
        log.warning(
            "outbox %s: event %s refused by the log (%s): kept on its dead-letter subject",
            self.path,
            row.id,
            why,
        )
        self._refused += 1
        self._settle([(row, None)], refused=True)

    def _settle(
        self,
        done: Sequence[tuple[_Row, Published | None]],
        *,
        refused: bool = False,
        ahead: bool = False,
    ) -> None:
        """The log has these (or refused them): delete them, remember their ids.

        ``None`` for an acknowledgement: found in the stream, or refused. With ``ahead``
        the next lot is marked as sent in the same transaction, as it is about to be:
        one write to the disk a lot instead of two."""
        now = time.time()
        for row, ack in done:
            if ack is None:
                if not refused:
                    self._published += 1
                    self._duplicates += 1
                continue
            self._published += 1
            if ack.duplicate:
                self._duplicates += 1
            elif row.event is not None:
                self._check_order(row, row.event)
        with transaction(self._db):
            self._db.executemany(
                "DELETE FROM pending WHERE seq BETWEEN ? AND ?", _ranges(r.seq for r, _ in done)
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO done (id, at, refused) VALUES (?, ?, ?)",
                [(r.event.id if r.event else r.id, now, int(refused)) for r, _ in done],
            )
            if ahead:
                last = self._db.execute(
                    "SELECT max(seq) FROM (SELECT seq FROM pending ORDER BY seq LIMIT ?)",
                    (self.config.batch,),
                ).fetchone()[0]
                if last is not None:
                    self._mark_sent(now, last)
        self._count -= len(done)
        self._bytes -= sum(len(r.payload) for r, _ in done)
        self._unchecked.difference_update(r.seq for r, _ in done)
        c = self.config
        if self._count <= c.max_events // 2 and self._bytes <= c.max_bytes // 2:
            self._full_warned = -_FULL_EVERY_S  # half empty: the next time it fills is news
        self._freed.set()
        if now - self._pruned > _PRUNE_EVERY_S:
            self._prune(now)
        if not self._count:
            self.reclaim()

    def reclaim(self) -> int:
        """Give back to the file system the space sent events left behind, if more than
        ``reclaim_bytes``: SQLite's free pages and the write-ahead log. Done when the
        outbox has drained (and at open), so that a buffer that grew through an outage
        does not keep its size for good; the bytes given back (0: below the threshold).

        A file this outbox created vacuums incrementally (pages moved to the free ones,
        the file cut); a file created before that option is rewritten once (``VACUUM``),
        which switches it over."""
        db = self._db
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            page = db.execute("PRAGMA page_size").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0] * page
            logged = wal.stat().st_size if wal.exists() else 0
            if free + logged < max(self.config.reclaim_bytes, 1):
                return 0
            before = self.path.stat().st_size + logged
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
                db.executescript("PRAGMA incremental_vacuum;")  # each step frees one page
            else:
                db.executescript(f"PRAGMA auto_vacuum = {_INCREMENTAL}; VACUUM;")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            after = self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        except (sqlite3.Error, OSError) as exc:  # the space stays; nothing is lost
            log.warning(
                "outbox %s: the space of sent events was not given back: %s", self.path, exc
            )
            return 0
        log.info(
            "outbox %s drained: %d bytes given back to the file system (%d now)",
            self.path,
            before - after,
            after,
        )
        return before - after

    def _mark_sent(self, now: float, last: int) -> None:
        """Record when the records up to ``last`` were first sent, before they are: after
        a crash, what was sent longer ago than the duplicate window allows is searched
        for in the stream rather than sent blindly."""
        self._db.execute(
            "UPDATE pending SET sent_at = ? WHERE seq <= ? AND sent_at IS NULL", (now, last)
        )

    def _check_order(self, row: _Row, event: ev.AnyEvent) -> None:
        """A new copy stored after a later event of its subject: reported, never hidden."""
        subject = (event.store, event.type)
        last = self._stored.get(subject, 0)
        if row.seq < last:
            self._reordered += 1
            log.error(
                "outbox %s: event %s (record %d) was stored after record %d of the same "
                "subject %s.%s: the log holds them out of order",
                self.path,
                event.id,
                row.seq,
                last,
                event.store,
                event.type,
            )
        else:
            self._stored[subject] = row.seq

    def _prune(self, now: float) -> None:
        c = self.config
        with transaction(self._db):
            self._db.execute("DELETE FROM done WHERE at < ?", (now - c.remember_s,))
            self._db.execute(
                "DELETE FROM done WHERE n <= (SELECT max(n) FROM done) - ?", (c.remember_events,)
            )
        self._pruned = now

    async def _held(self, log_: EventLog, rows: list[_Row]) -> set[int]:
        """Which of ``rows``, sent longer ago than the duplicate window allows to send
        again safely, the log already holds: searched in the stream, by store and type,
        from when they were first sent. A log that cannot be read (an adapter's user may
        not) leaves them to be sent again: counted in ``unverified``, and logged."""
        groups: dict[tuple[str, str], list[_Row]] = {}
        for r in rows:
            if r.event is not None:
                groups.setdefault((r.event.store, stream_for_type(r.event.type)), []).append(r)
        held: set[int] = set()
        for (store, _), members in groups.items():
            wanted = {r.id: r.seq for r in members}
            since = min(r.sent_at or 0.0 for r in members) - _CLOCK_SKEW_S
            types = sorted({r.event.type for r in members if r.event is not None})
            try:
                async for record in log_.replay(
                    store=store, types=types, from_time=datetime.fromtimestamp(since, UTC)
                ):
                    seq = wanted.get(record.event.id)
                    if seq is not None:
                        held.add(seq)
            except Exception as exc:  # whatever the log raised: it cannot be read here
                fresh = {r.seq for r in members} - self._unchecked
                self._unchecked |= fresh
                self._unverified += len(fresh)
                log.warning(
                    "outbox %s: %d events were sent over %.0f s ago with no acknowledgement, "
                    "and the stream cannot be searched for them (%s: %s): they are sent "
                    "again, and a copy stored before may stand beside them (the engine "
                    "drops a repeated id)",
                    self.path,
                    len(members),
                    self.config.duplicate_window_s * _IN_WINDOW,
                    type(exc).__name__,
                    exc,
                )
        return held


def _ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted sequence numbers as runs of consecutive ones: a lot is deleted in one or few."""
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def _row(seq: int, id_: str, payload: bytes, sent_at: float | None) -> _Row:
    try:
        event = ev.decode(payload)
    except ev.EventError as exc:
        return _Row(seq, id_, payload, sent_at, None, str(exc))
    return _Row(seq, id_, payload, sent_at, event, "")
