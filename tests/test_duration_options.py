"""Every duration option takes the same form: ``500ms``, ``2s``, ``1m``, or bare seconds."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from core.cli import _load_plugins, app
from core.durations import duration_option

_load_plugins()

# Options whose value is a length of time, wherever a command has them.
DURATIONS = {"--lateness", "--source-idle", "--max-future", "--checkpoint-seconds",
             "--lease-ttl", "--warmup"}  # fmt: skip


def commands(group: click.Command, path: str = "aisle") -> list[tuple[str, click.Command]]:
    found = [(path, group)]
    for name, sub in getattr(group, "commands", {}).items():
        found += commands(sub, f"{path} {name}")
    return found


def test_the_forms_and_a_bad_one() -> None:
    assert [duration_option(t) for t in ("2s", "500ms", "1m30s", "5", "0.5", "1h")] == [
        2.0, 0.5, 90.0, 5.0, 0.5, 3600.0,
    ]  # fmt: skip
    assert duration_option(2.0) == 2.0, "typer hands an option's default to its parser"
    for bad in ("2x", "-1", "1e400", "", "inf"):
        with pytest.raises(typer.BadParameter, match="is not a duration"):
            duration_option(bad)


def test_every_duration_option_of_every_command_takes_a_duration() -> None:
    """Each is read by ``duration_option``: a value that is no duration is refused with its
    sentence (a float option would say "is not a valid float"), before anything connects."""
    runner = CliRunner()
    seen = []
    for path, command in commands(typer.main.get_command(app)):
        for param in command.params:
            for name in set(param.opts) & DURATIONS:
                seen.append((path, name))
                assert param.metavar == "DURATION", (path, name)
                args = [*path.split()[1:], name, "2x"]
                result = runner.invoke(app, args, env={"AISLE_DATA_DIR": "/nonexistent"})
                assert result.exit_code == 2, (args, result.output)
                assert "is not a duration" in " ".join(result.output.split()), (args, result.output)
    assert ("aisle engine run", "--lateness") in seen and (
        "aisle log configure",
        "--lease-ttl",
    ) in seen
    assert len({p for p, _ in seen}) >= 3, seen
