"""The commands' consoles: whole lines into a pipe or a file, the terminal's width at one."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table

from core.console import Console

ID = "tok_" + "0123456789abcdef" * 6  # an id a user pastes: 100 characters


def table() -> Table:
    t = Table("id", "name", "role", "stores")
    t.add_row(ID, "night shift at the corner store", "operator", "corner-01, corner-02")
    return t


def test_a_table_printed_into_a_pipe_keeps_each_row_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    sink = io.StringIO()
    Console(file=sink).print(table())
    rows = [line for line in sink.getvalue().splitlines() if ID in line]
    assert len(rows) == 1 and "corner-01, corner-02" in rows[0], sink.getvalue()


def test_a_width_asked_for_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    sink = io.StringIO()
    Console(file=sink, width=60).print(table())
    assert ID not in sink.getvalue(), "wrapped at the 60 columns asked for"
    monkeypatch.setenv("COLUMNS", "70")
    sink = io.StringIO()
    Console(file=sink).print(table())
    assert max(len(line) for line in sink.getvalue().splitlines()) <= 70


def test_a_command_piped_prints_whole_rows(tmp_path: Path) -> None:
    """`aisle layout check` on a file whose path is longer than 80 columns, into a pipe."""
    deep = tmp_path / ("a-long-folder-name-" * 5)
    deep.mkdir()
    layout = deep / "store.yaml"
    example = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
    layout.write_text(example.read_text())
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    aisle = Path(sys.executable).parent / "aisle"
    ran = subprocess.run(
        [aisle, "layout", "check", str(layout)], env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert f"ok {layout}" in ran.stdout.splitlines(), ran.stdout
