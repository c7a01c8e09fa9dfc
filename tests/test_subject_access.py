"""A subject access export (`aisle privacy export --member`): everything the read models
hold about a member who visited, bought and was matched, and nothing of anyone else."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.jetstream import JetStreamLog
from readmodels.subject_access import export
from tests.readmodelkit import day_with_derived, derived_of, project, publish_lots, sqlite_db

STORE = "corner-01"


@pytest.mark.integration
async def test_an_export_holds_the_members_visits_purchases_and_matches_and_no_one_else(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    lots = day_with_derived(STORE, hours=2, shoppers=60, seed=11)
    await publish_lots(jslog, lots)
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db)
    raw = [e for lot in lots for e in lot if not e.derived]
    matches = [e for e in raw if isinstance(e, ev.FaceMatched) and not e.data.watchlist]
    receipts = [e for e in derived_of(lots) if isinstance(e, ev.ReceiptIssued)]
    buyers = {r.subject for r in receipts}
    # A member who was matched and bought something on their own receipt.
    match = next(m for m in matches if m.subject in buyers)
    member, visit = match.data.member, match.subject
    held = export(db, member)
    assert [m["id"] for m in held["face_matches"]] == [
        m.id for m in matches if m.data.member == member
    ]
    (mine,) = [v for v in held["visits"] if v["visit"] == visit]
    assert mine["entered_at"] is not None
    assert [r["id"] for r in mine["receipts"]] == [r.id for r in receipts if r.subject == visit]
    picked = [
        e.id for e in raw if isinstance(e, ev.ItemPicked | ev.ItemPutBack) and e.subject == visit
    ]
    assert [p["id"] for p in mine["picks_and_put_backs"]] == picked and picked
    # Nothing of anyone else: no other visit's id anywhere in the export.
    text = json.dumps(held)
    others = {e.subject for e in raw if e.subject not in {v["visit"] for v in held["visits"]}}
    groups = {e.data.group for e in raw if isinstance(e, ev.ShopperEntered) and e.data.group}
    leaked = sorted(o for o in others - groups if f'"{o}"' in text)
    assert leaked == []
    # The command writes the same, readable by its owner only.
    _load_plugins()
    out = tmp_path / "sar.json"
    said = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["privacy", "export", "--member", member, "--out", str(out)],
        env={"AISLE_DATABASE_URL": f"sqlite:///{tmp_path / 'rm.db'}"},
    )
    assert said.exit_code == 0, said.output
    assert json.loads(out.read_text())["face_matches"] == held["face_matches"]
    assert out.stat().st_mode & 0o077 == 0
    nobody = export(db, "m-nobody")
    assert nobody["face_matches"] == [] and nobody["visits"] == []
