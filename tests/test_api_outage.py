"""The API while the log is down: an operator's action answers 503 with the reason, never
500, and the read models still answer. A read models' file deleted under the API or the
projections: they say so and stop answering from it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from api.auth import Role, create_token
from api.settings import ApiSettings
from core.config import LogConfig, Settings
from core.jetstream import JetStreamLog
from core.natsd import EmbeddedNats
from readmodels.dbfile import DatabaseGone
from readmodels.runner import ProjectionService
from readmodels.tables import Alert
from tests.conftest import set_up, unique_prefix
from tests.enginekit import LAYOUT_FILE
from tests.readmodelkit import sqlite_db

pytestmark = pytest.mark.integration


def test_an_action_while_the_log_is_down_answers_503_and_reads_still_work(
    private_nats: EmbeddedNats, tmp_path: Path
) -> None:
    db = sqlite_db(tmp_path / "rm.db")
    at = datetime(2026, 11, 28, 9, tzinfo=UTC)
    with Session(db) as s, s.begin():
        s.add(
            Alert(
                id="a1",
                seq=1,
                store="corner-01",
                name="n",
                key="k",
                subject="s1",
                severity="warning",
                summary="look",
                raised_at=at,
                rule_id="r",
                rule_version="1",
            )
        )
    token = create_token(db, Role.OPERATOR)[1]
    config = LogConfig(prefix=unique_prefix(), publish_deadline_s=2)
    set_up({"AISLE_NATS_URL": private_nats.url, "AISLE_PREFIX": config.prefix})
    settings = ApiSettings(
        core=Settings(nats_url=private_nats.url, log=config),
        database_url=f"sqlite:///{tmp_path / 'rm.db'}",
        layouts=(LAYOUT_FILE,),
    )
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        private_nats.stop()
        start = time.monotonic()
        r = c.post("/api/v1/stores/corner-01/alerts/a1/acknowledge", headers=headers)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert time.monotonic() - start < 30
        assert c.get("/api/v1/stores/corner-01/alerts", headers=headers).status_code == 200
        # Once the client knows it is cut off (it reconnects by itself), at once, with when
        # to try again.
        deadline = time.monotonic() + 15
        while True:
            began = time.monotonic()
            r = c.get("/api/v1/stores/corner-01/events?limit=1", headers=headers)
            assert r.status_code == 503, r.text
            if r.headers.get("retry-after") == "2":
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert time.monotonic() - began < 1.0
        assert "reconnecting" in r.json()["detail"]
        # Back: the same app's connection answers again.
        private_nats.start()
        deadline = time.monotonic() + 30
        while c.get("/api/v1/stores/corner-01/events?limit=1", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the API did not reconnect to the log"
            time.sleep(0.3)


def test_a_database_file_deleted_under_the_api_answers_503_saying_so(tmp_path: Path) -> None:
    db = sqlite_db(tmp_path / "rm.db")
    token = create_token(db, Role.VIEWER)[1]
    db.dispose()
    settings = ApiSettings(
        database_url=f"sqlite:///{tmp_path / 'rm.db'}", layouts=(LAYOUT_FILE,), log=False
    )
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/api/v1/stores", headers=headers).status_code == 200
        (tmp_path / "rm.db").unlink()
        r = c.get("/api/v1/stores", headers=headers)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "rm.db was deleted while this process used it" in r.json()["detail"]
        # Another file at the path (a restore, a new empty one) is not the one opened.
        sqlite_db(tmp_path / "rm.db").dispose()
        r = c.get("/api/v1/stores", headers=headers)
        assert r.status_code == 503 and "was replaced by another file" in r.json()["detail"]


async def test_a_database_file_deleted_under_the_projections_stops_them_with_the_reason(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    db = sqlite_db(tmp_path / "rm.db")
    service = ProjectionService(jslog, db)
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop, every_s=0.2))
    await asyncio.sleep(1.0)
    assert not running.done()
    (tmp_path / "rm.db").unlink()
    with pytest.raises(DatabaseGone, match=r"rm\.db was deleted while this process used it"):
        await asyncio.wait_for(running, 10)


def test_a_corrupt_database_answers_503_naming_the_rebuild_not_500(tmp_path: Path) -> None:
    """Junk in its pages made metrics and some receipts answer 500."""
    from api import audit
    from api.auth import Principal

    path = tmp_path / "rm.db"
    db = sqlite_db(path)
    db.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # the migrations' free pages
        conn.execute("VACUUM")  # gone: the rows below come after the schema's
        schema = conn.execute("PRAGMA page_count").fetchone()[0]
    token = create_token(db, Role.ADMIN)[1]
    who = Principal(token_id="t", role=Role.ADMIN, name="filler")
    for i in range(400):  # rows enough for pages of their own, past the schema's
        audit.record(db, who, "receipt.read", store="corner-01", target=f"r{i}", detail="x" * 200)
    db.dispose()
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    assert pages > schema + 10
    for page in range(schema + 1, pages):  # the audit's rows, the schema's pages intact
        data[page * 4096 + 8 : page * 4096 + 4000] = b"\xa5" * 3992
    path.write_bytes(bytes(data))
    settings = ApiSettings(database_url=f"sqlite:///{path}", layouts=(LAYOUT_FILE,), log=False)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.get("/api/v1/audit?limit=500", headers=headers)
        assert r.status_code == 503, r.text
        detail = r.json()["detail"]
        assert "projections rebuild" in detail and str(tmp_path) not in detail, detail
