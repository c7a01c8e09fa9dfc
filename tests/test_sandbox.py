"""The sandbox holds: escape and exhaustion attempts, each refused or stopped, none hanging.

Every case runs in a forked child with a memory limit, and the test waits for it a bounded
time: on an engine without the limits, a case fails (it passes the checker, grows past the
memory limit, or runs out of time) instead of taking the machine down. Cases refused at check
time name the place in the file; cases stopped at run time give a rule error that names the
rule and the expression, and the engine carries on with the next event.
"""

from __future__ import annotations

import multiprocessing
import resource
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core import events as ev
from core.layout import check_layout, load_layout
from rules.engine import MAX_FANOUT, Engine
from rules.loader import check_rules, load_rules
from rules.reference import Reference

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
AT = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
TIMEOUT_S = 60.0
MEMORY_B = 1 << 30  # what a case may allocate beyond what the test process holds


@cache
def reference() -> Reference:
    return Reference.of(load_layout(LAYOUT))


def bounded(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a forked child with a memory limit, waited for at most TIMEOUT_S."""
    reference()  # loaded before the fork, shared by the children
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def child() -> None:
        with open("/proc/self/statm") as f:
            held = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (held + MEMORY_B, held + MEMORY_B))
        try:
            send.send(("ok", fn()))
        except BaseException as exc:
            send.send(("raised", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    send.close()
    try:
        if not receive.poll(TIMEOUT_S):
            pytest.fail(f"still running after {TIMEOUT_S:.0f} s")
        try:
            kind, value = receive.recv()
        except EOFError:
            pytest.fail("the case died (out of memory?)")
    finally:
        proc.kill()
        proc.join()
    if kind == "raised":
        pytest.fail(f"the case raised {value}")
    return value


def pack(value: str = "1", label: str = "x", head: str = "", extra: str = "") -> str:
    """A pack whose rule ``p.r`` reports ``value`` on each pick, labelled with ``label``; the
    value expression is on line 13, column 9, the label on line 15."""
    return f"""pack: p
version: "1"
{head}sets:
  staff:
    add: type == "staff.session_started"
    remove: type == "staff.session_ended"
rules:
  - id: r
    where: type == "item.picked" and not (subject in staff)
    metric:
      name: m
      value: |
        {value}
      labels:
        x: {label!r}
{extra}"""


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes  # the pack file
    phrase: str  # in the error, at check time or at run time
    line: int = 13  # at check time: where the error is
    run: bool = False  # stopped at run time rather than refused at check time
    sku: str = "cola-500ml"  # of the pick the run-time cases are given

    def __str__(self) -> str:
        return self.id


ALIAS_BOMB = 'pack: p\nversion: "1"\nlists:\n  a: &a ["lol","lol","lol","lol","lol","lol","lol"]\n'
for i, name in enumerate("bcdefghij"):
    prev = "abcdefghij"[i]
    ALIAS_BOMB += f"  {name}: &{name} [{', '.join([f'*{prev}'] * 7)}]\n"
ALIAS_BOMB += "rules: []\n"

MACRO_BOMB = 'pack: p\nversion: "1"\nmacros:\n  m0: type == "item.picked"\n'
for i in range(1, 25):
    MACRO_BOMB += f"  m{i}: m{i - 1} and m{i - 1} and m{i - 1}\n"
MACRO_BOMB += "rules:\n  - id: r\n    where: m24\n    metric: {name: m, value: '1'}\n"

FEEDS_ITSELF = pack(
    extra="""  - id: feeds_itself
    description: every metric makes four more, eight levels deep
    where: type in ["item.picked", "metric"]
    metrics:
      - {name: a, value: "1"}
      - {name: b, value: "1"}
      - {name: c, value: "1"}
      - {name: d, value: "1"}
"""
)

NESTED = "[[subject] * 100000] * 100000"  # 800 kB, that prints as 10**10 characters
TUPLES = "((subject,) * 100000,) * 100000"
LONG = "((subject * 30000,) * 50000)"


def windowed(window: str) -> str:
    """An aggregate with ``window`` (on line 8) that counts picks."""
    return (
        'pack: p\nversion: "1"\nrules:\n  - id: r\n    where: type == "item.picked"\n'
        f"    aggregate:\n      window:\n        {window}\n      compute:\n        n: count()\n"
    )


def named(section: str, name: str, value: str) -> str:
    """A pack whose ``section`` holds ``name`` (on line 4), which its rule does not use."""
    return (
        f'pack: p\nversion: "1"\n{section}:\n  {name!r}: {value}\nrules:\n  - id: r\n'
        '    where: type == "item.picked"\n    metric: {name: m, value: "1"}\n'
    )


ITEM_NAMED = windowed("{tumbling: 1m}\n      each: '[subject]'\n      as: _event")

CASES = [
    # bound methods and attribute chains
    Case("a set's add as min's key", pack("min([subject], key=staff.add)"), "argument 'key'"),
    Case("a set's add as max's key", pack("max([subject, 'x'], key=staff.add)"), "'key'"),
    Case("a set's discard as a key", pack("max([subject], key=staff.discard)"), "'key'"),
    Case("len as a key", pack("max([subject], key=len)"), "'key'"),
    Case("a lambda as a key", pack("max([subject], key=lambda s: s)"), "'key'"),
    Case("str.format as a key", pack('max([at], key="{0.__class__}".format)'), "'key'"),
    Case("a set's add as a value", pack("staff.add"), "'add' is a method"),
    Case("a set's copy", pack("len(staff.copy)"), "'copy' is a method"),
    Case("str.format called", pack('"{0.__class__}".format(subject)'), "method"),
    Case("str.format as a value", pack('str("{0.__init__.__globals__}".format)'), "method"),
    Case("a field's method", pack("str(data.sku.upper)"), "'upper' is a method"),
    Case("a time's replace", pack("str(at.replace)"), "'replace' is a method"),
    Case("format_map", pack("subject.format_map"), "'format_map' is a method"),
    Case("a literal's attribute", pack("(1).real"), "only the fields"),
    Case("a function's value's attribute", pack("len(subject).numerator"), "only the fields"),
    Case("a list's attribute", pack("len(staff).bit_length"), "method"),
    Case("a dunder", pack("data.__class__"), "starting with '_'"),
    Case("a dunder chain", pack("data.sku.__class__.__mro__"), "starting with '_'"),
    Case("an interpreter internal", pack("data.gi_frame"), "interpreter internals"),
    # repetition, big integers, formatting
    Case("string repetition", pack("'a' * 10**9"), "repetition too large"),
    Case("list repetition", pack("[0] * 10**9"), "repetition too large"),
    Case("repetition, int first", pack("-(-10) ** 9 * 'ab'"), "repetition too large"),
    Case("a huge power", pack("10 ** 10 ** 10"), "integer power too large"),
    Case("a huge product", pack("7 ** 30000 * 7 ** 30000"), "integer product too large"),
    Case("a shift", pack("1 << 100000"), "'<<' is not allowed"),
    Case("a printf width", pack("'%1000000000d' % 1"), "too large"),
    Case("a printf star width", pack("'%*d' % (1000000000, 1)"), "'*' widths"),
    Case("a template width", pack(label="{subject:>1000000000}"), "too large", line=15),
    Case("a template precision", pack(label="{data.qty:.999999999f}"), "too large", line=15),
    Case("a strftime width", pack(label="{at:%1000000000Y}"), "too large", line=15),
    # files: aliases, macros, encoding, nesting, size
    Case("an alias bomb", ALIAS_BOMB, "aliases (*name) stand for more than", line=8),
    Case("a macro bomb", MACRO_BOMB, "expands to more than", line=10),
    Case("a file not UTF-8", pack(label="caf\xe9").encode("latin-1"), "not UTF-8", line=15),
    Case("a file nested 20 000 deep", "x: " + "[" * 20_000 + "]" * 20_000, "nested", line=1),
    Case("a pack of 2 MiB", pack() + "#" * (2 << 20) + "\n", "larger than 1 MiB", line=1),
    # stopped at run time: what only the event says
    Case("repetition by a field", pack("subject * (data.qty * 10**9)"), "repetition", run=True),
    Case("a list by a field", pack("[subject] * (data.qty * 10**9)"), "repetition", run=True),
    Case("a power by a field", pack("10 ** (data.qty * 10**9)"), "power too large", run=True),
    Case("a product by a field", pack("(7 ** 30000 + data.qty) * 7 ** 30000"), "product", run=True),
    Case("round to a billion digits", pack("round(data.qty, -10**9)"), "round to", run=True),
    Case("a printf width in the event", pack("data.sku % 1"), "large", run=True, sku="%999999999d"),
    Case("outputs that feed themselves", FEEDS_ITSELF, f"more than {MAX_FANOUT} derived", run=True),
    # windows and durations: each event falls in a bounded number of windows
    Case("a window in a billion steps", windowed("{sliding: 1000d, every: 1ms}"), "windows", 8),
    Case("an infinite sliding window", windowed("{sliding: .inf, every: 1s}"), "finite", 8),
    Case("an infinite tumbling window", windowed("{tumbling: .inf}"), "finite", 8),
    Case("a window of NaN seconds", windowed("{tumbling: .nan}"), "finite", 8),
    Case("a window of 1e-300 s", windowed("{tumbling: 1.0e-300}"), "1ms", 8),
    Case("a window of 400 digits", windowed(f"{{tumbling: 1{'0' * 400}s}}"), "finite", 8),
    # names the expressions cannot have: refused where they are written, not a traceback
    Case("a parameter named _x", named("params", "_x", "1"), "cannot be named", 4),
    Case("a parameter named for", named("params", "for", "1"), "cannot be named", 4),
    Case("a list named None", named("lists", "None", "[1]"), "cannot be named", 4),
    Case("a list named x-y", named("lists", "x-y", "[1]"), "cannot be named", 4),
    Case("a set named __import__", named("sets", "__import__", "{add: 'true'}"), "named", 4),
    Case("a set named staff.x", named("sets", "staff.x", "{add: 'true'}"), "cannot be named", 4),
    Case("an item named _event", ITEM_NAMED, "cannot name the item", 10),
    # repetition of what holds repetitions: each is small, what it makes is not
    Case("str of nested lists", pack(f"len(str({NESTED}))"), "repetition", run=True),
    Case("a template of nested lists", pack(label=f"{{{NESTED}}}"), "repetition", 15, run=True),
    Case("'%s' of long strings", pack(f"len('%s' * 50000 % {LONG})"), "repetition", run=True),
    Case("comparing nested lists", pack(f"{NESTED} == {NESTED}"), "repetition", run=True),
    Case("hashing nested tuples", pack(f"{TUPLES} in ['x']"), "repetition", run=True),
    Case("min of nested lists", pack(f"len(min({NESTED}, {NESTED}))"), "repetition", run=True),
    Case("long strings listed", pack("str([subject * 30000] * 9)"), "repetition", run=True),
]  # fmt: skip


def check_case(case: Case, path: Path) -> list[tuple[str, int, int, str]]:
    checked = check_rules([path], reference())
    return [(Path(e.file).name, e.line, e.col, e.message) for e in checked.errors]


def engine_of(*paths: Path) -> Engine:
    return Engine(load_rules(paths, reference()))


def picks(*qty: int, sku: str = "cola-500ml") -> list[ev.Event]:
    return [
        ev.new(
            ev.ItemPicked,
            store="corner-01",
            at=AT + timedelta(seconds=i),
            source="cam",
            subject=f"v-{i}",
            data=ev.ItemData(sku=sku, shelf="fridge-drinks", qty=q),
        )
        for i, q in enumerate(qty)
    ]


def run(engine: Engine, events: list[ev.Event]) -> tuple[list[tuple[str, str]], int]:
    out = engine.process(events)
    out.extend(engine.advance("corner-01", (AT + timedelta(minutes=5)).timestamp()))
    return [(e.rule, e.message) for e in out.errors], len(out.derived)


def run_case(case: Case, path: Path) -> tuple[list[tuple[str, str]], int]:
    return run(engine_of(path), picks(2, sku=case.sku))


def test_there_are_at_least_30_attempts() -> None:
    assert len(CASES) >= 30


@pytest.mark.timeout(2 * TIMEOUT_S)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_escape_or_exhaustion_attempt_is_refused_or_stopped(
    case: Case, tmp_path: Path
) -> None:
    path = tmp_path / "pack.yaml"
    path.write_bytes(case.text if isinstance(case.text, bytes) else case.text.encode())
    if not case.run:
        errors = bounded(lambda: check_case(case, path))
        assert errors, "the pack passed the checker"
        name, line, col, message = errors[0]
        assert (name, line) == ("pack.yaml", case.line), errors
        assert col >= 1
        assert case.phrase in message, errors
        return
    errors, derived = bounded(lambda: run_case(case, path))
    assert errors, "nothing stopped the rule"
    assert {rule for rule, _ in errors} <= {"p.r", "p.feeds_itself"}, errors
    stopped = [m for _, m in errors if case.phrase in m]
    assert stopped, errors
    if case.id != "outputs that feed themselves":
        assert f"pack.yaml:{case.line}:" in stopped[0]  # the expression, in the file
        assert "evaluating" in stopped[0]
    assert derived < 8 * MAX_FANOUT  # bounded, whatever the rule emits


GUARDED = {
    "for": """    for:
      by: subject
      start: type == "item.picked" and {cond}
      until: type == "item.put_back"
      duration: 10s
""",
    "sequence": """    sequence:
      by: subject
      within: 10s
      steps:
        - when: type == "item.picked" and {cond}
        - when: type == "item.put_back"
""",
    "tally": """    tally:
      add: {{when: type == "item.picked" and {cond}}}
      remove: {{when: type == "item.put_back"}}
      close: {{when: type == "zone.exited"}}
""",
}


@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.parametrize("kind", sorted(GUARDED))
@pytest.mark.parametrize(
    "cond", ["1 / (data.qty - data.qty) > 0", "len(data.sku * (data.qty * 10**9)) > 0"]
)
def test_a_condition_that_fails_in_a_rules_gate_is_a_rule_error_and_the_engine_carries_on(
    kind: str, cond: str, tmp_path: Path
) -> None:
    # The engine asks the rules' entry conditions, merged, before any rule runs (its gate):
    # one that raised there stopped Engine.process with a traceback.
    path = tmp_path / "pack.yaml"
    needs = "needs: [catalog]\n" if kind == "tally" else ""
    path.write_text(
        f'pack: p\nversion: "1"\n{needs}rules:\n  - id: r\n'
        + GUARDED[kind].format(cond=cond)
        + "    alert: {name: a}\n"
    )
    assert not check_case(Case("", "", ""), path)
    errors, _ = bounded(lambda: run(engine_of(path), picks(1, 2)))
    assert [rule for rule, _ in errors] == ["p.r", "p.r"], errors
    assert all("evaluating" in message for _, message in errors), errors


def test_the_engine_carries_on_after_a_rule_is_stopped(tmp_path: Path) -> None:
    path = tmp_path / "pack.yaml"
    path.write_text(pack("len(subject * (data.qty * 10**9))"))
    errors, derived = run(engine_of(path), picks(0, 1, 0, 1))
    # qty 0 repeats nothing: those picks are counted; each of qty 1 is stopped on its own.
    assert [rule for rule, _ in errors] == ["p.r", "p.r"]
    assert derived == 2


def test_a_set_of_another_pack_under_the_same_name_does_not_change_this_pack(
    tmp_path: Path,
) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(pack())
    other = tmp_path / "other.yaml"
    other.write_text(
        'pack: other\nversion: "1"\nsets:\n  staff:\n    add: type == "item.picked"\n'
        'rules:\n  - id: r\n    where: type == "item.picked" and subject in staff\n'
        '    metric: {name: n, value: "1"}\n'
    )
    engine = engine_of(other, mine)
    picked = ev.new(
        ev.ItemPicked,
        store="corner-01",
        at=AT,
        source="cam",
        subject="v-1",
        data=ev.ItemData(sku="cola-500ml", shelf="fridge-drinks", qty=1),
    )
    out = engine.process([picked])
    out.extend(engine.advance("corner-01", (AT + timedelta(seconds=5)).timestamp()))
    by = sorted(d.rule.id for d in out.derived)  # type: ignore[attr-defined]
    assert by == ["other.r", "p.r"]  # the other pack's staff is its own


def test_a_layout_alias_bomb_is_refused_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "layout.yaml"
    bomb = "".join(line[2:] + "\n" for line in ALIAS_BOMB.splitlines()[3:-1])
    path.write_text(LAYOUT.read_text() + bomb)
    errors = bounded(lambda: [str(e) for e in check_layout(path)])
    assert any("aliases (*name) stand for more than" in e for e in errors), errors


def test_a_layout_over_its_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "layout.yaml"
    with open(path, "w") as f:
        f.write(LAYOUT.read_text())
        f.write("# padding\n" * (9 << 17))  # 11.25 MiB of comments
    errors = bounded(lambda: [(e.line, e.message) for e in check_layout(path)])
    assert errors == [(1, "the file is larger than 8 MiB, the most this kind of file may be")]
