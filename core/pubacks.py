"""Pipelined JetStream publishes and their acks, on one subscription.

nats-py's ``publish_async`` costs, per message, a semaphore taken through
``asyncio.wait_for``, a random token, a future with a done-callback, and on the way back a
``json.loads`` and a ``PubAck`` dataclass. A core publish with a reply subject
``<inbox>.<n>``, answered on one subscription whose callback decodes the ack with msgspec
and counts it, does the same work faster (``bench/log_throughput.py``; the figures in
``docs/benchmarks.md``). The protocol is JetStream's own: a message published with a reply
subject is answered there with a publish ack, an error, or a 503 status when no stream
listens.

A ``Sending`` is one lot of messages: sent at once, confirmed later, so a caller can do
other work while the server stores them. What is not confirmed in time is sent again with
the same ``Nats-Msg-Id``: a message stored whose ack was lost is not stored twice.

The duplicate window is the stream's, not a subject's, and derived ids are predictable: a
client allowed to publish anywhere in the stream can take a coming event's id first, and
the server would then drop the real event as its duplicate. So a ``duplicate`` ack is
checked against the message it names (the message get API, where the connection may read
the stream); one that is not this event is reported, and the event is stored again under
a fresh, unpredictable message id. Duplicates are rare (a resend after a lost ack), so the
check costs nothing on the common path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from itertools import count

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from core import handlers
from core.log import Published, PublishError

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"
Item = tuple[str, bytes, str]  # subject, payload, message id

# What a lost connection raises on the way out; the message is sent again later.
_SEND_ERRORS = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)
_UNAVAILABLE = 503  # no stream answered, or its leader is being elected: try again
_NO_RESPONDERS = "no stream responded"
# What the server answers when it cannot store, and what to do; sending again soon would
# not help (nats-server's error codes: JSInsufficientResourcesErr, JSStorageResources-
# ExceededErr, JSMemoryResourcesExceededErr, JSStreamStoreFailedF).
STORAGE_FULL = (
    "JetStream's storage is full (the server's jetstream max_file_store, or the disk under "
    "its store directory): free disk space there, raise max_file_store in the server's "
    "configuration, or keep less (a max_age or max_bytes on the streams, discard old)"
)
JETSTREAM_OFF = (
    "JetStream does not answer: it is off (nats-server -js turns it on), a cluster is still "
    "electing its leader (try again), or the server disabled it, as it does when its storage "
    "runs out (its log says so): free disk space under its store directory and restart it"
)
_LASTING = {
    10023: STORAGE_FULL,
    10047: STORAGE_FULL,
    10028: "JetStream's memory storage is full: raise the server's jetstream max_memory_store",
    10077: (
        "the stream could not store it; at a limit of its own with discard new (maximum "
        "bytes or messages exceeded), `aisle log configure` shows its limits and --apply "
        "lifts them, or let it drop old messages (discard old, a max_age)"
    ),
}


def advice(err_code: int) -> str:
    """What to do about a JetStream error that lasts, by its code; empty for the rest."""
    return _LASTING.get(err_code, "")


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


class _Stored(msgspec.Struct):
    subject: str = ""
    data: bytes = b""  # base64 on the wire


class _MsgGet(msgspec.Struct):
    message: _Stored | None = None
    error: _ApiError | None = None


class _Identity(msgspec.Struct):
    """What a message id is derived from: an event's id; a dead letter's refused payload."""

    id: str | None = None
    payload: str | None = None  # base64 on the wire: compared as it is


_decode_ack = msgspec.json.Decoder(_Ack).decode
_decode_get = msgspec.json.Decoder(_MsgGet).decode
_decode_identity = msgspec.json.Decoder(_Identity).decode
_NO_MESSAGE = 10037  # the message get API: no message at that sequence
_CHECKS = 256  # stored messages looked at at once
_NO_STREAM = _Ack(error=_ApiError(code=_UNAVAILABLE, description=_NO_RESPONDERS))


class PubAcks:
    """The acks of one connection's publishes; ``send`` starts a lot."""

    def __init__(
        self, nc: Client, *, max_pending: int, timeout_s: float, deadline_s: float
    ) -> None:
        self.nc = nc
        self.max_pending = max_pending  # unconfirmed messages at most
        self.timeout_s = timeout_s  # for a lot's acks, before what is missing is resent
        self.deadline_s = deadline_s  # for a lot, in all, before PublishError
        self.inbox = nc.new_inbox()
        self._cut = len(self.inbox) + 1
        self._waiting: dict[int, tuple[Sending, int]] = {}  # token -> lot, index
        self._tokens = count()
        self._room = asyncio.Event()
        self._room.set()
        self._sub: Subscription | None = None
        # Whether this connection may read the streams it publishes to, for checking a
        # duplicate ack: None until the first check finds out.
        self.may_read: bool | None = None

    async def send(self, items: Sequence[Item]) -> Sending:
        """Send ``items`` (an id repeated in them goes once); confirm with ``confirmed``."""
        if self._sub is None:
            # Being a core subscription, nats-py subscribes it again after a reconnect.
            self._sub = await handlers.subscribe(self.nc, f"{self.inbox}.*", self._on_ack)
        lot = Sending(self, items)
        await self._send(lot, lot.todo)
        return lot

    async def _send(self, lot: Sending, indices: list[int]) -> None:
        """Publish; whatever cannot go now stays in ``lot.todo`` for the next round."""
        lot.todo = []
        for n, i in enumerate(indices):
            if len(self._waiting) >= self.max_pending:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timeout_s):
                        await self._room.wait()
                if len(self._waiting) >= self.max_pending:
                    lot.todo = indices[n:]
                    return
            subject, payload, msg_id = lot.items[i]
            token = next(self._tokens)
            self._waiting[token] = (lot, i)  # before: the ack may come during the await
            lot.tokens[i] = token
            lot.done.clear()
            try:
                await self.nc.publish(
                    subject, payload, reply=f"{self.inbox}.{token}", headers={MSG_ID: msg_id}
                )
            except BaseException as exc:
                self._forget(token)
                del lot.tokens[i]
                if not isinstance(exc, _SEND_ERRORS):
                    raise  # too large, a bad subject: sending again would not help
                lot.todo = indices[n:]
                return

    def _on_ack(self, msg: Msg) -> None:
        entry = self._waiting.pop(int(msg.subject[self._cut :]), None)
        if entry is None:
            return  # given up on; its message went again under the same id
        lot, i = entry
        if msg.headers and msg.headers.get("Status") == str(_UNAVAILABLE):
            ack = _NO_STREAM
        else:
            try:
                ack = _decode_ack(msg.data)
            except msgspec.DecodeError:
                ack = _Ack(error=_ApiError(description=f"unreadable ack {msg.data[:80]!r}"))
        lot.answer(i, ack)
        if len(self._waiting) <= self.max_pending // 2:
            self._room.set()

    def _forget(self, token: int) -> None:
        self._waiting.pop(token, None)
        if len(self._waiting) <= self.max_pending // 2:
            self._room.set()

    async def stored(self, stream: str, seq: int) -> _Stored | None:
        """The message at ``seq`` in ``stream`` (None if there is none), through the message
        get API; ``PermissionError`` if this connection may not read the stream."""
        subject = f"$JS.API.STREAM.MSG.GET.{stream}"
        ask = asyncio.ensure_future(
            self.nc.request(subject, b'{"seq":%d}' % seq, timeout=self.timeout_s)
        )
        # A subject the connection may not publish on gets no answer, but the server says
        # so at once (to the connection): no need to wait the whole timeout.
        while not ask.done():
            await asyncio.wait({ask}, timeout=0.05)
            if not ask.done() and _denied(self.nc, subject):
                ask.cancel()
                raise PermissionError(str(self.nc.last_error))
        got = _decode_get(ask.result().data)
        if got.error is not None:
            if got.error.err_code == _NO_MESSAGE:
                return None
            raise PublishError(
                f"checking a duplicate ack: {subject} answered {got.error.description!r} "
                f"(error {got.error.err_code})"
            )
        return got.message


def _denied(nc: Client, subject: str) -> bool:
    refused = str(nc.last_error or "").lower()
    return "permissions violation" in refused and f'"{subject.lower()}"' in refused


def _same(stored: bytes, ours: bytes) -> bool:
    """Whether a stored payload is ours: the same event id, or for a dead letter the same
    refused payload (their bytes may differ: a payload from outside re-encoded, a letter
    with another source), or else the same bytes."""
    if stored == ours:
        return True
    mine = _identity(ours)
    return mine is not None and _identity(stored) == mine


def _identity(payload: bytes) -> tuple[str, str] | None:
    try:
        found = _decode_identity(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if found.id is not None:
        return "id", found.id
    return ("payload", found.payload) if found.payload is not None else None


class Sending:
    """A lot of messages on their way to the log."""

    def __init__(self, acks: PubAcks, items: Sequence[Item]) -> None:
        self.acks = acks
        self.items = items
        self.answers: list[_Ack | None] = [None] * len(items)
        self.tokens: dict[int, int] = {}  # index -> token, while sent and unanswered
        self.done = asyncio.Event()  # set when nothing sent is unanswered
        self.started = time.monotonic()
        # An id repeated within the lot goes once and is reported as a duplicate: a
        # clustered stream answers a second copy still in flight with an error that
        # nats-py does not hand back, which costs a whole timeout (nats-io/nats.py#985).
        first: dict[str, int] = {}
        self.repeats: list[tuple[int, int]] = []
        self.todo: list[int] = []  # not sent yet
        self.last_refusal: _ApiError | None = None  # the last "unavailable" answer
        self.duplicates: list[int] = []  # answered "duplicate" by the server
        self.preempted = 0  # of those, another message's: stored again under a fresh id
        for i, (_, _, msg_id) in enumerate(items):
            if msg_id in first:
                self.repeats.append((i, first[msg_id]))
            else:
                first[msg_id] = i
                self.todo.append(i)

    def answer(self, i: int, ack: _Ack) -> None:
        self.answers[i] = ack
        if ack.duplicate:
            self.duplicates.append(i)
        del self.tokens[i]
        if not self.tokens:
            self.done.set()

    async def confirmed(self) -> list[Published]:
        """Wait for every ack; send again what is unconfirmed until the deadline passes."""
        wait = 0.05
        while True:
            if self.tokens:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.acks.timeout_s):
                        await self.done.wait()
            retry = self._unconfirmed()
            if not retry:
                results = self._results()
                if self.duplicates and self.acks.may_read is not False:
                    await self._check_duplicates(results)
                return results
            self._refuse_denied(retry)
            if self.acks.nc.is_closed:  # it never comes back: sending again cannot help
                raise PublishError(
                    f"{len(retry)} of {len(self.items)} events not confirmed: the "
                    "connection to NATS is closed",
                    self._partial(),
                )
            if time.monotonic() - self.started > self.acks.deadline_s:
                raise PublishError(
                    f"{len(retry)} of {len(self.items)} events not confirmed within "
                    f"{self.acks.deadline_s}s: {self._why()}",
                    self._partial(),
                )
            log.info("retrying %d unconfirmed publishes", len(retry))
            await asyncio.sleep(wait)
            wait = min(wait * 2, 1.0)
            await self.acks._send(self, retry)

    async def _check_duplicates(self, results: list[Published]) -> None:
        """Make sure each message the server called a duplicate is this one: the same
        subject and payload (``_same``). Another message under this message id (a
        forgery, or two events' ids colliding) is reported, and this one is stored again
        under a fresh message id, so the real event lands: ``results`` then name where."""
        found: dict[int, _Stored | None] = {}
        for start in range(0, len(self.duplicates), _CHECKS):
            part = self.duplicates[start : start + _CHECKS]
            try:
                stored = await asyncio.gather(
                    *(self.acks.stored(results[i].stream, results[i].seq) for i in part)
                )
            except PermissionError as exc:
                self.acks.may_read = False
                log.warning(
                    "duplicate acks are not checked: this connection may not read stream "
                    "%s (%s); a message published first under one of its events' ids would "
                    "stand in for it (docs/log.md)",
                    results[part[0]].stream,
                    exc,
                )
                return
            self.acks.may_read = True
            found.update(zip(part, stored, strict=True))
        again = []
        for i, msg in found.items():
            subject, payload, msg_id = self.items[i]
            if msg is not None and msg.subject == subject and _same(msg.data, payload):
                continue
            log.error(
                "message id %s was taken by another message (a forgery or a collision): "
                "%s; %s is stored again under a fresh message id",
                msg_id,
                f"seq {results[i].seq} on {msg.subject}"
                if msg is not None
                else f"seq {results[i].seq}, no longer stored",
                subject,
            )
            again.append(i)
        if not again:
            return
        self.preempted += len(again)
        lot = await self.acks.send(
            [(self.items[i][0], self.items[i][1], _fresh(self.items[i][2])) for i in again]
        )
        for i, done in zip(again, await lot.confirmed(), strict=True):
            results[i] = Published(
                self.items[i][2], done.stream, done.seq, preempted_by=results[i].seq
            )
        for i, j in self.repeats:  # a copy within the lot is where its first one went
            results[i] = Published(results[j].id, results[j].stream, results[j].seq, True)

    def _refuse_denied(self, retry: list[int]) -> None:
        """A subject this connection may not publish on is refused by the server with a
        "Permissions Violation" (to the connection, not as an ack): sending it again would
        wait out the deadline for nothing, so it ends here with the server's words."""
        refused = str(self.acks.nc.last_error or "")
        if "permissions violation" not in refused.lower():
            return
        for i in retry:
            subject = self.items[i][0]
            if f'"{subject.lower()}"' in refused.lower():  # the server lowercases it
                raise PublishError(
                    f"publish to {subject} refused: {refused.removeprefix('nats: ')} "
                    "(this connection's NATS user may not publish there; docs/security.md)",
                    self._partial(),
                )

    def _why(self) -> str:
        """Why nothing was confirmed, as far as the connection and the answers tell."""
        nc, last = self.acks.nc, self.last_refusal
        if not nc.is_connected:
            return "the NATS server does not answer (reconnecting); is it up and reachable?"
        if last is None:
            return "no acknowledgement came in time (a slow server, or one unreachable a while)"
        if last.description == _NO_RESPONDERS:
            return f"the server is up but no stream answered: it was deleted, or {JETSTREAM_OFF}"
        return f"the server answered {last.description!r} (error {last.err_code})"

    def abandon(self) -> None:
        """Stop waiting: a late ack is ignored, and the window has room again."""
        for token in self.tokens.values():
            self.acks._forget(token)
        self.tokens = {}
        self.done.set()

    def _unconfirmed(self) -> list[int]:
        """What must go again: unsent, unanswered, or answered "unavailable"."""
        retry = self.todo
        for i, token in self.tokens.items():
            self.acks._forget(token)  # a late answer is ignored; the resend gets its own
            retry.append(i)
        self.tokens = {}
        for i, ack in enumerate(self.answers):
            if ack is None or ack.error is None:
                continue
            what = advice(ack.error.err_code)
            if ack.error.code != _UNAVAILABLE or what:
                raise PublishError(
                    f"publish to {self.items[i][0]} refused: {ack.error.description} "
                    f"(code {ack.error.code}, error {ack.error.err_code})"
                    + (f": {what}" if what else ""),
                    self._partial(),
                )
            self.last_refusal = ack.error
            self.answers[i] = None
            retry.append(i)
        self.todo = []
        return sorted(retry)

    def _partial(self) -> list[Published | None]:
        """What the server stored and acknowledged, by index, when the lot fails: the
        events newly stored (a "duplicate" answer is left out: it is checked only on the
        way to success, in ``_check_duplicates``)."""
        return [
            Published(self.items[i][2], ack.stream, ack.seq)
            if ack is not None and ack.error is None and not ack.duplicate
            else None
            for i, ack in enumerate(self.answers)
        ]

    def _results(self) -> list[Published]:
        results: list[Published] = [None] * len(self.items)  # type: ignore[list-item]
        for i, ack in enumerate(self.answers):
            if ack is not None:
                results[i] = Published(self.items[i][2], ack.stream, ack.seq, ack.duplicate)
        for i, j in self.repeats:
            done = results[j]
            results[i] = Published(done.id, done.stream, done.seq, duplicate=True)
        return results


def _fresh(msg_id: str) -> str:
    """A message id nobody can take first: the event's, and a random suffix."""
    return f"{msg_id}~{secrets.token_urlsafe(12)}"
