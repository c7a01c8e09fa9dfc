"""The events of aisle: one frozen, typed schema per event type, and their wire format.

Every event is a msgspec ``Struct`` tagged by its ``type``; the wire format is JSON with
the envelope fields first. Decoding validates the whole event in one pass (types,
constraints, unknown fields refused) so an adapter cannot smuggle extra data, such as an
image or an embedding, into the log.

Schema evolution (see ``docs/events.md``): a field may be added with a default without a
version change; anything else (rename, removal, a new meaning) bumps the type's ``v`` and
registers an upcaster that turns the old form into the new one, so old events in the log
still decode.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, TypeVar, Union

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "DerivedEvent",
    "Event",
    "EventError",
    "OperatorEvent",
    "RawEvent",
    "RuleRef",
    "check_subject",
    "check_time",
    "decode",
    "derive",
    "encode",
    "event_id",
    "new",
    "register_upcaster",
    "subject_fault",
    "subject_for",
    "validate",
]

STORE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
StoreId = Annotated[str, Meta(pattern=STORE_PATTERN)]
Name = Annotated[str, Meta(min_length=1, max_length=128)]
# No control characters (C0, DEL, C1) and no invisible format characters (zero-width
# spaces and joiners, direction marks, word joiners, BOM): two SKUs that print alike
# must be the same SKU, or a receipt line cannot be checked against the shelf.
_INVISIBLE = r"\x00-\x1f\x7f-\x9f\xad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff"
SKU_PATTERN = f"^[^{_INVISIBLE}]{{1,64}}$"
Sku = Annotated[str, Meta(min_length=1, max_length=64, pattern=SKU_PATTERN)]
# People one camera frame may hold: a crowded store floor in one view is a few dozen;
# the bound keeps what one event can make the rules derive below the log's payload limit.
MAX_SAMPLES = 500
Qty = Annotated[int, Meta(ge=1, le=1000)]
Cents = Annotated[int, Meta(ge=0)]
Confidence = Annotated[float, Meta(ge=0.0, le=1.0)]
Metres = Annotated[float, Meta(ge=-1e5, le=1e5)]
EventTime = Annotated[datetime, Meta(tz=True)]
Severity = Literal["info", "warning", "critical"]
EventId = Annotated[str, Meta(min_length=1, max_length=64)]
# What a person writes (why an alert was dismissed, why a receipt was corrected): lines
# and tabs, but no other control or invisible characters, so it prints as it reads.
_UNSEEN_TEXT = _INVISIBLE.replace(r"\x00-\x1f", r"\x00-\x08\x0b-\x1f")
Text = Annotated[str, Meta(max_length=1000, pattern=f"^[^{_UNSEEN_TEXT}]*$")]
SomeText = Annotated[str, Meta(min_length=1, max_length=1000, pattern=f"^[^{_UNSEEN_TEXT}]+$")]
SignedCents = Annotated[int, Meta(ge=-(10**9), le=10**9)]


class EventError(ValueError):
    """An event broke its schema; ``field`` is the dotted path of the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


# -- the envelope -------------------------------------------------------------------------


class Event(Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    """The envelope every event shares. ``subject`` is a pseudonymous per-visit id."""

    id: Annotated[str, Meta(min_length=1, max_length=64)]
    store: StoreId
    at: EventTime
    source: Name
    subject: Name
    v: int = 1

    derived: ClassVar[bool] = False
    operator: ClassVar[bool] = False

    @property
    def type(self) -> str:
        return self.__struct_config__.tag  # type: ignore[return-value]


class RawEvent(Event, frozen=True, kw_only=True):
    """An observation from an adapter or the simulator."""


class RuleRef(Struct, frozen=True, forbid_unknown_fields=True):
    id: Name
    version: Name


class DerivedEvent(Event, frozen=True, kw_only=True):
    """An event a rule derived; ``caused_by`` lists the ids of the events that produced it."""

    rule: RuleRef
    caused_by: Annotated[tuple[str, ...], Meta(min_length=1)]

    derived: ClassVar[bool] = True


class OperatorEvent(Event, frozen=True, kw_only=True):
    """What a person did about a derived event, through the API (acknowledged an alert,
    corrected a receipt): neither observed nor derived, so neither an adapter nor the
    engine may publish it, and the engine never reads it. ``data.by`` names the person;
    ``source`` the program that published it; ``subject`` is the subject of the alert or
    receipt acted on."""

    operator: ClassVar[bool] = True


class Data(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


# -- raw event types ----------------------------------------------------------------------


class EntryData(Data, frozen=True, kw_only=True):
    line: Name
    group: Name | None = None  # shoppers who share one cart carry the same group id


class ShopperEntered(RawEvent, frozen=True, kw_only=True, tag="shopper.entered"):
    data: EntryData


class ExitData(Data, frozen=True, kw_only=True):
    line: Name


class ShopperExited(RawEvent, frozen=True, kw_only=True, tag="shopper.exited"):
    data: ExitData


class PasserbyData(Data, frozen=True, kw_only=True):
    line: Name


class PasserbySeen(RawEvent, frozen=True, kw_only=True, tag="passerby.seen"):
    data: PasserbyData


class ZoneData(Data, frozen=True, kw_only=True):
    zone: Name


class ZoneEntered(RawEvent, frozen=True, kw_only=True, tag="zone.entered"):
    data: ZoneData


class ZoneExitData(ZoneData, frozen=True, kw_only=True, omit_defaults=True):
    """A zone left. ``dwell_s``, how long the visit lasted, is optional: an exit without it
    encodes (and hashes to an id) exactly as before the field existed."""

    dwell_s: Annotated[float, Meta(ge=0, le=1e7)] | None = None


class ZoneExited(RawEvent, frozen=True, kw_only=True, tag="zone.exited"):
    data: ZoneExitData


class ItemData(Data, frozen=True, kw_only=True):
    sku: Sku
    shelf: Name
    qty: Qty = 1


class ItemPicked(RawEvent, frozen=True, kw_only=True, tag="item.picked"):
    data: ItemData


class ItemPutBack(RawEvent, frozen=True, kw_only=True, tag="item.put_back"):
    data: ItemData


class ShelfCandidate(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A shopper who was at the shelf when its load changed, and how near they came."""

    subject: Name
    distance_m: Annotated[float, Meta(ge=0, le=1e5)]


class ShelfItem(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a change could be: ``qty`` units of ``sku``."""

    sku: Sku
    qty: Annotated[int, Meta(ge=0, le=1000)]


# Candidates an unresolved change names: the few nearest are what a person checks.
MAX_CANDIDATES = 8


class ShelfUnresolvedData(Data, frozen=True, kw_only=True):
    """A weighed slot's change the shelf adapter will not turn into a pick or a put-back
    by itself (``adapters/shelf.py``): it is no whole number of units, two SKUs fit it,
    or who made it is not sure. Nothing is charged for it; a person decides."""

    sensor: Name
    shelf: Name
    sku: Sku  # the slot's own SKU
    grams: Annotated[float, Meta(ge=-1e6, le=1e6)]  # new load less old: a pick is negative
    picked: bool  # the load fell (something left the shelf)
    reason: SomeText
    confidence: Confidence = 0.0  # of the nearest candidate being the one
    candidates: Annotated[tuple[ShelfCandidate, ...], Meta(max_length=MAX_CANDIDATES)] = ()
    items: Annotated[tuple[ShelfItem, ...], Meta(max_length=MAX_CANDIDATES)] = ()


class ShelfUnresolved(RawEvent, frozen=True, kw_only=True, tag="shelf.unresolved"):
    """``subject``: the nearest candidate, else the sensor."""

    data: ShelfUnresolvedData


class PositionSample(Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One tracked person on the floor, in metres; encoded as ``[track, x, y]``."""

    track: Name
    x: Metres
    y: Metres


class PositionData(Data, frozen=True, kw_only=True):
    frame: Annotated[int, Meta(ge=0)]
    samples: Annotated[tuple[PositionSample, ...], Meta(max_length=MAX_SAMPLES)]


class PositionSamples(RawEvent, frozen=True, kw_only=True, tag="position.samples"):
    """Every person one camera saw in one frame; ``subject`` is the camera id."""

    data: PositionData


class FaceMatchData(Data, frozen=True, kw_only=True):
    """Only the enrolled member's pseudonymous id: never an image or an embedding."""

    member: Name
    watchlist: bool = False
    confidence: Confidence


class FaceMatched(RawEvent, frozen=True, kw_only=True, tag="face.matched"):
    data: FaceMatchData


class StaffData(Data, frozen=True, kw_only=True):
    badge: Name


class StaffSessionStarted(RawEvent, frozen=True, kw_only=True, tag="staff.session_started"):
    data: StaffData


class StaffSessionEnded(RawEvent, frozen=True, kw_only=True, tag="staff.session_ended"):
    data: StaffData


class HeartbeatData(Data, frozen=True, kw_only=True):
    pass


class StoreHeartbeat(RawEvent, frozen=True, kw_only=True, tag="store.heartbeat"):
    """Moves a quiet store's watermark forward; ``subject`` is the emitting process."""

    data: HeartbeatData = HeartbeatData()


# -- derived event types ------------------------------------------------------------------


class CartItemData(Data, frozen=True, kw_only=True):
    sku: Sku
    qty: Qty = 1
    cart: Name  # the shopper or group the cart belongs to


class CartItemAdded(DerivedEvent, frozen=True, kw_only=True, tag="cart.item_added"):
    data: CartItemData


class CartItemRemoved(DerivedEvent, frozen=True, kw_only=True, tag="cart.item_removed"):
    data: CartItemData


class ReceiptLine(Data, frozen=True, kw_only=True):
    sku: Sku
    name: Name
    qty: Qty
    unit_cents: Cents
    amount_cents: Cents
    age_restricted: bool = False
    review: bool = False  # not in the catalog: priced 0 until a person checks it


class ReceiptData(Data, frozen=True, kw_only=True):
    cart: Name
    lines: tuple[ReceiptLine, ...]
    total_cents: Cents
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
    age_check: bool = False
    needs_review: bool = False  # a line is flagged ``review``: a person checks the receipt


class ReceiptIssued(DerivedEvent, frozen=True, kw_only=True, tag="receipt.issued"):
    data: ReceiptData


Labels = dict[Annotated[str, Meta(min_length=1, max_length=64)], str]


class AlertData(Data, frozen=True, kw_only=True):
    alert: Name
    key: Name  # what the alert is about (a shopper, a zone): raise and resolve pair on it
    severity: Severity = "warning"
    summary: str = ""
    labels: Labels = {}


class AlertRaised(DerivedEvent, frozen=True, kw_only=True, tag="alert.raised"):
    data: AlertData


class AlertResolved(DerivedEvent, frozen=True, kw_only=True, tag="alert.resolved"):
    data: AlertData


class MetricData(Data, frozen=True, kw_only=True):
    name: Name
    value: float
    labels: Labels = {}
    window_start: EventTime | None = None
    window_end: EventTime | None = None


class Metric(DerivedEvent, frozen=True, kw_only=True, tag="metric"):
    data: MetricData


class HeatmapTileData(Data, frozen=True, kw_only=True):
    cell_x: int
    cell_y: int
    size: Annotated[float, Meta(gt=0)]
    window_start: EventTime
    window_end: EventTime
    visits: Annotated[int, Meta(ge=0)]
    dwell_s: Annotated[float, Meta(ge=0)]


class HeatmapTile(DerivedEvent, frozen=True, kw_only=True, tag="heatmap.tile"):
    """One floor cell in one window (a rule that emits per group)."""

    data: HeatmapTileData


class HeatmapCell(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cell_x: int
    cell_y: int
    visits: Annotated[int, Meta(ge=0)]
    dwell_s: Annotated[float, Meta(ge=0)]


class HeatmapTilesData(Data, frozen=True, kw_only=True):
    size: Annotated[float, Meta(gt=0)]
    window_start: EventTime
    window_end: EventTime
    cells: tuple[HeatmapCell, ...]


class HeatmapTiles(DerivedEvent, frozen=True, kw_only=True, tag="heatmap.tiles"):
    """Every occupied cell of one window, in one event: a store's heatmap makes a few dozen
    cells every 10 s, and one message per cell was most of the engine's output."""

    data: HeatmapTilesData


# -- operator event types -----------------------------------------------------------------


class AlertActionData(Data, frozen=True, kw_only=True):
    alert: EventId  # the id of the alert.raised event acted on
    by: Name  # who did it (an operator's name or token id)
    reason: Text = ""


class AlertAcknowledged(OperatorEvent, frozen=True, kw_only=True, tag="alert.acknowledged"):
    """Someone has seen the alert and is looking into it."""

    data: AlertActionData


class AlertConfirmed(OperatorEvent, frozen=True, kw_only=True, tag="alert.confirmed"):
    """A person checked and found the alert right (a watch-list match is that person)."""

    data: AlertActionData


class AlertDismissed(OperatorEvent, frozen=True, kw_only=True, tag="alert.dismissed"):
    """A person checked and found the alert wrong (a false alarm)."""

    data: AlertActionData


class AlertClosed(OperatorEvent, frozen=True, kw_only=True, tag="alert.closed"):
    """A person resolved the alert: nothing more to do. (``alert.resolved`` is the rule's:
    the condition that raised it has ended.)"""

    data: AlertActionData


class Adjustment(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One change to a receipt line: ``qty`` and ``amount_cents`` are added to the line's
    (negative: taken off, a refund); a line the receipt lacks is added. Pricing an
    unknown item is ``qty`` 0 and its amount."""

    sku: Sku
    qty: Annotated[int, Meta(ge=-1000, le=1000)] = 0
    amount_cents: SignedCents = 0
    name: Annotated[str, Meta(max_length=128)] = ""  # for a line the receipt lacks


class ReceiptCorrectionData(Data, frozen=True, kw_only=True):
    receipt: EventId  # the id of the receipt.issued event corrected
    by: Name
    reason: SomeText  # why: a correction always says
    reviewed: bool = False  # a person checked the receipt (it needed review)
    adjustments: Annotated[tuple[Adjustment, ...], Meta(max_length=200)] = ()


class ReceiptCorrected(OperatorEvent, frozen=True, kw_only=True, tag="receipt.corrected"):
    """A correction or a refund: never an edit of the receipt, a new event beside it."""

    data: ReceiptCorrectionData


AnyEvent: TypeAlias = Union[  # noqa: UP007 - msgspec needs a Union object here
    ShopperEntered,
    ShopperExited,
    PasserbySeen,
    ZoneEntered,
    ZoneExited,
    ItemPicked,
    ItemPutBack,
    ShelfUnresolved,
    PositionSamples,
    FaceMatched,
    StaffSessionStarted,
    StaffSessionEnded,
    StoreHeartbeat,
    CartItemAdded,
    CartItemRemoved,
    ReceiptIssued,
    AlertRaised,
    AlertResolved,
    Metric,
    HeatmapTile,
    HeatmapTiles,
    AlertAcknowledged,
    AlertConfirmed,
    AlertDismissed,
    AlertClosed,
    ReceiptCorrected,
]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in AnyEvent.__args__  # type: ignore[attr-defined]
}
for _tag, _cls in EVENT_TYPES.items():
    # A plain class attribute shadows the ``type`` property: read per event on hot paths.
    _cls.type = _tag  # type: ignore[misc,assignment]
RAW_TYPES = frozenset(t for t, c in EVENT_TYPES.items() if not c.derived and not c.operator)
DERIVED_TYPES = frozenset(t for t, c in EVENT_TYPES.items() if c.derived)
OPERATOR_TYPES = frozenset(t for t, c in EVENT_TYPES.items() if c.operator)
# High-volume types that live in their own short-retention stream.
SAMPLE_TYPES = frozenset({"position.samples"})

E = TypeVar("E", bound=Event)

# -- wire format --------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)
_generic = msgspec.json.Decoder(dict[str, Any])
_PATH = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def _error(exc: msgspec.MsgspecError) -> EventError:
    """Turn msgspec's message into a field path and a reason."""
    m = _PATH.match(str(exc))
    reason, path = (m.group(1), m.group(2) or "") if m else (str(exc), "")
    path = path.lstrip(".")
    missing = _MISSING.match(reason)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        reason = "required field is missing"
    elif reason.startswith("Object contains unknown field"):
        field = reason.split("`")[1]
        path = f"{path}.{field}" if path else field
        reason = "unknown field (the schema forbids extra fields)"
    elif path == "type" and reason.startswith("Invalid value"):
        reason = f"{reason}; known types: {', '.join(sorted(EVENT_TYPES))}"
    elif not path and "missing required field `type`" in reason:
        path, reason = "type", "required field is missing"
    return EventError(path or "$", reason)


# Upcasters turn an old version of a type's JSON object into the next version, in place.
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def register_upcaster(
    event_type: str, from_version: int
) -> Callable[
    [Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]
]:
    """Register ``fn(obj) -> obj`` that lifts ``event_type`` from ``from_version`` to the next."""

    def register(
        fn: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def _upcast(payload: bytes | str) -> Event:
    obj = _generic.decode(payload)
    cls = EVENT_TYPES.get(obj.get("type", ""))
    if cls is None:
        raise EventError("type", f"unknown event type {obj.get('type')!r}")
    target = _VERSIONS[cls]
    v = obj.get("v", 1)
    if not isinstance(v, int) or v > target or v < 1:
        raise EventError(
            "v", f"unsupported schema version {v!r} for {obj['type']} (current {target})"
        )
    while v < target:
        step = _UPCASTERS.get((obj["type"], v))
        if step is None:
            raise EventError("v", f"no upcaster from version {v} of {obj['type']}")
        obj = step(obj)
        v += 1
        obj["v"] = v
    try:
        return msgspec.convert(obj, cls)
    except msgspec.ValidationError as exc:
        raise _error(exc) from None


def _default(cls: type[Event], name: str) -> Any:
    return next(f.default for f in msgspec.structs.fields(cls) if f.name == name)


def decode(payload: bytes | str) -> AnyEvent:
    """Decode and validate one event; raises ``EventError`` naming the field at fault."""
    try:
        event = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        # An older schema version may fail the current schema: lift it, if upcasters exist.
        if _UPCASTERS:
            try:
                return _upcast(payload)  # type: ignore[return-value]
            except EventError:
                pass
        raise _error(exc) from None
    except msgspec.DecodeError as exc:
        raise EventError("$", f"not valid JSON: {exc}") from None
    if event.v != _VERSIONS[type(event)]:
        return _upcast(payload)  # type: ignore[return-value]
    return event


def validate(event: Event) -> AnyEvent:
    """Check an event built in code against its schema (constructors do not check)."""
    return decode(encode(event))


_VERSIONS: dict[type[Event], int] = {cls: _default(cls, "v") for cls in EVENT_TYPES.values()}


# -- identity -----------------------------------------------------------------------------


def event_id(*parts: object) -> str:
    """A 128-bit hex id from the canonical msgpack encoding of ``parts``."""
    return hashlib.blake2b(msgspec.msgpack.encode(parts), digest_size=16).hexdigest()


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise EventError("at", "event time must carry a time zone (UTC)")
    return at.astimezone(UTC)


def new(
    cls: type[E],
    *,
    store: str,
    at: datetime,
    source: str,
    subject: str,
    data: Struct | None = None,
) -> E:
    """Build a raw event whose id is a hash of its content.

    The same occurrence, reported again after a retry or a restart, gets the same id, and
    the log keeps one copy.
    """
    at = _utc(at)
    if data is None:
        data = _default(cls, "data")  # types whose data has a default (heartbeat)
    eid = event_id(cls.__struct_config__.tag, store, at.isoformat(), source, subject, data)
    return cls(id=eid, store=store, at=at, source=source, subject=subject, data=data)  # type: ignore[call-arg]


def derive(
    cls: type[E],
    *,
    rule: RuleRef,
    caused_by: Iterable[str],
    store: str,
    at: datetime,
    subject: str,
    data: Struct,
    discriminator: object = None,
) -> E:
    """Build a derived event whose id is a hash of its rule, the rule's version and its causes.

    ``discriminator`` separates several events one rule emits from the same causes.
    """
    causes = tuple(caused_by)
    eid = event_id(rule.id, rule.version, causes, discriminator)
    return cls(  # type: ignore[call-arg]
        id=eid,
        store=store,
        at=_utc(at),
        source=f"rule:{rule.id}",
        subject=subject,
        data=data,
        rule=rule,
        caused_by=causes,
    )


def subject_for(prefix: str, store: str, event_type: str) -> str:
    """The NATS subject of an event: ``<prefix>.<store>.<type>``."""
    return f"{prefix}.{store}.{event_type}"


def check_subject(event: Event, subject: str) -> None:
    """Refuse an event stored on a subject that is not its own (``EventError`` on ``type`` or
    ``store``): the subject is what permissions, consumers and partitions go by, so a
    payload that says otherwise (a derived type on a raw subject, another store's item)
    is forged or stray, never input."""
    _, store, kind = subject.split(".", 2)
    if event.type != kind:
        raise EventError("type", f"{event.type!r} published on the subject of {kind!r}")
    if event.store != store:
        raise EventError("store", f"store {event.store!r} published on store {store!r}'s subject")


class _Declared(Struct):
    type: str = ""
    store: str = ""


_declared = msgspec.json.Decoder(_Declared)


def subject_fault(payload: bytes, subject: str) -> EventError | None:
    """For a payload that broke its schema: the ``type`` or ``store`` it declares, if not
    its subject's. That is the fault to report (a derived type on a raw subject misses
    ``rule`` and ``caused_by``, but what is wrong is where it was published)."""
    try:
        declared = _declared.decode(payload)
    except msgspec.MsgspecError:
        return None
    _, store, kind = subject.split(".", 2)
    if declared.type and declared.type != kind:
        return EventError("type", f"{declared.type!r} published on the subject of {kind!r}")
    if declared.store and declared.store != store:
        return EventError(
            "store", f"store {declared.store!r} published on store {store!r}'s subject"
        )
    return None


def check_time(event: Event, now_s: float, max_future_s: float) -> None:
    """Refuse an event dated more than ``max_future_s`` after ``now_s`` (``EventError`` on
    ``at``): one event from the far future would move its store's clock there and make
    every real event after it late."""
    ahead = event.at.timestamp() - now_s
    if ahead > max_future_s:
        raise EventError(
            "at", f"{ahead:.3f}s in the future (clock skew allowed: {max_future_s:g}s)"
        )
