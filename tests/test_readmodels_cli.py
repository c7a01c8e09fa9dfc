"""``aisle projections`` as a user runs it, on the embedded server (with its roles): the
demo's day into the log, then rebuild, status and migrate."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import _load_plugins, app
from readmodels.database import head, make_engine
from tests.readmodelkit import count

runner = CliRunner()
_load_plugins()
pytestmark = pytest.mark.integration


def test_rebuild_and_status_on_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AISLE_NATS_URL", raising=False)
    monkeypatch.delenv("AISLE_DATABASE_URL", raising=False)
    env = {"AISLE_NATS_URL": "", "AISLE_DATABASE_URL": ""}
    demo = runner.invoke(app, ["demo", "--shoppers", "10"], env=env)
    assert demo.exit_code == 0, demo.output
    receipts = int(re.search(r"receipts \((\d+)\)", demo.output).group(1))  # type: ignore[union-attr]
    assert receipts > 0

    fresh = runner.invoke(app, ["projections", "status"], env=env)
    assert fresh.exit_code == 0, fresh.output
    assert "no projection has run on this database yet" in fresh.output

    built = runner.invoke(app, ["projections", "rebuild", "--log-format", "text"], env=env)
    assert built.exit_code == 0, built.output
    assert "rebuilt visits, receipts, alerts, metrics, heatmap" in built.output
    # No Alembic chatter, and the progress line is not printed twice at the end.
    assert "alembic" not in built.output and "Context impl" not in built.output, built.output
    progress = [x for x in built.output.splitlines() if "events applied" in x]
    assert progress and len(progress) == len(set(progress)), built.output
    db = make_engine(f"sqlite:///{tmp_path / '.aisle' / 'readmodels.db'}")
    assert count(db, "receipt") == receipts
    assert count(db, "projection_rejection") == 0

    status = runner.invoke(app, ["projections", "status"], env={**env, "COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in status.output.splitlines()
        if line.startswith("│")
    }
    assert set(rows) == {"visits", "receipts", "alerts", "metrics", "heatmap"}, status.output
    assert all(r[0] == "all" and r[3] == "0" for r in rows.values()), status.output

    logging.getLogger().handlers.clear()  # rebuild's, on the stream of its own invocation
    again = runner.invoke(app, ["projections", "migrate"], env={**env, "COLUMNS": "200"})
    assert again.exit_code == 0 and f"at schema {head()}: nothing to do" in again.output, (
        again.output
    )


def test_an_unknown_projection_is_named_with_the_known_ones(tmp_path: Path) -> None:
    result = runner.invoke(app, ["projections", "rebuild", "-p", "receipt"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "no projection receipt; known: visits, receipts, alerts, metrics, heatmap" in " ".join(
        result.output.split()
    )
