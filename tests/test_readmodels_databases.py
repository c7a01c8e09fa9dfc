"""The read models on PostgreSQL equal those on SQLite for the same log; the schema is
Alembic's, and a projection refuses a schema that is not its code's, with what to do."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core import events as ev
from core.jetstream import JetStreamLog
from readmodels import database
from readmodels.database import SchemaMismatch, check_schema, current, head, make_engine, migrate
from tests.enginekit import ROOT
from tests.readmodelkit import (
    count,
    day_with_derived,
    derived_of,
    dump,
    postgres_db,
    project,
    publish_lots,
    sqlite_db,
)

STORE = "corner-01"


@pytest.mark.integration
async def test_postgresql_holds_the_same_rows_as_sqlite_for_the_same_log(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    lots = day_with_derived(STORE, hours=1, shoppers=30, seed=5)
    await publish_lots(jslog, lots)
    derived = derived_of(lots)
    alert = next(e for e in derived if isinstance(e, ev.AlertRaised))
    receipt = next(e for e in derived if isinstance(e, ev.ReceiptIssued))
    at = max(e.at for e in derived)
    data = ev.AlertActionData(alert=alert.id, by="ann", reason="seen on camera — all fine")
    priced = ev.ReceiptCorrectionData(
        receipt=receipt.id,
        by="bob",
        reason="an item the shelf sensor missed",
        adjustments=(ev.Adjustment(sku="extra-item", qty=1, amount_cents=250, name="Extra"),),
    )

    def by_api(cls: type[ev.OperatorEvent], subject: str, data: msgspec.Struct) -> ev.Event:
        return ev.new(cls, store=STORE, at=at, source="api", subject=subject, data=data)

    await jslog.publish_many(
        [
            by_api(ev.AlertConfirmed, alert.subject, data),
            by_api(ev.ReceiptCorrected, receipt.subject, priced),
            by_api(ev.AlertClosed, "someone-else", data),
        ]
    )
    lite = sqlite_db(tmp_path / "rm.db")
    await project(jslog, lite)
    with postgres_db() as pg:
        await project(jslog, pg)
        on_pg, on_sqlite = dump(pg), dump(lite)
    assert on_sqlite["receipt"] and on_sqlite["heatmap_cell"] and on_sqlite["correction_adjustment"]
    assert len(on_sqlite["projection_rejection"]) == 1, "the close by the wrong subject"
    assert on_pg == on_sqlite


def test_the_initial_migration_makes_every_table_the_code_writes(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert current(db) is None
    assert migrate(db) == (None, head())
    made = set(sa.inspect(db).get_table_names()) - {"alembic_version"}
    assert made == set(database.READ_MODELS.tables)
    assert migrate(db) == (head(), head()), "a second migrate changes nothing"
    with db.connect() as conn:  # the migrations make exactly what tables.py declares
        drift = compare_metadata(MigrationContext.configure(conn), database.READ_MODELS)
    assert drift == [], "tables.py changed without a migration (docs/readmodels.md)"


def test_a_projection_refuses_a_schema_older_than_its_code_until_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(db)
    was = head()
    newer = tmp_path / "migrations"
    shutil.copytree(database.MIGRATIONS, newer)
    (newer / "versions" / "0099_note.py").write_text(
        '"""a column more"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "0099"\ndown_revision = "{was}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n"
        '    op.add_column("receipt", sa.Column("note", sa.Text(), nullable=True))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("receipt", "note")\n'
    )
    monkeypatch.setattr(database, "MIGRATIONS", newer)
    with pytest.raises(SchemaMismatch) as info:
        check_schema(db)
    assert str(info.value).endswith(
        f"are at schema {was}, older than this aisle's 0099: run `aisle projections migrate` first"
    )
    assert migrate(db) == (was, "0099")
    check_schema(db)
    assert "note" in {c["name"] for c in sa.inspect(db).get_columns("receipt")}


def test_a_schema_from_a_newer_aisle_or_from_elsewhere_is_refused(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(db)
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(SchemaMismatch, match="at schema 0099, which this aisle does not know"):
        check_schema(db)
    other = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    with other.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE receipt (id TEXT)")
    with pytest.raises(SchemaMismatch, match="has read-model tables but no schema revision"):
        check_schema(other)


def test_projections_run_says_why_it_will_not_start_on_an_old_schema(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(db)
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    env = {"AISLE_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "AISLE_DATA_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    aisle = Path(sys.executable).parent / "aisle"
    done = subprocess.run(
        [str(aisle), "projections", "run"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "which this aisle does not know" in " ".join(done.stderr.split())


def test_times_come_back_in_utc_on_sqlite(tmp_path: Path) -> None:
    db = sqlite_db(tmp_path / "rm.db")
    from sqlmodel import Session

    from readmodels.tables import Occupancy

    at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    with Session(db) as s, s.begin():
        s.add(Occupancy(store="s", zone="", at=at, value=3))
    with Session(db) as s:
        assert s.get(Occupancy, ("s", "", at)).at == at  # type: ignore[union-attr]
    assert count(db, "occupancy") == 1


def test_a_new_sqlite_file_of_the_read_models_is_its_owners_alone(tmp_path: Path) -> None:
    from readmodels.database import make_engine

    path = tmp_path / "deep" / "readmodels.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine.dispose()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrating_flags_the_hours_of_single_visits_values_from_their_points(
    kind: str, tmp_path: Path
) -> None:
    """0003 adds metric_hour.per_visit: the hours a database already holds learn it from
    their points (a point without a window is one visit's), so that a viewer is not shown
    a dwell of one visit after an upgrade."""
    from alembic import command

    with contextlib.ExitStack() as stack:
        db = (
            sqlite_db(tmp_path / "rm.db")
            if kind == "sqlite"
            else stack.enter_context(postgres_db())
        )
        command.downgrade(database.alembic_config(db), "0002")
        hour = datetime(2026, 11, 28, 9, tzinfo=UTC).replace(tzinfo=None)
        point = (
            "INSERT INTO metric_point (id, seq, store, name, zone, value, labels, subject, at,"
            " window_start, window_end, hour, rule_id, rule_version) VALUES (:id, 1, 's',"
            " :name, '', 1, '{}', 'x', :at, :ws, :ws, :at, 'r', '1')"
        )
        with db.begin() as conn:
            for name, windowed in (("zone_visit_s", False), ("footfall", True)):
                conn.execute(
                    sa.text(point),
                    {"id": name, "name": name, "at": hour, "ws": hour if windowed else None},
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO metric_hour (store, name, zone, hour, count, sum, min, max,"
                        " last, last_at) VALUES ('s', :name, '', :at, 1, 1, 1, 1, 1, :at)"
                    ),
                    {"name": name, "at": hour},
                )
        assert migrate(db) == ("0002", head())
        with db.connect() as conn:
            flags = dict(conn.execute(sa.text("SELECT name, per_visit FROM metric_hour")).all())
        assert flags == {"zone_visit_s": True, "footfall": False}
