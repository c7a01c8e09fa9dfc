"""The event log on NATS JetStream.

Three streams per deployment prefix: business events, position samples (short retention)
and dead letters. Subjects are ``<prefix>.<store>.<type>``. Publishes carry the event id
as ``Nats-Msg-Id`` so the server drops a second copy inside its duplicate window; beyond
the window, ids are deterministic and consumers are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import msgspec
import msgspec.json as msgspec_json
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from core import events as ev
from core import streamconfig
from core.access import may_publish
from core.config import ConfigError, LogConfig, NatsAuth
from core.log import (
    DeadLetter,
    Delivery,
    Published,
    Record,
    Rejected,
    Stream,
    StreamStats,
    store_of,
    stream_for_type,
    stream_for_types,
)
from core.pubacks import JETSTREAM_OFF, Item, PubAcks, Sending, advice
from core.puller import ConsumerTampered, Delivered, Puller, config_changes
from core.streamconfig import StreamDifference

log = logging.getLogger(__name__)

# What a message's headers (its ``Nats-Msg-Id``) may take of the server's payload limit.
HEADERS_ROOM = 256
# How a deployment's business stream describes itself: how deployments are found.
EVENTS_DESCRIPTION = "aisle business events (raw and derived)"


async def deployments(nc: Client, timeout_s: float = 5.0) -> list[str]:
    """The prefixes of the aisle deployments on this server (those whose business stream
    exists), sorted."""
    found: set[str] = set()
    offset = 0
    while True:
        msg = await nc.request(
            "$JS.API.STREAM.LIST", json.dumps({"offset": offset}).encode(), timeout=timeout_s
        )
        page = json.loads(msg.data)
        if "error" in page:
            nats.js.errors.APIError.from_error(page["error"])  # raises
        streams = page.get("streams") or []
        for info in streams:
            config = info.get("config", {})
            subjects = config.get("subjects") or []
            if config.get("description") == EVENTS_DESCRIPTION and subjects:
                found.add(subjects[0].split(".", 1)[0])
        offset += len(streams)
        if not streams or offset >= page.get("total", 0):
            return sorted(found)


class ConnectError(ConnectionError):
    """The first connection failed: the reason, and what to do about it."""


class Unreachable(ConnectError):
    """No server answered (rather than one refusing the credentials or the TLS): a
    producer with an outbox may start anyway and send when one does."""


async def connect(
    url: str,
    *,
    name: str = "aisle",
    auth: NatsAuth | None = None,
    timeout_s: float = 5.0,
    reconnect: bool = True,
) -> Client:
    """A client that reconnects forever once connected: a server restart is an outage, not
    an end. The first connection fails fast instead (``ConnectError``), with the reason:
    wrong credentials or a TLS mismatch would fail the same way on every retry.

    Without ``reconnect`` a lost connection is closed for good: what it had buffered is
    never sent, so a caller that resends in order itself (``core.outbox``) cannot see a
    later event stored before an earlier one lost with the connection.

    ``url`` may list several servers of a cluster, comma-separated. Replies come to the
    credentials' own inbox prefix (``NatsAuth.inbox``).
    """
    servers = [u.strip() for u in url.split(",") if u.strip()]
    random.shuffle(servers)  # clients spread over a cluster's servers
    auth = auth or NatsAuth()
    options = _auth_options(auth)
    first = await _first_contact(servers, options, timeout_s)
    # The server that answered first, then the others in order: nats-py's own random pick
    # could try a dead one first and print its refusal though another server answers.
    return await nats.connect(
        servers=[first, *(s for s in servers if s != first)],
        dont_randomize=True,
        name=name,
        allow_reconnect=reconnect,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=timeout_s,
        pending_size=64 * 1024 * 1024,
        error_cb=_connection_error,
        # Replies, pulled messages and watches come to this user's own inbox prefix: the
        # server lets no other user subscribe to it (core/access.py).
        inbox_prefix=auth.inbox,
        **options,
    )


def _auth_options(auth: NatsAuth) -> dict[str, Any]:
    """nats-py's connect arguments for the credentials and TLS that ``auth`` names."""
    options: dict[str, Any] = {}
    if auth.user:
        options["user"] = auth.user
    if auth.password:
        options["password"] = auth.password
    if auth.token:
        options["token"] = auth.token
    if auth.nkey_seed_file:
        options["nkeys_seed"] = str(auth.nkey_seed_file)
    if auth.creds_file:
        options["user_credentials"] = str(auth.creds_file)
    if auth.tls:
        try:
            context = ssl.create_default_context(
                cafile=str(auth.tls_ca_file) if auth.tls_ca_file else None
            )
            if auth.tls_cert_file and auth.tls_key_file:
                context.load_cert_chain(str(auth.tls_cert_file), str(auth.tls_key_file))
        except (OSError, ssl.SSLError) as exc:
            files = [auth.tls_ca_file, auth.tls_cert_file, auth.tls_key_file]
            raise ConnectError(
                f"NATS TLS files ({', '.join(str(f) for f in files if f)}): {exc}: check "
                "AISLE_NATS_TLS_CA, AISLE_NATS_TLS_CERT and AISLE_NATS_TLS_KEY"
            ) from None
        options["tls"] = context
    return options


async def _first_contact(servers: list[str], options: dict[str, Any], timeout_s: float) -> str:
    """Connect once to each server in turn, without retrying, until one accepts; that one.

    A refused credential or a failed TLS handshake ends it at once: every server of a
    deployment shares them. Only an unreachable server is passed over for the next one.
    """
    reasons = []
    seen: list[Exception] = []

    async def collect(exc: Exception) -> None:
        seen.append(exc)

    for server in servers:
        seen.clear()
        wants_tls = "tls" in options or server.startswith("tls://")
        if wants_tls:
            try:
                offered = await _tls_offered(server, timeout_s)
            except (OSError, TimeoutError, ValueError) as exc:
                reasons.append(f"{server}: {type(exc).__name__}: {exc}")
                continue
            if not offered:
                raise ConnectError(
                    f"NATS at {server} does not speak TLS, and TLS was asked for (a tls:// "
                    "URL or AISLE_NATS_TLS_*): the connection would go in clear text. "
                    "Turn TLS on in the server, or connect with nats:// and no TLS settings"
                )
        try:
            nc = await nats.connect(
                servers=[server],
                allow_reconnect=False,
                max_reconnect_attempts=1,  # an unreachable server: twice, then the next
                reconnect_time_wait=0.1,
                connect_timeout=timeout_s,
                error_cb=collect,
                **options,
            )
        except Exception as exc:  # nats-py raises what the socket, TLS or server raised
            if isinstance(exc, nats.errors.NoServersError) and seen:
                exc = seen[-1]  # what the last attempt met
            text = str(exc) or type(exc).__name__
            if "authorization violation" in text.lower() or isinstance(
                exc, nats.errors.AuthorizationError
            ):
                raise ConnectError(
                    f"NATS at {server} refused the credentials (authorization violation): "
                    "check AISLE_NATS_USER and AISLE_NATS_PASSWORD, AISLE_NATS_TOKEN, "
                    "AISLE_NATS_NKEY or AISLE_NATS_CREDS (docs/security.md)"
                ) from None
            if isinstance(exc, ssl.SSLError) or "tls" in text.lower() or "ssl" in text.lower():
                raise ConnectError(
                    f"TLS with NATS at {server} failed: {text}: check that the server "
                    "speaks TLS, and AISLE_NATS_TLS_CA, AISLE_NATS_TLS_CERT and "
                    "AISLE_NATS_TLS_KEY (docs/security.md)"
                ) from None
            if wants_tls and isinstance(
                exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError
            ):
                raise ConnectError(
                    f"TLS with NATS at {server} failed: the server closed the connection "
                    f"during the handshake ({text}): does it require a client certificate "
                    "(AISLE_NATS_TLS_CERT and AISLE_NATS_TLS_KEY)? (docs/security.md)"
                ) from None
            reasons.append(f"{server}: {type(exc).__name__}: {text}")
            continue
        await nc.close()
        return server
    raise Unreachable(
        "cannot connect to NATS (" + "; ".join(reasons) + "): is the server up, and is "
        "AISLE_NATS_URL right? Unset it to run the embedded server."
    )


async def _tls_offered(server: str, timeout_s: float) -> bool:
    """Whether the server offers TLS, from the INFO it sends first on a plain socket.

    nats-py goes on in clear text when a ``tls://`` server does not require TLS."""
    url = urlsplit(server if "://" in server else f"nats://{server}")
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(url.hostname, url.port or 4222)
        try:
            line = await reader.readline()
        finally:
            writer.close()
    if not line.startswith(b"INFO "):
        raise ValueError(f"not a NATS server: {line[:40]!r}")
    info = msgspec_json.decode(line[5:])
    return bool(info.get("tls_required") or info.get("tls_available"))


async def _connection_error(exc: Exception) -> None:
    """One line per error while the client reconnects, not nats-py's traceback each time.

    A permissions violation is the server refusing what this client's role may not do: an
    error, with the subject the server names."""
    text = str(exc)
    if "permissions violation" in text.lower():
        log.error("nats refused by permission: %s", text)
        return
    log.warning("nats: %s: %s", type(exc).__name__, exc)


class BucketMismatch(ConfigError):
    """A bucket exists with settings other than a command asks for."""


class DeploymentMissing(ConfigError):
    """A command that may not set a deployment up found none under its prefix."""


class LogUnavailable(nats.js.errors.ServiceUnavailableError):
    """The NATS server answers, but its log cannot be used; the message says why and what
    to do. A ``ServiceUnavailableError`` still, for callers that wait for a cluster to
    elect its leaders."""

    def __init__(self, message: str) -> None:
        super().__init__(code=503, description=message)

    def __str__(self) -> str:
        return str(self.description)


# How long a request that a cluster electing a leader leaves unanswered (a stream without
# one, a request nobody answers yet) is tried again, quietly, before it counts as a
# failure; nats-server's elections take a few seconds.
ELECTION_S = 15.0
_ELECTING = (
    nats.errors.TimeoutError,
    TimeoutError,  # asyncio's: a watcher or a request waited for a leader
    nats.js.errors.NoStreamResponseError,
    nats.errors.NoRespondersError,
)


def electing(exc: BaseException) -> bool:
    """Whether ``exc`` is what a request meets while the cluster elects a leader (and
    may succeed if tried again), rather than a lasting refusal."""
    if isinstance(exc, LogUnavailable):  # a lasting refusal that says what to do
        return False
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    return isinstance(exc, _ELECTING) and "permissions violation" not in str(exc).lower()


def _version(nc: Client) -> tuple[int, ...]:
    """The server's version, as nats-py reports it; what it can filter depends on it."""
    v = nc.connected_server_version
    if v.dev == "unknown":  # nats-py's answer when it did not keep the server's INFO
        raise RuntimeError(
            f"nats-py {metadata.version('nats-py')} did not report the NATS server's "
            "version; aisle is tested with the nats-py versions its pyproject.toml names"
        )
    return v.major, v.minor, v.patch


class JetStreamLog:
    """``EventLog`` on JetStream. Create with ``await JetStreamLog.open(nc, config)``."""

    def __init__(self, nc: Client, config: LogConfig) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=config.publish_timeout_s)
        self.config = config
        self._acks = PubAcks(
            nc,
            max_pending=config.max_pending,
            timeout_s=config.publish_timeout_s,
            deadline_s=config.publish_deadline_s,
        )
        self._streams = {
            Stream.EVENTS: config.events_stream,
            Stream.SAMPLES: config.samples_stream,
            Stream.DEADLETTER: config.deadletter_stream,
        }
        self.server_version = _version(nc)
        # Before 2.10 a consumer takes one filter subject: consumers read wider, and the
        # client filters (an engine worker's stores each read the whole business stream).
        self.many_filters = self.server_version >= (2, 10)
        self._consumers: set[JetStreamConsumer] = set()
        self._deletes_readers: bool | None = None  # asked the server once, when first needed

    @classmethod
    async def open(
        cls,
        nc: Client,
        config: LogConfig | None = None,
        *,
        read_only: bool = False,
        create: bool = True,
    ) -> JetStreamLog:
        """The log on ``nc``, its streams created if missing. ``read_only`` (a command that
        only reads): an existing stream is left exactly as it is. Without ``create``, a
        prefix that names no deployment is refused (``DeploymentMissing``) rather than
        made: a mistyped ``AISLE_PREFIX`` must not start an empty deployment that workers
        and adapters then quietly use."""
        self = cls(nc, config or LogConfig())
        if not create and await self._stream_settings(self.config.events_stream) is None:
            raise DeploymentMissing(await self._missing_message())
        await self.ensure_streams(read_only=read_only)
        return self

    async def _missing_message(self) -> str:
        prefix = self.config.prefix
        try:
            others = await deployments(self.nc, self.config.publish_timeout_s)
        except (nats.js.errors.APIError, nats.errors.TimeoutError):  # may not list streams
            others = []
        here = (
            f"the deployments on this server are: {', '.join(others)}"
            if others
            else "this server has no aisle deployment yet"
        )
        return (
            f"no aisle deployment with prefix {prefix!r} (stream {self.config.events_stream}); "
            f"{here}. Check AISLE_PREFIX, or set the deployment up with "
            "`aisle log configure --apply` (aisle simulate and the demos set theirs up)"
        )

    # -- streams ----------------------------------------------------------------------------

    def stream_configs(self) -> list[api.StreamConfig]:
        c = self.config
        p = c.prefix
        business = sorted(t for t in ev.EVENT_TYPES if stream_for_type(t) is Stream.EVENTS)
        common = {
            "storage": api.StorageType.FILE,
            "retention": api.RetentionPolicy.LIMITS,
            "num_replicas": c.replicas,
            "duplicate_window": c.duplicate_window_s,
            "discard": api.DiscardPolicy.OLD,
        }
        return [
            api.StreamConfig(
                name=c.events_stream,
                subjects=[f"{p}.*.{t}" for t in business],
                max_age=c.events_max_age_s or None,
                description=EVENTS_DESCRIPTION,
                **common,
            ),
            api.StreamConfig(
                name=c.samples_stream,
                subjects=[f"{p}.*.{t}" for t in sorted(ev.SAMPLE_TYPES)],
                max_age=c.samples_max_age_s,
                description="aisle position samples, batched per camera frame",
                **common,
            ),
            api.StreamConfig(
                name=c.deadletter_stream,
                subjects=[f"{p}.*.deadletter", f"{p}.*.late"],
                max_age=c.deadletter_max_age_s,
                description="events refused by validation, and events too late to apply",
                **common,
            ),
        ]

    async def ensure_streams(self, *, read_only: bool = False) -> list[StreamDifference]:
        """Create a missing stream; keep an existing one as its operator left it.

        On an existing stream only what aisle cannot work without is added (its subjects),
        and not even that by a read-only command; any other setting that is not aisle's (a
        byte limit, a shorter max_age) is kept and reported, never undone.
        """
        found: list[StreamDifference] = []
        for cfg in self.stream_configs():
            ours = streamconfig.wire(cfg.as_dict())
            theirs = await self._stream_settings(cfg.name)
            if theirs is None and read_only:
                continue  # a read-only command makes nothing; configure_streams reports it
            if theirs is None:
                try:
                    await self._add_stream(cfg)
                    continue
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code != 10058:  # another process made it meanwhile, its own way
                        raise
                theirs = await self._stream_settings(cfg.name) or {}
            missing = streamconfig.missing_subjects(ours["subjects"], theirs.get("subjects", []))
            if missing and not read_only:
                theirs = await self._update_stream(streamconfig.with_subjects(theirs, missing))
                log.info("stream %s: subjects added: %s", cfg.name, ", ".join(missing))
            diffs = streamconfig.differences(cfg.name, ours, theirs)
            if diffs:
                log.warning(
                    "stream %s keeps its own settings: %s (aisle log configure shows them)",
                    cfg.name,
                    "; ".join(f"{d.field} {d.theirs} (aisle's: {d.ours})" for d in diffs),
                )
            found += diffs
        return found

    async def configure_streams(self, *, apply: bool = False) -> list[StreamDifference]:
        """How the existing streams differ from aisle's settings; with ``apply``, set aisle's
        (limits an operator set are lifted: the one way aisle ever weakens them)."""
        found: list[StreamDifference] = []
        for cfg in self.stream_configs():
            ours = streamconfig.wire(cfg.as_dict())
            theirs = await self._stream_settings(cfg.name)
            if theirs is None:
                if apply:
                    await self._add_stream(cfg)
                found.append(StreamDifference(cfg.name, "stream", "missing", "created"))
                continue
            diffs = streamconfig.differences(cfg.name, ours, theirs)
            if diffs and apply:
                await self._update_stream(streamconfig.aisles(ours, theirs))
            found += diffs
        return found

    async def _add_stream(self, cfg: api.StreamConfig) -> None:
        try:
            await self.js.add_stream(cfg)
        except nats.js.errors.APIError as exc:
            if isinstance(exc, nats.js.errors.ServiceUnavailableError) and not exc.err_code:
                raise LogUnavailable(f"creating stream {cfg.name}: {JETSTREAM_OFF}") from None
            if what := advice(exc.err_code or 0):
                raise LogUnavailable(
                    f"creating stream {cfg.name}: the server answered {exc.description!r} "
                    f"(error {exc.err_code}): {what}"
                ) from None
            raise

    async def _stream_settings(self, name: str) -> dict[str, Any] | None:
        """A stream's configuration in the server's JSON; None if there is no such stream."""
        try:
            info = await self._api(f"STREAM.INFO.{name}")
        except nats.js.errors.NotFoundError:
            return None
        return dict(info["config"])

    async def _update_stream(self, config: dict[str, Any]) -> dict[str, Any]:
        return dict((await self._api(f"STREAM.UPDATE.{config['name']}", config))["config"])

    async def _api(self, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API request in the server's own JSON: nats-py's structs drop what
        they do not know, and an update built from them would reset it."""
        data = json.dumps(request).encode() if request is not None else b""
        try:
            msg = await self.nc.request(
                f"$JS.API.{subject}", data, timeout=self.config.publish_timeout_s
            )
        except nats.errors.NoRespondersError:
            raise LogUnavailable(f"the server is up but {JETSTREAM_OFF}") from None
        answer: dict[str, Any] = json.loads(msg.data)
        if "error" in answer:
            nats.js.errors.APIError.from_error(answer["error"])  # raises
        return answer

    async def delete_streams(self) -> None:
        for name in self._streams.values():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_stream(name)

    # -- publishing -------------------------------------------------------------------------

    def _subject(self, store: str, event_type: str) -> str:
        return f"{self.config.prefix}.{store}.{event_type}"

    async def publish(self, event: ev.Event) -> Published:
        return (await self.publish_many((event,)))[0]

    async def publish_many(self, events: Sequence[ev.Event]) -> list[Published]:
        """Validate, then publish pipelined; retried through reconnects until confirmed.

        A retried message carries the same ``Nats-Msg-Id``, so a publish whose ack was lost
        cannot leave a second copy.
        """
        return await (await self.send_many(events)).confirmed()

    async def send_many(
        self, events: Sequence[ev.Event], *, refused: list[Refusal] | None = None
    ) -> Sending:
        """Validate and send; ``await (...).confirmed()`` later, for the acks (the caller
        may work meanwhile, as the engine service applies its next batch).

        Every event is checked before any is sent: one that breaks its schema, is over
        the server's payload limit or is dated too far ahead refuses the whole batch
        (``Rejected``, and it goes to the dead letters), so a batch is never half stored.
        With ``refused``, the others are sent and each refusal is added there instead,
        for the caller to report (the engine: as its rule's error).
        """
        items: list[Item] = []
        for event in events:
            payload = ev.encode(event)
            try:
                ev.decode(payload)
                self._admit(event, payload)
            except ev.EventError as exc:
                if refused is None:
                    raise await self._reject(event.store, payload, exc, event.source) from None
                refused.append(Refusal(event, payload, exc))
                continue
            items.append((self._subject(event.store, event.type), payload, event.id))
        return await self._acks.send(items)

    async def publish_raw(self, payload: bytes, *, source: str = "") -> Published:
        try:
            event = ev.decode(payload)
            self._admit(event, payload)
        except ev.EventError as exc:
            raise await self._reject(store_of(payload), payload, exc, source) from None
        return (await self._send([(self._subject(event.store, event.type), payload, event.id)]))[0]

    @property
    def max_event_bytes(self) -> int:
        """The largest payload the server stores (its ``max_payload``, less headers)."""
        return self.nc.max_payload - HEADERS_ROOM

    def _admit(self, event: ev.Event, payload: bytes) -> None:
        """What the schema cannot see: the payload's size, and a raw event's time against
        this machine's clock (a derived one's comes from raw events checked already)."""
        if len(payload) > self.max_event_bytes:
            raise ev.EventError(
                "$",
                f"event {event.id} is {len(payload)} bytes, over the server's limit of "
                f"{self.max_event_bytes} bytes a message",
            )
        if not event.derived:
            ev.check_time(event, time.time(), self.config.max_future_s)

    async def _reject(
        self, store: str, payload: bytes, exc: ev.EventError, source: str
    ) -> Rejected:
        seq = None
        try:
            seq = (
                await self.set_aside(
                    [
                        DeadLetter(
                            store=store,
                            field=exc.field,
                            reason=exc.reason,
                            payload=payload,
                            source=source,
                        )
                    ]
                )
            )[0].seq
        finally:
            log.warning("event refused: %s: %s (dead-letter seq %s)", exc.field, exc.reason, seq)
        return Rejected(exc, seq)

    async def set_aside(
        self, letters: Sequence[DeadLetter], *, late: bool = False
    ) -> list[Published]:
        """Keep what could not be applied, with the reason: refused payloads on the
        dead-letter subject, events too late to apply on the late one. Idempotent."""
        subject = self.config.late_subject if late else self.config.deadletter_subject
        kind = "late" if late else "deadletter"
        return await self._send(
            [(subject(d.store), self._letter(d), ev.event_id(kind, d.payload)) for d in letters]
        )

    def _letter(self, d: DeadLetter) -> bytes:
        """A dead letter as stored: whole if it fits the server's limit, else with the start
        of its payload and the payload's size (a refusal must never fail to be kept)."""
        data = msgspec_json.encode(d)
        if len(data) <= self.max_event_bytes:
            return data
        rest = len(data) - (len(d.payload) + 2) // 3 * 4  # all but the payload's base64
        room = max(0, (self.max_event_bytes - rest - 64) * 3 // 4)
        return msgspec_json.encode(
            msgspec.structs.replace(d, payload=d.payload[:room], size=len(d.payload))
        )

    async def _send(self, items: Sequence[Item]) -> list[Published]:
        return await (await self._acks.send(items)).confirmed()

    # -- reading ----------------------------------------------------------------------------

    def _filters(self, store: str | None, types: Iterable[str] | None, stream: Stream) -> list[str]:
        s = store or "*"
        if stream is Stream.DEADLETTER:
            return [self.config.deadletter_subject(s)]
        if not types:
            return [f"{self.config.prefix}.{s}.>"]
        return [self._subject(s, t) for t in sorted(set(types))]

    def _consumer_config(
        self,
        filters: list[str],
        *,
        from_seq: int | None = None,
        from_time: datetime | None = None,
        new_only: bool = False,
    ) -> tuple[api.ConsumerConfig, SubjectFilter | None]:
        """The consumer's filter, and a client-side one where the server cannot filter.

        nats-server before 2.10 takes one filter subject, and only one inside a stream
        subject: there the client reads wider and filters itself.
        """
        client_filter = None
        if not self.many_filters and (len(filters) > 1 or filters[0].endswith(">")):
            client_filter = SubjectFilter(filters)
            filters = []
        cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT)
        if len(filters) == 1:
            cfg.filter_subject = filters[0]
        elif filters:
            cfg.filter_subjects = filters
        if new_only and not from_seq and not from_time:
            cfg.deliver_policy = api.DeliverPolicy.NEW
        elif from_seq:
            cfg.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = from_seq
        elif from_time:
            cfg.deliver_policy = api.DeliverPolicy.BY_START_TIME
            cfg.opt_start_time = _rfc3339(from_time)  # type: ignore[assignment]
        return cfg, client_filter

    async def _read(
        self,
        stream: Stream,
        filters: list[str],
        *,
        from_seq: int | None = None,
        from_time: datetime | None = None,
        follow: bool = False,
        batch: int = 1000,
    ) -> AsyncIterator[list[Delivered]]:
        """Stored messages matching ``filters``, in batches, through an ephemeral pull consumer.

        Without ``follow`` it ends at the newest message when it started; with it, it
        starts at new messages and never ends.
        """
        name = self._streams[stream]
        cfg, client_filter = self._consumer_config(
            filters, from_seq=from_seq, from_time=from_time, new_only=follow
        )
        cfg.ack_policy = api.AckPolicy.NONE
        cfg.inactive_threshold = 30.0
        info = await self.js.add_consumer(name, cfg)
        puller = await Puller(self.nc, name, info.name).start()
        try:
            pending = 1 if follow else info.num_pending
            while pending:
                msgs = await puller.fetch(batch if follow else min(batch, pending), timeout_s=5)
                if msgs and not follow:
                    pending = msgs[-1].pending
                if client_filter is not None:
                    msgs = [d for d in msgs if client_filter(d.msg.subject)]
                yield msgs
        finally:
            await puller.stop()
            if await self._may_delete_readers(name, info.name):
                with contextlib.suppress(Exception):
                    await self.js.delete_consumer(name, info.name)

    async def _may_delete_readers(self, stream: str, consumer: str) -> bool:
        """Whether this user may delete its readers' consumers (a viewer may not: it would
        delete the engine's too); else they expire by their ``inactive_threshold``."""
        if self._deletes_readers is None:
            subject = f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}"
            self._deletes_readers = await may_publish(self.nc, subject)
        return self._deletes_readers

    async def replay(
        self,
        *,
        store: str | None = None,
        types: Iterable[str] | None = None,
        from_seq: int | None = None,
        from_time: datetime | None = None,
        batch: int = 1000,
    ) -> AsyncIterator[Record]:
        stream = stream_for_types(types)
        filters = self._filters(store, types, stream)
        reader = self._read(stream, filters, from_seq=from_seq, from_time=from_time, batch=batch)
        async with contextlib.aclosing(reader):  # a reader that stops early frees the consumer
            async for msgs in reader:
                for record in _records(msgs, self.config.max_future_s):
                    yield record

    async def tail(
        self,
        *,
        store: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
    ) -> AsyncIterator[Record]:
        stream = stream_for_types(types)
        filters = self._filters(store, types, stream)
        reader = self._read(stream, filters, from_time=since, follow=True)
        async with contextlib.aclosing(reader):
            async for msgs in reader:
                for record in _records(msgs, self.config.max_future_s):
                    yield record

    async def deadletters(
        self, *, store: str | None = None, late: bool = False
    ) -> AsyncIterator[tuple[int, DeadLetter]]:
        c = self.config
        filters = [c.late_subject(store or "*")] if late else [c.deadletter_subject(store or "*")]
        async for msgs in self._read(Stream.DEADLETTER, filters):
            for d in msgs:
                try:
                    letter = msgspec_json.decode(d.msg.data, type=DeadLetter)
                except msgspec.DecodeError as exc:  # published around the log, onto the subject
                    log.warning(
                        "stored message %d on %s is not a dead letter, skipped: %s",
                        d.seq,
                        d.msg.subject,
                        exc,
                    )
                    continue
                yield d.seq, letter

    async def consumer(
        self,
        name: str,
        *,
        store: str | None = None,
        types: Iterable[str] | None = None,
        ack_wait_s: float = 30.0,
        max_ack_pending: int = 10_000,
    ) -> JetStreamConsumer:
        stream = stream_for_types(types)
        cfg, client_filter = self._consumer_config(self._filters(store, types, stream))
        cfg.durable_name = name
        cfg.ack_wait = ack_wait_s
        cfg.max_ack_pending = max_ack_pending
        consumer = JetStreamConsumer(self, self._streams[stream], cfg, client_filter)
        await consumer.bind()
        self._consumers.add(consumer)
        return consumer

    async def engine_consumer(
        self, name: str, stream: Stream, *, store: str, types: Iterable[str], start_seq: int
    ) -> tuple[Puller, SubjectFilter | None]:
        """A durable consumer for the engine, (re)started at ``start_seq``.

        Acks are cumulative (``AckPolicy.ALL``): the engine acks the last message of a batch
        once the batch's output is confirmed. The server filter where it can; the
        returned client filter (older servers) for what it cannot.
        """
        name_ = self._streams[stream]
        cfg, client_filter = self._consumer_config(
            self._filters(store, types, stream), from_seq=max(1, start_seq)
        )
        cfg.durable_name = name
        cfg.ack_policy = api.AckPolicy.ALL
        # Nothing needs redelivering: a restart starts from the checkpoint anyway.
        cfg.ack_wait = 600.0
        cfg.max_ack_pending = 100_000
        cfg.inactive_threshold = 24 * 3600.0  # a worker gone for good leaves none behind
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_consumer(name_, name)  # restart where the checkpoint says
        info = await self.js.add_consumer(name_, cfg)
        # Made just now, unless another user's consumer of the same name was there to be
        # updated: then it is not the engine's to read.
        changes = config_changes(cfg, info.config, given_only=True)
        if changes:
            raise ConsumerTampered(f"consumer {name} on {name_}: {'; '.join(changes)}")
        puller = Puller(self.nc, name_, name, strict=True, created=info.created, config=info.config)
        return await puller.start(), client_filter

    async def drop_consumers(self, stream: Stream, prefix: str, *, keep: str = "") -> list[str]:
        """Delete the durable consumers named ``prefix*`` (but ``keep``): a partition's new
        owner fences out the old one's, whose next pull then fails."""
        name = self._streams[stream]
        gone = []
        infos: list[api.ConsumerInfo] = []
        while page := await self.js.consumers_info(name, offset=len(infos)):
            infos += page  # a page holds 256
            if len(page) < 256:
                break
        for info in infos:
            durable = info.name
            if durable.startswith(prefix) and durable != keep:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self.js.delete_consumer(name, durable)
                gone.append(durable)
        return gone

    async def key_value(
        self, name: str, *, ttl_s: float | None = None, history: int | None = None
    ) -> KeyValue:
        """A key-value bucket of this deployment, created on first use with ``ttl_s`` and
        ``history`` (1 if not given). An existing bucket that keeps its entries otherwise
        than asked is refused (``BucketMismatch``): a worker's lease time that the bucket
        does not enforce would leave a dead worker's stores taken for good."""
        bucket = self.config.bucket(name)
        try:
            kv = await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await self.js.create_key_value(
                bucket=bucket, history=history or 1, ttl=ttl_s, replicas=self.config.replicas
            )
        status = await kv.status()
        have = status.ttl or None
        if ttl_s is not None and (have is None or abs(have - ttl_s) > 1e-3):
            kept = "for good" if have is None else f"for {have:g} s"
            raise BucketMismatch(
                f"bucket {bucket} keeps its entries {kept}, but {ttl_s:g} s is asked for: "
                f"run with the bucket's time, or stop every process that uses it and set "
                f"the new one with `aisle log configure --lease-ttl {ttl_s:g} --apply`"
            )
        if history is not None and status.history != history:
            raise BucketMismatch(
                f"bucket {bucket} keeps {status.history} values a key, but {history} are "
                "asked for: it was made by another version or by hand"
            )
        return kv

    async def set_bucket_ttl(self, name: str, ttl_s: float, *, apply: bool) -> str:
        """What a bucket's entry time is ("for good", "12 s", or "no bucket yet"); with
        ``apply``, make it ``ttl_s`` (the bucket made if there is none)."""
        stream = f"KV_{self.config.bucket(name)}"
        settings = await self._stream_settings(stream)
        if settings is None:
            if apply:
                await self.key_value(name, ttl_s=ttl_s)
            return "no bucket yet"
        have = (settings.get("max_age") or 0) / 1e9
        if apply and have != ttl_s:
            settings["max_age"] = int(ttl_s * 1e9)
            await self._update_stream(settings)
        return f"{have:g} s" if have else "for good"

    async def object_store(self, name: str) -> ObjectStore:
        bucket = self.config.bucket(name)
        try:
            return await self.js.object_store(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await self.js.create_object_store(bucket, replicas=self.config.replicas)

    async def stats(self) -> list[StreamStats]:
        out = []
        for name in self._streams.values():
            try:
                info = await self.js.stream_info(name, subjects_filter=">")
            except nats.js.errors.NotFoundError:
                continue  # a read-only command makes no stream; the others still count
            st, cluster = info.state, info.cluster
            lag = {
                c.name: c.num_pending or 0
                for c in await self.js.consumers_info(name)
                if c.name is not None
            }
            out.append(
                StreamStats(
                    name=name,
                    messages=st.messages,
                    bytes=st.bytes,
                    first_seq=st.first_seq,
                    last_seq=st.last_seq,
                    consumers=st.consumer_count,
                    subjects=dict(st.subjects or {}),
                    replicas=info.config.num_replicas or 1,
                    leader=(cluster.leader or "") if cluster else "",
                    lagging=sorted(
                        r.name
                        for r in (cluster.replicas or [] if cluster else [])
                        if r.offline or not r.current
                    ),
                    lag=lag,
                )
            )
        return out

    @property
    def open_consumers(self) -> int:
        """The durable consumers this log reads through now (its metrics show them)."""
        return len(self._consumers)

    async def close(self) -> None:
        """Close consumers, then drain: a pull subscription left open stalls the drain."""
        for consumer in list(self._consumers):
            await consumer.close()
        await self.nc.drain()


class JetStreamDelivery:
    __slots__ = ("_msg", "record")

    def __init__(self, msg: Msg, record: Record) -> None:
        self._msg = msg
        self.record = record

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay_s: float | None = None) -> None:
        await self._msg.nak(delay=delay_s)


class JetStreamConsumer:
    """A durable pull consumer; its pulls go through ``Puller``, which survives reconnects."""

    def __init__(
        self,
        log: JetStreamLog,
        stream: str,
        config: api.ConsumerConfig,
        client_filter: SubjectFilter | None,
    ) -> None:
        self.log = log
        self.stream = stream
        self.config = config
        self.name = str(config.durable_name)
        self.client_filter = client_filter
        self._puller: Puller | None = None

    async def bind(self) -> None:
        try:
            await self.log.js.add_consumer(self.stream, self.config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10148:  # exists with another config: the filter changed
                raise
            await self.log.js.delete_consumer(self.stream, self.name)
            await self.log.js.add_consumer(self.stream, self.config)
        self._puller = await Puller(self.log.nc, self.stream, self.name).start()

    async def fetch(self, batch: int = 100, timeout_s: float = 1.0) -> list[Delivery]:
        assert self._puller is not None
        out: list[Delivery] = []
        while len(out) < batch:
            want = batch - len(out)
            msgs = await self._puller.fetch(want, timeout_s if not out else 0.05)
            for d in msgs:
                if self.client_filter is not None and not self.client_filter(d.msg.subject):
                    await d.msg.ack()  # not ours (a server without multi-filters sent it)
                    continue
                out.append(JetStreamDelivery(d.msg, _record(d)))
            if len(msgs) < want or self.client_filter is None:
                break  # no more now; the loop only refills what the client filter dropped
        return out

    async def pending(self) -> int:
        info = await self.log.js.consumer_info(self.stream, self.name)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def close(self) -> None:
        self.log._consumers.discard(self)
        puller, self._puller = self._puller, None
        if puller is not None:
            with contextlib.suppress(
                nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError
            ):
                await puller.stop()


class Refusal(NamedTuple):
    """An event ``send_many`` did not send, its bytes, and why."""

    event: ev.Event
    payload: bytes
    error: ev.EventError


def _record(d: Delivered) -> Record:
    return Record(d.seq, ev.decode(d.msg.data), d.ns)


def _records(msgs: list[Delivered], max_future_s: float) -> Iterator[Record]:
    """Records of stored messages; one that is not a valid event, is not on its own
    subject (another type's or store's) or is dated over ``max_future_s`` after the log
    stored it (published around the log, straight onto a subject) is skipped with a
    warning: the engine dead-letters it, so replays derive what the engine derived."""
    for d in msgs:
        try:
            record = _record(d)
            ev.check_subject(record.event, d.msg.subject)
            ev.check_time(record.event, d.ns / 1e9, max_future_s)
        except ev.EventError as exc:
            log.warning("stored message %d is not a valid event, skipped: %s", d.seq, exc)
        else:
            yield record


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class SubjectFilter:
    """Matches subjects against NATS filter patterns (``*`` one token, ``>`` the rest)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [p.split(".") for p in patterns]

    def __call__(self, subject: str) -> bool:
        tokens = subject.split(".")
        return any(_matches(p, tokens) for p in self.patterns)


def _matches(pattern: list[str], tokens: list[str]) -> bool:
    for i, p in enumerate(pattern):
        if p == ">":
            return len(tokens) > i
        if i >= len(tokens) or (p != "*" and p != tokens[i]):
            return False
    return len(tokens) == len(pattern)
