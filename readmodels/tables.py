"""The read models: SQL tables the projections write and the API reads.

Every row is a function of the log: keys are event ids or what the events name (a store
and a subject, a window and a cell), never a counter the database hands out, so a
rebuild, a crash and resume, SQLite and PostgreSQL all give the same rows. Times are UTC
(``UTCDateTime``); money is integer minor units. Nothing here holds an image, a face or
an embedding: only what the events carry (pseudonymous per-visit subjects).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A moment in UTC, read back with its time zone on every database (SQLite keeps none)."""

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a time without a time zone: the read models keep UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _at(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _seq(**kw: Any) -> Any:
    """A stream sequence: JetStream's are 64-bit."""
    return Field(sa_type=sa.BigInteger, **kw)


def _json(**kw: Any) -> Any:
    return Field(sa_type=sa.JSON, **kw)


EVENT_ID = 64  # the envelope's bound on an id
NAME = 128


# -- the projections' own bookkeeping ------------------------------------------------------


class Position(SQLModel, table=True):
    """How far a projection has read the log: committed with the rows it wrote, in one
    transaction, so a crash loses both or neither."""

    __tablename__ = "projection_position"
    projection: str = Field(primary_key=True, max_length=32)
    scope: str = Field(primary_key=True, max_length=64)  # a store, or "*" for every store
    stream: str = Field(max_length=64)
    seq: int = _seq(default=0)  # the last stream sequence considered (applied, or not its to apply)
    events: int = _seq(default=0)  # events applied so far
    updated_at: datetime | None = _at(default=None)  # wall clock: left out of comparisons


class Applied(SQLModel, table=True):
    """Events a projection has applied, by id and type: a copy stored again later in the
    log (a resend past the server's duplicate window) is applied once."""

    __tablename__ = "projection_applied"
    projection: str = Field(primary_key=True, max_length=32)
    event_id: str = Field(primary_key=True, max_length=EVENT_ID)
    type: str = Field(primary_key=True, max_length=32)


class Rejection(SQLModel, table=True):
    """A message a projection could not apply, and why. ``deadletter``: it is this
    projection's to keep on the dead-letter subject (a derived or operator event; the
    engine keeps raw ones); ``published`` once it is there."""

    __tablename__ = "projection_rejection"
    projection: str = Field(primary_key=True, max_length=32)
    seq: int = _seq(primary_key=True)
    store: str = Field(max_length=64)
    subject: str = Field(max_length=256)
    event_id: str | None = Field(default=None, max_length=EVENT_ID)
    field: str = Field(max_length=256)
    reason: str
    deadletter: bool = True
    published: bool = False


# -- visits --------------------------------------------------------------------------------


class Visit(SQLModel, table=True):
    """One shopper's visit: the subject is per visit, so it is the key."""

    __tablename__ = "visit"
    store: str = Field(primary_key=True, max_length=64)
    subject: str = Field(primary_key=True, max_length=NAME)
    group: str | None = Field(default=None, max_length=NAME)
    entered_at: datetime | None = _at(default=None, index=True)
    entry_line: str | None = Field(default=None, max_length=NAME)
    exited_at: datetime | None = _at(default=None)
    exit_line: str | None = Field(default=None, max_length=NAME)
    dwell_s: float | None = None  # from entry to exit, once both are seen
    staff: bool = False  # a staff session: not a shopper


class FaceMatch(SQLModel, table=True):
    """An enrolled member recognised at the entrance: which visit was theirs. Personal
    (core/privacy.py): no API route shows it; a subject access export reads it."""

    __tablename__ = "face_match"
    id: str = Field(primary_key=True, max_length=EVENT_ID)  # the face.matched event's
    seq: int = _seq()
    store: str = Field(max_length=64)
    subject: str = Field(max_length=NAME)  # the visit
    member: str = Field(max_length=NAME, index=True)
    watchlist: bool = False
    confidence: float
    source: str = Field(max_length=NAME)  # the camera
    at: datetime = _at()


# -- carts and receipts --------------------------------------------------------------------


class ShelfEvent(SQLModel, table=True):
    """A pick or a put-back as the camera or shelf sensor reported it: the evidence a
    receipt line rests on."""

    __tablename__ = "shelf_event"
    id: str = Field(primary_key=True, max_length=EVENT_ID)
    seq: int = _seq()  # where the log holds it
    store: str = Field(max_length=64)
    type: str = Field(max_length=32)  # item.picked or item.put_back
    subject: str = Field(max_length=NAME)
    sku: str = Field(max_length=64)
    shelf: str = Field(max_length=NAME)
    qty: int
    source: str = Field(max_length=NAME)  # the camera or sensor
    at: datetime = _at()


class Cart(SQLModel, table=True):
    """A cart from its first change to its receipt (or to leaving unpaid)."""

    __tablename__ = "cart"
    id: str = Field(primary_key=True, max_length=EVENT_ID)  # the id of its first change
    store: str = Field(max_length=64, index=True)
    cart: str = Field(max_length=NAME, index=True)  # the shopper or group, as the rule names it
    opened_at: datetime = _at()
    updated_at: datetime = _at()
    closed_at: datetime | None = _at(default=None)
    status: str = Field(default="open", max_length=16, index=True)  # open, paid, exit, timeout
    items: int = 0  # what it holds now
    receipt_id: str | None = Field(default=None, max_length=EVENT_ID)
    closed_by_event: str | None = Field(default=None, max_length=EVENT_ID)


class CartChange(SQLModel, table=True):
    """An item into or out of a cart, as the carts rule derived it from a pick or a
    put-back."""

    __tablename__ = "cart_change"
    id: str = Field(primary_key=True, max_length=EVENT_ID)
    seq: int = _seq()
    cart_id: str = Field(max_length=EVENT_ID, index=True)  # Cart.id
    store: str = Field(max_length=64)
    subject: str = Field(max_length=NAME)  # who picked or put back (a group's member)
    sku: str = Field(max_length=64)
    qty: int  # positive: added; negative: removed
    at: datetime = _at()
    rule_id: str = Field(max_length=NAME)
    rule_version: str = Field(max_length=NAME)
    cause_id: str = Field(max_length=EVENT_ID)  # the pick or put-back


class Receipt(SQLModel, table=True):
    __tablename__ = "receipt"
    id: str = Field(primary_key=True, max_length=EVENT_ID)
    seq: int = _seq()
    store: str = Field(max_length=64, index=True)
    subject: str = Field(max_length=NAME, index=True)
    cart: str = Field(max_length=NAME)
    cart_id: str | None = Field(default=None, max_length=EVENT_ID)  # Cart.id
    issued_at: datetime = _at(index=True)
    currency: str = Field(max_length=3)
    total_cents: int
    age_check: bool = False
    needs_review: bool = False
    rule_id: str = Field(max_length=NAME)
    rule_version: str = Field(max_length=NAME)
    close_event_id: str = Field(max_length=EVENT_ID)  # what closed the cart (the gate)
    corrected_total_cents: int  # the total after corrections (= total_cents without)
    corrections: int = 0
    reviewed: bool = False  # a person checked it


class ReceiptLine(SQLModel, table=True):
    __tablename__ = "receipt_line"
    receipt_id: str = Field(primary_key=True, max_length=EVENT_ID)
    sku: str = Field(primary_key=True, max_length=64)
    position: int  # order on the receipt (corrections add lines after)
    name: str = Field(max_length=NAME)
    qty: int  # as issued (0 for a line a correction added)
    unit_cents: int
    amount_cents: int
    age_restricted: bool = False
    review: bool = False
    corrected_qty: int  # after corrections
    corrected_amount_cents: int


class LineEvidence(SQLModel, table=True):
    """Why a receipt line holds what it holds: each cart change of its SKU, and the pick or
    put-back it came from, with the camera or sensor that saw it and the rule that
    derived it. ``cause_*`` are None where the log no longer holds the cause."""

    __tablename__ = "line_evidence"
    receipt_id: str = Field(primary_key=True, max_length=EVENT_ID)
    change_id: str = Field(primary_key=True, max_length=EVENT_ID)  # CartChange.id
    sku: str = Field(max_length=64)
    position: int  # order among the receipt's causes
    qty: int  # +added / -removed
    change_at: datetime = _at()
    subject: str = Field(max_length=NAME)
    rule_id: str = Field(max_length=NAME)
    rule_version: str = Field(max_length=NAME)
    cause_id: str = Field(max_length=EVENT_ID)
    cause_type: str | None = Field(default=None, max_length=32)
    cause_seq: int | None = _seq(default=None)
    source: str | None = Field(default=None, max_length=NAME)  # camera or sensor
    shelf: str | None = Field(default=None, max_length=NAME)
    cause_at: datetime | None = _at(default=None)


class ReceiptCorrection(SQLModel, table=True):
    __tablename__ = "receipt_correction"
    id: str = Field(primary_key=True, max_length=EVENT_ID)
    seq: int = _seq()
    receipt_id: str = Field(max_length=EVENT_ID, index=True)
    store: str = Field(max_length=64)
    at: datetime = _at()
    by: str = Field(max_length=NAME)
    reason: str
    source: str = Field(max_length=NAME)
    reviewed: bool = False
    amount_cents: int  # what it changed the total by (negative: a refund)


class CorrectionAdjustment(SQLModel, table=True):
    __tablename__ = "correction_adjustment"
    correction_id: str = Field(primary_key=True, max_length=EVENT_ID)
    position: int = Field(primary_key=True)
    sku: str = Field(max_length=64)
    qty: int
    amount_cents: int


# -- alerts --------------------------------------------------------------------------------


class Alert(SQLModel, table=True):
    """An alert from raised to resolved, with what people did about it. ``state`` is the
    people's side (raised, acknowledged, confirmed, dismissed, closed); ``resolved_at``
    the rule's (its condition ended)."""

    __tablename__ = "alert"
    id: str = Field(primary_key=True, max_length=EVENT_ID)  # the alert.raised event's
    seq: int = _seq()
    store: str = Field(max_length=64, index=True)
    name: str = Field(max_length=NAME)
    key: str = Field(max_length=NAME)
    subject: str = Field(max_length=NAME)
    severity: str = Field(max_length=16)
    summary: str
    labels: dict[str, str] = _json(default_factory=dict)
    raised_at: datetime = _at(index=True)
    rule_id: str = Field(max_length=NAME)
    rule_version: str = Field(max_length=NAME)
    caused_by: list[str] = _json(default_factory=list)  # the evidence: event ids
    state: str = Field(default="raised", max_length=16, index=True)
    acknowledged_at: datetime | None = _at(default=None)
    acknowledged_by: str | None = Field(default=None, max_length=NAME)
    decided_at: datetime | None = _at(default=None)
    decided_by: str | None = Field(default=None, max_length=NAME)
    decision: str | None = Field(default=None, max_length=16)  # confirmed or dismissed
    decision_reason: str | None = None
    resolved_at: datetime | None = _at(default=None)
    resolved_event_id: str | None = Field(default=None, max_length=EVENT_ID)
    closed_at: datetime | None = _at(default=None)
    closed_by: str | None = Field(default=None, max_length=NAME)
    close_reason: str | None = None

    # A rule's resolve finds its alert by name and key.
    __table_args__ = (sa.Index("ix_alert_store_name_key", "store", "name", "key"),)


class AlertAction(SQLModel, table=True):
    """Every action on an alert, in order: the audit of its life cycle."""

    __tablename__ = "alert_action"
    id: str = Field(primary_key=True, max_length=EVENT_ID)
    seq: int = _seq()
    alert_id: str = Field(max_length=EVENT_ID, index=True)
    store: str = Field(max_length=64)
    action: str = Field(max_length=16)  # acknowledged, confirmed, dismissed, closed
    at: datetime = _at()
    by: str = Field(max_length=NAME)
    reason: str = ""
    source: str = Field(max_length=NAME)


# -- metrics, occupancy, heatmaps ----------------------------------------------------------


class MetricPoint(SQLModel, table=True):
    """One metric event, as derived."""

    __tablename__ = "metric_point"
    id: str = Field(primary_key=True, max_length=EVENT_ID)
    seq: int = _seq()
    store: str = Field(max_length=64)
    name: str = Field(max_length=NAME)
    zone: str = Field(default="", max_length=NAME)  # labels.zone; "" for the store
    value: float
    labels: dict[str, str] = _json(default_factory=dict)
    subject: str = Field(max_length=NAME)
    at: datetime = _at()
    window_start: datetime | None = _at(default=None)
    window_end: datetime | None = _at(default=None)
    hour: datetime = _at()  # the UTC hour it counts in: its window's start, else its time
    rule_id: str = Field(max_length=NAME)
    rule_version: str = Field(max_length=NAME)

    __table_args__ = (sa.Index("ix_metric_point_store_name_hour", "store", "name", "hour"),)


class MetricHour(SQLModel, table=True):
    """A metric per store, zone and UTC hour: count, sum, min, max and the last value
    (a cumulative metric such as occupancy reads its last; a rate its sum over count).
    ``per_visit``: its values are single visits' (a dwell, a wait: points without a
    window), which a viewer may see only summed over enough visits."""

    __tablename__ = "metric_hour"
    store: str = Field(primary_key=True, max_length=64)
    name: str = Field(primary_key=True, max_length=NAME)
    zone: str = Field(primary_key=True, max_length=NAME)
    hour: datetime = _at(primary_key=True)
    count: int = 0
    sum: float = 0.0
    min: float = 0.0
    max: float = 0.0
    last: float = 0.0
    last_at: datetime = _at()
    per_visit: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class Occupancy(SQLModel, table=True):
    """People in the store (zone "") or in a queue zone over time, as the traffic rules
    report them: the value at the end of each window in which it changed."""

    __tablename__ = "occupancy"
    store: str = Field(primary_key=True, max_length=64)
    zone: str = Field(primary_key=True, max_length=NAME)
    at: datetime = _at(primary_key=True)
    value: float


class HeatmapCell(SQLModel, table=True):
    """A floor cell in one window: the 10 s windows, and the day's (``span_s`` says)."""

    __tablename__ = "heatmap_cell"
    event_id: str = Field(primary_key=True, max_length=EVENT_ID)
    cell_x: int = Field(primary_key=True)
    cell_y: int = Field(primary_key=True)
    store: str = Field(max_length=64)
    size: float
    window_start: datetime = _at()
    window_end: datetime = _at()
    span_s: float
    visits: int
    dwell_s: float
    rule_id: str = Field(max_length=NAME)

    __table_args__ = (sa.Index("ix_heatmap_cell_store_window", "store", "span_s", "window_start"),)


class HeatmapHour(SQLModel, table=True):
    """The windows shorter than a day summed per UTC hour: dwell adds up exactly; visits
    are per window (a person in a cell for two windows counts twice), so a day's distinct
    visitors come from the day window's cells."""

    __tablename__ = "heatmap_hour"
    store: str = Field(primary_key=True, max_length=64)
    size: float = Field(primary_key=True)
    hour: datetime = _at(primary_key=True)
    cell_x: int = Field(primary_key=True)
    cell_y: int = Field(primary_key=True)
    window_visits: int = 0
    dwell_s: float = 0.0
    windows: int = 0


# -- the API's own: tokens and the audit (not projected from the log) ----------------------


class ApiToken(SQLModel, table=True):
    """An API token: its public id and a keyed hash of its secret, never the secret. Not a
    projection: a rebuild keeps it (``KEPT``)."""

    __tablename__ = "api_token"
    id: str = Field(primary_key=True, max_length=32)  # the token's public part
    secret_hash: str = Field(max_length=128)  # blake2b of the secret, hex
    role: str = Field(max_length=16)  # viewer, operator, admin
    stores: list[str] = _json(default_factory=list)  # empty: every store
    name: str = Field(default="", max_length=NAME)  # who holds it
    created_at: datetime = _at()
    revoked_at: datetime | None = _at(default=None)


class AuditEntry(SQLModel, table=True):
    """Who read or changed what through the API, and when: every receipt read, correction
    and rule deployment. Not a projection: a rebuild keeps it (``KEPT``)."""

    __tablename__ = "api_audit"
    id: str = Field(primary_key=True, max_length=32)  # random: the audit is not of the log
    at: datetime = _at(index=True)
    token_id: str = Field(max_length=32, index=True)
    role: str = Field(max_length=16)
    who: str = Field(max_length=NAME)
    action: str = Field(max_length=32)  # receipt.read, receipt.corrected, rules.deployed, ...
    store: str = Field(default="", max_length=64)
    target: str = Field(default="", max_length=256)  # the receipt id, the rules version
    detail: str = ""


KEPT = frozenset({"api_token", "api_audit"})  # what a rebuild of the projections keeps

READ_MODELS = SQLModel.metadata
