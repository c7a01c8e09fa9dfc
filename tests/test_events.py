"""Event schemas: round trips, validation that names the field, deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import events as ev
from tests.strategies import any_event, as_dict, events_of

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def picked(**kw: object) -> ev.ItemPicked:
    fields = {"store": "s1", "at": T0, "source": "cam-1", "subject": "v-1"}
    fields.update(kw)
    return ev.new(ev.ItemPicked, data=ev.ItemData(sku="milk-1l", shelf="A1"), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", list(ev.EVENT_TYPES.values()), ids=list(ev.EVENT_TYPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_every_type(cls: type[ev.Event], data: st.DataObject) -> None:
    event = data.draw(events_of(cls))
    decoded = ev.decode(ev.encode(event))
    assert decoded == event
    assert type(decoded) is cls
    assert ev.encode(decoded) == ev.encode(event)


def test_every_type_has_a_subject_and_a_stream() -> None:
    assert set(ev.EVENT_TYPES) == ev.RAW_TYPES | ev.DERIVED_TYPES | ev.OPERATOR_TYPES
    assert not ev.RAW_TYPES & ev.OPERATOR_TYPES and not ev.DERIVED_TYPES & ev.OPERATOR_TYPES
    assert ev.SAMPLE_TYPES < ev.RAW_TYPES
    assert ev.subject_for("aisle", "s1", "item.picked") == "aisle.s1.item.picked"


def test_wire_format_is_the_envelope() -> None:
    obj = as_dict(picked())
    assert list(obj)[:7] == ["type", "id", "store", "at", "source", "subject", "v"]
    assert obj["at"] == "2026-11-28T09:00:00Z"
    assert obj["data"] == {"sku": "milk-1l", "shelf": "A1", "qty": 1}


def test_ids_are_deterministic_per_occurrence() -> None:
    assert picked().id == picked().id
    assert picked().id != picked(at=T0 + timedelta(milliseconds=1)).id
    assert picked().id != picked(subject="v-2").id
    # The same instant in another zone is the same occurrence.
    assert picked(at=T0.astimezone(timezone(timedelta(hours=2)))).id == picked().id


def test_naive_time_is_refused() -> None:
    with pytest.raises(ev.EventError) as info:
        picked(at=datetime(2026, 1, 1))
    assert info.value.field == "at"


def test_derived_ids_hash_rule_version_and_causes() -> None:
    rule = ev.RuleRef("carts.add", "3")
    data = ev.CartItemData(sku="milk-1l", cart="v-1")

    def make(rule: ev.RuleRef = rule, causes: tuple[str, ...] = ("a", "b")) -> ev.CartItemAdded:
        return ev.derive(
            ev.CartItemAdded,
            rule=rule,
            caused_by=causes,
            store="s1",
            at=T0,
            subject="v-1",
            data=data,
        )

    assert make().id == make().id
    assert make().id != make(rule=ev.RuleRef("carts.add", "4")).id
    assert make().id != make(causes=("b", "a")).id
    assert make().caused_by == ("a", "b")
    assert make().source == "rule:carts.add"
    assert ev.validate(make()) == make()


# -- invalid events -------------------------------------------------------------------------

_WRONG = {str: 12345, int: "seven", float: "far", bool: "yes", tuple: "not-a-list"}


def _leaves(obj: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every field of the event's structs; free-form maps (labels) count as one field."""
    if isinstance(obj, dict) and path[-1:] != ("labels",):
        out = []
        for k, v in obj.items():
            out += _leaves(v, (*path, k)) or [((*path, k), v)]
        return out
    return []


@settings(max_examples=300, deadline=None)
@given(event=any_event, data=st.data())
def test_invalid_events_name_the_field(event: ev.Event, data: st.DataObject) -> None:
    obj = as_dict(event)
    leaves = [(p, v) for p, v in _leaves(obj) if p != ("type",)]
    path, value = data.draw(st.sampled_from(leaves))
    kind = data.draw(st.sampled_from(["wrong_type", "missing", "unknown"]))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if kind == "wrong_type":
        parent[path[-1]] = _WRONG.get(type(value), 12345) if value not in (None, {}) else 12345
        expected = ".".join(path)
    elif kind == "missing":
        required = {f.name for f in msgspec.inspect.type_info(type(event)).fields if f.required}
        if len(path) == 1 and path[0] not in required:
            return  # a field with a default may be left out
        if len(path) > 1:
            data_cls = msgspec.inspect.type_info(type(event.data))
            if path[-1] not in {f.name for f in data_cls.fields if f.required} or len(path) > 2:
                return
        del parent[path[-1]]
        expected = ".".join(path)
    else:
        parent["face_crop"] = "base64..."
        expected = ".".join((*path[:-1], "face_crop"))
    with pytest.raises(ev.EventError) as info:
        ev.decode(msgspec.json.encode(obj))
    assert info.value.field == expected, str(info.value)


@pytest.mark.parametrize(
    ("mutate", "field", "phrase"),
    [
        (lambda o: o["data"].update(qty=0), "data.qty", ">= 1"),
        (lambda o: o.update(store="a.b"), "store", "regex"),
        (lambda o: o.update(type="item.stolen"), "type", "known types"),
        (lambda o: o.update(at="2026-11-28T09:00:00"), "at", "timezone"),
        (lambda o: o["data"].pop("sku"), "data.sku", "missing"),
        (lambda o: o["data"].update(embedding=[0.1, 0.2]), "data.embedding", "unknown field"),
        (lambda o: o.update(v=9), "v", "unsupported schema version"),
    ],
)
def test_invalid_examples(mutate, field: str, phrase: str) -> None:  # type: ignore[no-untyped-def]
    obj = as_dict(picked())
    mutate(obj)
    with pytest.raises(ev.EventError) as info:
        ev.decode(msgspec.json.encode(obj))
    assert info.value.field == field
    assert phrase in info.value.reason


def test_not_json() -> None:
    with pytest.raises(ev.EventError, match="not valid JSON"):
        ev.decode(b"\x00garbage")


def test_face_match_carries_no_image() -> None:
    fields = {f.name for f in msgspec.inspect.type_info(ev.FaceMatchData).fields}
    assert fields == {"member", "watchlist", "confidence"}


class ItemDataV2(ev.Data, frozen=True, kw_only=True):
    sku: ev.Sku
    shelf: ev.Name
    qty: ev.Qty = 1
    hand: str


class ItemPickedV2(ev.RawEvent, frozen=True, kw_only=True, tag="item.picked"):
    data: ItemDataV2
    v: int = 2


def test_upcaster_lifts_an_old_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """A type whose schema moved to v2 still reads its v1 events from the log."""

    def v1_to_v2(obj: dict) -> dict:  # type: ignore[type-arg]
        obj["data"]["hand"] = "unknown"
        return obj

    monkeypatch.setitem(ev.EVENT_TYPES, "item.picked", ItemPickedV2)
    monkeypatch.setitem(ev._VERSIONS, ItemPickedV2, 2)
    monkeypatch.setitem(ev._UPCASTERS, ("item.picked", 1), v1_to_v2)
    old = ev.encode(picked())
    lifted = ev._upcast(old)
    assert isinstance(lifted, ItemPickedV2)
    assert lifted.v == 2
    assert lifted.data.hand == "unknown"


@pytest.mark.parametrize(
    "sku", ["cola\u200b-500ml", "cola-500ml\u200d", "\ufeffcola", "cola\x00", "cola\t1", "co\x85la"]
)
def test_a_sku_with_control_or_zero_width_characters_is_refused(sku: str) -> None:
    obj = as_dict(picked())
    obj["data"]["sku"] = sku
    with pytest.raises(ev.EventError) as info:
        ev.decode(msgspec.json.encode(obj))
    assert info.value.field == "data.sku"


def test_a_sku_in_another_script_is_still_a_sku() -> None:
    obj = as_dict(picked())
    obj["data"]["sku"] = "café-crème-200g"
    assert ev.decode(msgspec.json.encode(obj)).data.sku == "café-crème-200g"  # type: ignore[union-attr]


def frame(n: int) -> ev.PositionSamples:
    samples = tuple(ev.PositionSample(track=f"t{i}", x=1.0, y=2.0) for i in range(n))
    return ev.new(
        ev.PositionSamples,
        store="s1",
        at=T0,
        source="cam-1",
        subject="cam-1",
        data=ev.PositionData(frame=1, samples=samples),
    )


def test_a_frame_of_thirty_thousand_samples_is_refused_on_its_samples() -> None:
    assert ev.validate(frame(ev.MAX_SAMPLES)).data.samples  # type: ignore[union-attr]
    with pytest.raises(ev.EventError) as info:
        ev.validate(frame(30_000))
    assert info.value.field == "data.samples" and str(ev.MAX_SAMPLES) in info.value.reason


def test_a_payload_must_name_its_subjects_type_and_store() -> None:
    e = picked()
    ev.check_subject(e, "aisle.s1.item.picked")
    with pytest.raises(ev.EventError) as info:
        ev.check_subject(e, "aisle.s1.item.put_back")
    assert info.value.field == "type" and "'item.picked'" in info.value.reason
    with pytest.raises(ev.EventError) as info:
        ev.check_subject(e, "aisle.s2.item.picked")
    assert info.value.field == "store"
    assert "'s1'" in info.value.reason and "'s2'" in info.value.reason


def test_an_event_beyond_the_allowed_clock_skew_is_refused_on_its_time() -> None:
    now = T0.timestamp()
    ev.check_time(picked(at=T0 + timedelta(seconds=299)), now, 300)
    ev.check_time(picked(at=T0 - timedelta(days=400)), now, 300)  # the past is lateness's job
    with pytest.raises(ev.EventError) as info:
        ev.check_time(picked(at=datetime(9999, 1, 1, tzinfo=UTC)), now, 300)
    assert info.value.field == "at" and "in the future" in info.value.reason


def _acknowledged(reason: str) -> bytes:
    data = ev.AlertActionData(alert="a" * 32, by="ann", reason=reason)
    event = ev.new(ev.AlertAcknowledged, store="s1", at=T0, source="api", subject="v-1", data=data)
    return ev.encode(event)


def test_an_operators_reason_may_hold_lines_but_no_invisible_characters() -> None:
    assert ev.decode(_acknowledged("seen\non camera 2")).data.reason == "seen\non camera 2"
    with pytest.raises(ev.EventError) as info:
        ev.decode(_acknowledged("fine\u200b"))
    assert info.value.field == "data.reason"
    with pytest.raises(ev.EventError) as info:
        ev.decode(_acknowledged("x" * 1001))
    assert info.value.field == "data.reason"


def test_a_correction_must_say_why_and_who() -> None:
    data = ev.ReceiptCorrectionData(receipt="r" * 32, by="ann", reason="")
    event = ev.new(ev.ReceiptCorrected, store="s1", at=T0, source="api", subject="v-1", data=data)
    with pytest.raises(ev.EventError) as info:
        ev.validate(event)
    assert info.value.field == "data.reason"
    obj = as_dict(msgspec.structs.replace(event, data=msgspec.structs.replace(data, reason="x")))
    del obj["data"]["by"]
    with pytest.raises(ev.EventError) as info:
        ev.decode(msgspec.json.encode(obj))
    assert (info.value.field, info.value.reason) == ("data.by", "required field is missing")
