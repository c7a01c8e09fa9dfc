"""The metrics' KPIs over a range from the range's sums, not means of hourly rates; and
what a viewer may read of single visits' values."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import Session

from api.app import create_app
from api.auth import Role, create_token
from api.settings import ApiSettings
from readmodels.tables import MetricHour, MetricPoint
from tests.enginekit import LAYOUT_FILE
from tests.readmodelkit import sqlite_db

STORE = "corner-01"
NINE = datetime(2026, 11, 28, 9, tzinfo=UTC)


def _hour(
    name: str, hour: int, value: float, *, count: int = 1, zone: str = "", per_visit: bool = False
) -> MetricHour:
    at = NINE + timedelta(hours=hour)
    return MetricHour(
        store=STORE, name=name, zone=zone, hour=at, count=count, sum=value * count, min=value,
        max=value, last=value, last_at=at + timedelta(hours=1), per_visit=per_visit,
    )  # fmt: skip


def _get(
    tmp_path: Path,
    rows: list[Any],
    role: Role = Role.VIEWER,
    path: str = "metrics",
    params: dict[str, str] | None = None,
) -> Response:
    db = sqlite_db(tmp_path / f"rm-{len(list(tmp_path.iterdir()))}.db")
    with Session(db) as s, s.begin():
        s.add_all(rows)
    token = create_token(db, role)[1]
    settings = ApiSettings(database_url=str(db.url), layouts=(LAYOUT_FILE,), log=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.get(
            f"/api/v1/stores/{STORE}/{path}",
            headers={"Authorization": f"Bearer {token}"},
            params={
                "from": NINE.isoformat(),
                "to": (NINE + timedelta(hours=4)).isoformat(),
                **(params or {}),
            },
        )
    assert r.status_code == 200, r.text
    return r


def _kpis(tmp_path: Path, rows: list[MetricHour]) -> dict[str, float | None]:
    return _get(tmp_path, rows).json()["kpis"]  # type: ignore[no-any-return]


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


# -- what a viewer sees ------------------------------------------------------------------------


def _visits(name: str, hour: int, value: float, subjects: list[str], zone: str) -> list[Any]:
    """A per-visit metric's hour: its points (one a visit) and its hour row."""
    at = NINE + timedelta(hours=hour, minutes=10)
    points = [
        MetricPoint(
            id=f"{name}-{hour}-{i}", seq=i, store=STORE, name=name, zone=zone, value=value,
            labels={"zone": zone}, subject=who, at=at, hour=NINE + timedelta(hours=hour),
            rule_id="r", rule_version="1",
        )
        for i, who in enumerate(subjects)
    ]  # fmt: skip
    row = _hour(name, hour, value, count=len(subjects), zone=zone, per_visit=True)
    return [*points, row]


# The snack shelf's dwell: one shopper in the first hour (their own dwell, 42 s), six in
# the second, six visits of two shoppers in the third; a mean over a window beside it
# (over one visit, that visit's); a zone's visit count; the footfall, a count; the
# store's clock (its latest figure) at 13:00, so 09:00 to 11:00 have ended.
def _dwell() -> list[Any]:
    six = [f"v{i}" for i in range(6)]
    return [
        *_visits("zone_visit_s", 0, 42.0, ["v-lone"], "sf-snacks"),
        *_visits("zone_visit_s", 1, 30.0, six, "sf-snacks"),
        *_visits("zone_visit_s", 2, 20.0, ["v-a", "v-b"] * 3, "sf-snacks"),
        _hour("dwell.visits", 0, 1, zone="sf-snacks"),
        _hour("dwell.visits", 1, 6, zone="sf-snacks"),
        _hour("dwell.dwell_mean", 0, 42.0, zone="sf-snacks"),
        _hour("footfall", 0, 1),
        _hour("footfall", 3, 9),
    ]


def _series(r: Response) -> dict[tuple[str, int], dict[str, object]]:
    return {(p["name"], int(p["start"][11:13])): p for p in r.json()["series"]}


def test_a_viewer_sees_single_visits_figures_only_over_enough_different_shoppers(
    tmp_path: Path,
) -> None:
    r = _get(tmp_path, _dwell())
    s = _series(r)
    assert ("zone_visit_s", 9) not in s, "one shopper's hour: left out whole, count too"
    assert ("zone_visit_s", 11) not in s, "six visits of two shoppers: theirs"
    six = s[("zone_visit_s", 10)]
    assert six["count"] == 6 and six["mean"] == pytest.approx(30.0)
    assert six["min"] is None and six["max"] is None and six["last"] is None  # one visit's
    assert ("dwell.visits", 9) not in s and s[("dwell.visits", 10)]["sum"] == 6
    assert ("dwell.dwell_mean", 9) not in s, "a mean over one visit is that visit's"
    assert s[("footfall", 9)]["last"] == 1 and s[("footfall", 9)]["per_visit"] is False
    assert r.json()["hours_withheld"] == 3  # 09:00 and 11:00's dwell, 09:00's zone visits
    assert r.json()["kpis"]["dwell_s"] == pytest.approx(30.0)  # the shown hour's visits only
    assert r.json()["role"] == "viewer"


def test_a_viewers_day_adds_up_only_the_hours_it_shows(tmp_path: Path) -> None:
    """Two answers that differ by a hidden hour gave its one visit: a day (09:00 and 10:00)
    less 10:00 alone."""
    day = _get(tmp_path, _dwell(), params={"granularity": "day"}).json()
    (dwell,) = [p for p in day["series"] if p["name"] == "zone_visit_s"]
    assert (dwell["count"], dwell["sum"]) == (6, pytest.approx(180.0))
    hour = _get(tmp_path, _dwell(), params={"from": "2026-11-28T10:00:00Z"}).json()
    (alone,) = [p for p in hour["series"] if p["name"] == "zone_visit_s"]
    assert dwell["sum"] - alone["sum"] == 0


def test_a_viewer_sees_an_hour_only_once_it_has_ended_by_the_stores_clock(
    tmp_path: Path,
) -> None:
    """Polled while open, each new visit showed as the difference between two answers."""
    six = [f"v{i}" for i in range(6)]
    rows = [*_visits("zone_visit_s", 1, 30.0, six, "sf-snacks"), _hour("footfall", 1, 6)]
    r = _get(tmp_path, rows)  # the store's clock at 11:00: the hour from 10:00 not yet ended
    assert ("zone_visit_s", 10) not in _series(r) and r.json()["hours_withheld"] == 1


def test_an_operator_sees_every_value(tmp_path: Path) -> None:
    r = _get(tmp_path, _dwell(), Role.OPERATOR)
    s = _series(r)
    assert s[("zone_visit_s", 9)]["sum"] == 42.0 and s[("zone_visit_s", 9)]["last"] == 42.0
    assert s[("dwell.dwell_mean", 9)]["mean"] == 42.0 and r.json()["role"] == "operator"
    assert r.json()["hours_withheld"] == 0


def test_the_csv_withholds_from_a_viewer_what_the_json_does(tmp_path: Path) -> None:
    text = _get(tmp_path, _dwell(), path="metrics.csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    shown = {(x["name"], x["start"][11:13]) for x in rows}
    assert ("zone_visit_s", "10") in shown and ("zone_visit_s", "09") not in shown
    assert "42" not in text and "dwell.dwell_mean" not in text
