"""Who may write what on NATS: aisle's roles, their subjects, and the embedded server's users.

The server enforces it, not aisle: an adapter's credentials can publish raw events and
nothing else, so a receipt or an alert in the log was published by the engine, and only an
admin changes the deployed rules. ``permissions`` gives each role's subjects for one
deployment prefix; the embedded server gets them in the configuration file aisle writes
(``authorization``), and ``docs/security.md`` shows the same on a server of one's own.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client

from core.config import LogConfig, inbox_for
from core.events import DERIVED_TYPES, OPERATOR_TYPES, RAW_TYPES, STORE_PATTERN
from core.natsd import write_private


class Role(StrEnum):
    ADMIN = "admin"  # everything: deploys rules, configures streams
    ENGINE = "engine"  # consumes raw events, publishes derived ones, keeps its state
    ADAPTER = "adapter"  # publishes raw events (of some stores, or of all)
    VIEWER = "viewer"  # reads the log and the deployment, writes nothing
    API = "api"  # a viewer that also publishes operator events (what people did, through the API)


class User(msgspec.Struct, frozen=True, kw_only=True):
    """One user of the embedded server; ``stores`` limits an adapter (empty: every store)."""

    user: str
    password: str
    role: Role
    stores: tuple[str, ...] = ()


USERS_FILE = "nats-users.json"
RULES_HISTORY = 20  # deployments the rules bucket keeps (it is the admin's to create)
USER_INFO = "$SYS.REQ.USER.INFO"  # the server says who a connection is (2.10 and newer)
_store = re.compile(STORE_PATTERN)


def stream_names(log: LogConfig) -> dict[str, str]:
    """The streams behind a deployment's streams and buckets, by what they hold."""
    return {
        "events": log.events_stream,
        "samples": log.samples_stream,
        "deadletter": log.deadletter_stream,
        "rules": f"KV_{log.bucket('rules')}",
        "leases": f"KV_{log.bucket('engine_leases')}",
        "checkpoints": f"KV_{log.bucket('engine_checkpoints')}",
        "snapshots": f"OBJ_{log.bucket('engine_snapshots')}",
    }


def _read_stream(name: str, *, durable: bool = True) -> list[str]:
    """What reading stream ``name`` takes: its info, its messages by sequence or subject,
    and consumers (create, pull, look at; flow control replies).

    Without ``durable``, only ephemeral consumers with no name, whose create subject
    (``$JS.API.CONSUMER.CREATE.<stream>``, aisle's readers' and nats-py's for a consumer
    with neither name nor durable name) the server refuses to make durable; and no
    consumer delete: readers' consumers expire by ``inactive_threshold``. Named creates,
    durable creates and deletes would let the role change or remove the engine's durable
    consumers (a filter without ``item.put_back``, and put-backs skipped silently).
    """
    read = [
        f"$JS.API.STREAM.INFO.{name}",
        f"$JS.API.STREAM.MSG.GET.{name}",
        f"$JS.API.DIRECT.GET.{name}",
        f"$JS.API.DIRECT.GET.{name}.>",
        f"$JS.API.CONSUMER.CREATE.{name}",
        f"$JS.API.CONSUMER.INFO.{name}.*",
        f"$JS.API.CONSUMER.LIST.{name}",
        f"$JS.API.CONSUMER.NAMES.{name}",
        f"$JS.API.CONSUMER.MSG.NEXT.{name}.*",
        f"$JS.FC.{name}.>",
    ]
    if durable:
        read += [
            f"$JS.API.CONSUMER.CREATE.{name}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{name}.*",
            f"$JS.API.CONSUMER.DELETE.{name}.*",
        ]
    return read


def _own_bucket(stream: str, subjects: str) -> list[str]:
    """A bucket the role keeps its state in: create it, read it, write it, trim it."""
    return [
        *_read_stream(stream),
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
        f"$JS.API.STREAM.MSG.DELETE.{stream}",
        f"$JS.ACK.{stream}.>",
        subjects,
    ]


def readings_subject(prefix: str, store: str) -> str:
    """The NATS core subjects of a store's load-cell readings: ``<prefix>.<store>.readings.>``
    (one token more for the sensor, or the gateway, as the sender likes)."""
    return f"{prefix}.{store}.readings.>"


def permissions(
    role: Role, log: LogConfig, stores: Sequence[str] = (), *, user: str | None = None
) -> dict[str, Any]:
    """The role's ``permissions`` block for ``user`` (default: the role's own user), as
    nats-server's configuration (a dict).

    Each user subscribes to its own inbox prefix only (``inbox_for``): under ``_INBOX.>``
    any user would read the messages every other one pulls from the streams.

    Publishing a JetStream message needs only the subject (the ack comes back on the
    client's inbox); reading needs the API subjects of the stream, and acking
    ``$JS.ACK.<stream>.>``. What is not allowed is refused by the server, which reports
    a "Permissions Violation" to the client and logs it.
    """
    _check_stores(stores)
    if role is Role.ADMIN:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    inbox = {"allow": [f"{inbox_for(user or role.value)}.>"]}
    p = log.prefix
    s = stream_names(log)
    kv_rules = f"$KV.{log.bucket('rules')}.>"
    common = ["$JS.API.INFO", USER_INFO]
    if role is Role.ADAPTER:
        where = sorted(stores) or ["*"]
        allow = [f"{p}.{w}.{t}" for w in where for t in sorted(RAW_TYPES)]
        # Refused payloads are set aside; one naming no valid store goes under "_unknown".
        allow += [f"{p}.{w}.deadletter" for w in where]
        # Load-cell readings on NATS core subjects (never stored): a shelf gateway sends
        # them and the shelf adapter reads them (``adapters/readings.py``).
        readings = [readings_subject(p, w) for w in where]
        allow += readings
        if stores:
            allow.append(f"{p}._unknown.deadletter")
        allow += common + [f"$JS.API.STREAM.INFO.{s[k]}" for k in ("events", "samples")]
        allow.append(f"$JS.API.STREAM.INFO.{s['deadletter']}")
        return {
            "publish": {"allow": allow, "deny": [kv_rules]},
            "subscribe": {"allow": inbox["allow"] + readings},
        }
    if role is Role.ENGINE:
        allow = [f"{p}.*.{t}" for t in sorted(DERIVED_TYPES)]
        # nats-py's object store finds a bucket's stream by subject (reading a snapshot).
        allow += [f"{p}.*.late", f"{p}.*.deadletter", "$JS.API.STREAM.NAMES", *common]
        for k in ("events", "samples", "deadletter"):
            allow += _read_stream(s[k])
        allow += [f"$JS.ACK.{s['events']}.>", f"$JS.ACK.{s['samples']}.>"]
        # The rules bucket: read and watched, never created (the admin's setup does): a
        # stream the engine made could take its messages from a bucket the engine writes.
        allow += _read_stream(s["rules"])
        allow += _own_bucket(s["leases"], f"$KV.{log.bucket('engine_leases')}.>")
        allow += _own_bucket(s["checkpoints"], f"$KV.{log.bucket('engine_checkpoints')}.>")
        allow += _own_bucket(s["snapshots"], f"$O.{log.bucket('engine_snapshots')}.>")
        return {
            "publish": {"allow": allow, "deny": [kv_rules]},
            "subscribe": inbox,
        }
    allow = list(common)
    for name in s.values():
        allow += _read_stream(name, durable=False)
    if role is Role.API:
        allow += [f"{p}.*.{t}" for t in sorted(OPERATOR_TYPES)]
        return {"publish": {"allow": allow, "deny": [kv_rules]}, "subscribe": inbox}
    return {"publish": {"allow": allow}, "subscribe": inbox}


def authorization(users: Iterable[User], log: LogConfig) -> dict[str, Any]:
    """nats-server's ``authorization`` block for ``users``."""
    return {
        "users": [
            {
                "user": u.user,
                "password": u.password,
                "permissions": permissions(u.role, log, u.stores, user=u.user),
            }
            for u in users
        ]
    }


def _check_stores(stores: Sequence[str], where: str = "") -> None:
    """Store ids are subject tokens: a wildcard (``*``, ``>``) or a dot in one would widen
    a scoped adapter to other stores, or make the subjects invalid."""
    bad = [s for s in stores if not _store.fullmatch(s)]
    if bad:
        raise ValueError(
            f"{where}store ids {bad}: letters, digits, '-' or '_' only (1 to 64), no wildcards"
        )


def _password() -> str:
    return secrets.token_urlsafe(24)


def load_users(data_dir: Path) -> list[User]:
    """The embedded server's users, created with random passwords on first use.

    The file (mode 0600) keeps the passwords across restarts, so a command that shares a
    running server, or starts the next one, connects with the same credentials.
    """
    path = data_dir / USERS_FILE
    if path.exists():
        users = msgspec.json.decode(path.read_bytes(), type=list[User])
        for u in users:
            _check_stores(u.stores, f"{path}: user {u.user!r}: ")
        names = {u.user for u in users}
        missing = [User(user=r.value, password=_password(), role=r) for r in Role]
        missing = [u for u in missing if u.user not in names]
        if missing:  # a role this version added (the API's): its user, once
            users += missing
            write_private(path, json.dumps(msgspec.to_builtins(users), indent=2))
        return users
    data_dir.mkdir(parents=True, exist_ok=True)
    users = [User(user=r.value, password=_password(), role=r) for r in Role]
    write_private(path, json.dumps(msgspec.to_builtins(users), indent=2))
    return users


def add_adapter(data_dir: Path, name: str, stores: Sequence[str]) -> User:
    """An adapter user that publishes the raw events of ``stores`` only (new password)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ValueError(f"user {name!r}: letters, digits, '-' or '_' only")
    bad = [s for s in stores if not _store.fullmatch(s)]
    if bad or not stores:
        raise ValueError(f"stores {bad or '(none)'}: give valid store ids")
    users = [u for u in load_users(data_dir) if u.user != name or u.role is not Role.ADAPTER]
    if any(u.user == name for u in users):
        raise ValueError(f"user {name!r} exists with another role")
    user = User(user=name, password=_password(), role=Role.ADAPTER, stores=tuple(stores))
    users.append(user)
    write_private(data_dir / USERS_FILE, json.dumps(msgspec.to_builtins(users), indent=2))
    return user


def user_for(users: Iterable[User], role: Role) -> User:
    """The role's own user (named after it)."""
    for u in users:
        if u.user == role.value:
            return u
    raise LookupError(f"no {role} user in {USERS_FILE}")


class _SubjectPermission(msgspec.Struct):
    allow: list[str] = []
    deny: list[str] = []


class _Permissions(msgspec.Struct):
    publish: _SubjectPermission | None = None


class _UserInfo(msgspec.Struct):
    user: str = ""
    account: str = ""
    permissions: _Permissions | None = None


class _UserInfoReply(msgspec.Struct):
    data: _UserInfo | None = None


async def authenticated_user(nc: Client) -> str | None:
    """The user the server authenticated this connection as (``user`` or ``user@account``
    outside the global account), from the server itself, never from what the client says.

    ``None`` where the server cannot say: no authentication (every client is the same
    nobody), or a server before 2.10.
    """
    try:
        reply = await nc.request(USER_INFO, b"", timeout=2.0)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return None
    try:
        info = msgspec.json.decode(reply.data, type=_UserInfoReply).data
    except msgspec.DecodeError:
        return None
    if info is None or not info.user:
        return None
    if info.account and info.account != "$G":
        return f"{info.user}@{info.account}"
    return info.user


def _matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``pattern`` (``*`` a token, ``>`` the rest) covers ``subject``."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


async def may_publish(nc: Client, subject: str) -> bool:
    """Whether the server lets this connection publish ``subject``, as it says over
    ``$SYS.REQ.USER.INFO``: asked before a request that would otherwise wait out its
    timeout and leave a violation in the server's log. True where the server cannot say
    (no authentication, a server before 2.10)."""
    try:
        reply = await nc.request(USER_INFO, b"", timeout=2.0)
        info = msgspec.json.decode(reply.data, type=_UserInfoReply).data
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, msgspec.DecodeError):
        return True
    granted = info.permissions.publish if info and info.permissions else None
    if granted is None:
        return True
    allowed = not granted.allow or any(_matches(p, subject) for p in granted.allow)
    return allowed and not any(_matches(p, subject) for p in granted.deny)
