"""Who runs which store: leases in a key-value bucket whose entries expire.

NATS gives the coordination: a lease is a key ``store.<id>`` created only if absent and
renewed by compare-and-set on its revision; the bucket's TTL removes the keys of a worker
that stopped renewing (it crashed, or lost the network), and its stores are free to take.
Workers announce themselves under ``worker.<id>`` in the same bucket, with what they run,
so each can take its fair share (``ceil(stores / workers)``) and hand back the excess when
another joins. That is the whole protocol: there is no leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Iterable

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from core.config import ConfigError
from core.jetstream import ELECTION_S, electing

log = logging.getLogger(__name__)


class WorkerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What ``aisle rules status`` shows of a running engine worker."""

    worker: str
    rules_version: str
    packs: dict[str, str]
    stores: tuple[str, ...]
    started_at: float
    seen_at: float


class DuplicateWorker(ConfigError):
    """Another worker of the same id is running."""


class Board:
    """The lease bucket's live entries, kept up to date by one long-lived watcher.

    A worker looks at the bucket every third of a lease time; a watcher made for each look
    is a new consumer each time (30 a minute, each lingering on the server for minutes, and
    on a cluster each a request to the metadata leader). One watcher follows the bucket
    instead. An entry the bucket's TTL removes sends no message, so the board forgets an
    entry ``ttl_s`` after it last changed; and it starts a new watcher every ``resync_s``
    (or after an error), in case one missed something during a reconnect.
    """

    def __init__(self, kv: KeyValue, ttl_s: float, resync_s: float = 60.0) -> None:
        self.kv, self.ttl_s, self.resync_s = kv, ttl_s, resync_s
        self._seen: dict[str, tuple[bytes, float]] = {}  # key -> (value, when it came)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._since = 0.0
        self.watchers = 0  # watchers started: what the metrics show

    async def entries(self, timeout_s: float = 5.0) -> dict[str, bytes]:
        stale = time.monotonic() - self._since > self.resync_s
        if self._task is None or self._task.done() or stale:
            await self._restart()
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        now = time.monotonic()
        return {k: v for k, (v, at) in self._seen.items() if now - at < self.ttl_s}

    async def _restart(self) -> None:
        await self.close()
        self._seen, self._ready = {}, asyncio.Event()
        watcher = await self.kv.watchall()
        self.watchers += 1
        self._since = time.monotonic()
        self._task = asyncio.create_task(self._follow(watcher))

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # "that was all there is"; updates follow
                    self._ready.set()
                elif entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    self._seen.pop(entry.key, None)
                else:
                    self._seen[entry.key] = (entry.value, time.monotonic())
        except Exception as exc:  # a reconnect, an election: the next look starts another
            log.warning("lease watcher stopped; a new one follows", extra={"error": repr(exc)})
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    @property
    def watching(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


class Leases:
    def __init__(
        self, kv: KeyValue, worker: str, board: Board | None = None, ttl_s: float = 0.0
    ) -> None:
        """``ttl_s``: the bucket's entry time, 0 if unknown (then an expired lease is lost)."""
        self.kv = kv
        self.worker = worker
        self.held: dict[str, int] = {}  # store -> lease revision
        self.sent: dict[str, float] = {}  # store -> when its last confirmed write was sent
        self.board = board  # None: each look reads the bucket once (a one-off command)
        self.ttl_s = ttl_s

    def _unwritten_since_ours(self, store: str, sent: float) -> bool:
        """Whether a lease key found absent can have been written by no one since this
        worker's last confirmed write (sent at ``sent``). Ours expires ``ttl_s`` after it
        was written; another worker's write comes after that and stays ``ttl_s`` more, be
        it a lease or the mark of one given back. So the key is absent with nothing written
        in between for ``2 * ttl_s`` after ours, measured from when ours was sent (it was
        written later)."""
        return bool(self.ttl_s) and time.monotonic() - sent < 2 * self.ttl_s

    async def take(self, store: str) -> bool:
        """Take a free store, or one this worker id held before it restarted."""
        key, me = f"store.{store}", self.worker.encode()
        now = time.monotonic()
        try:
            self.held[store] = await self.kv.create(key, me)
            self.sent[store] = now
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await self.kv.get(key)
            if entry.value != me:
                return False
            now = time.monotonic()
            self.held[store] = await self.kv.update(key, me, last=entry.revision)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyWrongLastSequenceError):
            return False
        self.sent[store] = now
        return True

    async def renew(self, patience_s: float = ELECTION_S) -> list[str]:
        """Renew every lease held; returns the stores whose lease was lost.

        A renewal the cluster leaves unanswered while it elects the bucket's leader is
        tried again for ``patience_s``: giving up at once dropped a worker's own stores at
        every node loss. Trying again after the lease time is safe, as a renewal is a
        compare-and-set: it succeeds only if nobody has written the key since. A renewal
        that landed although its answer was lost leaves the key one revision ahead, with
        this worker's id: that is still this worker's lease, not a lost one. Past
        ``patience_s`` the error is raised (the lease stays held; the next round tries).
        """
        lost = []
        deadline = time.monotonic() + patience_s  # one election for every lease, not one each
        for store, revision in list(self.held.items()):
            renewed = await self._renew(store, revision, deadline)
            if renewed is None:
                del self.held[store]
                lost.append(store)
            else:
                self.held[store] = renewed
        return lost

    async def _renew(self, store: str, revision: int, deadline: float) -> int | None:
        """The lease's new revision, or None if another worker has it (or it expired)."""
        key, me = f"store.{store}", self.worker.encode()
        sent = self.sent.get(store, float("-inf"))
        for _ in range(1000):  # bounded: a replica behind may show an older revision
            try:
                try:
                    now = time.monotonic()
                    renewed = await self.kv.update(key, me, last=revision)
                    self.sent[store] = now
                    return renewed
                except nats.js.errors.KeyWrongLastSequenceError:
                    entry = await self.kv.get(key)
                    if entry.value != me or entry.revision is None or entry.revision == revision:
                        return None
                    revision = entry.revision  # our own renewal, unanswered: renew it
            except nats.js.errors.KeyNotFoundError as exc:
                if getattr(exc, "entry", None) is not None:
                    return None  # a delete mark: given back by whoever had it since
                if not self._unwritten_since_ours(store, sent):
                    return None
                # Expired while the cluster could take no renewal (a leader election
                # longer than the time left), and nobody can have written it since.
                revision = 0
                log.info("lease expired unrenewed; taken again", extra={"store": store})
                continue
            except Exception as exc:
                if not electing(exc) or time.monotonic() > deadline:
                    raise
                log.info(
                    "lease renewal unanswered; trying again",
                    extra={"store": store, "worker": self.worker, "error": repr(exc)},
                )
                await asyncio.sleep(0.5)
        return None

    async def give_back(self, store: str) -> None:
        revision = self.held.pop(store, None)
        self.sent.pop(store, None)
        if revision is not None:
            try:
                await self.kv.delete(f"store.{store}", last=revision)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code not in (10071, 10164):  # "wrong last sequence"
                    raise
                # It had expired (and may have been taken): not ours to delete any more.

    async def announce(self, status: WorkerStatus) -> None:
        await self.kv.put(f"worker.{self.worker}", msgspec.json.encode(status))

    async def retire(self) -> None:
        """A worker stopping cleanly takes its announcement with it: the others count it
        out at once (its stores were given back), not once the lease time has passed."""
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
            await self.kv.delete(f"worker.{self.worker}")

    async def alone(self, patience_s: float) -> None:
        """Refuse to start beside a running worker of the same id: the two would take one
        lease each other's and tear down each other's consumers. A recent announcement is
        a worker that runs or one that just died: a running one announces again within a
        round (``patience_s``), a dead one does not, and its id may be taken again."""
        seen = await self._seen()
        if seen is None or time.time() - seen > self.ttl_s:
            return
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = await self._seen()
            if now is None:
                return  # it stopped cleanly
            if now > seen:
                raise DuplicateWorker(
                    f"a worker {self.worker!r} is running already (it announced itself "
                    f"{time.time() - now:.0f} s ago): give this one another --worker, or "
                    "stop that one first"
                )

    async def _seen(self) -> float | None:
        try:
            entry = await self.kv.get(f"worker.{self.worker}")
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return msgspec.json.decode(entry.value, type=WorkerStatus).seen_at

    async def view(self) -> tuple[list[WorkerStatus], dict[str, str]]:
        """The workers alive now (their announcements have not expired), and which
        worker holds each store."""
        entries = await (self.board.entries() if self.board else _entries(self.kv))
        workers = [
            msgspec.json.decode(v, type=WorkerStatus)
            for k, v in entries.items()
            if k.startswith("worker.")
        ]
        owners = {
            k.removeprefix("store."): v.decode()
            for k, v in entries.items()
            if k.startswith("store.")
        }
        return sorted(workers, key=lambda w: w.worker), owners

    async def plan(self, stores: Iterable[str]) -> tuple[list[str], list[str]]:
        """The stores to try to take and the ones to give back, for a fair share.

        Free stores are tried in an order of this worker's own (a stable hash of its id and
        the store), so that two workers starting together do not contend for the same ones,
        and a worker restarted under the same id tries them in the same order.
        """
        stores = sorted(set(stores))
        workers, owners = await self.view()
        alive = max(1, len(workers))
        share = math.ceil(len(stores) / alive) if stores else 0
        mine = [s for s in stores if s in self.held]
        if len(mine) > share:
            return [], mine[share:]
        free = sorted(
            (s for s in stores if s not in self.held and owners.get(s, self.worker) == self.worker),
            key=lambda s: _order(self.worker, s),
        )
        return free[: share - len(mine)], []


def _order(worker: str, store: str) -> bytes:
    """A worker's own order of the stores, the same in every process (``hash`` is not)."""
    return hashlib.blake2b(f"{worker}\0{store}".encode(), digest_size=8).digest()


async def _entries(kv: KeyValue) -> dict[str, bytes]:
    """Every live key and its value, read in one pass of a watcher."""
    watcher = await kv.watchall(ignore_deletes=True)
    out: dict[str, bytes] = {}
    try:
        async for entry in watcher:
            if entry is None:  # the watcher's "that was all"
                break
            if entry.value and entry.operation is None:
                out[entry.key] = entry.value
    finally:
        await watcher.stop()
    return out


async def running_workers(js: JetStreamContext, bucket: str) -> list[WorkerStatus] | None:
    """The engine workers alive now and what they run, read without creating the lease
    bucket (looking is a viewer's right, creating it is not); None: no bucket, so no
    worker has ever run in this deployment."""
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        return None
    return (await Leases(kv, "status").view())[0]
