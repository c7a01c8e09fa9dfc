"""Snapshots of the engine's state: everything it holds, as bytes, and back.

A snapshot is taken together with the last stream sequence the engine applied; after a
crash the engine loads it and replays from there, and derives exactly what an engine that
never stopped would have (ids are deterministic, so nothing is published twice). No
pickle: a snapshot is data (msgpack), and loading one runs no code.

Each part is written by the code that owns it, by name:

- the engine's own fields of each store (its clock, buffer, timers, throttles, set
  members: ``Partition``), field by field, with extension types for what msgpack has no
  word for (tuples, sets, events);
- each rule's state by its operator, as the operator's ``state_type`` (a msgspec struct,
  encoded by field name), with the operator's kind, its ``state_version`` and the rule's
  version (its pack's) when it was saved.

Restoring checks each rule's state against the running rule of that id:

- same kind and state version: the state is read (a field added to a state struct with a
  default, or one removed, still reads by name). If the pack's version changed, the
  state is kept, as a reload keeps it, and a log line says so;
- the rule is gone, or its pack's version changed and its state no longer fits (another
  kind, another state version, other values): the state is dropped, with a warning, and
  the rule starts afresh, as a new rule does;
- the pack's version is the same but the state does not fit (only an engine upgrade that
  changed an operator's state does that): the snapshot is refused, naming the rule and
  the versions. An operator that changes its state incompatibly bumps ``state_version``;
  prefer adding fields with defaults, which needs no bump.

Version 1 snapshots (before this encoding) are still read, once, after the upgrade.

``tests/fixtures/snapshot/`` holds a golden snapshot of today's packs on a short store
day: an accidental change of the encoding fails ``tests/test_snapshot.py``. After a
deliberate one, regenerate it with ``python -m tests.golden_snapshot``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import fields as dataclass_fields
from typing import Any

import msgspec

from core import events as ev
from rules.engine import Engine
from rules.operators.base import Partition, Rule
from rules.operators.count import Hits
from rules.operators.for_ import Held
from rules.operators.sequence import Candidate

VERSION = 2
_TUPLE, _SET, _EVENT, _DICT = 1, 2, 3, 5  # extension codes of the engine's own fields
_SCALARS = {str, int, float}
_PARTITION_FIELDS = frozenset(f.name for f in dataclass_fields(Partition)) - {"state"}

log = logging.getLogger("aisle.engine")


class SnapshotError(ValueError):
    """A snapshot that cannot be loaded (another version, or damaged)."""


class RuleState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One rule's state: written by its operator, with what it takes to read it back."""

    kind: str  # the operator: "tally", "for", ...
    version: int  # the operator's state version
    rule_version: str  # the rule's version (its pack's) when it was saved
    state: msgspec.Raw  # the operator's ``state_type``, encoded by field name


class Seen(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The digests of the event ids a store remembers, to drop a repeat (sorted)."""

    now: list[int]
    before: list[int]
    rotate_at: float


class StoreState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    partition: msgspec.Raw  # the engine's own fields of the store, by name
    seen: Seen
    rules: dict[str, RuleState]


class Snapshot(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    version: int
    packs: dict[str, str]  # pack name -> version, of the engine that saved it
    stores: dict[str, StoreState]


class _Head(msgspec.Struct):
    version: Any = None


# -- the engine's own fields: plain data, tuples and sets kept apart --------------------------


class _Box:
    """A value msgspec would write as a plain array (a tuple, a set), kept apart."""

    __slots__ = ("code", "items")

    def __init__(self, code: int, items: Any) -> None:
        self.code, self.items = code, items


def _plain(obj: Any) -> Any:
    if isinstance(obj, ev.Event):  # boxed too: msgspec would write a struct as a plain map
        return _Box(_EVENT, obj)
    if isinstance(obj, tuple):
        return _Box(_TUPLE, [_plain(x) for x in obj])
    if isinstance(obj, set | frozenset):
        # Sorted, so that one state has one snapshot.
        kinds = set(map(type, obj))
        if len(kinds) == 1 and kinds <= _SCALARS:
            return _Box(_SET, sorted(obj))
        return _Box(_SET, sorted((_plain(x) for x in obj), key=repr))
    if isinstance(obj, dict):  # keys of any kind (tuples, floats), in their order
        return _Box(_DICT, [[_plain(k), _plain(v)] for k, v in obj.items()])
    if isinstance(obj, list):
        return [_plain(x) for x in obj]
    if isinstance(obj, msgspec.Struct):
        raise TypeError(f"the engine's fields hold no structs (a {type(obj).__name__})")
    return obj


def _hook(obj: Any) -> msgspec.msgpack.Ext:
    if isinstance(obj, _Box) and obj.code == _EVENT:
        return msgspec.msgpack.Ext(_EVENT, ev.encode(obj.items))
    if isinstance(obj, _Box):
        return msgspec.msgpack.Ext(obj.code, _encoder.encode(obj.items))
    raise TypeError(f"a snapshot cannot hold a {type(obj).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_hook)


def _ext(code: int, data: memoryview) -> Any:
    if code == _EVENT:
        return ev.decode(bytes(data))
    return _unbox(code, _decoder.decode(data))


def _unbox(code: int, items: Any) -> Any:
    if code == _TUPLE:
        return tuple(items)
    if code == _SET:
        return set(items)
    if code == _DICT:
        return {k: v for k, v in items}
    raise SnapshotError(f"unknown extension {code} in a snapshot")


_decoder = msgspec.msgpack.Decoder(ext_hook=_ext)

# -- the snapshot ---------------------------------------------------------------------------

_outer = msgspec.msgpack.Encoder()
_head = msgspec.msgpack.Decoder(_Head, ext_hook=lambda code, data: None)
_body = msgspec.msgpack.Decoder(Snapshot)
_state_decoders: dict[type, msgspec.msgpack.Decoder[Any]] = {}


def snapshot(engine: Engine, stores: Iterable[str] | None = None) -> bytes:
    """The engine's state for ``stores`` (all by default): partitions and remembered ids.

    One store's snapshot is what a service checkpoints: stores move between workers alone.
    """
    chosen = engine.partitions.keys() if stores is None else set(stores) & engine.partitions.keys()
    by_id = engine.rules.by_id
    saved: dict[str, StoreState] = {}
    for store, p in engine.partitions.items():
        if store not in chosen:
            continue
        own = {f: getattr(p, f) for f in p.__dataclass_fields__ if f != "state"}
        now, before, rotate_at = engine._seen[store]
        rules = {
            rule_id: _save(by_id[rule_id], state)
            for rule_id, state in p.state.items()
            if rule_id in by_id and by_id[rule_id].state_type is not None
        }
        saved[store] = StoreState(
            partition=msgspec.Raw(_encoder.encode(_plain(own))),
            seen=Seen(now=sorted(now), before=sorted(before), rotate_at=rotate_at),
            rules=rules,
        )
    return _outer.encode(Snapshot(version=VERSION, packs=dict(engine.rules.packs), stores=saved))


def _save(rule: Rule, state: Any) -> RuleState:
    return RuleState(
        kind=rule.kind,
        version=rule.state_version,
        rule_version=rule.ref.version,
        state=msgspec.Raw(_outer.encode(rule.save_state(state))),
    )


def restore(engine: Engine, data: bytes) -> list[str]:
    """Load a snapshot's stores into an engine (of the same rule set, or a newer one) that
    holds none of them yet; returns the stores. A refused snapshot loads nothing."""
    v1: Any = None
    try:
        try:
            version = _head.decode(data).version
        except msgspec.ValidationError:  # version 1 wrote its body as a boxed map
            v1 = _v1_decoder.decode(data)
            version = v1.get("version") if isinstance(v1, dict) else None
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"damaged snapshot: {type(exc).__name__}: {exc}") from None
    if version not in (1, VERSION) or (version == 1) != (v1 is not None):
        raise SnapshotError(f"snapshot version {version!r}; this engine reads 1 and {VERSION}")
    try:
        if v1 is not None:
            loaded = _restore_v1(engine, v1)
        else:
            body = _body.decode(data)
            loaded = {store: _load_store(engine, store, s) for store, s in body.stores.items()}
            if body.packs != engine.rules.packs:
                log.info(
                    "snapshot taken with other packs",
                    extra={"saved": body.packs, "running": dict(engine.rules.packs)},
                )
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError) as exc:
        raise SnapshotError(f"damaged snapshot: {type(exc).__name__}: {exc}") from None
    held = sorted(loaded.keys() & engine.partitions.keys())
    if held:
        raise SnapshotError(f"the engine holds state for {', '.join(held)} already")
    for store, (p, seen) in loaded.items():
        engine.partitions[store] = p
        engine._seen[store] = seen
        _own_sets(engine, p)
        for name, members in p.sets.items():
            engine.context.live_set(name).update(members)
    return list(loaded)


def _own_sets(engine: Engine, p: Partition) -> None:
    """A snapshot from before sets belonged to their pack keeps one set per name
    (``staff``): each pack's set of that name starts from its members."""
    for name in [n for n in p.sets if "." not in n]:
        members = p.sets.pop(name)
        for s in engine.rules.sets:
            if s.name.rpartition(".")[2] == name:
                p.sets.setdefault(s.name, set()).update(members)


def _load_store(engine: Engine, store: str, saved: StoreState) -> tuple[Partition, list[Any]]:
    own = _decoder.decode(saved.partition)
    if not isinstance(own, dict):
        raise SnapshotError(f"damaged snapshot: the fields of {store} are not a map")
    unknown = sorted(own.keys() - _PARTITION_FIELDS)
    if unknown:
        raise SnapshotError(f"snapshot of {store}: fields this engine does not know: {unknown}")
    states: dict[str, Any] = {}
    for rule_id, rs in saved.rules.items():
        state = _load_rule(engine.rules.by_id.get(rule_id), rule_id, store, rs)
        if state is not None:
            states[rule_id] = state
    p = Partition(**{**own, "store": store}, state=states)
    seen = [set(saved.seen.now), set(saved.seen.before), saved.seen.rotate_at]
    return p, seen


def _load_rule(rule: Rule | None, rule_id: str, store: str, rs: RuleState) -> Any:
    """The rule's state, or None if it is dropped (the rule is gone, or changed with its
    pack); ``SnapshotError`` if it cannot be read though the rule's pack is the same."""
    where = {"store": store, "rule": rule_id}
    if rule is None:
        log.info("rule state dropped: no such rule runs", extra=where)
        return None
    changed = rs.rule_version != rule.ref.version
    saved = f"{rs.kind} state version {rs.version}, rule version {rs.rule_version}"
    running = f"{rule.kind} state version {rule.state_version}, rule version {rule.ref.version}"
    problem = None
    if rs.kind != rule.kind or rs.version != rule.state_version or rule.state_type is None:
        problem = "another operator or state version"
    else:
        decoder = _state_decoders.get(rule.state_type)
        if decoder is None:
            decoder = _state_decoders[rule.state_type] = msgspec.msgpack.Decoder(rule.state_type)
        try:
            state = rule.load_state(decoder.decode(rs.state))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            problem = str(exc)
    if problem is None:
        if changed:
            log.info(
                "rule state kept across a new rule version",
                extra={**where, "saved": rs.rule_version, "running": rule.ref.version},
            )
        return state
    if changed:
        log.warning(
            "rule state dropped: the new rule version cannot read it",
            extra={**where, "saved": saved, "running": running, "reason": problem},
        )
        return None
    raise SnapshotError(
        f"snapshot of {store}: the state of rule {rule_id!r} is {saved}; this engine runs "
        f"{running} and cannot read it ({problem})"
    )


# -- version 1: read once, after the upgrade that brought version 2 ---------------------------

_V1_STRUCT = 4  # version 1 wrote Held, Candidate and Hits as positional boxes
_V1_STRUCTS: dict[str, type[msgspec.Struct]] = {c.__name__: c for c in (Held, Candidate, Hits)}


def _v1_ext(code: int, data: memoryview) -> Any:
    if code == _EVENT:
        return ev.decode(bytes(data))
    items = _v1_decoder.decode(data)
    if code != _V1_STRUCT:
        return _unbox(code, items)
    name, *values = items
    cls = _V1_STRUCTS.get(name)
    if cls is None:
        raise SnapshotError(f"unknown state {name!r} in a version 1 snapshot")
    return cls(*values)  # the one place positions are trusted: version 1 is frozen


_v1_decoder = msgspec.msgpack.Decoder(ext_hook=_v1_ext)


def _restore_v1(engine: Engine, body: dict[str, Any]) -> dict[str, tuple[Partition, list[Any]]]:
    """A version 1 snapshot's stores, as version 2 would hold them.

    Its ids seen were Python hashes, salted per process: useless here, so the store starts
    with none remembered. Its buffer was in (time, id) order: it keeps that order, counted
    as arrivals. The state of rules that are gone is dropped; the rest is kept, as a
    reload keeps it (version 1 recorded no kinds or state versions to check).
    """
    loaded = {}
    for store, fields in body["partitions"].items():
        buffer = sorted(fields.pop("buffer", []), key=lambda b: (b[0], b[1]))
        fields["buffer"] = [(ts, n, e) for n, (ts, _, e) in enumerate(buffer, 1)]
        fields["arrivals"] = len(buffer)
        state = fields.get("state", {})
        for rule_id in [r for r in state if r not in engine.rules.by_id]:
            log.info(
                "rule state dropped: no such rule runs", extra={"store": store, "rule": rule_id}
            )
            del state[rule_id]
        for rule in engine.rules.rules:  # a cumulative aggregate's windows share values
            st = state.get(rule.id)
            if getattr(rule, "cumulative", False) and st:
                running = st.get("running", {})
                for groups in st.get("windows", {}).values():
                    for gkey, g in groups.items():
                        if gkey in running:
                            g[0] = running[gkey]
        log.warning(
            "a version 1 snapshot: the event ids it remembered are not kept",
            extra={"store": store},
        )
        loaded[store] = (Partition(**fields), [set(), set(), float("-inf")])
    return loaded
