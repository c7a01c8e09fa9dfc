"""Batch pulls from a JetStream consumer, without nats-py's per-message waits.

nats-py's ``PullSubscription.fetch`` awaits every message of a batch through its own
``asyncio.wait_for`` (a task and a timer each); on replay that machinery was a fifth of the
time, measured (``bench/log_throughput.py``). Here one core subscription on an inbox
collects a batch with a callback, and one event ends the wait. The protocol is JetStream's
own: a request on ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``, answered by messages
and, when the batch cannot be filled, a status message (404 no messages, 408 expired, 409
conflict). Being a plain subscription, nats-py re-subscribes it after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

STATUS = "Status"


class Puller:
    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()
        self._batch: list[Msg] = []
        self._want = 0
        self._done = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> Puller:
        self._sub = await self.nc.subscribe(self.inbox, cb=self._on_msg)
        return self

    async def _on_msg(self, msg: Msg) -> None:
        if msg.headers and STATUS in msg.headers:
            if msg.headers[STATUS] != "100":  # 100 is a heartbeat; the rest end the batch
                self._done.set()
            return
        self._batch.append(msg)
        if len(self._batch) >= self._want:
            self._done.set()

    async def fetch(self, n: int, timeout_s: float) -> list[Msg]:
        """Up to ``n`` messages, as soon as there are any; none if none come in time.

        What is there now comes at once (``no_wait``); if nothing is, a long poll for one
        message, then at once whatever followed it: low latency when quiet, full batches
        when busy.
        """
        if self._batch:  # stragglers of a request that timed out: never drop them
            batch, self._batch = self._batch, []
            return batch
        batch = await self._request(n, {"no_wait": True}, 5.0)
        if batch:
            return batch
        batch = await self._request(1, {"expires": int(timeout_s * 1e9)}, timeout_s)
        if batch and n > 1:
            batch += await self._request(n - 1, {"no_wait": True}, 5.0)
        return batch

    async def _request(self, n: int, options: dict[str, object], wait_s: float) -> list[Msg]:
        self._want = n
        self._done.clear()
        request = json.dumps({"batch": n, **options}).encode()
        await self.nc.publish(self.subject, request, reply=self.inbox)
        # On a timeout a reconnect lost the request or its answer: return what came.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), wait_s + 1.0)
        batch, self._batch = self._batch, []
        return batch

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
