"""The read models' database: SQLite under the data folder by default, PostgreSQL when
``AISLE_DATABASE_URL`` names one; its schema is Alembic's, shipped in this package.

A projection refuses to write into a schema older (or newer) than its code: it would
write rows the tables cannot hold, or miss columns the code relies on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from core.config import Settings
from readmodels.tables import READ_MODELS

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_FILE = "readmodels.db"


class SchemaMismatch(RuntimeError):
    """The database's schema is not the one this code writes: the message says what to do."""


def database_url(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """``AISLE_DATABASE_URL`` (e.g. ``postgresql+psycopg://user@host/db``), else a SQLite
    file in the data folder."""
    env = os.environ if env is None else env
    url = env.get("AISLE_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{(settings.data_dir / SQLITE_FILE).as_posix()}"


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers never wait for the projections' writes) and ``synchronous=NORMAL``:
    a power cut may lose the last commits, rows and position together, and the
    projections read those events again.

    And transactions as SQLAlchemy means them: Python's sqlite3 module begins one only
    before a write, so a SAVEPOINT after a read opened a transaction of its own and its
    RELEASE committed it, rows without the position (SQLAlchemy's documented recipe:
    the module's own handling off, BEGIN sent on ``begin``)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for ``url``; a SQLite file's folder is created."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # owner only: receipts, visits, the audit, token hashes
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _begin)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def shown_url(engine: Engine) -> str:
    """The URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head() -> str:
    """The schema revision this code writes."""
    script = ScriptDirectory.from_config(alembic_config(sa.create_engine("sqlite://")))
    revision = script.get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The database's schema revision; None for a database the projections never used."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to this code's (``aisle projections migrate``): (before, after)."""
    before = current(engine)
    command.upgrade(alembic_config(engine), "head")
    return before, head()


def check_schema(engine: Engine, *, create: bool = True) -> None:
    """Refuse a schema that is not this code's; create it in a database never used
    (``create``): there is nothing in it to migrate."""
    found, want = current(engine), head()
    if found == want:
        return
    where = shown_url(engine)
    if found is None:
        tables = set(sa.inspect(engine).get_table_names()) & set(READ_MODELS.tables)
        if not tables:
            if not create:
                raise SchemaMismatch(
                    f"the database {where} holds no read models yet: `aisle projections "
                    "run` (or `migrate`) creates them"
                )
            migrate(engine)
            return
        raise SchemaMismatch(
            f"the database {where} has read-model tables but no schema revision: it was not "
            "made by `aisle projections migrate`; point AISLE_DATABASE_URL at an empty "
            "database, or drop those tables"
        )
    script = ScriptDirectory.from_config(alembic_config(engine))
    known = {r.revision for r in script.walk_revisions()}
    if found in known:
        raise SchemaMismatch(
            f"the read models in {where} are at schema {found}, older than this aisle's "
            f"{want}: run `aisle projections migrate` first"
        )
    raise SchemaMismatch(
        f"the read models in {where} are at schema {found}, which this aisle does not know "
        f"(its newest is {want}): a newer aisle made it; run that version, or rebuild into "
        "an empty database"
    )


def drop_all(engine: Engine) -> None:
    """Drop every read-model table and the schema revision (``rebuild``)."""
    READ_MODELS.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
