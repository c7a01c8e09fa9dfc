"""Hypothesis strategies for every event type, read off the schemas themselves.

Walking msgspec's type info keeps the strategies true to the constraints (lengths,
bounds, patterns) as the schemas grow, with no second copy of them here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from core import events as ev

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
# In the past: the log refuses events dated beyond its clock skew into the future.
_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
)


def _ranged_int(t: mi.IntType) -> st.SearchStrategy[int]:
    lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**40))
    hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**40)
    return st.integers(lo, hi)


def _ranged_float(t: mi.FloatType) -> st.SearchStrategy[float]:
    lo = t.ge if t.ge is not None else t.gt
    hi = t.le if t.le is not None else t.lt
    return st.floats(
        min_value=lo if lo is not None else -1e9,
        max_value=hi if hi is not None else 1e9,
        exclude_min=t.gt is not None,
        exclude_max=t.lt is not None,
        allow_nan=False,
    )


def _string(t: mi.StrType) -> st.SearchStrategy[str]:
    if t.pattern:
        return st.from_regex(t.pattern, fullmatch=True)
    return st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
        min_size=t.min_length or 0,
        max_size=min(t.max_length or 20, 20),
    )


def for_type(t: mi.Type) -> st.SearchStrategy[Any]:
    match t:
        case mi.StructType():
            fields = {f.name: for_type(f.type) for f in t.fields if f.name != "v"}
            return st.builds(t.cls, **fields)
        case mi.StrType():
            return _string(t)
        case mi.IntType():
            return _ranged_int(t)
        case mi.FloatType():
            return _ranged_float(t)
        case mi.BoolType():
            return st.booleans()
        case mi.DateTimeType():
            return _TIMES
        case mi.NoneType():
            return st.none()
        case mi.UnionType():
            return st.one_of(*(for_type(a) for a in t.types))
        case mi.LiteralType():
            return st.sampled_from(t.values)
        case mi.VarTupleType() | mi.ListType():
            lo = t.min_length or 0
            return st.lists(for_type(t.item_type), min_size=lo, max_size=lo + 4).map(tuple)
        case mi.DictType():
            return st.dictionaries(for_type(t.key_type), for_type(t.value_type), max_size=3)
    raise TypeError(f"no strategy for {t!r}")


def events_of(cls: type[ev.Event]) -> st.SearchStrategy[ev.Event]:
    return for_type(mi.type_info(cls))


any_event: st.SearchStrategy[ev.Event] = st.one_of(*(events_of(c) for c in ev.EVENT_TYPES.values()))


def as_dict(event: ev.Event) -> dict[str, Any]:
    return msgspec.json.decode(ev.encode(event))
