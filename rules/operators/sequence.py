"""``sequence``: ordered steps per key within a time span, with ``absent`` steps and ``until``.

Per key, the first step starts a candidate (one at a time: the earliest start wins until it
completes, expires at ``start + within`` or is cancelled by ``until``). Each ``when`` step
must match in order; an ``absent`` step between two ``when`` steps breaks the candidate if
its event comes in between. The event that cancels or breaks a candidate may itself start
the next one (``until: type == "zone.entered"`` restarts a zone visit on re-entry).
Trailing ``absent`` steps wait: the rule fires at ``start + within`` if none of their
events came. Names of matched steps are in scope for later steps' ``where`` and for the
outputs (``steps.<name>.at``, ``elapsed_s``). A step whose event comes but fails its
``where`` ends the candidate: the step happened, just not as the rule wants (a zone visit
that was too short is over, not pending).

``sums`` run over a candidate: each event of the key that meets a sum's ``when`` from the
first step on (and does not break the candidate) adds its ``add``; the sums are in scope
by name.
A zone visit knows this way what the shopper took from the zone's shelves and put back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import msgspec

from core import events as ev
from rules.operators.base import SWEEP, Cond, Emitter, KeyFn, Partition, Rule, Scope, key_text


@dataclass(frozen=True, slots=True)
class StepSpec:
    name: str
    when: Cond | None  # None: an absent step
    absent: Cond | None
    where: Cond | None  # evaluated on a Scope with earlier steps in it


class Candidate(msgspec.Struct, gc=False):
    """One key's sequence in progress: the matched step events, in order."""

    token: int
    steps: tuple[ev.AnyEvent, ...]  # a tuple: smaller than a list, and rarely more than 3
    sums: tuple[float, ...] = ()  # the rule's ``sums``, in order

    def start(self, now: float) -> float:
        """When the candidate began: its first step's time (no copy of it is kept)."""
        return self.steps[0].at.timestamp() if self.steps else now


class Candidates(msgspec.Struct, kw_only=True):
    """A ``sequence`` rule's state in a store, as a snapshot holds it: each key's
    ``Candidate``."""

    keys: list[tuple[Any, Candidate]] = []


class Sequence(Rule):
    kind = "sequence"
    state_type = Candidates

    def __init__(
        self,
        *args: Any,
        by: KeyFn,
        within_s: float,
        steps: list[StepSpec],
        until: Cond | None,
        sums: list[tuple[str, Cond, Callable[[Any], Any]]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.by, self.within_s, self.until = by, within_s, until
        self.sums = sums or []
        self._zeros = tuple(0.0 for _ in self.sums)
        self._add = _adder(self.sums, self._each_added)
        self.sweep_every_s = max(within_s / 4, 1.0)
        # Group the steps: each positive step with the absent steps that guard the gap before it.
        self.positives: list[tuple[StepSpec, list[StepSpec]]] = []
        guards: list[StepSpec] = []
        for step in steps:
            if step.when is None:
                guards.append(step)
            else:
                self.positives.append((step, guards))
                guards = []
        self.trailing = guards

    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        states = p.rule_state(self.id)
        key = self.by(e)
        st = states.get(key)
        # When the candidate began: its first step's time, read once (a datetime's
        # timestamp is not cheap); its first step stays its first while this event applies.
        start = st.start(ts) if st is not None else ts
        if st is not None and not self.trailing and ts - start >= self.within_s:
            p.forget(self.id, key)  # ran out (the sweep frees such candidates in time too)
            st = None
        if st is not None:
            i = len(st.steps)
            guards = self.trailing if i == len(self.positives) else self.positives[i][1]
            cancelled = self.until is not None and self.until(e)
            if not cancelled and not (guards and any(g.absent(e) for g in guards)):  # type: ignore[misc]
                if self.sums:
                    st.sums = self._add(st.sums, e)
                if i == len(self.positives):
                    return  # waiting out the trailing absent steps
                step = self.positives[i][0]
                if not step.when(e):  # type: ignore[misc]
                    return
                if self._where(step, st, e, ts, key, start):
                    self._advance(p, key, st, step, e, ts, out, start)
                    return
                # The step's event came but does not qualify (a visit too short): it is over.
            p.forget(self.id, key)  # broken: the event that broke it may start the next candidate
        first = self.positives[0][0]
        if first.when(e) and self._where(first, None, e, ts, key, ts):  # type: ignore[misc]
            if self.trailing:
                # It fires when it runs out: a timer of its own, at that very time.
                token = p.new_token()  # unique: a timer of an earlier candidate never matches
                p.schedule(ts + self.within_s, self.id, key, token)
            else:
                token = 0  # it only has to be freed when it runs out: the sweep does that
                self.ensure_sweep(p, ts)
            sums = self._add(self._zeros, e) if self.sums else ()
            st = p.rule_state(self.id)[key] = Candidate(token, (), sums)
            self._advance(p, key, st, first, e, ts, out, ts)  # no step yet: it starts now

    def _each_added(self, sums: tuple[float, ...], e: ev.Event) -> tuple[float, ...]:
        """The sums after ``e``, one by one: what ``_adder``'s function does in one step."""
        return tuple(
            total + (float(add(e)) if when(e) else 0.0)
            for (_, when, add), total in zip(self.sums, sums, strict=True)
        )

    def _where(
        self,
        step: StepSpec,
        st: Candidate | None,
        e: ev.Event,
        ts: float,
        key: Any,
        start: float,
    ) -> bool:
        if step.where is None:
            return True
        candidate = st or Candidate(0, (), self._zeros)
        return bool(step.where(self._scope(candidate, e, ts, key, start)))

    def _advance(
        self,
        p: Partition,
        key: Any,
        st: Candidate,
        step: StepSpec,
        e: ev.Event,
        ts: float,
        out: Emitter,
        start: float,
    ) -> None:
        """``start``: ``st.start(ts)`` as it is before ``e`` is added."""
        if ts - start > self.within_s:
            p.forget(self.id, key)
            return
        began = bool(st.steps)  # else ``e`` is its first step, and its start
        st.steps = (*st.steps, e)
        if len(st.steps) == len(self.positives) and not self.trailing:
            p.forget(self.id, key)
            self._complete(p, key, st, e, ts, out, start if began else None)

    def sweep(self, p: Partition, ts: float) -> None:
        for key, st in list(p.rule_state(self.id).items()):
            if ts - st.start(ts) >= self.within_s:
                p.forget(self.id, key)

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:
        if key is SWEEP:
            self.swept(p, token, ts)
            return
        st = p.rule_state(self.id).get(key)
        if st is None or st.token != token:
            return
        p.forget(self.id, key)
        if len(st.steps) == len(self.positives) and self.trailing:
            self._complete(p, key, st, st.steps[-1], ts, out)

    def _complete(
        self,
        p: Partition,
        key: Any,
        st: Candidate,
        e: ev.Event,
        ts: float,
        out: Emitter,
        start: float | None = None,
    ) -> None:
        causes = tuple(s.id for s in st.steps)
        self.fire(p, self._scope(st, e, ts, key, start), key, ts, causes, out)

    def _scope(
        self, st: Candidate, e: ev.Event, ts: float, key: Any = None, start: float | None = None
    ) -> Scope:
        """``start``: ``st.start(ts)``, when the caller has it."""
        extra = {"elapsed_s": ts - (st.start(ts) if start is None else start)}
        if self.sums:
            for (name, _, _), total in zip(self.sums, st.sums, strict=False):
                extra[name] = total
        return StepsScope(e, extra, self.positives, st.steps, key)


class StepsScope(Scope):
    """A sequence's scope: ``steps`` (the matched step events by name) and ``key`` are
    made when first read. Most ``where`` conditions read ``elapsed_s`` alone, and a zone
    visit's end is checked on every zone exit."""

    def __init__(
        self,
        event: ev.Event,
        extra: dict[str, Any],
        positives: list[tuple[StepSpec, list[StepSpec]]],
        steps: tuple[ev.AnyEvent, ...],
        key: Any,
    ) -> None:
        found = self.__dict__  # as Scope.__init__ fills it, and what is made when read
        found.update(extra)
        found["_event"] = event
        found["_made"] = (positives, steps, key)

    def __getattr__(self, name: str) -> Any:
        made = self.__dict__
        if name == "steps":
            positives, steps, _ = made["_made"]
            named = {spec.name: event for (spec, _), event in zip(positives, steps, strict=False)}
            value = made["steps"] = SimpleNamespace(**named)
            return value
        if name == "key":
            value = made["key"] = key_text(made["_made"][2])
            return value
        if name.startswith("__"):  # as Scope.__getattr__, without a call of it
            raise AttributeError(name)
        return getattr(made["_event"], name)


def _adder(
    sums: list[tuple[str, Cond, Callable[[Any], Any]]],
    each: Callable[[tuple[float, ...], ev.Event], tuple[float, ...]],
) -> Callable[[tuple[float, ...], ev.Event], tuple[float, ...]]:
    """One generated function that adds an event to a candidate's sums: the sums in one
    tuple display, each as ``Sequence._each_added`` adds it (the same operations, in the
    same order). Sums of another length (kept from a rule reloaded with other sums) go
    the general way, which refuses them as it always has."""
    namespace: dict[str, Any] = {"__builtins__": {}, "float": float, "len": len, "each": each}
    parts = []
    for i, (_, when, add) in enumerate(sums):
        namespace[f"w{i}"], namespace[f"a{i}"] = when, add
        parts.append(f"sums[{i}] + (float(a{i}(e)) if w{i}(e) else 0.0), ")
    exec(
        "def added(sums, e):\n"
        f"    if len(sums) != {len(sums)}:\n"
        "        return each(sums, e)\n"
        f"    return ({''.join(parts)})\n",
        namespace,
    )
    return namespace["added"]  # type: ignore[no-any-return]
