"""Configuration, read once at the edge (the CLI) and passed in explicitly everywhere else."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.durations import parse_duration


@dataclass(frozen=True)
class LogConfig:
    """How aisle names and keeps its streams.

    ``prefix`` is the first subject token and the stream-name stem, so several deployments
    (or test runs) can share one NATS server without seeing each other's events.
    """

    prefix: str = "aisle"
    replicas: int = 1
    duplicate_window_s: float = 120.0
    events_max_age_s: float = 0.0  # 0: keep business events until removed by policy
    samples_max_age_s: float = 24 * 3600.0  # position samples are high volume and short-lived
    deadletter_max_age_s: float = 30 * 24 * 3600.0
    publish_timeout_s: float = 5.0
    # How long a publish keeps retrying through reconnects before it gives up.
    publish_deadline_s: float = 60.0
    max_pending: int = 4000
    # How far ahead of this machine's clock a raw event may be dated (seconds): one from
    # the far future would move its store's clock there. The engine holds the same bound
    # against the time the log stored each event (``ServiceConfig.max_future_s``); small,
    # as an event dated ahead moves its store's clock and may put other sources idle.
    max_future_s: float = 5.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", self.prefix):
            raise ValueError(f"log prefix {self.prefix!r}: letters, digits, '-' or '_' (max 32)")

    @property
    def stem(self) -> str:
        return self.prefix.upper().replace("-", "_")

    @property
    def events_stream(self) -> str:
        return f"{self.stem}_EVENTS"

    @property
    def samples_stream(self) -> str:
        return f"{self.stem}_SAMPLES"

    @property
    def deadletter_stream(self) -> str:
        return f"{self.stem}_DEADLETTER"

    def deadletter_subject(self, store: str) -> str:
        return f"{self.prefix}.{store}.deadletter"

    def late_subject(self, store: str) -> str:
        """Where the engine reports events that came after their store's watermark."""
        return f"{self.prefix}.{store}.late"

    def bucket(self, name: str) -> str:
        """A key-value or object bucket of this deployment (engine checkpoints, leases)."""
        return f"{self.stem}_{name.upper()}"


class ConfigError(ValueError):
    """A setting is wrong: the message names the variable and what it should be."""


DEFAULT_INBOX = "_INBOX"  # nats-py's, for a client that names no user
_INBOX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_SAFE_USER = re.compile(r"[A-Za-z0-9_-]{1,64}")


def inbox_for(user: str) -> str:
    """A user's own inbox prefix, one subject token: ``_INBOX_<user>``, or a digest of
    the name where it holds what a token may not (a dot, a wildcard)."""
    if _SAFE_USER.fullmatch(user):
        return f"{DEFAULT_INBOX}_{user}"
    return f"{DEFAULT_INBOX}_h{hashlib.sha256(user.encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class NatsAuth:
    """How a client proves who it is to a NATS server of the user's own, and TLS.

    At most one of password, token, NKey seed and ``.creds`` file: a server takes one
    method per connection, and a second one given by mistake should not be ignored quietly.
    The embedded server ignores these: aisle generates its users (``core/access.py``).
    """

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed_file: Path | None = None
    creds_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    inbox_prefix: str | None = None  # AISLE_NATS_INBOX; default: inbox_for(user)

    def __post_init__(self) -> None:
        if self.inbox_prefix is not None and not _INBOX.fullmatch(self.inbox_prefix):
            raise ConfigError(
                f"AISLE_NATS_INBOX {self.inbox_prefix!r}: subject tokens of letters, digits, "
                "'-' or '_', separated by dots, no wildcards"
            )
        methods = [
            name
            for name, value in (
                ("AISLE_NATS_PASSWORD", self.password),
                ("AISLE_NATS_TOKEN", self.token),
                ("AISLE_NATS_NKEY", self.nkey_seed_file),
                ("AISLE_NATS_CREDS", self.creds_file),
            )
            if value
        ]
        if len(methods) > 1:
            raise ConfigError(f"NATS credentials: set one of {', '.join(methods)}, not several")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("NATS TLS: AISLE_NATS_TLS_CERT and AISLE_NATS_TLS_KEY go together")
        if self.password and not self.user:
            raise ConfigError("NATS credentials: AISLE_NATS_PASSWORD needs AISLE_NATS_USER")

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file)

    @property
    def inbox(self) -> str:
        """Where this client's replies come: its own prefix, which only it may subscribe
        to, so no other user reads the messages it pulls (``core/access.py``)."""
        if self.inbox_prefix:
            return self.inbox_prefix
        return inbox_for(self.user) if self.user else DEFAULT_INBOX

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NatsAuth:
        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        return cls(
            user=env.get("AISLE_NATS_USER") or None,
            password=env.get("AISLE_NATS_PASSWORD") or None,
            token=env.get("AISLE_NATS_TOKEN") or None,
            nkey_seed_file=path("AISLE_NATS_NKEY"),
            creds_file=path("AISLE_NATS_CREDS"),
            tls_ca_file=path("AISLE_NATS_TLS_CA"),
            tls_cert_file=path("AISLE_NATS_TLS_CERT"),
            tls_key_file=path("AISLE_NATS_TLS_KEY"),
            inbox_prefix=env.get("AISLE_NATS_INBOX") or None,
        )


@dataclass(frozen=True)
class OutboxConfig:
    """How much a producer's outbox (``core/outbox.py``) may hold, and how it keeps it.

    ``fsync``: every ``put`` (and every acknowledgement recorded) reaches the disk before
    it returns, so a power cut or an OS crash loses nothing ``put`` accepted; without it
    a process crash (SIGKILL) loses nothing, but an OS crash may lose the last puts.
    ``duplicate_window_s`` must be the stream's (``LogConfig.duplicate_window_s``): an
    event sent again within it is dropped by the server; beyond it the outbox searches
    the stream first. ``remember_s`` and ``remember_events`` bound the ids remembered
    after publishing: a re-run within them publishes nothing twice. ``reclaim_bytes``:
    once everything waiting has been sent, space the sent events left behind (SQLite's
    free pages and its write-ahead log) beyond this is given back to the file system,
    so a buffer that grew through an outage shrinks again.
    """

    max_events: int = 1_000_000  # events waiting, at most
    max_bytes: int = 512 * 1024 * 1024  # their encoded size, at most
    max_event_bytes: int = 8 * 1024 * 1024  # one event; the file's longest value
    batch: int = 1000  # events per publish
    fsync: bool = True
    duplicate_window_s: float = 120.0
    remember_s: float = 7 * 24 * 3600.0
    remember_events: int = 5_000_000
    retry_max_s: float = 5.0  # the longest wait between attempts while the log is away
    reclaim_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_events", "max_bytes", "max_event_bytes", "batch", "remember_events"):
            if getattr(self, name) < 1:
                raise ValueError(f"outbox {name} is at least 1, not {getattr(self, name)}")
        if self.reclaim_bytes < 0:
            raise ValueError(f"outbox reclaim_bytes is at least 0, not {self.reclaim_bytes}")
        for name in ("duplicate_window_s", "remember_s", "retry_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"outbox {name} is over 0 s, not {getattr(self, name)}")


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not a whole number") from None
    if number < 1:
        raise ConfigError(f"{name}={value!r}: at least 1")
    return number


def _retention(env: Mapping[str, str], name: str, default: float) -> float:
    """A stream's retention from ``name``: a duration (``90d``, ``24h``) or seconds; 0
    keeps messages until an operator removes them."""
    value = env.get(name)
    if not value:
        return default
    try:
        text = value.strip()
        return float(text) if re.fullmatch(r"\d+(\.\d+)?", text) else parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r}: {exc}") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not a number of seconds") from None
    if not number > 0:
        raise ConfigError(f"{name}={value!r}: more than 0 s")
    return number


@dataclass(frozen=True)
class Settings:
    """Everything the CLI needs to connect; ``nats_url=None`` means the embedded server.

    ``outbox_dir`` is where producers keep their outboxes (None: ``data_dir/outbox``),
    ``outbox`` how much each may hold (``AISLE_OUTBOX_*``)."""

    nats_url: str | None = None
    data_dir: Path = Path(".aisle")
    log: LogConfig = field(default_factory=LogConfig)
    auth: NatsAuth = field(default_factory=NatsAuth)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    outbox_dir: Path | None = None

    @property
    def outboxes(self) -> Path:
        """The folder of the producers' outbox files."""
        return self.outbox_dir if self.outbox_dir is not None else self.data_dir / "outbox"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        window = _seconds(env, "AISLE_DUPLICATE_WINDOW_S", 120.0)
        box, log = OutboxConfig(), LogConfig()
        return cls(
            nats_url=env.get("AISLE_NATS_URL") or None,
            data_dir=Path(env.get("AISLE_DATA_DIR", ".aisle")),
            log=LogConfig(
                prefix=env.get("AISLE_PREFIX", "aisle"),
                duplicate_window_s=window,
                replicas=_whole(env, "AISLE_REPLICAS", 1),
                events_max_age_s=_retention(env, "AISLE_RETENTION_EVENTS", log.events_max_age_s),
                samples_max_age_s=_retention(env, "AISLE_RETENTION_SAMPLES", log.samples_max_age_s),
                deadletter_max_age_s=_retention(
                    env, "AISLE_RETENTION_DEADLETTER", log.deadletter_max_age_s
                ),
            ),
            auth=NatsAuth.from_env(env),
            outbox=OutboxConfig(
                max_events=_whole(env, "AISLE_OUTBOX_MAX_EVENTS", box.max_events),
                max_bytes=_whole(env, "AISLE_OUTBOX_MAX_BYTES", box.max_bytes),
                duplicate_window_s=window,
            ),
            outbox_dir=Path(env["AISLE_OUTBOX_DIR"]) if env.get("AISLE_OUTBOX_DIR") else None,
        )
