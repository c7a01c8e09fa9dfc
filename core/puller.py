"""Batch pulls from a JetStream consumer, without nats-py's per-message waits.

nats-py's ``PullSubscription.fetch`` awaits every message of a batch through its own
``asyncio.wait_for`` (a task and a timer each): on replay that machinery took a large share
of the time (``bench/log_throughput.py``; ``docs/benchmarks.md``). Here one core
subscription collects batches (``core/handlers.py``), and one event ends each wait. The
protocol is JetStream's own: a request on ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``,
answered by messages and, when the batch cannot be filled, a status message (404 no
messages, 408 expired, 409 conflict). Being a plain subscription, nats-py re-subscribes it
after a reconnect.

Each request has its own reply subject (``<inbox>.<n>``), so several can be in flight at
once (a long poll, and a quick look beside it) and a status ends only its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from itertools import count
from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from core import handlers

STATUS = api.Header.STATUS.value  # how nats-py hands over a status line: as this header
NO_MESSAGES = "404"
CONFLICT = "409"


class ConsumerGone(RuntimeError):
    """The consumer was deleted (a partition's new owner fences out the old one)."""


class DeliveryGap(RuntimeError):
    """Messages were lost between the server and this reader (a consumer leader died with
    deliveries in flight). With cumulative acks they would never come again: the reader
    must start over from its last checkpoint."""


class ConsumerTampered(DeliveryGap):
    """The consumer's configuration is no longer the one its reader made (another user
    changed its filter, its acks, its limits): what it delivered since may be incomplete,
    so the reader starts over from its last checkpoint, on a consumer of its own again."""


# What a reader relies on in its consumer's configuration; the rest is the server's.
WATCHED = (
    "durable_name",
    "deliver_policy",
    "opt_start_seq",
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "backoff",
    "filter_subject",
    "filter_subjects",
    "sample_freq",
    "max_waiting",
    "max_ack_pending",
    "headers_only",
    "deliver_subject",
    "inactive_threshold",
    "pause_until",
)


def config_changes(
    made: api.ConsumerConfig, now: api.ConsumerConfig, *, given_only: bool = False
) -> list[str]:
    """The watched fields whose values differ: ``field: before -> now``; ``given_only``:
    those ``made`` sets (a request, where the server fills in the rest)."""
    return [
        f"{f}: {getattr(made, f, None)!r} -> {getattr(now, f, None)!r}"
        for f in WATCHED
        if getattr(made, f, None) != getattr(now, f, None)
        and not (given_only and getattr(made, f, None) is None)
    ]


class Delivered(NamedTuple):
    """A message as a puller hands it out, with what its ack subject says."""

    msg: Msg
    seq: int  # in the stream
    ns: int  # when the stream stored it
    pending: int  # in the consumer after this one


def _ack_fields(reply: str) -> tuple[int, int, int, int]:
    """Stream sequence, consumer sequence, arrival (ns) and pending, split once.

    ``msg.metadata`` parses the same subject into objects and datetimes, a cost a replay
    shows (``docs/benchmarks-history.md``). Old form ``$JS.ACK.<stream>.<consumer>.
    <delivered>.<sseq>.<cseq>.<ns>.<pending>``; the new one adds domain and account before
    the stream and a token at the end.
    """
    t = reply.split(".")
    if len(t) == 9:
        return int(t[5]), int(t[6]), int(t[7]), int(t[8])
    return int(t[7]), int(t[8]), int(t[9]), int(t[10])


class _Request:
    __slots__ = ("done", "got", "status", "want")

    def __init__(self, want: int) -> None:
        self.want, self.got = want, 0
        self.status: str | None = None
        self.done = asyncio.Event()


class Puller:
    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        *,
        strict: bool = False,
        created: datetime | None = None,
        config: api.ConsumerConfig | None = None,
        verify_every_s: float = 5.0,
    ) -> None:
        """``strict``: every delivery counts, once and in order (a consumer with cumulative
        acks, which never redelivers): a repeat is dropped and a gap raises ``DeliveryGap``.
        ``created``: when the server made the consumer, to tell it from one made again
        under its name. ``config``: the consumer as the server made it; every
        ``verify_every_s`` (not each pull) its configuration is compared with it, and a
        change raises ``ConsumerTampered``: a user allowed to create ephemeral consumers
        can update a durable one by naming it, which no permission tells apart."""
        self.nc = nc
        self.stream, self.consumer, self.created = stream, consumer, created
        self.config, self.verify_every_s = config, verify_every_s
        self._verify_at = 0.0  # at the first look, then every verify_every_s
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()
        self._batch: list[Delivered] = []  # not yet taken: in the consumer's order
        self._requests: dict[str, _Request] = {}
        self._tokens = count()
        self._sub: Subscription | None = None
        self.strict = strict
        self._cseq = 0
        self._conflict = False  # a 409 came: the consumer may be gone
        self.gap = ""

    async def start(self) -> Puller:
        self._sub = await handlers.subscribe(self.nc, f"{self.inbox}.*", self._on_msg)
        return self

    def _on_msg(self, msg: Msg) -> None:
        if msg.headers and STATUS in msg.headers:
            status = msg.headers[STATUS]
            if status == CONFLICT:  # deleted, or a limit on waiting pulls: the server knows
                self._conflict = True
            req = self._requests.get(msg.subject[len(self.inbox) + 1 :])
            if status != "100" and req is not None:  # 100 is a heartbeat; the rest end it
                req.status = status
                req.done.set()
            return
        seq, cseq, ns, pending = _ack_fields(msg.reply)
        if self.strict:
            if cseq <= self._cseq:
                return  # delivered again: it is here already
            if self._cseq and cseq != self._cseq + 1:
                self.gap = f"deliveries {self._cseq + 1}..{cseq - 1} never arrived"
            self._cseq = cseq
        # A message keeps its own subject, so it counts for the oldest request still
        # open: the server serves waiting requests in order. One that comes after its
        # request was given up on is kept all the same.
        self._batch.append(Delivered(msg, seq, ns, pending))
        for req in self._requests.values():
            if req.status is None and req.got < req.want:
                req.got += 1
                if req.got >= req.want:
                    req.done.set()
                break

    def take(self) -> list[Delivered]:
        batch, self._batch = self._batch, []
        return batch

    async def fetch(self, n: int, timeout_s: float) -> list[Delivered]:
        """Up to ``n`` messages, as soon as there are any; none if none come in time.

        What is there now comes at once (``no_wait``); if nothing is, a long poll for one
        message, then at once whatever followed it: low latency when quiet, full batches
        when busy.
        """
        if self._batch:  # stragglers of a request that timed out: never drop them
            return self.take()
        await self._request(n, {"no_wait": True}, 5.0)
        if self._batch:
            return self.take()
        await self._request(1, {"expires": int(timeout_s * 1e9)}, timeout_s)
        if self._batch and n > 1:
            await self._request(n - 1, {"no_wait": True}, 5.0)
        return self.take()

    async def poll(self, n: int) -> bool:
        """Ask for up to ``n`` messages there now (``take`` them); True if the consumer
        had no more when the server answered (every message stored before the request
        was sent has then been delivered)."""
        req = await self._request(n, {"no_wait": True}, 5.0)
        await self._check()
        # 404: none; 408: fewer than asked. Anything else (503 while a consumer leader is
        # elected, a timeout) says nothing about what is left.
        return req.status in (NO_MESSAGES, "408")

    async def wait(self, timeout_s: float) -> None:
        """A long poll for one message; it stays with the others until taken."""
        await self._request(1, {"expires": int(timeout_s * 1e9)}, timeout_s)
        await self._check()

    async def _check(self) -> None:
        if self._conflict:
            self._conflict = False
            if await self._gone():
                raise ConsumerGone(self.subject)
        if self.gap:
            raise DeliveryGap(f"{self.subject}: {self.gap}")
        if self.config is not None and time.monotonic() >= self._verify_at:
            self._verify_at = time.monotonic() + self.verify_every_s
            await self.verify()

    async def verify(self) -> None:
        """Raise ``ConsumerTampered`` if the consumer's configuration changed since it was
        made (``ConsumerGone`` if it is gone or made again); no answer now says nothing."""
        if self.config is None:
            return
        try:
            info = await self.nc.jetstream().consumer_info(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            raise ConsumerGone(self.subject) from None
        except (nats.errors.Error, TimeoutError):
            return
        if self.created is not None and info.created != self.created:
            raise ConsumerGone(self.subject)
        changes = config_changes(self.config, info.config)
        if changes:
            raise ConsumerTampered(f"{self.subject}: changed by another: {'; '.join(changes)}")

    async def _gone(self) -> bool:
        """Whether the consumer was deleted (or made again, another's), as the server says;
        its status text is for people, so the question goes to the consumer API."""
        try:
            info = await self.nc.jetstream().consumer_info(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            return True
        except (nats.errors.Error, TimeoutError):
            return False  # no answer now (a leader election): the next 409 asks again
        return self.created is not None and info.created != self.created

    async def _request(self, n: int, options: dict[str, object], wait_s: float) -> _Request:
        token = str(next(self._tokens))
        req = self._requests[token] = _Request(n)
        try:
            request = json.dumps({"batch": n, **options}).encode()
            await self.nc.publish(self.subject, request, reply=f"{self.inbox}.{token}")
            # On a timeout a reconnect lost the request or its answer: go with what came.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(req.done.wait(), wait_s + 1.0)
        finally:
            del self._requests[token]
        return req

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
