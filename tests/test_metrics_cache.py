"""A day's metrics are answered again from memory only while the metrics projection has
not moved: a batch it commits, or a rebuild, shows in the next answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from api.context import Context
from api.routes.metrics import compute
from api.settings import ApiSettings
from readmodels.runner import delete_positions
from readmodels.tables import MetricHour, Position
from tests.readmodelkit import sqlite_db

HOUR = datetime(2026, 11, 28, 9, tzinfo=UTC)
_HOURS: sa.Table = MetricHour.__table__  # type: ignore[attr-defined]
_POSITIONS: sa.Table = Position.__table__  # type: ignore[attr-defined]


def _footfall(ctx: Context) -> float:
    out = compute(ctx, "corner-01", HOUR, HOUR + timedelta(days=1), "hour", None, None)
    return out["kpis"]["footfall"]  # type: ignore[no-any-return]


def _commit(db: sa.Engine, footfall: float, seq: int) -> None:
    """What the metrics projection commits: the hour row and its position, together."""
    row = {"count": 1, "sum": footfall, "min": footfall, "max": footfall, "last": footfall}
    with db.begin() as conn:
        conn.execute(
            _HOURS.delete().where(_HOURS.c.store == "corner-01", _HOURS.c.name == "footfall")
        )
        conn.execute(
            _HOURS.insert().values(
                store="corner-01", name="footfall", zone="", hour=HOUR, last_at=HOUR, **row
            )
        )
        conn.execute(_POSITIONS.delete().where(_POSITIONS.c.projection == "metrics"))
        conn.execute(
            _POSITIONS.insert().values(projection="metrics", scope="*", stream="s", seq=seq)
        )


def test_an_answer_is_kept_until_the_projection_moves(tmp_path: Path) -> None:
    db = sqlite_db(tmp_path / "r.db")
    ctx = Context(settings=ApiSettings(log=False), db=db)
    _commit(db, 5.0, seq=10)
    assert _footfall(ctx) == 5.0
    with db.begin() as conn:  # rows changed behind the position's back: not a projection
        conn.execute(_HOURS.update().values(sum=99.0))
    assert _footfall(ctx) == 5.0  # the answer kept: the position has not moved
    _commit(db, 7.0, seq=11)
    assert _footfall(ctx) == 7.0
    delete_positions(db, ["metrics"])  # a rebuild starts: the position goes
    with db.begin() as conn:
        conn.execute(_HOURS.update().values(sum=3.0))
    assert _footfall(ctx) == 3.0
