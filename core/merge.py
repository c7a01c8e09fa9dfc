"""Several durable consumers read as one sequence, in the order the log received them.

A store's raw events live in two streams (business events, and position samples with
their own retention), but the engine must see them as one: in the order they arrived, so
that what it derives does not depend on how fetches happened to interleave. JetStream
stamps every message with its arrival time; this merge releases a message only when every
other consumer is known to hold nothing older: it has an older message waiting, or it
answered "no more messages" to a request sent after that arrival. A replay of the streams
merged by (arrival, stream) therefore gives exactly what a live reader saw, which is what
crash recovery and the tests rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from nats.aio.msg import Msg

from core.jetstream import ack_info
from core.puller import Puller


class ArrivalMerge:
    """Pulls from ``pullers`` and hands out ``(index, msg)`` in arrival order.

    ``margin_ns`` allows for the reader's clock running ahead of the servers'.
    """

    def __init__(self, pullers: list[Puller], *, batch: int = 1000, margin_ns: int = 0) -> None:
        self.pullers = pullers
        self.batch = batch
        self.margin_ns = margin_ns
        self._queues: list[deque[tuple[int, Msg]]] = [deque() for _ in pullers]
        self._horizon = [0] * len(pullers)  # all older than this is in the queue
        self._waits: dict[int, asyncio.Task[None]] = {}

    def _take(self, i: int) -> None:
        q = self._queues[i]
        for msg in self.pullers[i].take():
            q.append((ack_info(msg)[1], msg))

    async def _poll(self, i: int) -> None:
        sent = time.time_ns() - self.margin_ns
        drained = await self.pullers[i].poll(self.batch)
        self._take(i)
        if drained:
            self._horizon[i] = max(self._horizon[i], sent)

    async def next(self, limit: int, timeout_s: float) -> list[tuple[int, Msg]]:
        """Up to ``limit`` messages in arrival order; none if none came in ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i in range(len(self.pullers)):
                self._take(i)
                if not self._queues[i]:
                    await self._poll(i)
            out = self._release(limit)
            if out:
                return out
            blocked = self._blocking()
            if blocked is not None:  # an older message may still be in that one
                await self._poll(blocked)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await self._wait_any(left)

    def _release(self, limit: int) -> list[tuple[int, Msg]]:
        queues, horizon = self._queues, self._horizon
        out: list[tuple[int, Msg]] = []
        while len(out) < limit:
            heads = [(q[0][0], i) for i, q in enumerate(queues) if q]
            if not heads:
                break
            ns, i = min(heads)
            if any(not q and horizon[j] <= ns for j, q in enumerate(queues) if j != i):
                break
            out.append((i, queues[i].popleft()[1]))
        return out

    def _blocking(self) -> int | None:
        """An empty consumer that holds back the oldest waiting message, if any."""
        heads = [q[0][0] for q in self._queues if q]
        if not heads:
            return None
        oldest = min(heads)
        for j, q in enumerate(self._queues):
            if not q and self._horizon[j] <= oldest:
                return j
        return None

    async def _wait_any(self, timeout_s: float) -> None:
        """Long-poll every consumer at once; back as soon as one has a message.

        A long poll still open when another answers stays open for the next call.
        """
        for i, p in enumerate(self.pullers):
            if i not in self._waits:
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
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._waits.clear()
