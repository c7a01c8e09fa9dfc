"""The shape of a rule pack file, as typed structs (the first layer of validation).

A JSON Schema generated from these structs ships as ``rules/pack.schema.json`` so that
editors with a YAML language server validate and complete packs as they are written.
Expressions are strings here; ``rules.loader`` compiles them and checks their meaning.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from core.yamlsource import described

ID = described(
    r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$",
    "a name of lower-case letters, digits and _, starting with a letter (parts may be joined by .)",
)
Id = Annotated[str, Meta(pattern=ID, max_length=80)]
Expression = Annotated[str, Meta(min_length=1)]
Duration = str | int | float
Key = Expression | list[Expression]
Severity = Literal["info", "warning", "critical"]


class _S(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class SetSpec(_S, kw_only=True):
    """A set kept from the events (e.g. the subjects in a staff session)."""

    add: Expression
    remove: Expression | None = None
    member: Expression = "subject"


class Alert(_S, kw_only=True):
    name: Id
    severity: Severity = "warning"
    summary: str = ""  # a template: "{expression}" placeholders
    labels: dict[str, str] = {}
    key: Expression | None = None  # what the alert is about; default: the rule's key


class MetricOut(_S, kw_only=True):
    name: Id
    value: Expression
    labels: dict[str, str] = {}


class EmitGroups(_S, kw_only=True):
    into: str  # the list field of the event's data that holds one item per group
    data: dict[str, Expression]


class EmitOut(_S, kw_only=True):
    type: str
    subject: Expression | None = None
    data: dict[str, Expression] = {}
    groups: EmitGroups | None = None  # aggregate only: one event per window, groups listed


class Throttle(_S, kw_only=True):
    once_within: Duration
    by: Key | None = None


class ForSpec(_S, kw_only=True):
    by: Key
    start: Expression
    until: Expression
    duration: Duration
    keep_firing_for: Duration = 0


class Step(_S, kw_only=True):
    name: Id | None = None
    when: Expression | None = None
    absent: Expression | None = None
    where: Expression | None = None  # checked when the step matches, with earlier steps in scope


class RunningSum(_S, kw_only=True):
    when: Expression  # which events of the key add to it while a candidate runs
    add: Expression  # what each adds (a put-back can take away)


class SequenceSpec(_S, kw_only=True):
    by: Key
    within: Duration
    steps: Annotated[list[Step], Meta(min_length=2)]
    until: Expression | None = None
    # name -> a sum over the key's events while a candidate runs (what a zone visit took)
    sums: dict[Id, RunningSum] = {}


class CountSpec(_S, kw_only=True):
    by: Key
    window: Duration
    threshold: Annotated[int, Meta(ge=1)] | str  # a number, or a parameter's name


class TallyOp(_S, kw_only=True):
    when: Expression
    item: Expression = "data.sku"
    qty: Expression = "data.qty"


class Members(_S, kw_only=True):
    when: Expression
    member: Expression = "subject"
    cart: Expression


class CloseOp(_S, kw_only=True):
    when: Expression


class TallySpec(_S, kw_only=True):
    by: Key = "subject"
    members: Members | None = None
    add: TallyOp
    remove: TallyOp
    close: CloseOp
    abandon: CloseOp | None = None  # the holder left with the cart still open: the rule fires
    # The longest a cart stays open: a visit whose gate and exit were both missed ends here.
    max_visit: Duration = "4h"


class Window(_S, kw_only=True):
    tumbling: Duration | None = None
    sliding: Duration | None = None
    every: Duration | None = None
    local: bool = False  # align to the store's local time (its layout's time zone): a day
    # runs from local midnight


class Compute(_S, kw_only=True):
    fn: Literal[
        "count", "sum", "mean", "min", "max", "distinct", "percentile", "underflow", "dwell"
    ]
    of: Expression | None = None
    where: Expression | None = None
    # Floats: typing hands out an equal Annotated made elsewhere (simulator/noise.py), and
    # the shipped schema must not depend on which module was imported first.
    q: Annotated[float, Meta(ge=0.0, le=100.0)] | None = None
    # A sum that never goes below this (occupancy: nobody is less than nobody); ``underflow``
    # is what such a sum has cut off (default 0).
    floor: float | None = None
    # A dwell's longest gap between one person's samples (a duration, or a parameter).
    cap: Duration | None = None


class AggregateSpec(_S, kw_only=True):
    window: Window
    each: Expression | None = None  # a list in the event to aggregate item by item
    filter: Expression | None = None  # which items of ``each`` count (``where`` is per event)
    as_: Annotated[str, Meta(pattern=r"^[a-z_][a-z0-9_]*$")] = msgspec.field(
        default="item", name="as"
    )
    group_by: dict[str, Expression] = {}
    compute: dict[str, Compute | str]
    cumulative: bool = False
    having: Expression | None = None


class Rule(_S, kw_only=True):
    id: Id
    description: str = ""
    enabled: bool = True
    on: list[str] | None = None
    where: Expression | None = None
    for_: ForSpec | None = msgspec.field(default=None, name="for")
    sequence: SequenceSpec | None = None
    count: CountSpec | None = None
    tally: TallySpec | None = None
    aggregate: AggregateSpec | None = None
    alert: Alert | None = None
    metric: MetricOut | None = None
    metrics: list[MetricOut] | None = None
    emit: EmitOut | None = None
    throttle: Throttle | None = None


class Pack(_S, kw_only=True):
    pack: Id
    version: Annotated[str, Meta(min_length=1, max_length=40)]
    description: str = ""
    # What its rules are for: the privacy check (rules/privacy.py) says what each may read.
    purpose: Literal["billing", "operations", "security", "experience", "marketing"] | None = None
    needs: list[Literal["catalog", "layout", "members", "watchlist"]] = []
    params: dict[str, str | int | float | bool] = {}
    lists: dict[str, list[str | int | float]] = {}
    macros: dict[str, Expression] = {}
    sets: dict[str, SetSpec] = {}
    rules: list[Rule]


OPERATORS = ("for", "sequence", "count", "tally", "aggregate")


def json_schema() -> dict[str, object]:
    """The JSON Schema of a pack file, for editors (``additionalProperties: false``)."""
    schema = msgspec.json.schema(Pack)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aisle rule pack"
    return schema
