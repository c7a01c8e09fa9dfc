"""``aisle tokens`` and ``aisle api run`` as a user runs them, on the embedded defaults:
the demo's day in the log, the read models rebuilt, the API serving them and publishing an
operator's action as the ``api`` NATS role."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from core.cli import _load_plugins, app

runner = CliRunner()
_load_plugins()
ENV = {"AISLE_NATS_URL": "", "AISLE_DATABASE_URL": ""}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tokens_are_made_listed_without_their_secret_and_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    made = runner.invoke(
        app,
        ["tokens", "create", "--role", "viewer", "--store", "corner-01", "--name", "ann"],
        env=ENV,
    )
    assert made.exit_code == 0, made.output
    # An empty folder's read models hold no store yet: the token is made, with a warning.
    assert "hold nothing of corner-01 yet: is the id right?" in " ".join(made.stderr.split())
    token = made.stdout.strip().splitlines()[-1]
    token_id, secret = token.split(".")
    listed = runner.invoke(app, ["tokens", "list", "--json"], env=ENV)
    assert token_id in listed.stdout and secret not in listed.stdout
    assert '"stores":["corner-01"]' in listed.stdout.replace(" ", "")
    gone = runner.invoke(app, ["tokens", "revoke", token_id], env=ENV)
    assert gone.exit_code == 0 and "revoked" in gone.stdout
    unknown = runner.invoke(app, ["tokens", "revoke", "0" * 16], env=ENV)
    assert unknown.exit_code == 2
    bad = runner.invoke(app, ["tokens", "create", "--role", "viewer", "--store", "a.>"], env=ENV)
    assert bad.exit_code == 2
    evil = runner.invoke(
        app, ["tokens", "create", "--role", "viewer", "--name", "a\nb\u202e"], env=ENV
    )
    assert evil.exit_code == 2 and "control or direction" in " ".join(evil.output.split())
    # The command line's changes are audited as the API's are.
    audited = runner.invoke(app, ["api", "audit", "--json"], env=ENV)
    actions = [json.loads(x) for x in audited.stdout.splitlines() if x.strip()]
    mine = [(a["action"], a["target"]) for a in actions if a["target"] == token_id]
    assert sorted(mine) == [("token.created", token_id), ("token.revoked", token_id)], actions
    assert all(a["who"].startswith("command line (") for a in actions if a["target"] == token_id)


def test_tokens_list_never_cuts_an_id_on_an_80_column_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    import api.cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(api.cli, "out", Console(width=80))  # a pipe's width, or a terminal's
    stores = [f"--store={s}" for s in ("corner-01", "corner-02", "station-hall-west-0001")]
    ids = []
    for name in ("a holder with a long name, from the night shift", "ann"):
        made = runner.invoke(
            app, ["tokens", "create", "--role", "operator", *stores, "--name", name], env=ENV
        )
        assert made.exit_code == 0, made.output
        ids.append(made.stdout.strip().splitlines()[-1].split(".")[0])
    listed = runner.invoke(app, ["tokens", "list"], env=ENV)
    assert listed.exit_code == 0, listed.output
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    for token_id in ids:
        assert token_id in listed.stdout, listed.stdout
    assert "…" not in listed.stdout


@pytest.mark.integration
def test_api_run_serves_the_read_models_and_publishes_as_the_api_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AISLE_NATS_URL", raising=False)
    monkeypatch.delenv("AISLE_DATABASE_URL", raising=False)
    assert runner.invoke(app, ["demo", "--shoppers", "20"], env=ENV).exit_code == 0  # an alert
    built = runner.invoke(app, ["projections", "rebuild", "--log-format", "text"], env=ENV)
    assert built.exit_code == 0, built.output
    made = runner.invoke(app, ["tokens", "create", "--role", "operator"], env=ENV)
    token = made.stdout.strip().splitlines()[-1]
    port = _free_port()
    aisle = Path(sys.executable).parent / "aisle"
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    server = subprocess.Popen(
        [str(aisle), "api", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"{base}/stores", headers=headers, timeout=2)
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.3)
        assert [s["id"] for s in r.json()] == ["corner-01"]
        receipts = httpx.get(f"{base}/stores/corner-01/receipts", headers=headers).json()
        assert receipts["items"]
        alerts = httpx.get(f"{base}/stores/corner-01/alerts", headers=headers).json()["items"]
        assert alerts, "the demo's day raises alerts"
        acted = httpx.post(
            f"{base}/stores/corner-01/alerts/{alerts[0]['id']}/acknowledge",
            headers=headers,
            timeout=30,
        )
        assert acted.status_code == 202, acted.text
        assert acted.json()["seq"] > 0
    finally:
        server.terminate()
        server.wait(20)
