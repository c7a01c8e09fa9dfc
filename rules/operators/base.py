"""What every operator shares: the partition it works in, emitting, timers and throttling."""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from core import events as ev

Cond = Callable[[Any], Any]
KeyFn = Callable[[Any], Any]


# The last (timestamp, datetime) made: one tuple, replaced in one step (no thread can
# read one's timestamp with another's datetime).
_last_utc: list[tuple[float, datetime]] = [(float("nan"), datetime.fromtimestamp(0, UTC))]


def utc(ts: float) -> datetime:
    """The UTC time of ``ts``; a rule's outputs of one instant share one (immutable)."""
    last = _last_utc[0]
    if ts == last[0]:
        return last[1]
    made = datetime.fromtimestamp(ts, UTC)
    _last_utc[0] = (ts, made)
    return made


def thaw(value: Any) -> Any:
    """A key as it was before a snapshot: msgpack has arrays only, so tuple keys come back
    as lists."""
    if isinstance(value, list):
        return tuple(thaw(v) for v in value)
    return value


@dataclass(slots=True)
class Partition:
    """All engine state of one store: its clock, its pending timers and each rule's state.

    Everything here is plain data (dicts, lists, numbers, strings, events), so a snapshot
    of a partition is a snapshot of the store's engine.
    """

    store: str
    watermark: float = float("-inf")
    newest: float = float("-inf")
    buffer: list[tuple[float, int, ev.Event]] = field(default_factory=list)  # (at, arrival, e)
    timers: list[tuple[float, int, str, Any]] = field(default_factory=list)
    token_seq: int = 0
    state: dict[str, dict[Any, Any]] = field(default_factory=dict)
    sets: dict[str, set[str]] = field(default_factory=dict)
    throttled: dict[tuple[str, Any], float] = field(default_factory=dict)  # key -> quiet until
    throttle_sweep_at: int = 1024
    late: int = 0
    # Per source (a camera, a sensor, an adapter): the newest event time it has sent, for
    # the sources still active (within the engine's idle bound of ``newest``); ``held_by``
    # is the one whose time the watermark follows (the earliest of them).
    sources: dict[str, float] = field(default_factory=dict)
    held_by: str = ""
    sweeps: dict[str, int] = field(default_factory=dict)  # rule id -> its sweep timer's token
    compact_at: int = 1024  # timers in the heap before the stale ones are swept out
    arrivals: int = 0  # events buffered so far: orders those of one instant as they came

    def rule_state(self, rule_id: str) -> dict[Any, Any]:
        s = self.state.get(rule_id)
        if s is None:
            s = self.state[rule_id] = {}
        return s

    def forget(self, rule_id: str, key: Any) -> None:
        """Drop a key's state; an emptied table is replaced, as a dict never shrinks."""
        states = self.state[rule_id]
        del states[key]
        if not states:
            self.state[rule_id] = {}

    def schedule(self, at: float, rule_id: str, key: Any, token: int) -> None:
        """A timer fires once the watermark reaches ``at``; ``token`` lets the rule ignore
        a timer it has since superseded (cheaper than removing it from the heap). Tokens
        are unique in the store, so they also order timers due at the same time."""
        heapq.heappush(self.timers, (at, token, rule_id, key))

    def new_token(self) -> int:
        """A timer token no earlier timer of this store holds.

        A rule frees a key's state when it is done with it and may start it afresh later;
        tokens counted per state would start again at 1 and let a stale timer of the old
        state (still in the heap) act on the new one.
        """
        self.token_seq += 1
        return self.token_seq


SWEEP = None  # the timer key of a rule's periodic sweep


class Emitter:
    """Collects derived events; the engine feeds each back to the rules and to the output."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[ev.Event] = []


class _EventField:
    """A field of a scope's event (``data``, ``subject``...), read by a descriptor rather
    than by ``__getattr__``, which Python calls only once the lookup has raised an
    AttributeError (the bulk of a template's cost). A non-data descriptor: an extra of the
    same name, in the instance's ``__dict__``, still comes first; an event without the
    field (``rule`` on a raw event) raises AttributeError, and ``__getattr__`` says so."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, scope: Any, owner: Any = None) -> Any:
        if scope is None:
            return self
        return getattr(scope.__dict__["_event"], self.name)


class Scope:
    """Names an output template sees: the rule's extras, then the event's own fields.

    Extras live in the instance's ``__dict__`` (read at C speed); the envelope's fields
    are read through ``_EventField``, and ``__getattr__`` runs only for the rest (a field
    no event has, which fails).
    """

    def __init__(self, event: ev.Event | None, extra: dict[str, Any]) -> None:
        self.__dict__.update(extra)
        self.__dict__["_event"] = event

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["_event"], name)


for _name in ("type", "id", "store", "at", "source", "subject", "v", "data", "rule", "caused_by"):
    setattr(Scope, _name, _EventField(_name))


def key_text(key: Any) -> str:
    """A key as people read it in alerts and subjects: ``v-1`` or ``v-1/milk``."""
    if isinstance(key, tuple):
        return "/".join(str(k) for k in key)
    return str(key)


@dataclass(slots=True)
class Output:
    """A rule's compiled outputs: alert, metrics, a general event; and its throttle."""

    alert: Any = None  # rules.outputs.AlertOut
    metrics: Sequence[Any] = ()
    emit: Any = None
    throttle_s: float = 0.0
    throttle_by: KeyFn | None = None


class Rule(ABC):
    """A compiled rule. Subclasses implement ``on_event`` and, if they wait, ``on_timer``."""

    kind = "match"

    def __init__(
        self,
        rule_id: str,
        ref: ev.RuleRef,
        types: frozenset[str] | None,
        where: Cond | None,
        output: Output,
    ) -> None:
        self.id = rule_id
        self.ref = ref
        self.types = types
        self.where = where
        self.output = output
        # Per event type, whether any of the rule's conditions can match (set by the loader).
        self.guards: dict[str, Cond] | None = None

    @abstractmethod
    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        """Apply one event the rule's dispatch, guard and ``where`` let through."""

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:  # noqa: B027
        """Only rules that schedule timers receive them; the others have none to handle."""

    def timer_alive(self, p: Partition, key: Any, token: int) -> bool:
        """Whether a timer still matters: its key's state still holds its token."""
        if key is SWEEP:
            return p.sweeps.get(self.id) == token
        st = p.state.get(self.id, {}).get(key)
        return st is not None and getattr(st, "token", None) == token

    # -- checkpointed state: the operator's own, encoded by name (``rules/snapshot.py``)

    state_version: ClassVar[int] = 1  # bumped when a snapshot's state no longer reads
    state_type: ClassVar[type[Any] | None] = None  # None: the rule keeps no state

    def save_state(self, state: Any) -> Any:
        """What a snapshot holds of the rule's state in one store: a ``state_type``.

        Most operators keep one struct per key; their ``state_type`` has a ``keys`` field
        of (key, struct) pairs, which this default writes and ``load_state`` reads.
        """
        assert self.state_type is not None, f"rule {self.id} keeps no state"
        return self.state_type(keys=list(state.items()))

    def load_state(self, saved: Any) -> Any:
        """The rule's state from what ``save_state`` wrote (``ValueError`` if it does not
        fit this rule)."""
        return {thaw(key): st for key, st in saved.keys}

    # -- periodic sweeps: state that only has to be freed, not acted on, needs no timer each

    sweep_every_s = 60.0

    def ensure_sweep(self, p: Partition, now: float) -> None:
        """Have the rule's sweep run once a period while it holds state."""
        if self.id not in p.sweeps:
            token = p.sweeps[self.id] = p.new_token()
            p.schedule(now + self.sweep_every_s, self.id, SWEEP, token)

    def swept(self, p: Partition, token: int, ts: float) -> bool:
        """Run the sweep if this timer is the rule's sweep; True if it was (handled)."""
        if p.sweeps.get(self.id) != token:
            return True  # a stale sweep timer: nothing to do
        del p.sweeps[self.id]
        self.sweep(p, ts)
        if p.state.get(self.id):
            self.ensure_sweep(p, ts)
        return True

    def sweep(self, p: Partition, ts: float) -> None:  # noqa: B027
        """Free the state that has run out by ``ts`` (rules that sweep say how)."""

    # -- emitting ---------------------------------------------------------------------------

    def throttled(self, p: Partition, scope: Any, ts: float) -> bool:
        o = self.output
        if not o.throttle_s:
            return False
        tkey = (self.id, o.throttle_by(scope) if o.throttle_by else None)
        until = p.throttled.get(tkey)
        if until is not None and ts < until:
            return True
        p.throttled[tkey] = ts + o.throttle_s
        if len(p.throttled) > p.throttle_sweep_at:  # forget the keys whose quiet time is over
            p.throttled = {k: t for k, t in p.throttled.items() if t > ts}
            p.throttle_sweep_at = max(1024, 2 * len(p.throttled))
        return False

    def derive(
        self,
        cls: type[ev.Event],
        p: Partition,
        ts: float,
        subject: str,
        data: msgspec.Struct,
        causes: Sequence[str],
        out: Emitter,
        discriminator: object = None,
    ) -> ev.Event:
        event = ev.derive(
            cls,
            rule=self.ref,
            caused_by=causes,
            store=p.store,
            at=utc(ts),
            subject=subject,
            data=data,
            discriminator=discriminator,
        )
        out.events.append(event)
        return event

    def fire(
        self,
        p: Partition,
        scope: Any,
        key: Any,
        ts: float,
        causes: Sequence[str],
        out: Emitter,
        discriminator: object = None,
        items: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Everything a rule emits when it fires: its alert, its metrics, its event (with
        ``items``, the groups an aggregate lists in it).

        Returns False when the throttle held it back.
        """
        o = self.output
        if o.throttle_s and self.throttled(p, scope, ts):
            return False
        if o.alert is not None:
            a = o.alert
            self.derive(
                ev.AlertRaised, p, ts, a.subject(scope, key), a.data(scope, key), causes, out
            )
        for m in o.metrics:
            data = m.data(scope)
            # One id per output: two metrics of one name are told apart by their place.
            tag = (discriminator, m.name) if m.place is None else (discriminator, m.name, m.place)
            self.derive(ev.Metric, p, ts, key_text(key), data, causes, out, tag)
        if o.emit is not None:
            cls, subject, data = o.emit.build(scope, key, items)
            # Apart from the alert's: one firing, several outputs, one id each.
            self.derive(cls, p, ts, subject, data, causes, out, ("emit", discriminator))
        return True

    def resolve(
        self, p: Partition, scope: Any, key: Any, ts: float, causes: Sequence[str], out: Emitter
    ) -> None:
        a = self.output.alert
        if a is not None:
            data = a.data(scope, key)
            self.derive(ev.AlertResolved, p, ts, a.subject(scope, key), data, causes, out)
