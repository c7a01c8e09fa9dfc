"""What each event field says about people: its data class, declared for every field of
every event type (a test walks the types and fails on a field left out).

- ``operational``: about the store: where, when, what, how many, which camera.
- ``pseudonymous``: an id that stands for one visit (a shopper, a group, a cart, a
  track): it links nothing beyond that visit and names no one.
- ``personal``: names a person or links them beyond one visit: an enrolled member's id,
  a staff badge, the operator who acted, free text a person typed, an alert's labels
  (a watch-list alert names the member for the person who confirms it).
- ``biometric-derived``: computed from a face or a body (a template, an embedding,
  landmarks, a crop). No event type has such a field, and none may: the adapters keep
  them in memory and the enrolment store, never in the log.

``FROM_BIOMETRICS`` names the event types that a biometric process produces (a face
match): their fields are not biometric, but reading them is using biometrics, which
the rule privacy check (``rules/privacy.py``) allows only for the purposes that may.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

import msgspec.inspect as mi

from core import events as ev


class DataClass(StrEnum):
    OPERATIONAL = "operational"
    PSEUDONYMOUS = "pseudonymous"
    PERSONAL = "personal"
    BIOMETRIC = "biometric-derived"


_O, _S, _P = DataClass.OPERATIONAL, DataClass.PSEUDONYMOUS, DataClass.PERSONAL

ENVELOPE: dict[str, DataClass] = {
    "id": _O,
    "store": _O,
    "at": _O,
    "source": _O,  # a camera, a sensor, a rule's engine, the API
    "subject": _S,  # the visit (or group, cart, alert key) the event is about
    "v": _O,
    "rule.id": _O,
    "rule.version": _O,
    "caused_by[]": _O,
}
_ALERT = {
    "data.alert": _O,
    "data.key": _S,
    "data.severity": _O,
    "data.summary": _P,
    "data.labels": _P,
}
_ACTION = {"data.alert": _O, "data.by": _P, "data.reason": _P}
_ITEM = {"data.sku": _O, "data.shelf": _O, "data.qty": _O}
_CART = {"data.sku": _O, "data.qty": _O, "data.cart": _S}
_WINDOW = {"data.window_start": _O, "data.window_end": _O}

FIELDS: dict[str, dict[str, DataClass]] = {
    "shopper.entered": {"data.line": _O, "data.group": _S},
    "shopper.exited": {"data.line": _O},
    "passerby.seen": {"data.line": _O},
    "zone.entered": {"data.zone": _O},
    "zone.exited": {"data.zone": _O, "data.dwell_s": _O},
    "item.picked": _ITEM,
    "item.put_back": _ITEM,
    "shelf.unresolved": {
        "data.sensor": _O,
        "data.shelf": _O,
        "data.sku": _O,
        "data.grams": _O,
        "data.picked": _O,
        "data.reason": _O,
        "data.confidence": _O,
        "data.candidates[].subject": _S,
        "data.candidates[].distance_m": _O,
        "data.items[].sku": _O,
        "data.items[].qty": _O,
    },
    "position.samples": {
        "data.frame": _O,
        "data.samples[].track": _S,
        "data.samples[].x": _O,
        "data.samples[].y": _O,
    },
    # The member's pseudonymous id links their visits, and the enrolment store links it to
    # them: personal. The confidence is a number, not the face.
    "face.matched": {"data.member": _P, "data.watchlist": _P, "data.confidence": _O},
    "staff.session_started": {"data.badge": _P},
    "staff.session_ended": {"data.badge": _P},
    "store.heartbeat": {},
    "cart.item_added": _CART,
    "cart.item_removed": _CART,
    "receipt.issued": {
        "data.cart": _S,
        "data.lines[].sku": _O,
        "data.lines[].name": _O,
        "data.lines[].qty": _O,
        "data.lines[].unit_cents": _O,
        "data.lines[].amount_cents": _O,
        "data.lines[].age_restricted": _O,
        "data.lines[].review": _O,
        "data.total_cents": _O,
        "data.currency": _O,
        "data.age_check": _O,
        "data.needs_review": _O,
    },
    "alert.raised": _ALERT,
    "alert.resolved": _ALERT,
    "metric": {"data.name": _O, "data.value": _O, "data.labels": _O, **_WINDOW},
    "heatmap.tile": {
        "data.cell_x": _O,
        "data.cell_y": _O,
        "data.size": _O,
        "data.visits": _O,
        "data.dwell_s": _O,
        **_WINDOW,
    },
    "heatmap.tiles": {
        "data.size": _O,
        "data.cells[].cell_x": _O,
        "data.cells[].cell_y": _O,
        "data.cells[].visits": _O,
        "data.cells[].dwell_s": _O,
        **_WINDOW,
    },
    "alert.acknowledged": _ACTION,
    "alert.confirmed": _ACTION,
    "alert.dismissed": _ACTION,
    "alert.closed": _ACTION,
    "receipt.corrected": {
        "data.receipt": _O,
        "data.by": _P,
        "data.reason": _P,
        "data.reviewed": _O,
        "data.adjustments[].sku": _O,
        "data.adjustments[].qty": _O,
        "data.adjustments[].amount_cents": _O,
        "data.adjustments[].name": _O,
    },
}

FROM_BIOMETRICS = frozenset({"face.matched"})


def paths(event_type: str) -> list[str]:
    """Every field of an event type, as ``data.lines[].sku``: what must be declared."""
    return list(_walk(mi.type_info(ev.EVENT_TYPES[event_type]), ""))


def _walk(t: mi.Type, prefix: str) -> Iterator[str]:
    if isinstance(t, mi.StructType):
        for f in t.fields:
            yield from _walk(f.type, f"{prefix}{f.name}.")
    elif isinstance(t, mi.VarTupleType | mi.ListType):
        yield from _walk(t.item_type, prefix[:-1] + "[].")
    elif isinstance(t, mi.UnionType) and len(kinds := [
        x for x in t.types if not isinstance(x, mi.NoneType)
    ]) == 1:  # fmt: skip
        yield from _walk(kinds[0], prefix)
    else:
        yield prefix[:-1]


def data_class(event_type: str, path: str) -> DataClass:
    """The class of one field (``data.member``; a part of a field, ``data.labels.zone``,
    is its field's). A field nobody declared is a ``KeyError``: the test prevents it."""
    declared = FIELDS[event_type]
    while path not in declared and path not in ENVELOPE and "." in path:
        path = path.rsplit(".", 1)[0]
    return declared[path] if path in declared else ENVELOPE[path]


def personal_fields(event_type: str) -> list[str]:
    """The personal fields of an event type (the envelope holds none)."""
    return [p for p, c in FIELDS[event_type].items() if c is DataClass.PERSONAL]
