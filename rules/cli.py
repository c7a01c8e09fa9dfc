"""``aisle rules check | test | explain | schema`` and ``aisle replay``: the tools of rule
authors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from core.access import Role
from core.cli import run, shown
from core.config import Settings
from core.console import Console
from core.durations import duration_flag
from core.layout import LayoutError, load_layout
from core.runtime import open_log
from core.yamlsource import SourceError
from rules import whatif
from rules.explain import explain_chain, render_chain
from rules.loader import PACKS, PackError, check_rules, pack_files
from rules.pack import json_schema
from rules.reference import Reference, load_reference_list
from rules.testing import is_test_file, run_paths

rules_app = typer.Typer(
    help="Rule packs: validate, unit-test, explain derived events.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"


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
    named = pack_files(paths)
    tests = [f for f in named if f.is_file() and is_test_file(f)]
    files = [f for f in named if f not in tests] or named  # test files alone: refused
    for f in tests if files is not named else ():  # beside packs, as a glob names them
        err.print(
            f"{f}: a rule test file, not a pack: skipped (`aisle rules test {f}` runs it)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
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
        async with open_log(
            settings, name="aisle-rules-explain", role=Role.VIEWER, read_only=True
        ) as log:
            index = {r.event.id: r.event async for r in log.replay(store=store)}
        chain = explain_chain(event_id, index)
        if chain is None:
            err.print(f"no event {event_id} in the log" + (f" of store {store}" if store else ""))
            raise typer.Exit(1)
        typer.echo("\n".join(shown(line) for line in render_chain(chain).splitlines()))

    run(go)


def replay(
    store: Annotated[str, typer.Option("--store", "-s", help="The store to replay.")],
    start: Annotated[
        str | None, typer.Option("--from", help="ISO 8601; no offset: store time. Default: all.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="ISO 8601, exclusive. Default: the log's end.")
    ] = None,
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Packs or folders to try.")
    ] = None,
    baseline: Annotated[
        list[Path] | None,
        typer.Option("--baseline", help="Compare with these rules replayed, not the live ones."),
    ] = None,
    layout: Annotated[Path, typer.Option(help="The store layout (reference data).")] = EXAMPLE,
    members: Annotated[Path | None, typer.Option(help="Enrolled members file.")] = None,
    watchlist: Annotated[Path | None, typer.Option(help="Watch list file.")] = None,
    warmup: Annotated[
        float, duration_flag("Events run before --from, to build state.", 6 * 3600.0)
    ] = 6 * 3600.0,
    lateness: Annotated[
        float, duration_flag("The live engine's allowed lateness (aisle engine run's).", 2.0)
    ] = 2.0,
    source_idle: Annotated[
        float, duration_flag("The live engine's source idle bound (aisle engine run's).", 10.0)
    ] = 10.0,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the shadow's derived events (JSON lines).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The difference as JSON.")] = False,
) -> None:
    """What-if: run rules over past events in shadow (never published) and show what changes."""
    try:
        lay = load_layout(layout)
        reference = Reference.of(
            lay,
            members=load_reference_list(members) if members else None,
            watchlist=load_reference_list(watchlist) if watchlist else None,
        )
        candidate = whatif.pack_factory(pack_files(rules or [PACKS]), reference)
        base = whatif.pack_factory(pack_files(baseline), reference) if baseline else None
        tz = reference.tz(store)
        window = [
            whatif.parse_when(t, tz, o) if t else None
            for t, o in ((start, "--from"), (end, "--to"))
        ]
        if window[0] and window[1] and window[0] >= window[1]:
            raise whatif.WhatIfError(f"--from {start} is not before --to {end}")
        warmup_s, lateness_s, source_idle_s = warmup, lateness, source_idle
    except (PackError, LayoutError) as exc:
        for e in exc.errors:
            err.print(str(e), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (SourceError, ValueError) as exc:  # WhatIfError, a bad duration
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if lay.store.serves and not lay.store.serves_store(store):  # it names its stores
        err.print(
            f"warning: layout {layout} serves {', '.join((lay.store.id, *lay.store.serves))}, "
            f"not {store}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    async def go(settings: Settings) -> whatif.Report:
        async with open_log(
            settings, name="aisle-rules-replay", role=Role.VIEWER, read_only=True
        ) as log:
            return await whatif.what_if(
                log,
                store,
                candidate,
                start=window[0],
                end=window[1],
                baseline=base,
                warmup_s=warmup_s,
                lateness_s=lateness_s,
                source_idle_s=source_idle_s,
            )

    try:
        report = run(go)
    except whatif.WhatIfError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if out_file is not None:
        whatif.write_events(out_file, report.shadow.derived)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        typer.echo(report.render(tz))
        if out_file is not None:
            typer.echo(f"shadow events: {len(report.shadow.derived):,} written to {out_file}")


@rules_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of rule packs (for editors)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
    app.command("replay")(replay)


__all__ = ["SourceError", "register"]
