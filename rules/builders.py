"""Compiling each operator of a rule: the loader's second half.

``OperatorBuilders`` is mixed into the loader's pack compiler, whose helpers (``expr``,
``cond``, ``key``, ``duration``, ``_output``...) it uses: one method per operator, each
turning a rule's YAML into its operator, with the checks particular to it.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Iterable
from typing import Any

from core import events as ev
from core.yamlsource import SourceError
from rules import operators as op
from rules import pack as spec
from rules.outputs import MetricOut

ENVELOPE = ("type", "id", "store", "at", "source", "subject", "v", "data", "rule", "caused_by")
TALLY_SCOPE = ("cart", "items", "total_cents", "closed_by")  # a cart closed without a receipt
MAX_WINDOWS = 10_000  # the most windows of one rule an event falls in (a sliding window's steps)
MIN_WINDOW_S = 0.001  # the shortest window, or step of a sliding one
_COMPUTE = re.compile(
    r"^\s*(count|sum|mean|min|max|distinct|percentile|underflow)\s*\((.*)\)\s*$", re.S
)


class OperatorBuilders:
    def _match(
        self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any
    ) -> op.Rule:  # type: ignore[type-arg]
        types = self._types_for(r, [r.where])
        return op.Match(rule_id, ref, types, where, self._output(r, path, ENVELOPE, True, types))

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
            self._output(r, path, names, True, types),
            by=self.key(f.by, (*fp, "by"), types),
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
        for name in s.sums:
            if name in names or name in (step.name for step in s.steps):
                raise self.doc.error(
                    (*sp, "sums", name), f"{name!r} is taken: name the sum otherwise"
                )
        names += list(s.sums)
        sums = [
            (
                name,
                self.cond(x.when, (*sp, "sums", name, "when")),
                self.expr(x.add, (*sp, "sums", name, "add"), types=self.types_of(x.when)).fn,
            )
            for name, x in s.sums.items()
        ]
        conditions: list[str | None] = [s.until, *(x.when for x in s.sums.values())]
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
                    where=self.expr(step.where, (*p, "where"), names, self.types_of(step.when)).fn
                    if step.where
                    else None,
                )
            )
        if steps[0].when is None:
            raise self.doc.error(
                (*sp, "steps", 0), "a sequence starts with a 'when' step, not 'absent'"
            )
        types = self._types_for(r, conditions)
        return op.Sequence(
            rule_id,
            ref,
            types,
            where,
            self._output(r, path, names, True, types),
            by=self.key(s.by, (*sp, "by"), types),
            within_s=self.duration(s.within, (*sp, "within")),
            steps=steps,
            until=self.cond(s.until, (*sp, "until")),
            sums=sums,  # type: ignore[arg-type]
        )

    def _count(
        self, r: spec.Rule, path: tuple, rule_id: str, ref: ev.RuleRef, where: Any
    ) -> op.Rule:  # type: ignore[type-arg]
        c, cp = r.count, (*path, "count")
        assert c is not None
        if where is None:
            raise self.doc.error(path, f"count rule {r.id!r} needs a 'where': the events it counts")
        names = (*ENVELOPE, "count", "key", "window_s")
        types = self._types_for(r, [r.where])
        window_s = self.duration(c.window, (*cp, "window"))
        if window_s <= 0:  # its sweep runs once a window: a window of 0 s would never end
            raise self.doc.error((*cp, "window"), "a window lasts longer than 0 s")
        return op.Count(
            rule_id,
            ref,
            types,
            where,
            self._output(r, path, names, True, types),
            by=self.key(c.by, (*cp, "by"), types),
            window_s=window_s,
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
            p, types = (*tp, name), self.types_of(o.when)
            return (
                self.cond(o.when, (*p, "when")),
                self.expr(o.item, (*p, "item"), types=types).fn,
                self.expr(o.qty, (*p, "qty"), types=types).fn,
            )

        members = None
        if t.members is not None:
            mp, mtypes = (*tp, "members"), self.types_of(t.members.when)
            members = (
                self.cond(t.members.when, (*mp, "when")),
                self.expr(t.members.member, (*mp, "member"), types=mtypes).fn,
                self.expr(t.members.cart, (*mp, "cart"), types=mtypes).fn,
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

        prices: dict[tuple[str, str], tuple[str, int, bool]] = {}  # the catalog, as read

        def price(sku: str) -> tuple[str, int, bool]:
            assert context.partition is not None
            store = context.partition.store
            found = prices.get((store, sku))
            if found is None:  # an unknown SKU raises each time: it is not remembered
                found = prices[(store, sku)] = reference.price(store, sku)
            return found

        types = self._types_for(r, [c for c in conditions if c is not None])
        max_visit_s = self.duration(t.max_visit, (*tp, "max_visit"))
        if max_visit_s <= 0:
            raise self.doc.error((*tp, "max_visit"), "max_visit must be longer than 0s")
        return op.Tally(
            rule_id,
            ref,
            types,
            where,
            self._output(r, path, (*ENVELOPE, *TALLY_SCOPE), False, types),
            by=self.key(t.by, (*tp, "by")),
            add=op3(t.add, "add"),
            remove=op3(t.remove, "remove"),
            close=self.cond(t.close.when, (*tp, "close", "when")),  # type: ignore[arg-type]
            abandon=self.cond(abandon, (*tp, "abandon", "when")),
            members=members,
            price=price,
            currency=reference.currency,
            max_visit_s=max_visit_s,
            op_types={
                "members": self.types_of(t.members.when) if t.members else frozenset(),
                "add": self.types_of(t.add.when),
                "remove": self.types_of(t.remove.when),
                "close": self.types_of(t.close.when),
                "abandon": self.types_of(abandon) if abandon else frozenset(),
            },
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
            if size <= 0:
                raise self.doc.error((*wp, "tumbling"), "a window lasts longer than 0 s")
            if size < MIN_WINDOW_S:
                raise self.doc.error((*wp, "tumbling"), "a window lasts at least 1ms")
            if w.local and (size > 86400 or 86400 % size):
                raise self.doc.error(
                    (*wp, "local"), "a window aligned to local time divides a day: 1h, 24h..."
                )
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
            if w.local:
                raise self.doc.error((*wp, "local"), "local alignment takes a tumbling window")
            if size <= 0:
                raise self.doc.error((*wp, "sliding"), "a window lasts longer than 0 s")
            if every <= 0:
                raise self.doc.error((*wp, "every"), "a window moves by more than 0 s")
            if every < MIN_WINDOW_S:
                raise self.doc.error((*wp, "every"), "a window moves by at least 1ms")
            if size / every > MAX_WINDOWS + 0.5:
                raise self.doc.error(
                    (*wp, "every"),
                    f"each event would fall in {size / every:.0f} windows (at most "
                    f"{MAX_WINDOWS}): slide by more, or use a shorter window",
                )
            # A whole ratio, as written: 0.3 s by 0.1 s is 3 steps, though 0.3 % 0.1 is not 0
            # in floating point. The window is then exactly that many steps long.
            steps = round(size / every)
            if steps < 1 or abs(steps * every - size) > 1e-9 * size:
                raise self.doc.error(
                    (*wp, "every"), "a sliding window's size must be a multiple of 'every'"
                )
            size = steps * every
        if a.as_.startswith("_") or keyword.iskeyword(a.as_):
            raise self.doc.error(
                (*ap, "as"), f"{a.as_!r} cannot name the item: a name starts with a letter"
            )
        types = self._types_for(r, [r.where])
        item_names = ENVELOPE if a.each is None else (*ENVELOPE, a.as_)
        each = self.expr(a.each, (*ap, "each"), types=types).fn if a.each else None
        direct = a.each is not None and self._item_only(a, ap, item_names, types)
        if direct:
            # Per-item expressions read only the item: evaluate them on it, build no scope.
            item_names, self._itself = (a.as_,), a.as_
        group_by = [
            (k, self.expr(v, (*ap, "group_by", k), item_names, types).fn)
            for k, v in a.group_by.items()
        ]
        if a.group_by:
            # Checked one by one above; run as one tuple expression: one call per item.
            whole = "(" + "".join(f"({v}), " for v in a.group_by.values()) + ")"
            key_path = (*ap, "group_by", next(iter(a.group_by)))
            group_by.append(("", self.expr(whole, key_path, item_names, types).fn))
        computes = [
            self._compute(name, c, (*ap, "compute", name), item_names, types)
            for name, c in a.compute.items()
        ]
        dwells = [name for name, c in zip(a.compute, computes, strict=True) if c.fn == "dwell"]
        if len(dwells) > 1:
            raise self.doc.error((*ap, "compute", dwells[1]), "an aggregate has one dwell at most")
        item_filter = self._item_filter(a, ap, item_names, types)
        self._itself = None
        out_names = (*a.group_by, *a.compute, "window_start", "window_end", "key")
        output = self._output(
            r, path, out_names, False, window_names=("window_start", "window_end")
        )
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
            types,
            where,
            output,
            window_s=size,
            every_s=every,
            each=each,
            item_scope=op.item_scope_class(a.as_) if a.each and not direct else None,
            group_by=group_by,
            computes=computes,
            cumulative=a.cumulative,
            having=self.expr(a.having, (*ap, "having"), out_names).fn if a.having else None,
            item_filter=item_filter,
            local_tz=self.reference.tz if w.local else None,
            pipeline=(r.on, r.where, a.each, a.as_, a.filter, a.group_by, a.compute),
        )

    def _item_only(
        self, a: spec.AggregateSpec, ap: tuple[Any, ...], names: Any, types: Any
    ) -> bool:
        """Whether every per-item expression reads the item and nothing of the event."""
        sources = [(v, (*ap, "group_by", k)) for k, v in a.group_by.items()]
        for name, c in a.compute.items():
            if isinstance(c, spec.Compute):
                sources += [(x, (*ap, "compute", name)) for x in (c.of, c.where) if x]
            else:
                inner = _COMPUTE.match(c)
                if inner and inner.group(2).strip():
                    sources.append(
                        (
                            inner.group(2).rpartition(",")[0] or inner.group(2),
                            (*ap, "compute", name),
                        )
                    )
        if a.filter:
            sources.append((a.filter, (*ap, "filter")))
        try:
            return all(
                not (self.expr(src, path, names, types).names & set(ENVELOPE))
                for src, path in sources
            )
        except SourceError:
            return False  # the error is reported when the expression is compiled for real

    def _item_filter(
        self, a: spec.AggregateSpec, ap: tuple[Any, ...], names: Any, types: Any
    ) -> Callable[[Any], Any] | None:
        if a.filter is None:
            return None
        if a.each is None:
            raise self.doc.error(
                (*ap, "filter"), "'filter' picks items of 'each'; use 'where' for events"
            )
        return self.expr(a.filter, (*ap, "filter"), names, types).fn

    def _compute(
        self,
        name: str,
        c: spec.Compute | str,
        path: tuple[Any, ...],
        names: Iterable[str],
        types: frozenset[str] | None = None,
    ) -> op.ComputeSpec:
        if isinstance(c, str):
            m = _COMPUTE.match(c)
            if m is None:
                raise self.doc.error(
                    path,
                    f"{c!r}: write count(), sum(x), mean(x), min(x), max(x), distinct(x), "
                    "percentile(x, q) or underflow(x)",
                )
            fn, args = m.group(1), m.group(2).strip()
            part = (c, m.start(2) + len(m.group(2)) - len(m.group(2).lstrip()))
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
            of_path: tuple[Any, ...] = path
        else:
            part, of_path = None, (*path, "of")
        if c.fn != "count" and not c.of:
            raise self.doc.error(
                path, f"{c.fn}() needs the value it works on, e.g. {c.fn}(data.qty)"
            )
        if c.fn == "percentile" and c.q is None:
            raise self.doc.error(path, "a percentile needs q (0 to 100)")
        if c.floor is not None and c.fn not in ("sum", "underflow"):
            raise self.doc.error((*path, "floor"), f"floor is for sum and underflow, not {c.fn}")
        cap = None
        if c.fn == "dwell":
            if c.cap is None:
                raise self.doc.error(path, "a dwell needs cap, the longest gap it counts (1s)")
            if c.where is not None:
                raise self.doc.error(
                    (*path, "where"), "a dwell counts every sample of a person: use filter"
                )
            cap = self.duration(c.cap, (*path, "cap"))
            if cap <= 0:
                raise self.doc.error((*path, "cap"), "cap must be longer than 0s")
        elif c.cap is not None:
            raise self.doc.error((*path, "cap"), f"cap is for dwell, not {c.fn}")
        return op.ComputeSpec(
            name,
            c.fn,
            self.expr(c.of, of_path, names, types, part).fn if c.of else None,
            self.expr(c.where, (*path, "where"), names, types).fn if c.where else None,
            c.q,
            0.0 if c.fn == "underflow" and c.floor is None else c.floor,
            cap,
        )


def entry_conditions(r: spec.Rule) -> list[str]:
    """The conditions through which events reach an operator's state (empty: it sees all
    the events its ``where`` lets through)."""
    if r.for_ is not None:
        return [r.for_.start, r.for_.until]
    if r.sequence is not None:
        s = r.sequence
        steps = (x.when or x.absent for x in s.steps)
        return [c for c in (s.until, *steps, *(x.when for x in s.sums.values())) if c]
    if r.tally is not None:
        t = r.tally
        ops = (t.members, t.add, t.remove, t.close, t.abandon)
        return [o.when for o in ops if o is not None]
    return []
