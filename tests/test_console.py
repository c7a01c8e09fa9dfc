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


def test_progress_into_a_log_is_a_line_now_and_then_and_one_at_the_end() -> None:
    from core.progress import Steps

    sink = io.StringIO()
    with Steps("publishing", 3000, console=Console(file=sink), every_s=3600) as steps:
        for _ in range(3):
            steps.advance(1000)
    assert sink.getvalue() == "publishing: 3,000 of 3,000 (100%)\n"
    sink = io.StringIO()
    with Steps("frames", 2, console=Console(file=sink), every_s=0) as steps:
        steps.update(1)
        steps.update(2)
    assert sink.getvalue().splitlines() == [
        "frames: 1 of 2 (50%)",
        "frames: 2 of 2 (100%)",
    ], "the last line once"


def test_a_piped_simulation_says_its_progress_on_stderr_and_its_result_on_stdout(
    tmp_path: Path,
) -> None:
    aisle = Path(sys.executable).parent / "aisle"
    ran = subprocess.run(
        [aisle, "simulate", "--no-publish", "--stores", "3", "--hours", "1", "--shoppers", "5"],
        env={**os.environ, "AISLE_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert "simulating stores: 3 of 3 (100%)" in ran.stderr.splitlines()
    assert ran.stdout.startswith("generated ") and "simulating" not in ran.stdout
