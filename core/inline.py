"""Core subscriptions whose messages are handled as nats-py parses them.

A nats-py subscription with a callback puts each message on an ``asyncio.Queue``, and a task
of its own takes it off and awaits the callback: a queue round trip, a coroutine and a task
switch per message. For the engine's pulls and publish acks, whose handlers only file the
message away and never wait, that hand-over was 1.5% of a worker's instructions in a
catch-up (callgrind; ``docs/benchmarks.md``). Here the queue is one that calls the handler
at once.

This leans on one detail of nats-py 2.x (``Subscription._pending_queue.put_nowait`` is how
a message reaches a subscription); ``tests/test_log.py`` checks it still does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("aisle.log")


class _Handler(asyncio.Queue[Msg]):
    """Stands in for a subscription's queue: stores nothing, calls ``fn`` instead (so it
    always looks empty, and draining the subscription has nothing to wait for)."""

    def __init__(self, fn: Callable[[Msg], None]) -> None:
        super().__init__()
        self._fn = fn

    def put_nowait(self, msg: Msg) -> None:
        try:
            self._fn(msg)
        except Exception:  # one message must not break the connection's read loop
            log.exception("handling a message on %s failed", msg.subject)


async def subscribe(nc: Client, subject: str, fn: Callable[[Msg], None]) -> Subscription:
    """A core subscription to ``subject`` that calls ``fn(msg)`` for each message, inline.

    ``fn`` must not block: it runs inside the connection's read loop. Being a core
    subscription, nats-py subscribes it again after a reconnect.
    """
    # No byte limit: nats-py counts bytes pending until its own task takes a message,
    # which here never happens; the handler keeps up by construction.
    sub = await nc.subscribe(subject, pending_bytes_limit=0)
    sub._pending_queue = _Handler(fn)  # before any await: no message can come in between
    return sub
