"""Loading rule packs: YAML, then structure, then meaning; then a compiled ``RuleSet``.

Validation comes in layers, each error placed as ``file:line:col: message``: YAML syntax;
the pack's structure (``rules.pack``, also shipped as a JSON Schema); then meaning:
expressions that are unsafe or name unknown things, event types and fields that do not
exist, durations that do not parse, duplicated ids, operators used wrongly. Unused lists
and macros are warnings. A set of packs with any error is refused whole.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import msgspec

from core import events as ev
from core.durations import parse_duration
from core.layout import ZoneKind
from core.yamlsource import SourceError, YamlDocument, convert, load_yaml, parse_path
from rules import operators as op
from rules import pack as spec
from rules import privacy
from rules.builders import ENVELOPE, OperatorBuilders, entry_conditions
from rules.engine import Context, RuleSet, SetRule
from rules.expressions import (
    Expr,
    ExpressionError,
    Where,
    compile_expr,
    compile_template,
    define,
)
from rules.outputs import AlertOut, EmitOut, GroupsOut, MetricOut, data_class
from rules.reference import Reference

MAX_PACK_BYTES = 2**20  # a rule pack larger than this is refused (docs/rules.md)
Part = tuple[str, int] | None  # an expression inside a longer scalar: the scalar, the offset


class PackError(ValueError):
    """One or more packs are invalid; nothing of them was loaded."""

    def __init__(self, errors: list[SourceError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class Checked:
    """The outcome of validating packs: the rule set if there were no errors."""

    ruleset: RuleSet | None
    errors: list[SourceError] = field(default_factory=list)
    warnings: list[SourceError] = field(default_factory=list)


def load_rules(
    sources: Iterable[str | Path | tuple[str, str]], reference: Reference | None = None
) -> RuleSet:
    """Load and compile packs (paths, or ``(name, text)`` pairs); ``PackError`` if any is bad.

    The rule set comes with a context of its own, which the engine that runs it fills.
    """
    checked = check_rules(sources, reference)
    if checked.errors:
        raise PackError(checked.errors)
    assert checked.ruleset is not None
    return checked.ruleset


PACKS = Path(__file__).resolve().parent / "packs"
"""The standard rule packs' folder."""


def pack_files(paths: Iterable[Path]) -> list[Path]:
    """The pack files named: files as given, folders by their ``*.yaml`` in name order, the
    packs' unit tests (``*_test.yaml``) left out."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.glob("*.yaml") if not f.name.endswith("_test.yaml"))
        else:
            files.append(p)
    return files


def pack_params(source: str | Path) -> tuple[str, dict[str, str | int | float | bool]]:
    """A pack's name and its parameters as its rules see them (a duration such as "90s" in
    seconds, anything else as written); ``SourceError`` (file:line:col) if the file is not a
    pack. For what must agree with a pack without running it, as the simulator's truth
    follows the frustration pack's thresholds."""
    pack = _convert_pack(load_yaml(source, max_bytes=MAX_PACK_BYTES))
    return pack.pack, {name: _param_value(value) for name, value in pack.params.items()}


def check_rules(
    sources: Iterable[str | Path | tuple[str, str]], reference: Reference | None = None
) -> Checked:
    context = Context()
    reference = reference or Reference()
    errors: list[SourceError] = []
    warnings: list[SourceError] = []
    rules: list[op.Rule] = []
    sets: list[SetRule] = []
    packs: dict[str, str] = {}
    for source in sources:
        try:
            if isinstance(source, tuple):
                doc = load_yaml(source[0], text=source[1], max_bytes=MAX_PACK_BYTES)
            else:
                doc = load_yaml(source, max_bytes=MAX_PACK_BYTES)
            pack = _convert_pack(doc)
        except SourceError as exc:
            errors.append(exc)
            continue
        if pack.pack in packs:
            errors.append(doc.error(("pack",), f"pack {pack.pack!r} is loaded twice"))
            continue
        packs[pack.pack] = pack.version
        try:
            compiler = _PackCompiler(doc, pack, reference, context)
            compiled = compiler.compile()
        except SourceError as exc:
            errors.append(exc)
            continue
        rules += compiled
        sets += compiler.sets
        warnings += compiler.warnings
    if errors:
        return Checked(None, errors, warnings)
    return Checked(RuleSet(tuple(rules), packs, context, tuple(sets)), [], warnings)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_MISSING = re.compile(r"^Object missing required field `([^`]+)` - at `\$(.*)`$")
_ENUM = re.compile(r"^Invalid enum value (.*) - at `\$(.*)`$")
_HINTS = {
    ("sequence", "within"): "every wait is bounded: say how long the steps may take, e.g. 10m",
}


def _convert_pack(doc: YamlDocument) -> spec.Pack:
    """``convert``, with a missing field placed at the key of the mapping that lacks it and
    an invalid enum value listed with the values allowed."""
    if isinstance(doc.data, dict) and "tests" in doc.data and "pack" not in doc.data:
        raise doc.error((), "this is a rule test file, not a pack: run it with 'aisle rules test'")
    try:
        return msgspec.convert(doc.data, spec.Pack)
    except msgspec.ValidationError as exc:
        missing = _MISSING.match(str(exc))
        if missing and missing.group(2):
            name, path = missing.group(1), parse_path(missing.group(2))
            if isinstance(path[-1], str):
                hint = _HINTS.get((path[-1], name))
                raise doc.error(
                    path,
                    f"{path[-1]!r} is missing its required field {name!r}"
                    + (f": {hint}" if hint else ""),
                    key=True,
                ) from None
        enum = _ENUM.match(str(exc))
        if enum:
            path = parse_path(enum.group(2))
            allowed = _ENUM_VALUES.get(next((p for p in reversed(path) if isinstance(p, str)), ""))
            if allowed:
                raise doc.error(
                    path, f"{enum.group(1)} is not allowed here; write one of {', '.join(allowed)}"
                ) from None
    return convert(doc, spec.Pack)  # the error, placed in the file


_ENUM_VALUES = {
    "severity": get_args(spec.Severity),
    "needs": ("catalog", "layout", "members", "watchlist"),
    "fn": ("count", "sum", "mean", "min", "max", "distinct", "percentile", "underflow", "dwell"),
}


def _positions(text: str, start: int, source: str, style: str) -> list[int] | None:
    """The index in ``text`` of every character of the scalar ``source`` read from ``start``.

    A folded (``>``) or plain scalar that spans lines, a quoted one with escapes: YAML turns
    line breaks and indentation into spaces and escapes into characters, so a character's
    place in the value is not simply its place in the file. Walk both side by side.
    """
    out: list[int] = []
    i, j = 0, start
    while i < len(source) and j < len(text):
        c, f = source[i], text[j]
        if style == "'" and text.startswith("''", j) and c == "'":
            out.append(j)
            i, j = i + 1, j + 2
        elif style == '"' and f == "\\":
            if text[j + 1 : j + 2] == "\n":  # an escaped line break: nothing in the value
                j += 2
                continue
            out.append(j)
            width = {"x": 4, "u": 6, "U": 10}.get(text[j + 1 : j + 2], 2)
            i, j = i + 1, j + width
        elif c == f:
            out.append(j)
            i, j = i + 1, j + 1
        elif f in " \t\r\n":
            if c in " \n":  # a fold: the line break stands for this space
                out.append(j)
                i += 1
            j += 1
        else:
            return None
    if source[i:].strip():
        return None
    out += [j] * (len(source) - i + 1)  # trailing line breaks, and the end of the value
    return out


class _PackCompiler(OperatorBuilders):
    def __init__(
        self, doc: YamlDocument, pack: spec.Pack, reference: Reference, context: Context
    ) -> None:
        self.doc = doc
        self.pack = pack
        self.reference = reference
        self.context = context
        self.lines = doc.text.splitlines()
        self.warnings: list[SourceError] = []
        self.sets: list[SetRule] = []
        self.used: set[str] = set()
        self.reads: list[privacy.Read] = []  # every expression compiled, for the privacy check
        self.functions = reference.functions(context)
        self.constants: dict[str, Any] = {}
        for section in ("lists", "params", "sets", "macros"):
            for name in getattr(pack, section):
                if not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name):
                    raise doc.error(
                        (section, name),
                        f"{name!r} cannot be named in expressions: a name is a letter, then "
                        "letters, digits or '_', and not a Python keyword",
                        key=True,
                    )
        for name, values in pack.lists.items():
            self.constants[name] = frozenset(values)
        for name, value in pack.params.items():
            if name in self.constants:
                raise doc.error(
                    ("params", name), f"{name!r} is both a list and a parameter", key=True
                )
            self.constants[name] = _param_value(value)
        for name in pack.sets:
            if name in self.constants:
                raise doc.error(
                    ("sets", name), f"{name!r} is already a list or a parameter", key=True
                )
            # A set belongs to its pack: another pack's 'staff' is another set.
            self.constants[name] = context.live_set(owned_set(pack.pack, name))
        self.macros: dict[str, ast.expr] = {}
        self._itself: str | None = None  # while compiling an aggregate's per-item expressions
        self.macro_types: dict[str, frozenset[str] | None] = {}

    # -- expressions -------------------------------------------------------------------------

    def where(self, path: tuple[Any, ...]) -> Where:
        line, col = self.doc.where(path)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if col - 1 < len(text) and text[col - 1] in "\"'":
            col += 1  # a quoted scalar: point into the expression, not at its quote
        elif col - 1 < len(text) and text[col - 1] in "|>":
            line, col = line + 1, len(self.lines[line]) - len(self.lines[line].lstrip()) + 1
        return Where(self.doc.file, line, col)

    def locate(self, path: tuple[Any, ...], source: str, index: int) -> tuple[int, int] | None:
        """The file position of character ``index`` of the expression at ``path``."""
        line, col = self.doc.where(path)
        lines = self.lines
        if not 0 < line <= len(lines):
            return None
        starts = [0]
        for text in lines:
            starts.append(starts[-1] + len(text) + 1)
        text = "\n".join(lines) + "\n"
        start = starts[line - 1] + col - 1
        style = text[start : start + 1]
        if style in ("'", '"'):
            start += 1
        elif style in ("|", ">"):
            start = text.find("\n", start) + 1
            if start == 0:
                return None
        else:
            style = ""
        found = _positions(text, start, source, style)
        if found is None:
            return None
        j = found[max(0, min(index, len(source)))]
        row = next(k for k in range(len(starts) - 1, -1, -1) if starts[k] <= j)
        return row + 1, j - starts[row] + 1

    def _placed(
        self, exc: ExpressionError, source: str, path: tuple[Any, ...], part: Part
    ) -> SourceError:
        """Place a compiler error right in folded, plain multi-line and escaped scalars.

        The compiler counts positions from the expression's first character, line by line
        as in a literal block (``|``); other scalar styles fold lines or decode escapes.
        ``part``: the expression is a part of the scalar (its text, and where it starts).
        """
        w = self.where(path)
        dline = exc.line - w.line
        source_lines = source.split("\n")
        if not 0 <= dline < len(source_lines):
            return exc
        index = sum(len(s) + 1 for s in source_lines[:dline]) + exc.col - w.col
        scalar, offset = part or (source, 0)
        pos = self.locate(path, scalar, offset + index)
        if pos is None or pos == (exc.line, exc.col):
            return exc
        return ExpressionError(exc.file, pos[0], pos[1], exc.message)

    def expr(
        self,
        source: str,
        path: tuple[Any, ...],
        names: Iterable[str] = ENVELOPE,
        types: frozenset[str] | None = None,
        part: Part = None,
    ) -> Expr:
        itself = self._itself if self._itself in names else None
        return self._compiled(compile_expr, source, path, names, types, part, itself=itself)

    def _compiled(
        self,
        compiler: Callable[..., Expr],
        source: str,
        path: tuple[Any, ...],
        names: Iterable[str],
        types: frozenset[str] | None,
        part: Part,
        **options: Any,
    ) -> Expr:
        """Compile with the pack's names, errors placed in the file, fields checked."""
        kind = options.pop("kind", None)
        constants = self.constants
        if kind is not None and "type" not in constants:  # (a pack's own 'type' stays)
            constants = {**constants, "type": kind}
        try:
            compiled = compiler(
                source,
                self.where(path),
                names=frozenset(names),
                functions=self.functions,
                constants=constants,
                macros=self.macros,
                **options,
            )
        except ExpressionError as exc:
            raise self._placed(exc, source, path, part) from None
        self.used |= compiled.names & (set(self.constants) | set(self.macros))
        if "zone_kind" in compiled.calls:
            self._unknown_zone_kinds(source, path, part)
        self.reads.append(privacy.Read(path, compiled.paths, compiled.calls))
        if types:
            self._check_fields(compiled, types, path, part)
        return compiled

    def cond(self, source: str | None, path: tuple[Any, ...]) -> Callable[[Any], Any] | None:
        if source is None:
            return None
        compiled = self.expr(source, path)
        self._check_types(compiled, source, path)
        return compiled.fn

    def template(
        self,
        source: str,
        path: tuple[Any, ...],
        names: Iterable[str],
        types: frozenset[str] | None = None,
    ) -> Callable[[Any], Any]:
        return self._compiled(compile_template, source, path, names, types, None).fn

    def key(
        self,
        k: spec.Key,
        path: tuple[Any, ...],
        types: frozenset[str] | None = None,
        names: Iterable[str] = ENVELOPE,
    ) -> Callable[[Any], Any]:
        if isinstance(k, str):
            return self.expr(k, path, names, types).fn
        fns = [self.expr(s, (*path, i), names, types).fn for i, s in enumerate(k)]
        return _tuple_key(fns)

    def duration(self, value: spec.Duration, path: tuple[Any, ...]) -> float:
        if isinstance(value, str) and value in self.pack.params:
            self.used.add(value)
            value = self.pack.params[value]  # type: ignore[assignment]
        try:
            return parse_duration(value)  # type: ignore[arg-type]
        except ValueError as exc:
            if isinstance(value, str) and value.isidentifier():
                raise self.doc.error(
                    path,
                    f"{value!r} is neither a duration (such as 90s, 2m, 1h30m) nor a parameter"
                    + _suggest(value, self.pack.params),
                ) from None
            raise self.doc.error(path, str(exc)) from None

    def number(self, value: int | str, path: tuple[Any, ...]) -> int:
        if isinstance(value, str):
            if value not in self.pack.params:
                raise self.doc.error(
                    path,
                    f"{value!r} is neither a number nor a parameter"
                    + _suggest(value, self.pack.params),
                )
            self.used.add(value)
            value = self.pack.params[value]  # type: ignore[assignment]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.doc.error(path, f"expected a whole number of at least 1, got {value!r}")
        return value

    def _unknown_zone_kinds(self, source: str, path: tuple[Any, ...], part: Part) -> None:
        """A zone kind no layout can have (``zone_kind(z) == "exit-gate"``) is never
        true: the rule runs and never fires. Warned, once a place."""
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError:
            return
        kinds = get_args(ZoneKind)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
                continue
            call, right = node.left, node.comparators[0]
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "zone_kind"
            ):
                continue
            values = right.elts if isinstance(right, ast.List | ast.Tuple | ast.Set) else [right]
            for v in values:
                if (
                    isinstance(v, ast.Constant)
                    and isinstance(v.value, str)
                    and v.value not in kinds
                ):
                    w = self._error_at(
                        path,
                        source,
                        rf"""(["']){re.escape(v.value)}\1""",
                        f"no layout has a zone of kind {v.value!r}"
                        f"{_suggest(v.value, kinds)}: the condition is never true "
                        f"(the kinds: {', '.join(kinds)})",
                        part,
                    )
                    if all(str(w) != str(x) for x in self.warnings):
                        self.warnings.append(w)

    # -- event types -------------------------------------------------------------------------

    def types_of(self, source: str | None) -> frozenset[str] | None:
        """The event types a condition can match, when it pins ``type``; else None (any)."""
        if source is None:
            return None
        try:
            node = ast.parse(source.strip(), mode="eval").body
        except SyntaxError:
            return None
        return self._types(node)

    def _types(self, node: ast.expr) -> frozenset[str] | None:
        if isinstance(node, ast.BoolOp):
            parts = [self._types(v) for v in node.values]
            if isinstance(node.op, ast.And):
                known = [p for p in parts if p is not None]
                return frozenset.intersection(*known) if known else None
            return None if any(p is None for p in parts) else frozenset().union(*parts)  # type: ignore[arg-type]
        if isinstance(node, ast.Name) and node.id in self.macro_types:
            return self.macro_types[node.id]
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Name)
            and node.left.id == "type"
            and len(node.ops) == 1
        ):
            right = node.comparators[0]
            if isinstance(node.ops[0], ast.Eq) and isinstance(right, ast.Constant):
                return frozenset([str(right.value)])
            if isinstance(node.ops[0], ast.In) and isinstance(
                right, ast.List | ast.Tuple | ast.Set
            ):
                return frozenset(str(c.value) for c in right.elts if isinstance(c, ast.Constant))
        return None

    def _error_at(
        self, path: tuple[Any, ...], source: str, pattern: str, message: str, part: Part = None
    ) -> SourceError:
        """An error at the first match of ``pattern`` in the expression, else at its start."""
        m = re.search(pattern, source)
        scalar, offset = part or (source, 0)
        pos = self.locate(path, scalar, offset + m.start(1)) if m else None
        if pos is None:
            return self.doc.error(path, message)
        return SourceError(self.doc.file, pos[0], pos[1], message)

    def _check_types(self, compiled: Expr, source: str, path: tuple[Any, ...]) -> None:
        types = self.types_of(source)
        for t in types or ():
            if t not in ev.EVENT_TYPES:
                raise self._error_at(
                    path,
                    source,
                    rf"""(["']){re.escape(t)}\1""",
                    f"unknown event type {t!r}{_suggest(t, ev.EVENT_TYPES)}",
                )
        if types:
            self._check_fields(compiled, types, path)

    def _check_fields(
        self, compiled: Expr, types: Iterable[str], path: tuple[Any, ...], part: Part = None
    ) -> None:
        fields: set[str] = set()
        for t in types:
            fields |= {f.name for f in msgspec.structs.fields(data_class(ev.EVENT_TYPES[t]))}
        for p in sorted(compiled.paths):
            if len(p) >= 2 and p[0] == "data" and p[1] not in fields:
                names = ", ".join(sorted(types))
                raise self._error_at(
                    path,
                    compiled.source,
                    rf"\bdata\s*\.\s*({re.escape(p[1])})\b",
                    f"{names} has no field data.{p[1]}{_suggest(p[1], fields)}; "
                    f"its fields: {', '.join(sorted(fields))}",
                    part,
                )

    # -- the pack ----------------------------------------------------------------------------

    def compile(self) -> list[op.Rule]:
        pack = self.pack
        for name, source in pack.macros.items():
            if name in self.constants or name in ENVELOPE:
                raise self.doc.error(
                    ("macros", name), f"macro {name!r} hides another name", key=True
                )
            compiled = self.expr(source, ("macros", name))
            self._check_types(compiled, source, ("macros", name))
            self.macros[name] = ast.parse(source.strip(), mode="eval").body
            self.macro_types[name] = self._types(self.macros[name])
        for name, s in pack.sets.items():
            path = ("sets", name)
            self.sets.append(
                SetRule(
                    owned_set(pack.pack, name),
                    self.cond(s.add, (*path, "add")),
                    self.cond(s.remove, (*path, "remove")),
                    self.expr(s.member, (*path, "member")).fn,
                    _union(
                        self.types_of(s.add), self.types_of(s.remove) if s.remove else frozenset()
                    ),
                )
            )
        seen: dict[str, int] = {}
        rules = []
        checked = []  # what the privacy check reads of each enabled rule
        for i, r in enumerate(pack.rules):
            if r.id in seen:
                raise self.doc.error(
                    ("rules", i, "id"), f"rule id {r.id!r} is already used by rule {seen[r.id] + 1}"
                )
            seen[r.id] = i
            if r.enabled:
                rules.append(self.rule(r, ("rules", i)))
                checked.append((i, r.id, rules[-1].types, r.where))
        op.share_folds(rules)
        staff = frozenset(
            name
            for name, s in pack.sets.items()
            if self.types_of(s.add) == frozenset({"staff.session_started"})
        )
        refused, cautions = privacy.check(
            self.doc, pack.purpose, checked, self.reads, staff, self.macros
        )
        if refused:
            raise refused[0]
        self.warnings += cautions
        for name in [*pack.lists, *pack.macros, *pack.params, *pack.sets]:
            if name not in self.used:
                section = next(
                    s for s in ("lists", "macros", "params", "sets") if name in getattr(pack, s)
                )
                self.warnings.append(
                    self.doc.error((section, name), f"{name!r} is never used", key=True)
                )
        return rules

    def rule(self, r: spec.Rule, path: tuple[Any, ...]) -> op.Rule:
        present = [k for k in spec.OPERATORS if getattr(r, "for_" if k == "for" else k) is not None]
        if len(present) > 1:
            second = max(present, key=lambda k: self.doc.where((*path, k), key=True))
            raise self.doc.error(
                (*path, second),
                f"rule {r.id!r} has {' and '.join(present)}: one operator per rule",
                key=True,
            )
        kind = present[0] if present else "match"
        if r.on:
            for j, t in enumerate(r.on):
                if t not in ev.EVENT_TYPES:
                    raise self.doc.error(
                        (*path, "on", j), f"unknown event type {t!r}{_suggest(t, ev.EVENT_TYPES)}"
                    )
        rule_id = f"{self.pack.pack}.{r.id}"
        ref = ev.RuleRef(rule_id, self.pack.version)
        where = self.cond(r.where, (*path, "where"))
        build = getattr(self, f"_{kind}")
        rule: op.Rule = build(r, path, rule_id, ref, where)
        rule.guards = self._guards(rule, entry_conditions(r), path)
        return rule

    def _guards(
        self, rule: op.Rule, conditions: list[str], path: tuple[Any, ...]
    ) -> dict[str, Callable[[Any], Any]] | None:
        """Per event type, one expression: whether any of the rule's conditions can match.

        The engine asks it before the rule's handler, which would otherwise learn the same
        by evaluating its conditions one by one (most zone events reach the carts rule only
        to turn out not to be at the gate). None where a condition pins no type.
        """
        typed = [(c, self.types_of(c)) for c in conditions]
        if not typed or rule.types is None or any(t is None for _, t in typed):
            return None
        guards = {}
        for kind in rule.types:
            sources = [c for c, types in typed if kind in types]  # type: ignore[operator]
            if sources:
                whole = " or ".join(f"({c.strip()})" for c in sources)
                # Asked only of events of this type: ``type`` is a constant here.
                guards[kind] = self._compiled(
                    compile_expr, whole, path, ENVELOPE, None, None, kind=kind
                ).fn
        return guards

    def _types_for(self, r: spec.Rule, conditions: Iterable[str | None]) -> frozenset[str] | None:
        if r.on:
            return frozenset(r.on)
        found: set[str] = set()
        for c in conditions:
            if c is None:
                continue  # an optional condition left out (no 'until'): it pins nothing
            t = self.types_of(c)
            if t is None:
                return self.types_of(r.where)
            found |= t
        pinned = self.types_of(r.where)
        return frozenset(found & pinned) if pinned is not None else frozenset(found)

    def _check_data_keys(
        self, type_: str, dcls: type[msgspec.Struct], given: Iterable[str], path: tuple[Any, ...]
    ) -> None:
        fields = {f.name for f in msgspec.structs.fields(dcls)}
        for k in given:
            if k not in fields:
                raise self.doc.error(
                    (*path, k),
                    f"{type_} has no field {k!r}{_suggest(k, fields)}; "
                    f"its fields: {', '.join(sorted(fields))}",
                    key=True,
                )

    def _groups(
        self,
        r: spec.Rule,
        e: spec.EmitOut,
        dcls: type[msgspec.Struct],
        path: tuple[Any, ...],
        window_names: Iterable[str] | None,
        names: frozenset[str],
        types: frozenset[str] | None,
    ) -> GroupsOut:
        """``emit.groups``: checked against the event's list field, compiled per group."""
        g = e.groups
        assert g is not None
        if window_names is None:
            raise self.doc.error(path, "only an aggregate lists its groups in one event", key=True)
        if r.alert is not None or r.metric is not None or r.metrics:
            raise self.doc.error(
                path,
                "a rule that lists its groups in one event emits nothing else: "
                "give the alert or metric a rule of its own",
                key=True,
            )
        lists = {
            f.name: get_args(f.type)[0]
            for f in msgspec.structs.fields(dcls)
            if get_origin(f.type) in (list, tuple)
            and isinstance(get_args(f.type)[0], type)
            and issubclass(get_args(f.type)[0], msgspec.Struct)
        }
        if g.into not in lists:
            raise self.doc.error(
                (*path, "into"),
                f"{e.type} has no list field {g.into!r}; "
                f"its list fields: {', '.join(sorted(lists)) or 'none'}",
            )
        if g.into in e.data:
            raise self.doc.error(
                (*path[:-1], "data", g.into),
                f"{g.into!r} holds the groups: set it under groups.data, item by item",
                key=True,
            )
        self._check_data_keys(f"an item of {g.into}", lists[g.into], g.data, (*path, "data"))
        return GroupsOut(
            g.into,
            {k: self.expr(v, (*path, "data", k), names, types).fn for k, v in g.data.items()},
        )

    def _output(
        self,
        r: spec.Rule,
        path: tuple[Any, ...],
        names: Iterable[str],
        required: bool,
        types: frozenset[str] | None = None,
        window_names: Iterable[str] | None = None,
    ) -> op.Output:
        """The rule's outputs; ``types``: the event types the outputs' ``data`` can be;
        ``window_names``: an aggregate's names of the window (not of one group)."""
        names = frozenset(names)
        out = op.Output()
        if r.alert is not None:
            a, ap = r.alert, (*path, "alert")
            out.alert = AlertOut(
                name=a.name,
                severity=a.severity,
                summary=self.template(a.summary, (*ap, "summary"), names, types)
                if a.summary
                else None,
                labels={
                    k: self.template(v, (*ap, "labels", k), names, types)
                    for k, v in a.labels.items()
                },
                key=self.expr(a.key, (*ap, "key"), names, types).fn if a.key else None,
            )
        metrics = [(r.metric, (*path, "metric"))] if r.metric else []
        metrics += [(m, (*path, "metrics", i)) for i, m in enumerate(r.metrics or [])]
        shared = [m.name for m, _ in metrics]
        out.metrics = [
            MetricOut(
                m.name,
                self.expr(m.value, (*mp, "value"), names, types).fn,
                {
                    k: self.template(v, (*mp, "labels", k), names, types)
                    for k, v in m.labels.items()
                },
                i if shared.count(m.name) > 1 else None,
            )
            for i, (m, mp) in enumerate(metrics)
        ]
        if r.emit is not None:
            e, epath = r.emit, (*path, "emit")
            cls = ev.EVENT_TYPES.get(e.type)
            if cls is None or not cls.derived:
                derived = sorted(t for t, c in ev.EVENT_TYPES.items() if c.derived)
                raise self.doc.error(
                    (*epath, "type"), f"rules emit derived types only: {', '.join(derived)}"
                )
            dcls = data_class(cls)
            self._check_data_keys(e.type, dcls, e.data, (*epath, "data"))
            groups = None
            if e.groups is not None:
                # The event is the window's: its data sees the window, each item a group.
                groups = self._groups(r, e, dcls, (*epath, "groups"), window_names, names, types)
                names = frozenset(window_names or ())
            out.emit = EmitOut(
                cls,
                dcls,
                self.expr(e.subject, (*epath, "subject"), names, types).fn if e.subject else None,
                {k: self.expr(v, (*epath, "data", k), names, types).fn for k, v in e.data.items()},
                groups,
            )
        if required and out.alert is None and not out.metrics and out.emit is None:
            raise self.doc.error(
                path, f"rule {r.id!r} emits nothing: give it an alert, a metric or an emit"
            )
        if r.throttle is not None:
            out.throttle_s = self.duration(
                r.throttle.once_within, (*path, "throttle", "once_within")
            )
            if r.throttle.by is not None:
                # The throttle sees what the outputs see (an aggregate's groups and values).
                out.throttle_by = self.key(r.throttle.by, (*path, "throttle", "by"), types, names)
        return out


def _tuple_key(fns: list[Callable[[Any], Any]]) -> Callable[[Any], tuple[Any, ...]]:
    """A key of several parts (subject and SKU, subject and zone): one generated function,
    each part's expression inline and evaluated in order, each failing as its own."""
    namespace: dict[str, Any] = {"__builtins__": {}}
    calls = {f"part{i}": fn for i, fn in enumerate(fns)}
    namespace.update(calls)
    lines = ["def key(e):", *(f"    v{i} = part{i}(e)" for i in range(len(fns)))]
    lines.append(f"    return ({''.join(f'v{i}, ' for i in range(len(fns)))})")
    define("\n".join(lines), calls, namespace, "<rule key>")
    return namespace["key"]  # type: ignore[no-any-return]


def owned_set(pack: str, name: str) -> str:
    """The engine's name for a pack's set: the pack's name, a dot, the set's (``carts.staff``).
    Set names are identifiers, so a name without a dot is one from before sets had owners."""
    return f"{pack}.{name}"


def _union(*types: frozenset[str] | None) -> frozenset[str] | None:
    """The types any of several conditions may match; None if one may match anything."""
    if any(t is None for t in types):
        return None
    return frozenset().union(*types)  # type: ignore[arg-type]


def _param_value(value: str | int | float | bool) -> str | int | float | bool:
    """A parameter as expressions see it: a duration ("90s") in seconds, else as written."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value
    return value


__all__ = ["Checked", "ExpressionError", "PackError", "check_rules", "load_rules", "pack_params"]
