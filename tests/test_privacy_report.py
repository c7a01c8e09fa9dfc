"""`aisle privacy report`: the schedule a store publishes says what the deployment is
configured to keep, and names every personal field."""

from __future__ import annotations

from typer.testing import CliRunner

from core.cli import app
from core.privacy import FIELDS, DataClass


def test_the_report_says_the_configured_retention_and_every_personal_field() -> None:
    env = {
        "AISLE_RETENTION_EVENTS": "180d",
        "AISLE_RETENTION_SAMPLES": "36h",
        "AISLE_PREFIX": "shop",
    }
    said = CliRunner().invoke(app, ["privacy", "report", "--store", "Corner Shop"], env=env)
    assert said.exit_code == 0, said.output
    page = said.stdout
    assert page.startswith("# What Corner Shop keeps about the people it sees")
    assert "| Business events (`SHOP_EVENTS`) |" in page and "| 180 days |" in page
    assert "| 36 hours |" in page and "| 30 days |" in page  # the dead letters' default
    for event_type, fields in FIELDS.items():
        for path, cls in fields.items():
            if cls is DataClass.PERSONAL:
                row = next(x for x in page.splitlines() if x.startswith(f"| `{event_type}` |"))
                assert f"`{path.removeprefix('data.')}`" in row, (event_type, path)
    unlimited = CliRunner().invoke(app, ["privacy", "report"], env={"AISLE_RETENTION_EVENTS": "0"})
    assert "until removed (no time limit is set" in unlimited.stdout
