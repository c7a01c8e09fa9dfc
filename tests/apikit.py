"""What the API tests share: two stores' day in a real log (on the machine's NATS
server, or an embedded one), projected into SQLite or PostgreSQL, tokens of every role,
and the app on them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats.js.errors
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from api.auth import Role, create_token
from api.settings import ApiSettings
from core import events as ev
from core.config import LogConfig, Settings
from core.jetstream import JetStreamLog, connect
from tests.conftest import server_url, unique_prefix
from tests.enginekit import LAYOUT_FILE
from tests.readmodelkit import day_with_derived, postgres_db, project, publish_lots, sqlite_db

STORE, OTHER = "corner-01", "corner-02"


@dataclass
class World:
    url: str
    config: LogConfig
    db: Engine
    derived: dict[str, list[ev.Event]]
    tokens: dict[str, str] = field(default_factory=dict)  # viewer, operator, admin, limited

    def settings(self) -> ApiSettings:
        core = Settings(nats_url=self.url, log=self.config)
        return ApiSettings(
            core=core,
            database_url=self.db.url.render_as_string(hide_password=False),
            layouts=(LAYOUT_FILE,),
        )

    def client(self) -> TestClient:
        return TestClient(create_app(self.settings()), raise_server_exceptions=False)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def _log(self) -> JetStreamLog:
        return JetStreamLog(await connect(self.url, name="aisle-api-tests"), self.config)

    def project(self) -> None:
        """Apply what the log holds now (an operator's event the API published)."""

        async def go() -> None:
            log = await self._log()
            try:
                await project(log, self.db)
            finally:
                await log.close()

        asyncio.run(go())

    def publish(self, events: list[ev.Event]) -> None:
        async def go() -> None:
            log = await self._log()
            try:
                await log.publish_many(events)
            finally:
                await log.close()

        asyncio.run(go())

    def count(self, store: str, event_type: str) -> int:
        async def go() -> int:
            log = await self._log()
            try:
                return len([r async for r in log.replay(store=store, types=[event_type])])
            finally:
                await log.close()

        return asyncio.run(go())


@contextlib.contextmanager
def world(request: pytest.FixtureRequest, which: str, tmp: Path) -> Iterator[World]:
    """Two stores' hour in a fresh log, projected into ``which`` (sqlite or postgresql)."""
    url = server_url("system", request)
    config = LogConfig(prefix=unique_prefix(), publish_deadline_s=20)
    lots = {
        STORE: day_with_derived(STORE, hours=1, shoppers=30, seed=5),
        OTHER: day_with_derived(OTHER, hours=0.5, shoppers=10, seed=6),
    }

    async def setup() -> None:
        log = await JetStreamLog.open(await connect(url, name="aisle-api-tests"), config)
        try:
            for store_lots in lots.values():
                await publish_lots(log, store_lots)
        finally:
            await log.close()

    async def teardown() -> None:
        log = await JetStreamLog.open(await connect(url, name="aisle-api-tests"), config)
        await log.delete_streams()
        for bucket in ("rules", "engine_leases"):  # what the deploy test makes
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await log.js.delete_key_value(config.bucket(bucket))
        await log.close()

    with contextlib.ExitStack() as stack:
        db = (
            stack.enter_context(postgres_db())
            if which == "postgresql"
            else sqlite_db(tmp / "rm.db")
        )
        asyncio.run(setup())
        stack.callback(lambda: asyncio.run(teardown()))
        derived = {s: [e for lot in ls for e in lot if e.derived] for s, ls in lots.items()}
        w = World(url=url, config=config, db=db, derived=derived)
        w.project()
        for role in Role:
            w.tokens[role.value] = create_token(db, role, name=f"{role.value}-1")[1]
        w.tokens["limited"] = create_token(db, Role.OPERATOR, [OTHER], name="other-only")[1]
        yield w
