"""The engine: events in, derived events out, in event time, deterministically.

Each store is a partition with its own clock. The watermark is the newest event time seen
minus the allowed lateness; events wait in a buffer until the watermark passes them and
are then applied in (event time, id) order, timers first at equal times. An event older
than the watermark is late: it is reported and counted, never applied. So the same events
give the same output, byte for byte, however they are split into batches, and a repeated
event id is applied once. Derived events are fed back to the rules (a receipt can cause an
alert) before the next input event.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core import events as ev
from rules.operators import Emitter, Partition, Rule

MAX_DEPTH = 8  # derived events feeding derived events: deeper means a cycle
DEDUP_HORIZON_S = 3600.0  # how long an event id is remembered to drop a repeat


@dataclass(frozen=True, slots=True)
class RuleError:
    """A rule failed on one event; the engine carries on with the next."""

    rule: str
    event: str
    message: str


@dataclass
class Output:
    derived: list[ev.Event] = field(default_factory=list)
    late: list[ev.Event] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.derived += other.derived
        self.late += other.late
        self.errors += other.errors


@dataclass(frozen=True)
class SetRule:
    """Keeps a named set of members per store (the subjects in a staff session)."""

    name: str
    add: Any
    remove: Any
    member: Any


@dataclass(frozen=True)
class RuleSet:
    """A validated, compiled set of packs: what the engine runs, swapped whole on reload."""

    rules: tuple[Rule, ...]
    packs: dict[str, str]  # pack name -> version
    sets: tuple[SetRule, ...] = ()
    by_id: dict[str, Rule] = field(init=False)
    dispatch: dict[str, tuple[Rule, ...]] = field(init=False)
    wildcard: tuple[Rule, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {r.id: r for r in self.rules})
        wildcard = tuple(r for r in self.rules if r.types is None)
        table: dict[str, list[Rule]] = {t: [] for t in ev.EVENT_TYPES}
        for r in self.rules:
            for t in r.types or ev.EVENT_TYPES:
                table[t].append(r)
        object.__setattr__(self, "dispatch", {t: tuple(rs) for t, rs in table.items()})
        object.__setattr__(self, "wildcard", wildcard)


class Context:
    """The partition being worked on, for the functions and sets that rules read."""

    __slots__ = ("partition",)

    def __init__(self) -> None:
        self.partition: Partition | None = None


class DynamicSet:
    """``subject in staff``: membership in a set kept per store from the events."""

    __slots__ = ("context", "name")

    def __init__(self, name: str, context: Context) -> None:
        self.name = name
        self.context = context

    def __contains__(self, item: object) -> bool:
        p = self.context.partition
        return p is not None and item in p.sets.get(self.name, ())


class Engine:
    def __init__(
        self, rules: RuleSet, *, lateness_s: float = 0.0, context: Context | None = None
    ) -> None:
        self.rules = rules
        self.lateness_s = lateness_s
        self.context = context or Context()
        self.partitions: dict[str, Partition] = {}
        self._seen: dict[str, dict[str, float]] = {}

    # -- the public surface ------------------------------------------------------------------

    def process(self, events: Iterable[ev.Event]) -> Output:
        """Apply a batch; the output holds what became final (timers included)."""
        out = Output()
        for e in events:
            self._accept(e, out)
        return out

    def advance(self, store: str, at: float) -> Output:
        """Move a store's watermark to ``at`` (seconds) without an event: fire due timers.

        Tests use it to run the virtual clock on; a live service has heartbeats instead.
        """
        out = Output()
        p = self._partition(store)
        if at > p.watermark:
            p.watermark = at
            p.newest = max(p.newest, at)
            self._drain(p, out)
        return out

    def reload(self, rules: RuleSet) -> None:
        """Swap the rule set in one step; state of rules that are gone is dropped."""
        for p in self.partitions.values():
            for rule_id in [r for r in p.state if r not in rules.by_id]:
                del p.state[rule_id]
        self.rules = rules

    # -- inside ------------------------------------------------------------------------------

    def _partition(self, store: str) -> Partition:
        p = self.partitions.get(store)
        if p is None:
            p = self.partitions[store] = Partition(store)
            self._seen[store] = {}
        return p

    def _accept(self, e: ev.Event, out: Output) -> None:
        p = self._partition(e.store)
        ts = e.at.timestamp()
        if ts < p.watermark:
            p.late += 1
            out.late.append(e)
            return
        seen = self._seen[p.store]
        if e.id in seen:
            return
        seen[e.id] = ts
        if len(seen) > 100_000:
            horizon = p.watermark - DEDUP_HORIZON_S
            self._seen[p.store] = {i: t for i, t in seen.items() if t >= horizon}
        if ts > p.newest:
            p.newest = ts
            p.watermark = max(p.watermark, ts - self.lateness_s)
        if not p.buffer and ts <= p.watermark:
            self._timers(p, ts, out)  # the common case with no lateness: no reordering needed
            self._apply(p, e, ts, out, 0)
            return
        heapq.heappush(p.buffer, (ts, e.id, e))
        self._drain(p, out)

    def _drain(self, p: Partition, out: Output) -> None:
        buffer = p.buffer
        while buffer and buffer[0][0] <= p.watermark:
            ts, _, e = heapq.heappop(buffer)
            self._timers(p, ts, out)
            self._apply(p, e, ts, out, 0)
        self._timers(p, p.watermark, out)

    def _timers(self, p: Partition, upto: float, out: Output) -> None:
        timers = p.timers
        by_id = self.rules.by_id
        while timers and timers[0][0] <= upto:
            at, _, rule_id, key, token = heapq.heappop(timers)
            rule = by_id.get(rule_id)
            if rule is None:
                continue  # the rule was removed by a reload
            emitter = Emitter()
            self.context.partition = p
            try:
                rule.on_timer(p, key, token, at, emitter)
            except Exception as exc:  # one rule's failure must not stop the store
                out.errors.append(RuleError(rule_id, f"timer@{at}", _message(exc)))
            self._feed(p, emitter, at, out, 0)

    def _apply(self, p: Partition, e: ev.Event, ts: float, out: Output, depth: int) -> None:
        self.context.partition = p
        rs = self.rules
        for s in rs.sets:
            if s.add(e):
                p.sets.setdefault(s.name, set()).add(s.member(e))
            elif s.remove is not None and s.remove(e):
                p.sets.get(s.name, set()).discard(s.member(e))
        emitter = Emitter()
        for rule in rs.dispatch.get(e.type, rs.wildcard):
            try:
                if rule.where is None or rule.where(e):
                    rule.on_event(p, e, ts, emitter)
            except Exception as exc:  # one rule's failure must not stop the store
                out.errors.append(RuleError(rule.id, e.id, _message(exc)))
        self._feed(p, emitter, ts, out, depth)

    def _feed(self, p: Partition, emitter: Emitter, ts: float, out: Output, depth: int) -> None:
        for d in emitter.events:
            out.derived.append(d)
            if depth < MAX_DEPTH:
                self._apply(p, d, d.at.timestamp(), out, depth + 1)
            else:
                out.errors.append(
                    RuleError(d.rule.id, d.id, "derived events nest too deep: a cycle?")
                )  # type: ignore[attr-defined]


def _message(exc: Exception) -> str:
    return (
        f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__) else str(exc)
    )
