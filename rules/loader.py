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
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from core import events as ev
from core.yamlsource import SourceError, YamlDocument, convert, load_yaml
from rules import operators as op
from rules import pack as spec
from rules.durations import parse_duration
from rules.engine import Context, DynamicSet, RuleSet, SetRule
from rules.expressions import Expr, ExpressionError, Where, compile_expr, compile_template
from rules.outputs import AlertOut, EmitOut, MetricOut, data_class
from rules.reference import Reference

ENVELOPE = ("type", "id", "store", "at", "source", "subject", "v", "data", "rule", "caused_by")
_COMPUTE = re.compile(r"^\s*(count|sum|mean|min|max|distinct|percentile)\s*\((.*)\)\s*$", re.S)


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
    sources: Iterable[str | Path | tuple[str, str]],
    reference: Reference | None = None,
    context: Context | None = None,
) -> RuleSet:
    """Load and compile packs (paths, or ``(name, text)`` pairs); ``PackError`` if any is bad."""
    checked = check_rules(sources, reference, context)
    if checked.errors:
        raise PackError(checked.errors)
    assert checked.ruleset is not None
    return checked.ruleset


def check_rules(
    sources: Iterable[str | Path | tuple[str, str]],
    reference: Reference | None = None,
    context: Context | None = None,
) -> Checked:
    context = context or Context()
    reference = reference or Reference()
    errors: list[SourceError] = []
    warnings: list[SourceError] = []
    rules: list[op.Rule] = []
    sets: list[SetRule] = []
    packs: dict[str, str] = {}
    for source in sources:
        try:
            if isinstance(source, tuple):
                doc = load_yaml(source[0], text=source[1])
            else:
                doc = load_yaml(source)
            pack = convert(doc, spec.Pack)
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
    return Checked(RuleSet(tuple(rules), packs, tuple(sets)), [], warnings)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _PackCompiler:
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
        self.functions = reference.functions(context)
        self.constants: dict[str, Any] = {}
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
            self.constants[name] = DynamicSet(name, context)
        self.macros: dict[str, ast.expr] = {}
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

    def expr(self, source: str, path: tuple[Any, ...], names: Iterable[str] = ENVELOPE) -> Expr:
        compiled = compile_expr(
            source,
            self.where(path),
            names=frozenset(names),
            functions=self.functions,
            constants=self.constants,
            macros=self.macros,
        )
        self.used |= compiled.names & (set(self.constants) | set(self.macros))
        return compiled

    def cond(self, source: str | None, path: tuple[Any, ...]) -> Callable[[Any], Any] | None:
        if source is None:
            return None
        compiled = self.expr(source, path)
        self._check_types(compiled, source, path)
        return compiled.fn

    def template(
        self, source: str, path: tuple[Any, ...], names: Iterable[str]
    ) -> Callable[[Any], Any]:
        compiled = compile_template(
            source,
            self.where(path),
            names=frozenset(names),
            functions=self.functions,
            constants=self.constants,
            macros=self.macros,
        )
        self.used |= compiled.names & (set(self.constants) | set(self.macros))
        return compiled.fn

    def key(self, k: spec.Key, path: tuple[Any, ...]) -> Callable[[Any], Any]:
        if isinstance(k, str):
            return self.expr(k, path).fn
        fns = [self.expr(s, (*path, i)).fn for i, s in enumerate(k)]
        return lambda e: tuple(f(e) for f in fns)

    def duration(self, value: spec.Duration, path: tuple[Any, ...]) -> float:
        if isinstance(value, str) and value in self.pack.params:
            self.used.add(value)
            value = self.pack.params[value]  # type: ignore[assignment]
        try:
            return parse_duration(value)  # type: ignore[arg-type]
        except ValueError as exc:
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

    def _check_types(self, compiled: Expr, source: str, path: tuple[Any, ...]) -> None:
        types = self.types_of(source)
        for t in types or ():
            if t not in ev.EVENT_TYPES:
                raise self.doc.error(path, f"unknown event type {t!r}{_suggest(t, ev.EVENT_TYPES)}")
        if types:
            self._check_fields(compiled, types, path)

    def _check_fields(self, compiled: Expr, types: Iterable[str], path: tuple[Any, ...]) -> None:
        fields: set[str] = set()
        for t in types:
            fields |= {f.name for f in msgspec.structs.fields(data_class(ev.EVENT_TYPES[t]))}
        for p in compiled.paths:
            if len(p) >= 2 and p[0] == "data" and p[1] not in fields:
                names = ", ".join(sorted(types))
                raise self.doc.error(
                    path,
                    f"{names} has no field data.{p[1]}{_suggest(p[1], fields)}; "
                    f"its fields: {', '.join(sorted(fields))}",
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
                    name,
                    self.cond(s.add, (*path, "add")),
                    self.cond(s.remove, (*path, "remove")),
                    self.expr(s.member, (*path, "member")).fn,
                )
            )
        seen: dict[str, int] = {}
        rules = []
        for i, r in enumerate(pack.rules):
            if r.id in seen:
                raise self.doc.error(
                    ("rules", i, "id"), f"rule id {r.id!r} is already used by rule {seen[r.id] + 1}"
                )
            seen[r.id] = i
            if r.enabled:
                rules.append(self.rule(r, ("rules", i)))
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
            raise self.doc.error(
                path, f"rule {r.id!r} has {' and '.join(present)}: one operator per rule"
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
        return rule

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

    def _output(
        self, r: spec.Rule, path: tuple[Any, ...], names: Iterable[str], required: bool
    ) -> op.Output:
        names = frozenset(names)
        out = op.Output()
        if r.alert is not None:
            a, ap = r.alert, (*path, "alert")
            out.alert = AlertOut(
                name=a.name,
                severity=a.severity,
                summary=self.template(a.summary, (*ap, "summary"), names) if a.summary else None,
                labels={
                    k: self.template(v, (*ap, "labels", k), names) for k, v in a.labels.items()
                },
                key=self.expr(a.key, (*ap, "key"), names).fn if a.key else None,
            )
        metrics = ([r.metric] if r.metric else []) + (r.metrics or [])
        out.metrics = [
            MetricOut(
                m.name,
                self.expr(
                    m.value, (*path, "metric" if r.metric is m else "metrics", "value"), names
                ).fn,
                {
                    k: self.template(v, (*path, "metric", "labels", k), names)
                    for k, v in m.labels.items()
                },
            )
            for m in metrics
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
            fields = {f.name for f in msgspec.structs.fields(dcls)}
            for k in e.data:
                if k not in fields:
                    raise self.doc.error(
                        (*epath, "data", k),
                        f"{e.type} has no field {k!r}{_suggest(k, fields)}",
                        key=True,
                    )
            out.emit = EmitOut(
                cls,
                dcls,
                self.expr(e.subject, (*epath, "subject"), names).fn if e.subject else None,
                {k: self.expr(v, (*epath, "data", k), names).fn for k, v in e.data.items()},
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
                out.throttle_by = self.key(r.throttle.by, (*path, "throttle", "by"))
        return out

    # -- one method per operator --------------------------------------------------------------

    def _match(
        self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any
    ) -> op.Rule:  # type: ignore[type-arg]
        types = self._types_for(r, [r.where])
        return op.Match(rule_id, ref, types, where, self._output(r, path, ENVELOPE, True))

    def _for(self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any) -> op.Rule:  # type: ignore[type-arg]
        f, fp = r.for_, (*path, "for")
        assert f is not None
        types = self._types_for(r, [f.start, f.until])
        names = (*ENVELOPE, "held_s", "key")
        return op.For(
            rule_id,
            ref,
            types,
            where,
            self._output(r, path, names, True),
            by=self.key(f.by, (*fp, "by")),
            start=self.cond(f.start, (*fp, "start")),  # type: ignore[arg-type]
            until=self.cond(f.until, (*fp, "until")),  # type: ignore[arg-type]
            duration_s=self.duration(f.duration, (*fp, "duration")),
            keep_firing_s=self.duration(f.keep_firing_for, (*fp, "keep_firing_for")),
        )

    def _sequence(
        self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any
    ) -> op.Rule:  # type: ignore[type-arg]
        s, sp = r.sequence, (*path, "sequence")
        assert s is not None
        steps: list[op.StepSpec] = []
        names = [*ENVELOPE, "steps", "elapsed_s", "key"]
        conditions: list[str | None] = [s.until]
        for i, step in enumerate(s.steps):
            p = (*sp, "steps", i)
            if (step.when is None) == (step.absent is None):
                raise self.doc.error(
                    p, "a step has either 'when' (it must happen) or 'absent' (it must not)"
                )
            conditions.append(step.when or step.absent)
            steps.append(
                op.StepSpec(
                    name=step.name or f"step{i + 1}",
                    when=self.cond(step.when, (*p, "when")),
                    absent=self.cond(step.absent, (*p, "absent")),
                    where=self.expr(step.where, (*p, "where"), names).fn if step.where else None,
                )
            )
        if steps[0].when is None:
            raise self.doc.error(
                (*sp, "steps", 0), "a sequence starts with a 'when' step, not 'absent'"
            )
        return op.Sequence(
            rule_id,
            ref,
            self._types_for(r, conditions),
            where,
            self._output(r, path, names, True),
            by=self.key(s.by, (*sp, "by")),
            within_s=self.duration(s.within, (*sp, "within")),
            steps=steps,
            until=self.cond(s.until, (*sp, "until")),
        )

    def _count(
        self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any
    ) -> op.Rule:  # type: ignore[type-arg]
        c, cp = r.count, (*path, "count")
        assert c is not None
        if where is None:
            raise self.doc.error(path, f"count rule {r.id!r} needs a 'where': the events it counts")
        names = (*ENVELOPE, "count", "key", "window_s")
        return op.Count(
            rule_id,
            ref,
            self._types_for(r, [r.where]),
            where,
            self._output(r, path, names, True),
            by=self.key(c.by, (*cp, "by")),
            window_s=self.duration(c.window, (*cp, "window")),
            threshold=self.number(c.threshold, (*cp, "threshold")),
        )

    def _tally(
        self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any
    ) -> op.Rule:  # type: ignore[type-arg]
        t, tp = r.tally, (*path, "tally")
        assert t is not None
        if "catalog" not in self.pack.needs:
            raise self.doc.error(
                ("needs",) if self.pack.needs else ("pack",),
                "a tally prices its receipts: add 'catalog' to the pack's needs",
            )

        def op3(o: spec.TallyOp, name: str) -> tuple[Any, Any, Any]:
            p = (*tp, name)
            return (
                self.cond(o.when, (*p, "when")),
                self.expr(o.item, (*p, "item")).fn,
                self.expr(o.qty, (*p, "qty")).fn,
            )

        members = None
        if t.members is not None:
            mp = (*tp, "members")
            members = (
                self.cond(t.members.when, (*mp, "when")),
                self.expr(t.members.member, (*mp, "member")).fn,
                self.expr(t.members.cart, (*mp, "cart")).fn,
            )
        abandon = t.abandon.when if t.abandon else None
        conditions = [
            t.add.when,
            t.remove.when,
            t.close.when,
            abandon,
            t.members.when if t.members else None,
        ]
        reference, context = self.reference, self.context

        def price(sku: str) -> tuple[str, int, bool]:
            assert context.partition is not None
            return reference.price(context.partition.store, sku)

        return op.Tally(
            rule_id,
            ref,
            self._types_for(r, [c for c in conditions if c is not None]),
            where,
            self._output(r, path, (*ENVELOPE, "cart", "items", "total_cents"), False),
            by=self.key(t.by, (*tp, "by")),
            add=op3(t.add, "add"),
            remove=op3(t.remove, "remove"),
            close=self.cond(t.close.when, (*tp, "close", "when")),  # type: ignore[arg-type]
            abandon=self.cond(abandon, (*tp, "abandon", "when")),
            members=members,
            price=price,
            currency=reference.currency,
        )

    def _aggregate(
        self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any
    ) -> op.Rule:  # type: ignore[type-arg]
        a, ap = r.aggregate, (*path, "aggregate")
        assert a is not None
        w, wp = a.window, (*ap, "window")
        if (w.tumbling is None) == (w.sliding is None):
            raise self.doc.error(
                wp,
                "a window is either 'tumbling: <duration>' or 'sliding: <duration>' with 'every'",
            )
        if w.tumbling is not None:
            size = every = self.duration(w.tumbling, (*wp, "tumbling"))
        else:
            if w.every is None:
                raise self.doc.error(wp, "a sliding window needs 'every': how often it moves")
            size, every = (
                self.duration(w.sliding, (*wp, "sliding")),
                self.duration(w.every, (*wp, "every")),
            )  # type: ignore[arg-type]
            if a.cumulative:
                raise self.doc.error(
                    (*ap, "cumulative"), "cumulative values need a tumbling window"
                )
            if size % every:
                raise self.doc.error(
                    (*wp, "every"), "a sliding window's size must be a multiple of 'every'"
                )
        item_names = ENVELOPE if a.each is None else (*ENVELOPE, a.as_)
        each = self.expr(a.each, (*ap, "each")).fn if a.each else None
        group_by = [
            (k, self.expr(v, (*ap, "group_by", k), item_names).fn) for k, v in a.group_by.items()
        ]
        computes = [
            self._compute(name, c, (*ap, "compute", name), item_names)
            for name, c in a.compute.items()
        ]
        out_names = (*a.group_by, *a.compute, "window_start", "window_end", "key")
        output = self._output(r, path, out_names, False)
        if output.alert is None and not output.metrics and output.emit is None:
            output.metrics = [
                MetricOut(
                    f"{r.id}.{name}",
                    self.expr(name, (*ap, "compute", name), out_names).fn,
                    {k: self.expr(k, (*ap, "group_by", k), out_names).fn for k in a.group_by},
                )
                for name in a.compute
            ]
        return op.Aggregate(
            rule_id,
            ref,
            self._types_for(r, [r.where]),
            where,
            output,
            window_s=size,
            every_s=every,
            each=each,
            item_scope=op.item_scope_class(a.as_) if a.each else None,
            group_by=group_by,
            computes=computes,
            cumulative=a.cumulative,
            having=self.expr(a.having, (*ap, "having"), out_names).fn if a.having else None,
        )

    def _compute(
        self, name: str, c: spec.Compute | str, path: tuple[Any, ...], names: Iterable[str]
    ) -> op.ComputeSpec:
        if isinstance(c, str):
            m = _COMPUTE.match(c)
            if m is None:
                raise self.doc.error(
                    path,
                    f"{c!r}: write count(), sum(x), mean(x), min(x), max(x), distinct(x) "
                    "or percentile(x, q)",
                )
            fn, args = m.group(1), m.group(2).strip()
            q = None
            if fn == "percentile":
                of, _, qs = args.rpartition(",")
                try:
                    q = float(qs)
                except ValueError:
                    raise self.doc.error(
                        path, "percentile(x, q) takes a number q from 0 to 100"
                    ) from None
                args = of.strip()
            c = spec.Compute(fn=fn, of=args or None, q=q)  # type: ignore[arg-type]
        if c.fn != "count" and not c.of:
            raise self.doc.error(
                path, f"{c.fn}() needs the value it works on, e.g. {c.fn}(data.qty)"
            )
        if c.fn == "percentile" and c.q is None:
            raise self.doc.error(path, "a percentile needs q (0 to 100)")
        return op.ComputeSpec(
            name,
            c.fn,
            self.expr(c.of, path, names).fn if c.of else None,
            self.expr(c.where, path, names).fn if c.where else None,
            c.q,
        )


def _param_value(value: str | int | float | bool) -> str | int | float | bool:
    """A parameter as expressions see it: a duration ("90s") in seconds, else as written."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value
    return value


__all__ = ["Checked", "ExpressionError", "PackError", "check_rules", "load_rules"]
