"""``docs/rules.md`` cannot drift from the engine.

Every worked example in the rule language reference is a file under ``docs/examples/``: a pack
and a rule test whose timeline and expected derived events are the example. These tests check
that the text in the document is the text of those files, that the packs load cleanly, that
the rule tests pass and list every derived event their timeline produces, that the Python
examples run, and that the tables (event fields, functions, the standard packs' rules, the
``explain`` output) match the code.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.layout import load_layout
from rules import testing
from rules.engine import Context, Engine, Output
from rules.explain import explain_chain, render_chain
from rules.loader import check_rules, load_rules
from rules.outputs import data_class
from rules.pack import json_schema
from rules.reference import Reference
from rules.testing import run_file

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "rules.md"
EXAMPLES = ROOT / "docs" / "examples"
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
PACKS = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.endswith("_test.yaml"))
TESTS = sorted(EXAMPLES.glob("*_test.yaml"))
runner = CliRunner()
_load_plugins()


@cache
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@cache
def reference() -> Reference:
    return Reference.of(load_layout(LAYOUT))


def block_after(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in the document."""
    m = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)```\n", doc(), re.S)
    assert m, f"no code block after <!-- {marker} --> in docs/rules.md"
    return m.group(1)


def embedded_files() -> dict[str, str]:
    found = re.findall(r"<!-- file: (\S+) -->\n```yaml\n(.*?)```\n", doc(), re.S)
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), "a file is embedded twice"
    return dict(found)


def test_every_example_file_is_in_the_docs_word_for_word() -> None:
    embedded = embedded_files()
    on_disk = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in [*PACKS, *TESTS]}
    assert sorted(embedded) == sorted(on_disk)
    for name, text in on_disk.items():
        assert embedded[name] == text, f"docs/rules.md shows another {name}"


def test_there_is_a_worked_example_for_every_operator() -> None:
    kinds = set()
    for pack in PACKS:
        for rule in load_rules([pack], reference()).rules:
            kinds.add(rule.kind)
            if rule.output.throttle_s:
                kinds.add("throttle")
            if getattr(rule, "cumulative", False):
                kinds.add("cumulative")
            if getattr(rule, "each", None) is not None:
                kinds.add("each")
            if getattr(rule, "window_s", 0) != getattr(rule, "every_s", 0):
                kinds.add("sliding")
    assert kinds >= {
        "match",
        "for",
        "sequence",
        "count",
        "tally",
        "aggregate",
        "throttle",
        "cumulative",
        "each",
        "sliding",
    }


@pytest.mark.parametrize("pack", PACKS, ids=lambda p: p.name)
def test_example_packs_are_clean(pack: Path) -> None:
    checked = check_rules([pack], reference())
    assert [str(e) for e in checked.errors] == []
    assert [str(w) for w in checked.warnings] == []


class RecordingEngine(Engine):
    """The engine of ``rules.testing``, keeping what each test put in and derived."""

    runs: ClassVar[list[list[ev.Event]]] = []
    inputs: ClassVar[list[ev.Event]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.derived: list[ev.Event] = []
        RecordingEngine.runs.append(self.derived)

    def process(self, events: Any) -> Output:
        events = list(events)
        RecordingEngine.inputs += events
        out = super().process(events)
        self.derived += out.derived
        return out

    def advance(self, store: str, at: float) -> Output:
        out = super().advance(store, at)
        self.derived += out.derived
        return out


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_example_timelines_give_exactly_the_events_shown(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test passes, and names under ``expect`` or ``absent`` every type it derives.

    ``aisle rules test`` compares the types named under ``expect`` exactly, so together this
    means the example shows every derived event of its timeline.
    """
    RecordingEngine.runs = []
    monkeypatch.setattr(testing, "Engine", RecordingEngine)
    results = run_file(path)
    assert results and all(r.ok for r in results), "\n".join(
        f"{r.name}: {f}" for r in results for f in r.failures
    )
    spec = msgspec.convert(testing.load_yaml(path).data, testing.TestFile)
    assert len(RecordingEngine.runs) == len(spec.tests)
    for case, derived in zip(spec.tests, RecordingEngine.runs, strict=True):
        shown = {e["type"] for e in case.expect} | {e["type"] for e in case.absent}
        produced = {d.type for d in derived}
        assert produced <= shown, f"{case.name}: also derives {sorted(produced - shown)}"


def test_the_python_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"<!-- run: python -->\n```python\n(.*?)```\n", doc(), re.S)
    assert blocks
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "docs/rules.md", "exec"), {"__name__": "docs_example"})


def table_after(marker: str) -> list[list[str]]:
    m = re.search(rf"<!-- {re.escape(marker)} -->\n((?:\|.*\n)+)", doc())
    assert m, f"no table after <!-- {marker} -->"
    rows = [r.strip().strip("|").split("|") for r in m.group(1).splitlines()[2:]]
    return [[c.strip() for c in row] for row in rows]


def test_the_event_field_table_matches_the_schemas() -> None:
    shown = {}
    for kind, raw_or_derived, fields in table_after("event fields"):
        shown[kind.strip("`")] = (raw_or_derived, re.findall(r"`(\w+)`", fields.split("(")[0]))
    actual = {
        t: (
            "derived" if cls.derived else "operator" if cls.operator else "raw",
            [f.name for f in msgspec.structs.fields(data_class(cls))],
        )
        for t, cls in ev.EVENT_TYPES.items()
    }
    assert shown == actual


def test_the_function_table_matches_the_functions_rules_can_call() -> None:
    shown = set()
    for row in table_after("functions"):
        shown |= set(re.findall(r"`(\w+)\(", row[0]))
    assert shown == set(Reference().functions(Context()))


def test_the_standard_packs_section_names_every_rule() -> None:
    packs = sorted(
        p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
    )
    sections = dict(re.findall(r"<!-- pack: (\w+) -->\n(.*?)(?=\n<!--|\Z)", doc(), re.S))
    assert sorted(sections) == sorted(p.stem for p in packs)
    for pack in packs:
        ruleset = load_rules([pack], reference())
        listed = re.search(r"Rules: (.*?)\.\s", sections[pack.stem], re.S)
        assert listed, f"the {pack.stem} paragraph lists no rules"
        names = set(re.findall(r"`(\w+)`", listed.group(1)))
        assert names == {r.id.split(".", 1)[1] for r in ruleset.rules}, pack.stem


def test_the_quick_start_error_is_what_check_prints(tmp_path: Path) -> None:
    text = (EXAMPLES / "first.yaml").read_text().replace("data.qty >= 3", "data.qtty >= 3")
    (tmp_path / "first.yaml").write_text(text)
    result = runner.invoke(
        app, ["rules", "check", "--layout", str(LAYOUT), str(tmp_path / "first.yaml")]
    )
    assert result.exit_code == 1
    shown = re.search(r"\n(first\.yaml:\d+:\d+: .*)\n", doc())
    assert shown
    assert result.output.strip() == f"{tmp_path}/{shown.group(1)}"


def test_the_explain_output_is_what_explain_prints() -> None:
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    def seen(cls: Any, second: float, data: Any, source: str = "cam-back-west") -> ev.Event:
        at = t0 + timedelta(seconds=second)
        return ev.new(cls, store="corner-01", at=at, source=source, subject="v-81f3", data=data)

    raw = [
        seen(ev.ItemPicked, 10, ev.ItemData(sku="cola-500ml", shelf="fridge-drinks", qty=2)),
        seen(ev.ItemPutBack, 30, ev.ItemData(sku="cola-500ml", shelf="fridge-drinks")),
        seen(ev.ZoneEntered, 50, ev.ZoneData(zone="exit-gate"), source="adapter"),
    ]
    carts = load_rules([ROOT / "rules" / "packs" / "carts.yaml"], reference())
    out = Engine(carts).process(raw)
    receipt = next(d for d in out.derived if d.type == "receipt.issued")
    chain = explain_chain(receipt.id, {e.id: e for e in [*raw, *out.derived]})
    assert chain is not None

    def mask(text: str) -> str:
        return re.sub(r"id=[0-9a-f]{32}", "id=...", text).strip()

    assert mask(render_chain(chain)) == mask(block_after("explain"))


def test_the_shipped_pack_schema_is_the_schema_of_the_pack_structs() -> None:
    shipped = msgspec.json.decode((ROOT / "rules" / "pack.schema.json").read_bytes())
    assert shipped == json_schema(), "regenerate it: aisle rules schema > rules/pack.schema.json"


def test_the_test_file_format_example_runs(tmp_path: Path) -> None:
    text = block_after("test file format")
    text = text.replace("packs: [carts.yaml]", f"packs: [{ROOT / 'rules/packs/carts.yaml'}]")
    text = text.replace("layout: ../../examples/stores/convenience.yaml", f"layout: {LAYOUT}")
    (tmp_path / "format_test.yaml").write_text(text)
    results = run_file(tmp_path / "format_test.yaml")
    assert [r.failures for r in results] == [[]]


CAUSES = {  # example test file -> derived type -> the types of its caused_by, in order
    "match_test.yaml": {"alert.raised": ["item.picked"]},
    "for_test.yaml": {
        "alert.raised": ["zone.entered"],
        "alert.resolved": ["zone.entered", "zone.exited|shopper.exited"],
    },
    "keep_firing_test.yaml": {"alert.resolved": ["zone.entered", "zone.exited"]},
    "sequence_test.yaml": {"alert.raised": ["item.picked", "shopper.exited"]},
    "sequence_absent_test.yaml": {"alert.raised": ["zone.entered"]},
    "count_test.yaml": {"alert.raised": ["item.put_back"] * 3},
    "tally_test.yaml": {
        "cart.item_added": ["item.picked"],
        "cart.item_removed": ["item.put_back"],
        "receipt.issued": ["cart.item_added|cart.item_removed", "...", "zone.entered"],
        "alert.raised": ["cart.item_added", "shopper.exited"],
    },
    "aggregate_test.yaml": {"metric": ["item.picked"] * 4},
    "aggregate_cumulative_test.yaml": {"metric": ["shopper.entered|shopper.exited", "..."]},
}


@pytest.mark.parametrize("name", sorted(CAUSES))
def test_caused_by_is_what_the_outputs_section_says(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    RecordingEngine.runs, RecordingEngine.inputs = [], []
    monkeypatch.setattr(testing, "Engine", RecordingEngine)
    run_file(EXAMPLES / name)
    derived = [d for run in RecordingEngine.runs for d in run]
    index = {e.id: e for e in [*RecordingEngine.inputs, *derived]}
    checked = 0
    for d in derived:
        want = CAUSES[name].get(d.type)
        if want is None:
            continue
        got = [index[c].type for c in d.caused_by]  # every cause is an event that exists
        if want[-2:-1] == ["..."]:  # a run of the first kind, then the last
            pattern = [want[0]] * (len(got) - 1) + [want[-1]]
        elif want[-1] == "...":
            pattern = [want[0]] * len(got)
        else:
            pattern = want
        assert len(got) == len(pattern), (d.type, got)
        for kind, allowed in zip(got, pattern, strict=True):
            assert kind in allowed.split("|"), (d.type, got)
        checked += 1
    assert checked
