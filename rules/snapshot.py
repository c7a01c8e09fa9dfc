"""Snapshots of the engine's state: everything it holds, as bytes, and back.

A snapshot is taken together with the last stream sequence the engine applied; after a
crash the engine loads it and replays from there, and derives exactly what an engine that
never stopped would have (ids are deterministic, so nothing is published twice). The state
is plain data (numbers, strings, tuples, sets, small structs, events), written as msgpack
with extension types for what msgpack has no word for. No pickle: a snapshot is data, and
loading one runs no code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from core import events as ev
from rules.engine import Engine
from rules.operators.base import Partition
from rules.operators.count import Hits
from rules.operators.for_ import Held
from rules.operators.sequence import Candidate

VERSION = 1
_TUPLE, _SET, _EVENT, _STRUCT, _DICT = 1, 2, 3, 4, 5
_STRUCTS: dict[str, type[msgspec.Struct]] = {c.__name__: c for c in (Held, Candidate, Hits)}


_SCALARS = {str, int, float}


class SnapshotError(ValueError):
    """A snapshot that cannot be loaded (another version, or damaged)."""


class _Box:
    """A value msgspec would write as a plain array (a tuple, a set), kept apart."""

    __slots__ = ("code", "items")

    def __init__(self, code: int, items: Any) -> None:
        self.code, self.items = code, items


def _plain(obj: Any) -> Any:
    if isinstance(obj, ev.Event):  # boxed too: msgspec would write a struct as a plain map
        return _Box(_EVENT, obj)  # type: ignore[arg-type]
    if isinstance(obj, tuple):
        return _Box(_TUPLE, [_plain(x) for x in obj])
    if isinstance(obj, set | frozenset):
        # Sorted, so that one state has one snapshot. Most sets are of plain strings (the
        # distinct visitors of a heatmap cell, a day long): those sort as they are, 5
        # times faster than each boxed and sorted by repr, measured.
        kinds = set(map(type, obj))
        if len(kinds) == 1 and kinds <= _SCALARS:
            return _Box(_SET, sorted(obj))
        return _Box(_SET, sorted((_plain(x) for x in obj), key=repr))
    if isinstance(obj, dict):  # keys of any kind (tuples, floats), in their order
        return _Box(_DICT, [[_plain(k), _plain(v)] for k, v in obj.items()])
    if isinstance(obj, list):
        return [_plain(x) for x in obj]
    if isinstance(obj, msgspec.Struct):
        fields = [_plain(getattr(obj, f)) for f in obj.__struct_fields__]
        return _Box(_STRUCT, [type(obj).__name__, *fields])
    return obj


_encoder = msgspec.msgpack.Encoder(enc_hook=lambda o: _hook(o))


def _hook(obj: Any) -> msgspec.msgpack.Ext:
    if isinstance(obj, _Box) and obj.code == _EVENT:
        return msgspec.msgpack.Ext(_EVENT, ev.encode(obj.items))  # type: ignore[arg-type]
    if isinstance(obj, _Box):
        return msgspec.msgpack.Ext(obj.code, _encoder.encode(obj.items))
    raise TypeError(f"a snapshot cannot hold a {type(obj).__name__}")


def _ext(code: int, data: memoryview) -> Any:
    if code == _EVENT:
        return ev.decode(bytes(data))
    items = _decoder.decode(data)
    if code == _TUPLE:
        return tuple(items)
    if code == _SET:
        return set(items)
    if code == _DICT:
        return {k: v for k, v in items}
    if code == _STRUCT:
        name, *fields = items
        return _STRUCTS[name](*fields)
    raise SnapshotError(f"unknown extension {code} in a snapshot")


_decoder = msgspec.msgpack.Decoder(ext_hook=_ext)


def snapshot(engine: Engine, stores: Iterable[str] | None = None) -> bytes:
    """The engine's state for ``stores`` (all by default): partitions and remembered ids.

    One store's snapshot is what a service checkpoints: stores move between workers alone.
    """
    chosen = engine.partitions.keys() if stores is None else set(stores) & engine.partitions.keys()
    partitions = {
        store: {f: getattr(p, f) for f in p.__dataclass_fields__}
        for store, p in engine.partitions.items()
        if store in chosen
    }
    body = {
        "version": VERSION,
        "packs": engine.rules.packs,
        "partitions": partitions,
        "seen": {store: engine._seen[store] for store in partitions},
    }
    return _encoder.encode(_plain(body))


def restore(engine: Engine, data: bytes) -> list[str]:
    """Load a snapshot's stores into an engine (of the same rule set, or a newer one) that
    holds none of them yet; returns the stores. A refused snapshot loads nothing."""
    try:
        body = _decoder.decode(data)
        if not isinstance(body, dict) or body.get("version") != VERSION:
            version = body.get("version") if isinstance(body, dict) else None
            raise SnapshotError(f"snapshot version {version!r}; this engine reads {VERSION}")
        partitions = {store: Partition(**fields) for store, fields in body["partitions"].items()}
        seen = {store: body["seen"][store] for store in partitions}
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"damaged snapshot: {type(exc).__name__}: {exc}") from None
    held = sorted(partitions.keys() & engine.partitions.keys())
    if held:
        raise SnapshotError(f"the engine holds state for {', '.join(held)} already")
    for store, p in partitions.items():
        engine.partitions[store] = p
        engine._seen[store] = seen[store]
        _own_sets(engine, p)
        for name, members in p.sets.items():
            engine.context.live_set(name).update(members)
        for rule in engine.rules.rules:
            rule.restored(p)
    return list(partitions)


def _own_sets(engine: Engine, p: Partition) -> None:
    """A snapshot from before sets belonged to their pack keeps one set per name
    (``staff``): each pack's set of that name starts from its members."""
    for name in [n for n in p.sets if "." not in n]:
        members = p.sets.pop(name)
        for s in engine.rules.sets:
            if s.name.rpartition(".")[2] == name:
                p.sets.setdefault(s.name, set()).update(members)
