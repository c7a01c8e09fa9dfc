"""What the read-model tests share: a store day in the log (raw and derived, as the engine
service leaves it), databases (SQLite files, PostgreSQL schemas), and table dumps."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core import events as ev
from core.jetstream import JetStreamLog
from core.log import publish_in_order
from readmodels.database import check_schema, make_engine
from readmodels.runner import ALL_STORES, ProjectionService
from readmodels.tables import READ_MODELS
from tests.enginekit import engine, store_day

PG_URL = os.environ.get(
    "AISLE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
VOLATILE = {"projection_position": {"updated_at"}}  # wall clock: not a function of the log


def day_with_derived(
    store: str = "corner-01",
    *,
    hours: float = 1,
    shoppers: int = 30,
    seed: int = 3,
    chunk: int = 400,
) -> list[list[ev.Event]]:
    """A store day as the engine service leaves it in the log: each lot of raw events,
    then what the rules derived from it."""
    raw = store_day(store, hours=hours, shoppers=shoppers, seed=seed)
    rules = engine()
    lots = []
    for i in range(0, len(raw), chunk):
        lot = raw[i : i + chunk]
        lots.append([*lot, *rules.process(lot).derived])
    return lots


async def publish_lots(log: JetStreamLog, lots: list[list[ev.Event]]) -> None:
    for lot in lots:
        await publish_in_order(log, lot)


def derived_of(lots: list[list[ev.Event]]) -> list[ev.Event]:
    return [e for lot in lots for e in lot if e.derived]


async def project(log: JetStreamLog, db: Engine, scope: str = ALL_STORES, batch: int = 500) -> None:
    """Run every projection until it has applied what the log holds."""
    await ProjectionService(log, db, scope=scope, batch=batch).run(until_caught_up=True)


def sqlite_db(path: Path) -> Engine:
    db = make_engine(f"sqlite:///{path}")
    check_schema(db)
    return db


def _pg_reachable() -> bool:
    url = sa.make_url(PG_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def postgres_db() -> Iterator[Engine]:
    """A schema of the test's own in the PostgreSQL database, dropped afterwards; the test
    is skipped, with the reason, where no PostgreSQL answers (never in CI)."""
    if not _pg_reachable():
        if os.environ.get("AISLE_TEST_REQUIRE_SERVICES"):
            pytest.fail(f"no PostgreSQL at {PG_URL} (AISLE_TEST_REQUIRE_SERVICES is set)")
        pytest.skip(f"no PostgreSQL at {PG_URL}: set AISLE_TEST_DATABASE_URL")
    schema = "t" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    db = make_engine(url.render_as_string(hide_password=False))
    try:
        check_schema(db)
        yield db
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def dump(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table, row for row, in key order (wall-clock columns left out;
    sorted here: PostgreSQL's collation orders text unlike SQLite's)."""
    out = {}
    with db.connect() as conn:
        for name, table in sorted(READ_MODELS.tables.items()):
            cols = [c for c in table.columns if c.name not in VOLATILE.get(name, set())]
            keys = [cols.index(c) for c in table.primary_key.columns]
            rows = [tuple(r) for r in conn.execute(sa.select(*cols)).all()]
            out[name] = sorted(rows, key=lambda r: [(r[k] is None, r[k]) for k in keys])
    return out


def count(db: Engine, table: str, where: str = "") -> int:
    with db.connect() as conn:
        sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
        return int(conn.execute(sa.text(sql)).scalar_one())


def scalar(db: Engine, sql: str) -> Any:
    with db.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()
