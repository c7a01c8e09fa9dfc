"""Every field of every event type has a data class, and none is biometric-derived; the
envelope is the same for all (core/privacy.py)."""

from __future__ import annotations

import pytest

from core import events as ev
from core.privacy import ENVELOPE, FIELDS, DataClass, data_class, paths, personal_fields


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_every_field_of_every_event_type_is_declared_and_none_is_biometric(
    event_type: str,
) -> None:
    declared = {**ENVELOPE, **FIELDS[event_type]}
    fields = paths(event_type)
    assert sorted(set(fields) - set(declared)) == [], "a field without a data class"
    stale = set(FIELDS[event_type]) - set(fields)
    assert sorted(stale) == [], "a declared field the event type no longer has"
    assert DataClass.BIOMETRIC not in {declared[f] for f in fields}


def test_every_event_type_is_declared_and_nothing_else() -> None:
    assert set(FIELDS) == set(ev.EVENT_TYPES)


def test_a_new_field_without_a_class_is_caught() -> None:
    """What the declaration test walks: a nested field of a list of structs is its own."""
    assert "data.lines[].sku" in paths("receipt.issued")
    assert "data.samples[].track" in paths("position.samples")
    assert data_class("metric", "data.labels.zone") is DataClass.OPERATIONAL
    assert data_class("alert.raised", "data.labels.member") is DataClass.PERSONAL
    assert data_class("face.matched", "subject") is DataClass.PSEUDONYMOUS
    with pytest.raises(KeyError):
        data_class("face.matched", "data.template")


def test_the_personal_fields_are_the_ones_that_name_or_link_a_person() -> None:
    personal = {t: personal_fields(t) for t in FIELDS if personal_fields(t)}
    assert personal["face.matched"] == ["data.member", "data.watchlist"]
    assert personal["staff.session_started"] == ["data.badge"]
    assert personal["receipt.corrected"] == ["data.by", "data.reason"]
    assert "receipt.issued" not in personal and "item.picked" not in personal
