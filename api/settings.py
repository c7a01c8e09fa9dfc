"""What the API runs on: the log's settings, the read models' database, the stores' layouts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Settings
from readmodels.database import database_url

EXAMPLE_LAYOUT = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"


@dataclass(frozen=True)
class ApiSettings:
    """``log=False`` serves the read models alone (no NATS): the operator actions, the
    events, the rules and the live stream then answer 503."""

    core: Settings = field(default_factory=Settings)
    database_url: str = ""
    layouts: tuple[Path, ...] = ()
    log: bool = True
    max_page: int = 500  # rows one page may hold
    max_scan: int = 20_000  # log messages one events query reads at most
    # Who runs the app restarts an embedded server that dies (``aisle serve``): its end
    # does not end the app, whose connection reconnects to the new one.
    supervised: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, layouts: tuple[Path, ...] = ()
    ) -> ApiSettings:
        core = Settings.from_env(env)
        return cls(core=core, database_url=database_url(core, env), layouts=layouts)

    def url(self) -> str:
        return self.database_url or database_url(self.core)
