"""Configuration, read once at the edge (the CLI) and passed in explicitly everywhere else."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


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
    # against the time the log stored each event (``ServiceConfig.max_future_s``).
    max_future_s: float = 300.0

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


@dataclass(frozen=True)
class Settings:
    """Everything the CLI needs to connect; ``nats_url=None`` means the embedded server."""

    nats_url: str | None = None
    data_dir: Path = Path(".aisle")
    log: LogConfig = field(default_factory=LogConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            nats_url=env.get("AISLE_NATS_URL") or None,
            data_dir=Path(env.get("AISLE_DATA_DIR", ".aisle")),
            log=LogConfig(
                prefix=env.get("AISLE_PREFIX", "aisle"),
                duplicate_window_s=float(env.get("AISLE_DUPLICATE_WINDOW_S", "120")),
                replicas=int(env.get("AISLE_REPLICAS", "1")),
            ),
        )
