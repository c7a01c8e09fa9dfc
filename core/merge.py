"""Several durable consumers read as one sequence, the same however fetches interleave.

A store's raw events live in two streams (business events, and position samples with their
own retention), and the engine must see them as one. Each stream keeps its own order; across
the two, the merge goes by event time, but only among messages that reached the log close
together (within ``window``): a message is taken before the other stream's head only if it
is older in event time and arrived no more than ``window`` after the earliest waiting one.
What the merge does is then a function of the two streams alone (their messages and
arrival stamps), never of when fetches happened to return; a replay merged the same way
(``merged``) gives exactly what a live reader saw, which crash recovery and the tests rely
on. The window absorbs the server storing the two streams' messages a little apart in a
bulk backfill; live, it costs that much latency when the other stream is quiet.

A consumer that has nothing waiting holds the merge back until it is known to hold
nothing that could come first. Two things tell: a message of its own stamped later
(stamps only grow along a stream, and a strict puller sees every delivery, in order), or
an answer "no more messages" to a request sent more than ``lag`` after that window. The
lag allows for a replicated stream, whose leader stamps a message when it proposes it but
delivers it only once a quorum has it. A store's business events and position samples
come together while someone is in the store, so the lag is rarely waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from core.puller import Delivered, Puller

T = TypeVar("T")
Item = tuple[int, float, T]  # arrival (ns), sort key (event time), the item
WINDOW_NS = 20_000_000
LAG_NS = 250_000_000


def _release(
    queues: Sequence[deque[Item[T]]],
    horizons: Sequence[float],
    window_ns: int,
    limit: int,
    out: list[tuple[int, T]],
) -> float | None:
    """Move what can go now from ``queues`` to ``out``; returns the arrival time a quiet
    consumer must be known to have passed before more can go (None: all queues empty).

    Spelled out in plain loops: it runs once per message, and the version with
    comprehensions, ``any`` and ``min`` with a key was several times slower (the figures:
    ``docs/benchmarks-history.md``).
    """
    while len(out) < limit:
        first = None  # the earliest arrival among the heads
        for q in queues:
            if q and (first is None or q[0][0] < first):
                first = q[0][0]
        if first is None:
            return None
        until = first + window_ns
        pick, best = -1, None  # the oldest in event time among heads that arrived by then
        for k, (q, h) in enumerate(zip(queues, horizons, strict=True)):
            if not q:
                if h <= until:  # quiet, and not known to have passed ``until``
                    return until
            elif q[0][0] <= until and (best is None or q[0][1] < best):
                pick, best = k, q[0][1]
        out.append((pick, queues[pick].popleft()[2]))
    return None


def merged(streams: Sequence[Sequence[Item[T]]], window_ns: int = WINDOW_NS) -> list[tuple[int, T]]:
    """Whole streams merged as the live merge would: ``(stream index, item)``."""
    out: list[tuple[int, T]] = []
    queues = [deque(s) for s in streams]
    _release(queues, [float("inf")] * len(queues), window_ns, sum(map(len, queues)), out)
    return out


class ArrivalMerge(Generic[T]):
    """Pulls from ``pullers`` and hands out ``(index, item)`` in the merge's order;
    ``key(delivered)`` gives a message's event time and the item it stands for."""

    def __init__(
        self,
        pullers: list[Puller],
        key: Callable[[Delivered], tuple[float, T]],
        *,
        batch: int = 1000,
        window_ns: int = WINDOW_NS,
        lag_ns: int = LAG_NS,
    ) -> None:
        self.pullers = pullers
        self.key = key
        self.batch = batch
        self.window_ns = window_ns
        self.lag_ns = lag_ns
        self._queues: list[deque[Item[T]]] = [deque() for _ in pullers]
        self._horizons = [0.0] * len(pullers)  # all that arrived before is in the queue
        self._waits: dict[int, asyncio.Task[None]] = {}

    def _take(self, i: int) -> None:
        q, key = self._queues[i], self.key
        for d in self.pullers[i].take():
            q.append((d.ns, *key(d)))
        if q:  # all stamped before its newest is here
            self._horizons[i] = max(self._horizons[i], q[-1][0] - 1)

    async def _poll(self, i: int) -> None:
        sent = time.time_ns()
        drained = await self.pullers[i].poll(self.batch)
        self._take(i)
        if drained:
            self._horizons[i] = max(self._horizons[i], sent - self.lag_ns)

    async def next(
        self,
        limit: int,
        timeout_s: float,
        *,
        idle: Callable[[], Awaitable[None]] | None = None,
    ) -> list[tuple[int, T]]:
        """Up to ``limit`` items in order; none if none came in ``timeout_s``. ``idle`` is
        awaited once if it has to wait: when the consumers had nothing to give at once."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i in range(len(self.pullers)):
                self._take(i)
                if not self._queues[i]:
                    await self._poll(i)
            out: list[tuple[int, T]] = []
            until = _release(self._queues, self._horizons, self.window_ns, limit, out)
            if out:
                return out
            if idle is not None:
                await idle()
                idle = None
            if until is not None:  # a quiet consumer must be asked again, once it is time
                early = (until + self.lag_ns - time.time_ns()) / 1e9
                if early > 0:
                    await self._wait_any(early, only_empty=True)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await self._wait_any(left)

    async def _wait_any(self, timeout_s: float, *, only_empty: bool = False) -> None:
        """Long-poll the consumers at once; back when one has a message or time is up.

        A long poll still open when another answers stays open for the next call.
        """
        for i, p in enumerate(self.pullers):
            if i not in self._waits and not (only_empty and self._queues[i]):
                self._waits[i] = asyncio.create_task(p.wait(min(timeout_s, 5.0)))
        done, _ = await asyncio.wait(
            self._waits.values(), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        for i, task in list(self._waits.items()):
            if task in done:
                del self._waits[i]
                task.result()

    async def close(self) -> None:
        for task in self._waits.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._waits.clear()
