"""``aisle rules check | test | explain | schema``: the tools of rule authors."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.config import Settings
from core.layout import load_layout
from core.runtime import open_log
from core.yamlsource import SourceError
from rules.explain import explain_chain, render_chain
from rules.loader import check_rules
from rules.pack import json_schema
from rules.reference import Reference
from rules.testing import run_paths

rules_app = typer.Typer(
    help="Rule packs: validate, unit-test, explain derived events.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)


def _pack_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.glob("*.yaml") if not f.name.endswith("_test.yaml"))
        else:
            files.append(p)
    return files


@rules_app.command("check")
def check(
    paths: Annotated[list[Path], typer.Argument(help="Pack files or folders of packs.")],
    layout: Annotated[
        Path | None, typer.Option(help="A store layout, for packs that need one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Errors and warnings as JSON.")] = False,
) -> None:
    """Validate packs: errors as file:line:col: message; exit code 1 on any error."""
    reference = Reference.of(load_layout(layout)) if layout else Reference()
    files = _pack_files(paths)
    checked = check_rules(files, reference)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "errors": [e.to_dict() for e in checked.errors],
                    "warnings": [w.to_dict() for w in checked.warnings],
                }
            )
            + "\n"
        )
    else:
        for e in checked.errors:
            err.print(f"{e}", highlight=False, markup=False, soft_wrap=True)
        for w in checked.warnings:
            err.print(
                f"{w.file}:{w.line}:{w.col}: warning: {w.message}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        if not checked.errors:
            rules = len(checked.ruleset.rules) if checked.ruleset else 0
            out.print(f"[green]ok[/] {len(files)} packs, {rules} rules")
    raise typer.Exit(1 if checked.errors else 0)


@rules_app.command("test")
def test(
    paths: Annotated[list[Path], typer.Argument(help="Test files, or folders of *_test.yaml.")],
) -> None:
    """Run rule unit tests; a failing test prints what was expected and what came."""
    results, errors = run_paths(paths)
    for e in errors:
        err.print(str(e), highlight=False, markup=False, soft_wrap=True)
    failed = [r for r in results if not r.ok]
    for r in results:
        mark = "[green]PASS[/]" if r.ok else "[red]FAIL[/]"
        out.print(f"{mark} {r.file}:{r.line} {r.name}", highlight=False, soft_wrap=True)
        for f in r.failures:
            out.print(
                "     " + f.replace("\n", "\n     "), highlight=False, markup=False, soft_wrap=True
            )
    out.print(
        f"{len(results) - len(failed)} passed, {len(failed)} failed, {len(errors)} files in error"
    )
    raise typer.Exit(1 if failed or errors else 0)


@rules_app.command("explain")
def explain(
    event_id: Annotated[
        str, typer.Argument(help="The id of a derived event (a receipt, an alert).")
    ],
    store: Annotated[
        str | None, typer.Option("--store", "-s", help="The store it belongs to.")
    ] = None,
) -> None:
    """Walk caused_by back to the raw events: which rule, which version, which events."""

    async def go(settings: Settings) -> None:
        async with open_log(settings, name="aisle-rules-explain") as log:
            index = {r.event.id: r.event async for r in log.replay(store=store)}
        chain = explain_chain(event_id, index)
        if chain is None:
            err.print(f"no event {event_id} in the log" + (f" of store {store}" if store else ""))
            raise typer.Exit(1)
        typer.echo(render_chain(chain))

    asyncio.run(go(Settings.from_env()))


@rules_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of rule packs (for editors)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")


__all__ = ["SourceError", "register"]
