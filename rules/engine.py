"""The engine: events in, derived events out, in event time, deterministically.

Each store is a partition with its own clock. A store's events come from several sources
(cameras, sensors, adapters), each publishing with its own delay, so the watermark follows
the slowest: it is the earliest of the newest event times of the store's active sources,
minus the allowed lateness. A source is active while its newest event is within the idle
bound of the store's newest event, so one that falls quiet (or dies) holds the store back
that long at most. Events wait in a buffer until the watermark passes them and are then
applied in order of event time, then of arrival in the store's partition, timers first at
equal times. So events of one instant (a pick and its put-back) are applied in the order
their source sent them, buffered or not: the log keeps that order, and a replay reads it
again. An event older than the watermark is late: it is reported and counted, never
applied. The same events, in the same order, give the same output, byte for byte,
however they are split into batches, and a repeated event id is applied once. Derived
events are fed back to the rules (a receipt can cause an alert) before the next input
event.
"""

from __future__ import annotations

import heapq
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from core import events as ev
from rules.expressions import define
from rules.operators import Emitter, Partition, Rule

MAX_DEPTH = 8  # derived events feeding derived events: deeper means a cycle
MAX_FANOUT = 10_000  # derived events applied to the rules for one input event or timer
DEDUP_HORIZON_S = 3600.0  # how long an event id is remembered to drop a repeat
MAX_SOURCES = 1024  # sources remembered per store: invented ones must not fill the memory
_NEVER = float("-inf")
_from_bytes = int.from_bytes


class EngineFailure(RuntimeError):
    """The engine itself failed while applying ``event`` (a rule's failure is a
    ``RuleError`` instead, and the engine carries on): the caller decides what to do with
    the event, such as setting it aside once it has failed often enough."""

    def __init__(self, event: ev.Event, cause: Exception) -> None:
        super().__init__(f"applying {event.type} {event.id}: {_message(cause)}")
        self.event = event


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
    types: frozenset[str] | None = None  # the event types that can change it


@dataclass(frozen=True)
class RuleSet:
    """A validated, compiled set of packs: what the engine runs, swapped whole on reload.

    It carries the ``Context`` its expressions were compiled against (the staff set they
    read, the partition their functions see), so the engine that runs it fills that one.
    """

    rules: tuple[Rule, ...]
    packs: dict[str, str]  # pack name -> version
    context: Context
    sets: tuple[SetRule, ...] = ()
    by_id: dict[str, Rule] = field(init=False)
    set_dispatch: dict[str, tuple[SetRule, ...]] = field(init=False)
    interested: frozenset[str] = field(init=False)  # types some rule or set listens to
    # Per type, each rule's (guard, where, on_event, id), looked up once: per event and rule,
    # attribute lookups and bound-method creation were a visible share of the engine's time.
    handlers: dict[str, tuple[tuple[Any, Any, Any, str], ...]] = field(init=False)
    # Per type with handlers, one generated function that runs them (``_dispatcher``).
    dispatch: dict[str, Any] = field(init=False)
    gates: dict[str, Any] = field(init=False)
    routes: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {r.id: r for r in self.rules})
        # Dispatch by type: a rule sees only the types its conditions can match.
        table: dict[str, list[Rule]] = {t: [] for t in ev.EVENT_TYPES}
        for r in self.rules:
            for t in r.types or ev.EVENT_TYPES:
                table[t].append(r)
        sets = {t: tuple(s for s in self.sets if s.types is None or t in s.types) for t in table}
        object.__setattr__(self, "set_dispatch", sets)
        handlers = {
            t: tuple(((r.guards or {}).get(t), r.where, r.on_event, r.id) for r in rs)
            for t, rs in table.items()
        }
        object.__setattr__(self, "handlers", handlers)
        dispatch = {t: _dispatcher(t, hs) for t, hs in handlers.items() if hs}
        object.__setattr__(self, "dispatch", dispatch)
        listened = {t for t in table if table[t] or sets[t]}
        object.__setattr__(self, "interested", frozenset(listened))
        # Types whose every rule has a guard (and no set listens): an event none of the
        # guards lets through only moves the clock, like one no rule listens to.
        gates = {
            t: _either(tuple(h[0] for h in hs))
            for t, hs in handlers.items()
            if hs and not sets[t] and all(h[0] is not None for h in hs)
        }
        object.__setattr__(self, "gates", gates)
        # Per type some rule or set listens to: its gate, or True when none stands.
        routes = {t: gates.get(t, True) for t in listened}
        object.__setattr__(self, "routes", routes)


class LiveSet(set[str]):
    """``subject in staff``: a set kept from the events, tested at C speed in expressions.

    Members are per-visit pseudonymous ids, unique across stores, so one set serves all
    partitions; each partition also keeps its own members (``Partition.sets``), which is
    what a snapshot of that store holds.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class Context:
    """What the functions and sets that rules read see of the engine: the partition at hand.

    Each rule set is compiled against one (``load_rules`` makes it) and carries it; the
    engine that runs the rule set fills it, and one engine at a time may.
    """

    __slots__ = ("_engine", "live", "partition")

    def __init__(self) -> None:
        self.partition: Partition | None = None
        self.live: dict[str, LiveSet] = {}
        self._engine: weakref.ref[Engine] | None = None

    def live_set(self, name: str) -> LiveSet:
        found = self.live.get(name)
        if found is None:
            found = self.live[name] = LiveSet(name)
        return found

    def bind(self, engine: Engine) -> None:
        """Let ``engine`` fill the sets, emptied: what they hold comes from its events only.

        A second engine on the same rule set would empty the first one's staff set under
        it: that is refused while the first is alive.
        """
        held = self._engine() if self._engine is not None else None
        if held is not None and held is not engine:
            raise ValueError(
                "this rule set runs in another engine already: load the packs again "
                "(load_rules) for a second engine"
            )
        self._engine = weakref.ref(engine)
        self.partition = None
        for live in self.live.values():
            live.clear()

    def release(self) -> None:
        self._engine = None


class Engine:
    """Runs a rule set and fills the context it carries. ``Engine(load_rules(packs, ref))``
    is the one way to build one: there is no context to pass, so none to get wrong."""

    _fanout = MAX_FANOUT  # derived events the event at hand may still have applied
    _fed_at: Any = None  # the time of the last derived event applied, and its timestamp
    _fed_ts = 0.0

    def __init__(
        self, rules: RuleSet, *, lateness_s: float = 0.0, source_idle_s: float = 0.0
    ) -> None:
        """``source_idle_s``: how far (event time) behind the store's newest event a source
        may fall and still hold the watermark back; 0 gives one clock per store, as if all
        its events came from one source."""
        if not source_idle_s >= 0:
            raise ValueError(f"the source idle bound is at least 0 seconds, not {source_idle_s}")
        self.rules = rules
        self.lateness_s = lateness_s
        self.source_idle_s = source_idle_s
        self.max_sources = MAX_SOURCES
        self.context = rules.context
        self.context.bind(self)
        self.partitions: dict[str, Partition] = {}
        self._emitter = Emitter()
        self._seen: dict[str, list[Any]] = {}  # store -> [ids now, ids before, rotate at]

    # -- the public surface ------------------------------------------------------------------

    def process(self, events: Iterable[ev.Event]) -> Output:
        """Apply a batch; the output holds what became final (timers included).

        The loop is the engine's hottest: events no rule listens to (most position samples
        of a carts-only engine) only move the clock, spelled out here without a call.
        """
        out = Output()
        partitions, routes = self.partitions, self.rules.routes
        lateness = self.lateness_s
        last_at: Any = None
        last_store: Any = None
        p: Partition = None  # type: ignore[assignment]
        ts = 0.0
        for e in events:
            store = e.store
            if store != last_store:  # most batches are one store's
                p = partitions.get(store) or self._partition(store)
                last_store = store
            at = e.at
            if at != last_at:  # most events share their instant with the one before
                ts, last_at = at.timestamp(), at
            if ts < p.watermark:
                p.late += 1
                out.late.append(e)
            elif (gate := routes.get(e.type)) is not None and (gate is True or gate(e)):
                self._accept(p, e, ts, out)
            else:  # nothing can use it: it moves the clock
                source, sources = e.source, p.sources
                if ts <= sources.get(source, _NEVER):
                    continue
                if len(sources) == 1 and source in sources and ts >= p.newest:
                    # What ``_tick`` does when the store's one source moves on, inline.
                    p.newest = sources[source] = ts
                    p.held_by = source
                    if ts - lateness <= p.watermark:
                        continue
                    p.watermark = ts - lateness
                elif not self._tick(p, source, ts):
                    continue
                if p.buffer or (p.timers and p.timers[0][0] <= p.watermark):
                    self._drain(p, out)
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

    def drop(self, store: str) -> None:
        """Forget a store (it moved to another worker): its partition, ids and set members."""
        p = self.partitions.pop(store, None)
        self._seen.pop(store, None)
        if p is not None:
            for name, members in p.sets.items():
                self.context.live_set(name).difference_update(members)

    def reload(self, rules: RuleSet) -> None:
        """Swap the rule set in one step; state of rules that are gone is dropped.

        The new rule set's context takes the sets' members the stores hold, so its rules
        see the staff on shift as the old ones did.
        """
        if rules.context is not self.context:
            rules.context.bind(self)  # refused if another engine runs that rule set
            for p in self.partitions.values():
                for name, members in p.sets.items():
                    rules.context.live_set(name).update(members)
            self.context.release()
            self.context = rules.context
        for p in self.partitions.values():
            for rule_id in [r for r in p.state if r not in rules.by_id]:
                del p.state[rule_id]
        self.rules = rules

    # -- inside ------------------------------------------------------------------------------

    def _partition(self, store: str) -> Partition:
        p = self.partitions.get(store)
        if p is None:
            p = self.partitions[store] = Partition(store)
            self._seen[store] = [set(), set(), float("-inf")]
        return p

    def _accept(self, p: Partition, e: ev.Event, ts: float, out: Output) -> None:
        """An event some rule listens to, not late: drop a repeat, order it, apply it."""
        # Ids are kept as 64-bit digests (not the strings, which would outlive their events),
        # in two generations: each is remembered for one to two horizons. A digest, not
        # ``hash()``: that is salted per process, and a snapshot restored in another process
        # would not know a redelivered event. All of the id is digested: ids from outside
        # may be any string.
        recent = self._seen[p.store]
        h = _from_bytes(blake2b(e.id.encode(), digest_size=8).digest())
        if h in recent[0] or h in recent[1]:
            return
        if ts >= recent[2]:
            recent[0], recent[1], recent[2] = set(), recent[0], ts + DEDUP_HORIZON_S
        recent[0].add(h)
        source, sources = e.source, p.sources
        if ts > sources.get(source, _NEVER):
            if len(sources) == 1 and source in sources and ts >= p.newest:
                # What ``_tick`` does when the store's one source moves on, inline.
                p.newest = sources[source] = ts
                p.held_by = source
                if ts - self.lateness_s > p.watermark:
                    p.watermark = ts - self.lateness_s
            else:
                self._tick(p, source, ts)
        if not p.buffer and ts <= p.watermark:
            # The common case with no lateness: nothing to reorder.
            if p.timers and p.timers[0][0] <= ts:
                self._timers(p, ts, out)
            try:
                # ``_apply(p, e, ts, out, 0)``, inline: this runs for every event a rule uses.
                self.context.partition = p
                rs = self.rules
                kind = e.type
                if rs.set_dispatch.get(kind, rs.sets):
                    self._sets(p, e, kind, out)
                run = rs.dispatch.get(kind)
                if run is not None:
                    emitter = self._emitter
                    pending = emitter.events
                    mark = len(pending)
                    run(p, e, ts, emitter, out.errors)
                    if len(pending) > mark:
                        self._feed(p, pending, mark, out, 0)
            except Exception as exc:
                raise EngineFailure(e, exc) from exc
            if len(p.timers) > p.compact_at:
                self._compact(p)
            return
        p.arrivals += 1  # events of one instant keep the order they came in: the source's
        heapq.heappush(p.buffer, (ts, p.arrivals, e))
        self._drain(p, out)

    def _tick(self, p: Partition, source: str, ts: float) -> bool:
        """``source`` sent an event at ``ts``, newer than its last: move the store's clocks.
        True if the watermark moved.

        The watermark follows the earliest active source (``held_by``). Only that source
        moving on, a new source behind it, or the store's newest leaving it behind by more
        than the idle bound can change it: most events cost a comparison and a dict update.
        Sources idle past the bound are forgotten, and at most ``max_sources`` are kept.
        """
        if ts > p.newest:
            p.newest = ts
        floor = p.newest - self.source_idle_s
        if ts < floor:
            return False  # an idle source: it holds nothing back
        sources = p.sources
        if len(sources) == 1 and source in sources:
            # The store's one source moves on (the common case): it is the earliest, as the
            # search below would find.
            sources[source] = ts
            p.held_by = source
            mark = ts - self.lateness_s
            if mark > p.watermark:
                p.watermark = mark
                return True
            return False
        known = source in sources
        sources[source] = ts
        if not known and len(sources) > self.max_sources:
            self._crowded(p, source, floor)
        held = sources.get(p.held_by)
        if held is not None and source != p.held_by and held >= floor:
            if ts >= held:
                return False  # the earliest is where it was
            p.held_by = source  # a new source, behind the others
        else:
            earliest, by = float("inf"), ""
            for s, t in list(sources.items()):
                if t < floor:
                    del sources[s]
                elif t < earliest or (t == earliest and s < by):
                    earliest, by = t, s
            p.held_by = by
        mark = sources[p.held_by] - self.lateness_s
        if mark > p.watermark:
            p.watermark = mark
            return True
        return False

    def _crowded(self, p: Partition, new: str, floor: float) -> None:
        """More sources than the bound: forget the idle ones, or else the one furthest
        behind but ``new`` (it holds the store back the most; its next events may be late)."""
        sources = p.sources
        for s in [s for s, t in sources.items() if t < floor]:
            del sources[s]
        if len(sources) > self.max_sources:
            del sources[min((t, s) for s, t in sources.items() if s != new)[1]]

    def _drain(self, p: Partition, out: Output) -> None:
        buffer = p.buffer
        while buffer and buffer[0][0] <= p.watermark:
            ts, _, e = heapq.heappop(buffer)
            self._timers(p, ts, out)
            try:
                self._apply(p, e, ts, out, 0)
            except Exception as exc:
                raise EngineFailure(e, exc) from exc
        self._timers(p, p.watermark, out)

    def _compact(self, p: Partition) -> None:
        """Sweep out timers whose state is gone (a visit that ended before its ``within``).

        Timers are not removed when their state is (that would cost a heap search); they
        wait to fire and be ignored. Sweeping when the heap has doubled keeps memory in
        proportion to the live state, at an amortised constant cost per timer.
        """
        by_id = self.rules.by_id
        alive = [
            t
            for t in p.timers
            if (r := by_id.get(t[2])) is not None and r.timer_alive(p, t[3], t[1])
        ]
        heapq.heapify(alive)
        p.timers = alive
        p.compact_at = max(1024, 2 * len(alive))

    def _timers(self, p: Partition, upto: float, out: Output) -> None:
        timers = p.timers
        by_id = self.rules.by_id
        while timers and timers[0][0] <= upto:
            at, token, rule_id, key = heapq.heappop(timers)
            rule = by_id.get(rule_id)
            if rule is None:
                continue  # the rule was removed by a reload
            pending = self._emitter.events
            mark = len(pending)
            self.context.partition = p
            try:
                rule.on_timer(p, key, token, at, self._emitter)
            except Exception as exc:  # one rule's failure must not stop the store
                out.errors.append(RuleError(rule_id, f"timer@{at}", _message(exc)))
            if len(pending) > mark:
                self._feed(p, pending, mark, out, 0)

    def _apply(self, p: Partition, e: ev.Event, ts: float, out: Output, depth: int) -> None:
        self.context.partition = p
        rs = self.rules
        kind = e.type
        if rs.set_dispatch.get(kind, rs.sets):
            self._sets(p, e, kind, out)
        run = rs.dispatch.get(kind)
        if run is None:
            return
        emitter = self._emitter
        pending = emitter.events
        mark = len(pending)
        run(p, e, ts, emitter, out.errors)
        if len(pending) > mark:
            self._feed(p, pending, mark, out, depth)

    def _sets(self, p: Partition, e: ev.Event, kind: str, out: Output) -> None:
        """Keep the named sets (the staff on shift) that ``e`` may change."""
        rs = self.rules
        for s in rs.set_dispatch.get(kind, rs.sets):
            try:
                if s.add(e):
                    member = s.member(e)
                    p.sets.setdefault(s.name, set()).add(member)
                    self.context.live_set(s.name).add(member)
                elif s.remove is not None and s.remove(e):
                    member = s.member(e)
                    p.sets.get(s.name, set()).discard(member)
                    self.context.live_set(s.name).discard(member)
            except Exception as exc:  # a set's condition fails as a rule's does
                out.errors.append(RuleError(f"set {s.name}", e.id, _message(exc)))

    def _feed(
        self, p: Partition, pending: list[ev.Event], mark: int, out: Output, depth: int
    ) -> None:
        """Take what the rules emitted past ``mark`` (one emitter serves all: no object per
        event), record it, and apply it to the rules in turn."""
        new = pending[mark:]
        del pending[mark:]
        interested = self.rules.interested
        if depth == 0:  # an input event's (or a timer's) own: its derived events start afresh
            self._fanout = MAX_FANOUT
        for d in new:
            out.derived.append(d)
            if d.type not in interested:
                continue  # a heatmap tile, say: nothing listens, nothing to apply
            self._fanout -= 1
            if self._fanout < 0:
                # Within the depth limit a rule fed by its own outputs still grows
                # exponentially: what is past the budget is kept but fed to no rule.
                if self._fanout == -1:
                    out.errors.append(
                        RuleError(
                            d.rule.id,  # type: ignore[attr-defined]
                            d.id,
                            f"more than {MAX_FANOUT} derived events from one event: "
                            "a rule fed by its own outputs? the rest are not applied",
                        )
                    )
            elif depth < MAX_DEPTH:
                at = d.at
                if at is not self._fed_at:  # a rule's outputs of one instant share their time
                    self._fed_at, self._fed_ts = at, at.timestamp()
                self._apply(p, d, self._fed_ts, out, depth + 1)
            else:
                out.errors.append(
                    RuleError(d.rule.id, d.id, "derived events nest too deep: a cycle?")
                )  # type: ignore[attr-defined]


def _dispatcher(kind: str, handlers: tuple[tuple[Any, Any, Any, str], ...]) -> Any:
    """One generated function that runs an event of ``kind`` through its rules, in order:
    each rule's guard, then its ``where``, then its handler, and a rule that fails is
    reported (``RuleError``) and the next one runs. The loop over the handlers did the
    same with a call per condition; here the conditions are inline (``define``)."""
    namespace: dict[str, Any] = {
        "__builtins__": {},
        "Exception": Exception,
        "RuleError": RuleError,
        "message": _message,
    }
    calls: dict[str, Any] = {}
    lines = ["def run(p, e, ts, emitter, errors):"]
    for n, (guard, where, on_event, rule_id) in enumerate(handlers):
        namespace[f"on{n}"], namespace[f"id{n}"] = on_event, rule_id
        lines.append("    try:")
        indent = "        "
        for name, cond in ((f"guard{n}", guard), (f"where{n}", where)):
            if cond is not None:
                namespace[name] = calls[name] = cond
                lines += [f"{indent}ok = {name}(e)", f"{indent}if ok:"]
                indent += "    "
        lines += [
            f"{indent}on{n}(p, e, ts, emitter)",
            "    except Exception as exc:  # one rule's failure must not stop the store",
            f"        errors.append(RuleError(id{n}, e.id, message(exc)))",
        ]
    define("\n".join(lines), calls, namespace, f"<dispatch {kind}>")
    return namespace["run"]


def _either(guards: tuple[Any, ...]) -> Any:
    """Whether any of the guards lets the event through: one generated function, the
    guards inline and asked in order until one does.

    The gate is asked before any rule runs, outside the try that turns a rule's failure
    into a ``RuleError``: a guard that fails lets the event through, and the rule's own
    guard, asked again in the dispatcher, reports the failure under the rule's name."""
    namespace: dict[str, Any] = {"__builtins__": {}, "Exception": Exception}
    calls = {f"guard{i}": g for i, g in enumerate(guards)}
    namespace.update(calls)
    lines = ["def gate(e):", "    try:"]
    for i in range(len(guards)):
        lines += [f"        ok = guard{i}(e)", "        if ok:", "            return True"]
    lines += ["    except Exception:", "        return True", "    return False"]
    define("\n".join(lines), calls, namespace, "<gate>")
    return namespace["gate"]


def _message(exc: Exception) -> str:
    return (
        f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__) else str(exc)
    )
