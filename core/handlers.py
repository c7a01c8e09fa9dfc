"""Core subscriptions whose handler is a plain function, through nats-py's public API.

The pullers and the publish acks file each message away and never wait, so their handlers
are plain functions; nats-py calls them from the subscription's own task. Calling them as
nats-py parses each message instead (by swapping a private queue of nats-py's) saved a
little, too little for a wall-clock benchmark to show (``docs/benchmarks-history.md``), so aisle
keeps to nats-py's public API here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("aisle.log")


async def subscribe(nc: Client, subject: str, fn: Callable[[Msg], None]) -> Subscription:
    """A core subscription to ``subject`` that calls ``fn(msg)`` for each message, in order.

    Being a core subscription, nats-py subscribes it again after a reconnect. No pending
    limits: what comes is what the caller asked for (a pull's batch, a lot's acks), and a
    message dropped as "slow consumer" would be a delivery lost.
    """

    async def handle(msg: Msg) -> None:
        try:
            fn(msg)
        except Exception:  # one message must not stop the subscription
            log.exception("handling a message on %s failed", msg.subject)

    return await nc.subscribe(subject, cb=handle, pending_msgs_limit=0, pending_bytes_limit=0)
