"""The metrics' KPIs over a range from the range's sums, not means of hourly rates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from api.auth import Role, create_token
from api.settings import ApiSettings
from readmodels.tables import MetricHour
from tests.enginekit import LAYOUT_FILE
from tests.readmodelkit import sqlite_db

STORE = "corner-01"
NINE = datetime(2026, 11, 28, 9, tzinfo=UTC)


def _hour(name: str, hour: int, value: float) -> MetricHour:
    at = NINE + timedelta(hours=hour)
    return MetricHour(
        store=STORE, name=name, zone="", hour=at, count=1, sum=value, min=value,
        max=value, last=value, last_at=at + timedelta(hours=1),
    )  # fmt: skip


def _kpis(tmp_path: Path, rows: list[MetricHour]) -> dict[str, float | None]:
    db = sqlite_db(tmp_path / "rm.db")
    with Session(db) as s, s.begin():
        s.add_all(rows)
    token = create_token(db, Role.VIEWER)[1]
    settings = ApiSettings(
        database_url=f"sqlite:///{tmp_path / 'rm.db'}", layouts=(LAYOUT_FILE,), log=False
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.get(
            f"/api/v1/stores/{STORE}/metrics",
            headers={"Authorization": f"Bearer {token}"},
            params={"from": NINE.isoformat(), "to": (NINE + timedelta(hours=4)).isoformat()},
        )
    assert r.status_code == 200, r.text
    return r.json()["kpis"]  # type: ignore[no-any-return]


def test_capture_rates_over_a_range_divide_its_sums_in_both_definitions(tmp_path: Path) -> None:
    # A quiet hour (1 of 1 came in) and a busy one (10 of 100): 11 of 101, not (1 + 0.1) / 2.
    # The third hour's passer-by line counted nobody: its entries are in neither rate.
    kpis = _kpis(
        tmp_path,
        [
            _hour("footfall", 0, 1), _hour("passersby", 0, 1),
            _hour("capture_rate", 0, 1.0), _hour("capture_rate_of_traffic", 0, 0.5),
            _hour("footfall", 1, 10), _hour("passersby", 1, 100),
            _hour("capture_rate", 1, 0.1), _hour("capture_rate_of_traffic", 1, 10 / 110),
            _hour("footfall", 2, 7),
        ],
    )  # fmt: skip
    assert kpis["capture_rate"] == pytest.approx(11 / 101)
    assert kpis["capture_rate_of_traffic"] == pytest.approx(11 / 112)
    assert kpis["footfall"] == 18


def test_capture_rates_without_passer_by_counts_are_the_hours_mean(tmp_path: Path) -> None:
    """Read models of a traffic pack before 1.4.0: the rates alone, no counts."""
    kpis = _kpis(tmp_path, [_hour("capture_rate", 0, 1.0), _hour("capture_rate", 1, 0.1)])
    assert kpis["capture_rate"] == pytest.approx(0.55)
    assert kpis["capture_rate_of_traffic"] is None
