"""Checkpoints: a store's engine state and the stream sequences it has applied, together.

The snapshot (hundreds of kB for a busy store) goes to an object bucket; a small record in a
key-value bucket points at it and is the commit: it is written with compare-and-set on the
revision the writer last saw, so of two workers that both believe they own a store, only one
can commit, and the other learns that it lost the store. A crash between the two writes
leaves an object nobody points at, removed by the next commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import zlib
from collections.abc import Callable

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where a store's engine stood: what it applied, what it had published, its rules."""

    store: str
    seqs: tuple[int, ...]  # last applied sequence per input stream (business, samples)
    derived_seq: int  # the business stream's last sequence once its output was confirmed
    packs: dict[str, str]  # pack name -> version, of the rules that made the state
    snapshot: str  # object name of the engine snapshot (zlib-compressed)
    sha256: str
    taken_at: float  # wall clock, seconds since the epoch


class LostStore(RuntimeError):
    """Another worker committed a checkpoint for this store: it is no longer ours."""


class Pacer:
    """The time a worker's stores may spend on checkpoints, shared: at most ``budget`` of it
    for all of them together, the longest-waiting store first.

    Each checkpoint's cost is a debt, paid back at ``budget`` seconds a second; a store that
    is due may start one once the debt is paid and no other due store has waited longer.
    For one store this is "after a checkpoint of 100 ms, none for 2 s" at 5%; for many, the
    stores share those turns instead of each spending 5%.
    """

    def __init__(self, budget: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.clock = clock
        self.debt = 0.0  # seconds of checkpoint not paid back yet
        self._at = clock()
        self._due: dict[str, float] = {}  # store -> when its last checkpoint ended

    def may(self, store: str, last: float) -> bool:
        """Whether ``store``, due since its checkpoint that ended at ``last``, may go now."""
        now = self.clock()
        self.debt = max(0.0, self.debt - (now - self._at) * self.budget)
        self._at = now
        self._due[store] = last
        paid = self.debt < 1e-6  # seconds: what floating point leaves of a debt paid
        return paid and min(self._due, key=self._due.__getitem__) == store

    def spent(self, store: str, seconds: float) -> None:
        self.debt += seconds
        self._due.pop(store, None)

    def forget(self, store: str) -> None:
        """The store left this worker: it waits for no turn."""
        self._due.pop(store, None)


class Checkpoints:
    """The checkpoints of every store: ``load`` once when a store is taken, then ``save``."""

    def __init__(self, kv: KeyValue, objects: ObjectStore) -> None:
        self.kv = kv
        self.objects = objects

    async def load(self, store: str) -> tuple[Checkpoint | None, bytes, int]:
        """The store's checkpoint, its snapshot and the revision to compare-and-set with
        (0: none yet)."""
        try:
            entry = await self.kv.get(store)
        except nats.js.errors.KeyNotFoundError:
            return None, b"", 0
        if entry.value is None or entry.operation is not None:  # deleted or purged
            return None, b"", entry.revision or 0
        cp = msgspec.msgpack.decode(entry.value, type=Checkpoint)
        data = (await self.objects.get(cp.snapshot)).data or b""
        if hashlib.sha256(data).hexdigest() != cp.sha256:
            raise ValueError(f"checkpoint of {store}: the snapshot does not match its digest")
        return cp, zlib.decompress(data), int(entry.revision or 0)

    async def save(
        self,
        store: str,
        *,
        seqs: tuple[int, ...],
        derived_seq: int,
        packs: dict[str, str],
        state: bytes,
        revision: int,
        previous: str | None,
    ) -> tuple[Checkpoint, int]:
        """Commit a checkpoint over ``revision``; returns it and its new revision."""
        data = zlib.compress(state, 1)
        name = f"{store}/{'-'.join(map(str, seqs))}-{time.time_ns()}"
        await self.objects.put(name, data)
        cp = Checkpoint(
            store=store,
            seqs=seqs,
            derived_seq=derived_seq,
            packs=packs,
            snapshot=name,
            sha256=hashlib.sha256(data).hexdigest(),
            taken_at=time.time(),
        )
        body = msgspec.msgpack.encode(cp)
        try:
            if revision:
                new = await self.kv.update(store, body, last=revision)
            else:
                new = await self.kv.create(store, body)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyValueError) as exc:
            await self._forget(name)
            raise LostStore(f"{store}: another worker committed a checkpoint ({exc})") from None
        if previous:
            await self._forget(previous)
        return cp, new

    async def _forget(self, name: str) -> None:
        with contextlib.suppress(nats.js.errors.ObjectNotFoundError):
            await self.objects.delete(name)
