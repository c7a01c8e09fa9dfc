"""Malformed rule packs: each gives exactly one error, at the right line and column, saying why.

A rule author fixes a pack from the error alone, so every case here checks the line, the
column, what the column points at in the text, and a phrase of the message. The packs are
inline YAML loaded through ``rules.loader.check_rules`` with the convenience store's layout,
as ``aisle rules check`` loads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import _load_plugins, app
from core.layout import load_layout
from rules.loader import Checked, PackError, check_rules, load_rules
from rules.reference import Reference

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
runner = CliRunner()
_load_plugins()


@cache
def reference() -> Reference:
    return Reference.of(load_layout(LAYOUT))


def check(text: str, name: str = "pack.yaml") -> Checked:
    return check_rules([(name, text)], reference())


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    line: int
    col: int
    phrase: str
    at: str = ""  # the text the column points at

    def __str__(self) -> str:
        return self.id


HEAD = 'pack: p\nversion: "1"\n'  # lines 1 and 2 of most cases
AGG = (  # an aggregate over the samples of a frame, for the emit.groups cases
    HEAD
    + """rules:
  - id: r
    where: type == "position.samples"
    aggregate:
      each: data.samples
      as: s
      window: {tumbling: 10s}
      group_by: {cx: "cell(s.x, 1.0)", cy: "cell(s.y, 1.0)"}
      compute: {n: count()}
"""
)

CASES = [
    # -- layer 1: YAML ----------------------------------------------------------------------
    Case(
        "yaml syntax: a key indented wrongly",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
   alert: {name: a}
""",
        6,
        4,
        "YAML syntax",
        "alert",
    ),
    Case(
        "yaml syntax: a tab for indentation",
        HEAD + "rules:\n\t- id: r\n",
        4,
        1,
        "found character '\\t' that cannot start any token",
        "\t",
    ),
    Case(
        "duplicated YAML key",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    where: type == "item.put_back"
    alert: {name: a}
""",
        6,
        5,
        'duplicate key "where"',
        'where: type == "item.put_back"',
    ),
    # -- layer 2: the pack's structure (rules/pack.py, the JSON Schema) ---------------------
    Case(
        "unknown top-level field",
        HEAD
        + """macro:
  picked: type == "item.picked"
rules: []
""",
        3,
        1,
        "unknown field 'macro'",
        "macro:",
    ),
    Case(
        "unknown field in a rule",
        HEAD
        + """rules:
  - id: r
    wher: type == "item.picked"
    alert: {name: a}
""",
        5,
        5,
        "unknown field 'wher'",
        "wher:",
    ),
    Case(
        "unknown operator",
        HEAD
        + """rules:
  - id: r
    where: type == "item.put_back"
    window_count: {by: subject, window: 2m, threshold: 3}
    alert: {name: a}
""",
        6,
        5,
        "unknown field 'window_count'",
        "window_count:",
    ),
    Case(
        "missing version",
        """pack: p
rules: []
""",
        1,
        1,
        "missing required field 'version'",
    ),
    Case(
        "sequence without within",
        HEAD
        + """rules:
  - id: r
    sequence:
      by: subject
      steps:
        - when: type == "item.picked"
        - when: type == "shopper.exited"
    alert: {name: a}
""",
        5,
        5,
        "'sequence' is missing its required field 'within': every wait is bounded",
        "sequence:",
    ),
    Case(
        "severity that does not exist",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    alert: {name: a, severity: loud}
""",
        6,
        32,
        "'loud' is not allowed here; write one of info, warning, critical",
        "loud",
    ),
    Case(
        "reference data that does not exist",
        HEAD
        + """needs: [catalogue]
rules: []
""",
        3,
        9,
        "'catalogue' is not allowed here; write one of catalog, layout, members, watchlist",
        "catalogue",
    ),
    Case(
        "rule id that is not an id",
        HEAD
        + """rules:
  - id: Left-Without-Paying
    where: type == "shopper.exited"
    alert: {name: a}
""",
        4,
        9,
        "rules[0].id: expected a name of lower-case letters, digits and _",
        "Left-Without-Paying",
    ),
    Case(
        "a number where an expression goes",
        HEAD
        + """rules:
  - id: r
    where: 5
    alert: {name: a}
""",
        5,
        12,
        "rules[0].where: expected str | null, got int",
        "5",
    ),
    Case(
        "threshold below 1",
        HEAD
        + """rules:
  - id: r
    where: type == "item.put_back"
    count: {by: subject, window: 2m, threshold: 0}
    alert: {name: a}
""",
        6,
        49,
        "expected int >= 1",
        "0}",
    ),
    # -- layer 3: expressions ---------------------------------------------------------------
    Case(
        "dunder attribute",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked" and data.__class__ is None
    alert: {name: a}
""",
        5,
        43,
        "'__class__': attributes starting with '_' are not allowed",
        "__class__",
    ),
    Case(
        "lambda",
        HEAD
        + """rules:
  - id: r
    where: "min(data.qty, lambda: 0) > 1"
    alert: {name: a}
""",
        5,
        27,
        "lambda is not allowed",
        "lambda",
    ),
    Case(
        "comprehension",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked" and len([c for c in data.sku]) > 3
    alert: {name: a}
""",
        5,
        42,
        "list comprehensions are not allowed",
        "[c for c",
    ),
    Case(
        "import statement",
        HEAD
        + """rules:
  - id: r
    where: import os
    alert: {name: a}
""",
        5,
        12,
        "imports are not allowed",
        "import os",
    ),
    Case(
        "__import__ call",
        HEAD
        + """rules:
  - id: r
    where: __import__("os") is None
    alert: {name: a}
""",
        5,
        12,
        "unknown function '__import__'; the functions allowed here are: abs,",
        "__import__",
    ),
    Case(
        "method call",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked" and data.sku.startswith("cola")
    alert: {name: a}
""",
        5,
        47,
        "'startswith': methods cannot be called",
        "startswith",
    ),
    Case(
        "assignment instead of comparison",
        HEAD
        + """rules:
  - id: r
    where: type = "item.picked"
    alert: {name: a}
""",
        5,
        12,
        "assignments are not allowed; use '==' to compare values",
        "type =",
    ),
    Case(
        "Python syntax error",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked" and and data.qty > 1
    alert: {name: a}
""",
        5,
        38,
        "syntax error",
        "and data",
    ),
    Case(
        "unknown name, with a suggestion",
        HEAD
        + """rules:
  - id: r
    where: typ == "item.picked"
    alert: {name: a}
""",
        5,
        12,
        "unknown name 'typ' (did you mean 'type'?); the names allowed here are:",
        "typ ",
    ),
    Case(
        "unknown name in a step's where, with a suggestion",
        HEAD
        + """rules:
  - id: r
    sequence:
      by: subject
      within: 5m
      steps:
        - {name: took, when: type == "item.picked"}
        - {name: left, when: type == "shopper.exited", where: elapsd_s > 3}
    alert: {name: a}
""",
        10,
        63,
        "unknown name 'elapsd_s' (did you mean 'elapsed_s'?)",
        "elapsd_s",
    ),
    Case(
        "unknown name in having: only groups, values and the window are in scope",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    aggregate:
      window: {tumbling: 1h}
      group_by: {sku: data.sku}
      compute: {n: count()}
      having: data.qty > 2
""",
        10,
        15,
        "unknown name 'data'; the names allowed here are: key, n, sku, window_end, window_start",
        "data.qty",
    ),
    # -- layer 3: event types and fields ----------------------------------------------------
    Case(
        "unknown event type in type == ...",
        HEAD
        + """rules:
  - id: r
    where: type == "item.pickd"
    alert: {name: a}
""",
        5,
        20,
        "unknown event type 'item.pickd' (did you mean 'item.picked'?)",
        '"item.pickd"',
    ),
    Case(
        "unknown event type in type in [...]",
        HEAD
        + """rules:
  - id: r
    where: type in ["item.picked", "item.put_bak"]
    alert: {name: a}
""",
        5,
        36,
        "unknown event type 'item.put_bak' (did you mean 'item.put_back'?)",
        '"item.put_bak"',
    ),
    Case(
        "unknown event type in on:",
        HEAD
        + """rules:
  - id: r
    on: [item.picked, item.putback]
    alert: {name: a}
""",
        5,
        23,
        "unknown event type 'item.putback' (did you mean 'item.put_back'?)",
        "item.putback",
    ),
    Case(
        "unknown event type in a macro",
        HEAD
        + """macros:
  picked: type == "item.pickd"
rules:
  - id: r
    where: picked
    alert: {name: a}
""",
        4,
        19,
        "unknown event type 'item.pickd'",
        '"item.pickd"',
    ),
    Case(
        "unknown data field for the pinned type",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked" and data.skuu == "cola-500ml"
    alert: {name: a}
""",
        5,
        43,
        "item.picked has no field data.skuu (did you mean 'sku'?); its fields: qty, shelf, sku",
        "skuu",
    ),
    Case(
        "unknown data field in an alert summary template",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    alert:
      name: a
      summary: "Picked {data.skuu} x{data.qty}"
""",
        8,
        30,
        "item.picked has no field data.skuu (did you mean 'sku'?)",
        "skuu",
    ),
    Case(
        "unknown data field in the labels of the second metric",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    metrics:
      - {name: picked_qty, value: data.qty}
      - {name: picked, value: "1", labels: {shelf: "{data.shelff}"}}
""",
        8,
        59,
        "item.picked has no field data.shelff (did you mean 'shelf'?)",
        "shelff",
    ),
    Case(
        "unknown data field in group_by",
        HEAD
        + """rules:
  - id: r
    where: type == "zone.entered"
    aggregate:
      window: {tumbling: 1h}
      group_by: {sku: data.sku}
      compute: {n: count()}
""",
        8,
        28,
        "zone.entered has no field data.sku; its fields: zone",
        "sku}",
    ),
    Case(
        "unknown data field in a tally's item",
        HEAD
        + """needs: [catalog]
rules:
  - id: cart
    tally:
      add: {when: type == "item.picked", item: data.skus}
      remove: {when: type == "item.put_back"}
      close: {when: type == "shopper.exited"}
""",
        7,
        53,
        "item.picked has no field data.skus (did you mean 'sku'?)",
        "skus",
    ),
    Case(
        "throttle.by of an aggregate reads what its outputs see, not the event",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    aggregate:
      window: {tumbling: 1h}
      group_by: {shelf: data.shelf}
      compute: {n: count()}
    throttle: {once_within: 1h, by: subject}
""",
        10,
        37,
        "unknown name 'subject'; the names allowed here are: key, n, shelf, window_end, "
        "window_start",
        "subject}",
    ),
    # -- layer 3: durations, numbers, parameters --------------------------------------------
    Case(
        "a duration that cannot parse",
        HEAD
        + """rules:
  - id: r
    sequence:
      by: subject
      within: 5 minutes
      steps:
        - when: type == "item.picked"
        - when: type == "shopper.exited"
    alert: {name: a}
""",
        7,
        15,
        "'5 minutes' is not a duration: write a number and a unit (ms, s, m, h, d)",
        "5 minutes",
    ),
    Case(
        "a negative duration",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    alert: {name: a}
    throttle: {once_within: -5}
""",
        7,
        29,
        "duration -5 is negative",
        "-5",
    ),
    Case(
        "a duration that is neither a duration nor a parameter",
        HEAD
        + """params:
  queue_wait: 90s
rules:
  - id: r
    for:
      by: subject
      start: type == "zone.entered"
      until: type == "zone.exited"
      duration: queue_wiat
    alert: {name: a}
""",
        11,
        17,
        "'queue_wiat' is neither a duration (such as 90s, 2m, 1h30m) nor a parameter "
        "(did you mean 'queue_wait'?)",
        "queue_wiat",
    ),
    Case(
        "a threshold that is neither a number nor a parameter",
        HEAD
        + """rules:
  - id: r
    where: type == "item.put_back"
    count: {by: subject, window: 2m, threshold: "three"}
    alert: {name: a}
""",
        6,
        49,
        "'three' is neither a number nor a parameter",
        '"three"',
    ),
    Case(
        "a name that is both a list and a parameter",
        HEAD
        + """params: {drinks: 1}
lists: {drinks: [cola-500ml]}
rules: []
""",
        3,
        10,
        "'drinks' is both a list and a parameter",
        "drinks: 1",
    ),
    Case(
        "a macro hiding an envelope name",
        HEAD
        + """macros:
  subject: type == "item.picked"
rules:
  - id: r
    where: subject
    alert: {name: a}
""",
        4,
        3,
        "macro 'subject' hides another name",
        "subject:",
    ),
    # -- layer 3: rules and operators used wrongly ------------------------------------------
    Case(
        "two operators in one rule",
        HEAD
        + """rules:
  - id: r
    where: type == "item.put_back"
    count: {by: subject, window: 2m, threshold: 3}
    for: {by: subject, start: type == "item.put_back", until: type == "item.picked", duration: 1m}
    alert: {name: a}
""",
        7,
        5,
        "rule 'r' has for and count: one operator per rule",
        "for:",
    ),
    Case(
        "duplicated rule ids",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    alert: {name: a}
  - id: r
    where: type == "item.put_back"
    alert: {name: b}
""",
        7,
        9,
        "rule id 'r' is already used by rule 1",
        "r",
    ),
    Case(
        "a match rule that emits nothing",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
""",
        4,
        5,
        "rule 'r' emits nothing: give it an alert, a metric or an emit",
        "id: r",
    ),
    Case(
        "a count rule without where",
        HEAD
        + """rules:
  - id: r
    count: {by: subject, window: 2m, threshold: 3}
    alert: {name: a}
""",
        4,
        5,
        "count rule 'r' needs a 'where': the events it counts",
        "id: r",
    ),
    Case(
        "a tally without catalog in needs",
        HEAD
        + """needs: [layout]
rules:
  - id: cart
    tally:
      add: {when: type == "item.picked"}
      remove: {when: type == "item.put_back"}
      close: {when: type == "shopper.exited"}
""",
        3,
        8,
        "a tally prices its receipts: add 'catalog' to the pack's needs",
        "[layout]",
    ),
    Case(
        "emit of a raw type",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    emit:
      type: item.put_back
      data: {sku: data.sku, shelf: data.shelf}
""",
        7,
        13,
        "rules emit derived types only: alert.raised,",
        "item.put_back",
    ),
    Case(
        "emit.data with a field the type lacks",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    emit:
      type: cart.item_added
      data: {sku: data.sku, cart: subject, quantity: data.qty}
""",
        8,
        44,
        "cart.item_added has no field 'quantity'; its fields: cart, qty, sku",
        "quantity:",
    ),
    Case(
        "emit.groups on a rule that is not an aggregate",
        HEAD
        + """rules:
  - id: r
    where: type == "zone.entered"
    emit:
      type: heatmap.tiles
      data: {size: "1.0"}
      groups:
        into: cells
        data: {cell_x: "1"}
""",
        9,
        7,
        "only an aggregate lists its groups in one event",
        "groups:",
    ),
    Case(
        "emit.groups into a field that is not a list",
        AGG
        + """    emit:
      type: heatmap.tiles
      data: {size: "1.0", window_start: window_start, window_end: window_end}
      groups:
        into: size
        data: {cell_x: cx}
""",
        16,
        15,
        "heatmap.tiles has no list field 'size'; its list fields: cells",
        "size",
    ),
    Case(
        "emit.groups.data with a field the item lacks",
        AGG
        + """    emit:
      type: heatmap.tiles
      data: {size: "1.0", window_start: window_start, window_end: window_end}
      groups:
        into: cells
        data: {cell_x: cx, cell_y: cy, visitors: n, dwell_s: n}
""",
        17,
        40,
        "an item of cells has no field 'visitors' (did you mean 'visits'?)",
        "visitors:",
    ),
    Case(
        "emit.data reads a group's name when the groups are listed",
        AGG
        + """    emit:
      type: heatmap.tiles
      data: {size: cx, window_start: window_start, window_end: window_end}
      groups:
        into: cells
        data: {cell_x: cx, cell_y: cy, visits: n, dwell_s: n}
""",
        14,
        20,
        "unknown name 'cx'; the names allowed here are: window_end, window_start",
        "cx",
    ),
    Case(
        "emit.groups beside an alert",
        AGG
        + """    alert: {name: busy}
    emit:
      type: heatmap.tiles
      data: {size: "1.0", window_start: window_start, window_end: window_end}
      groups:
        into: cells
        data: {cell_x: cx, cell_y: cy, visits: n, dwell_s: n}
""",
        16,
        7,
        "a rule that lists its groups in one event emits nothing else",
        "groups:",
    ),
    Case(
        "emit.data sets the list the groups go into",
        AGG
        + """    emit:
      type: heatmap.tiles
      data: {size: "1.0", window_start: window_start, window_end: window_end, cells: n}
      groups:
        into: cells
        data: {cell_x: cx, cell_y: cy, visits: n, dwell_s: n}
""",
        14,
        79,
        "'cells' holds the groups: set it under groups.data, item by item",
        "cells:",
    ),
    Case(
        "a sliding window without every",
        HEAD
        + """rules:
  - id: r
    where: type == "shopper.entered"
    aggregate:
      window: {sliding: 1h}
      compute: {n: count()}
""",
        7,
        15,
        "a sliding window needs 'every': how often it moves",
        "{sliding: 1h}",
    ),
    Case(
        "a sliding window that is not a multiple of every",
        HEAD
        + """rules:
  - id: r
    where: type == "shopper.entered"
    aggregate:
      window: {sliding: 1h, every: 7m}
      compute: {n: count()}
""",
        7,
        36,
        "a sliding window's size must be a multiple of 'every'",
        "7m",
    ),
    Case(
        "a tumbling window of no length",
        HEAD
        + """rules:
  - id: r
    where: type == "shopper.entered"
    aggregate:
      window: {tumbling: 0s}
      compute: {n: count()}
""",
        7,
        26,
        "a window lasts longer than 0 s",
        "0s",
    ),
    Case(
        "a count window of no length",
        HEAD
        + """rules:
  - id: r
    where: type == "item.put_back"
    count: {by: subject, window: 0s, threshold: 2}
    alert: {name: a, summary: x}
""",
        6,
        34,
        "a window lasts longer than 0 s",
        "0s",
    ),
    Case(
        "a sliding window that does not move",
        HEAD
        + """rules:
  - id: r
    where: type == "shopper.entered"
    aggregate:
      window: {sliding: 1m, every: 0s}
      compute: {n: count()}
""",
        7,
        36,
        "a window moves by more than 0 s",
        "0s",
    ),
    Case(
        "cumulative with a sliding window",
        HEAD
        + """rules:
  - id: r
    where: type == "shopper.entered"
    aggregate:
      window: {sliding: 1h, every: 10m}
      cumulative: true
      compute: {n: count()}
""",
        8,
        19,
        "cumulative values need a tumbling window",
        "true",
    ),
    Case(
        "a local window that does not divide a day",
        HEAD
        + """rules:
  - id: r
    where: type == "shopper.entered"
    aggregate:
      window: {tumbling: 7h, local: true}
      compute: {n: count()}
""",
        7,
        37,
        "a window aligned to local time divides a day",
        "true}",
    ),
    Case(
        "compute shorthand that does not parse",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    aggregate:
      window: {tumbling: 1h}
      compute: {n: "median(data.qty)"}
""",
        8,
        20,
        "'median(data.qty)': write count(), sum(x), mean(x), min(x), max(x), distinct(x), "
        "percentile(x, q) or underflow(x)",
        '"median',
    ),
    Case(
        "a sequence's sum named as one of its steps",
        HEAD
        + """rules:
  - id: r
    sequence:
      by: subject
      within: 1h
      sums: {came: {when: type == "item.picked", add: data.qty}}
      steps:
        - {name: came, when: type == "zone.entered"}
        - {name: went, when: type == "zone.exited"}
""",
        8,
        20,
        "'came' is taken: name the sum otherwise",
        "{when",
    ),
    Case(
        "a floor on a function that is not a sum",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    aggregate:
      window: {tumbling: 1h}
      compute: {n: {fn: mean, of: data.qty, floor: 0}}
""",
        8,
        52,
        "floor is for sum and underflow, not mean",
        "0}}",
    ),
    Case(
        "percentile without a number q",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    aggregate:
      window: {tumbling: 1h}
      compute: {p: "percentile(data.qty, high)"}
""",
        8,
        20,
        "percentile(x, q) takes a number q from 0 to 100",
        '"percentile',
    ),
    Case(
        "unknown field inside a compute shorthand",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    aggregate:
      window: {tumbling: 1h}
      compute: {n: "sum( data.qtyy)", m: count()}
""",
        8,
        31,
        "item.picked has no field data.qtyy (did you mean 'qty'?)",
        "qtyy",
    ),
    Case(
        "unknown function inside a plain compute shorthand",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    aggregate:
      window: {tumbling: 1h}
      compute:
        revenue: sum(data.qty * pricee(data.sku))
""",
        9,
        33,
        "unknown function 'pricee' (did you mean 'price'?)",
        "pricee",
    ),
    Case(
        "a step with both when and absent",
        HEAD
        + """rules:
  - id: r
    sequence:
      by: subject
      within: 5m
      steps:
        - when: type == "item.picked"
          absent: type == "zone.entered"
        - when: type == "shopper.exited"
    alert: {name: a}
""",
        9,
        11,
        "a step has either 'when' (it must happen) or 'absent' (it must not)",
        "when:",
    ),
    Case(
        "a sequence starting with an absent step",
        HEAD
        + """rules:
  - id: r
    sequence:
      by: subject
      within: 5m
      steps:
        - absent: type == "zone.entered"
        - when: type == "shopper.exited"
    alert: {name: a}
""",
        9,
        11,
        "a sequence starts with a 'when' step, not 'absent'",
        "absent:",
    ),
    # -- positions inside the different kinds of YAML scalar -------------------------------
    Case(
        "literal block scalar (|): the third line",
        HEAD
        + """rules:
  - id: r
    where: |
      type == "item.picked"
      and data.qty >= 2
      and data.sku.upper() == "COLA"
    alert: {name: a}
""",
        8,
        20,
        "'upper': methods cannot be called",
        "upper()",
    ),
    Case(
        "double-quoted scalar",
        HEAD
        + """rules:
  - id: r
    where: "type == 'item.picked' and data.qty > limit"
    alert: {name: a}
""",
        5,
        50,
        "unknown name 'limit'",
        "limit",
    ),
    Case(
        "double-quoted scalar with escapes",
        HEAD
        + """rules:
  - id: r
    where: "type == \\"item.picked\\" and data.qty > limit"
    alert: {name: a}
""",
        5,
        52,
        "unknown name 'limit'",
        "limit",
    ),
    Case(
        "single-quoted scalar with doubled quotes",
        HEAD
        + """rules:
  - id: r
    where: 'type == ''item.picked'' and data.qty > limit'
    alert: {name: a}
""",
        5,
        52,
        "unknown name 'limit'",
        "limit",
    ),
    Case(
        "folded block scalar (>)",
        HEAD
        + """rules:
  - id: r
    where: >
      type == "item.picked"
      and data.qty > limit
    alert: {name: a}
""",
        7,
        22,
        "unknown name 'limit'",
        "limit",
    ),
    Case(
        "plain scalar over two lines",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
      and data.qty > limit
    alert: {name: a}
""",
        6,
        22,
        "unknown name 'limit'",
        "limit",
    ),
    Case(
        "template in a literal block scalar",
        HEAD
        + """rules:
  - id: r
    where: type == "item.picked"
    alert:
      name: a
      summary: |
        Picked {data.sku}
        {data.qty} times, {data.shelff}
""",
        10,
        33,
        "item.picked has no field data.shelff",
        "shelff",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_malformed_pack_gives_one_error_at_its_place(case: Case) -> None:
    checked = check(case.text)
    assert checked.ruleset is None
    assert len(checked.errors) == 1, [str(e) for e in checked.errors]
    error = checked.errors[0]
    assert (error.file, error.line, error.col) == ("pack.yaml", case.line, case.col), str(error)
    assert case.phrase in error.message, error.message
    assert str(error).startswith(f"pack.yaml:{case.line}:{case.col}: ")
    if case.at:
        line = case.text.splitlines()[case.line - 1]
        assert line[case.col - 1 :].startswith(case.at), (line, case.col)


def test_a_sliding_window_of_whole_steps_not_exact_in_floating_point_is_accepted() -> None:
    assert 0.3 % 0.1 != 0  # what a remainder check would have refused
    checked = check(
        HEAD
        + """rules:
  - id: r
    where: type == "shopper.entered"
    aggregate:
      window: {sliding: 300ms, every: 100ms}
      compute: {n: count()}
"""
    )
    assert checked.errors == []


def test_there_are_at_least_25_distinct_malformed_packs() -> None:
    assert len({c.text for c in CASES}) == len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_a_bad_pack_refuses_the_whole_set() -> None:
    good = (ROOT / "rules" / "packs" / "carts.yaml").read_text()
    bad = next(c for c in CASES if c.id == "dunder attribute").text
    with pytest.raises(PackError) as raised:
        load_rules([("carts.yaml", good), ("bad.yaml", bad)], reference())
    assert [str(e) for e in raised.value.errors] == [
        f"bad.yaml:5:43: {raised.value.errors[0].message}"
    ]


def test_each_bad_pack_reports_its_own_error() -> None:
    texts = [c.text for c in CASES[:3]]
    checked = check_rules([(f"p{i}.yaml", t) for i, t in enumerate(texts)], reference())
    assert [(e.file, e.line) for e in checked.errors] == [
        ("p0.yaml", CASES[0].line),
        ("p1.yaml", CASES[1].line),
        ("p2.yaml", CASES[2].line),
    ]


def test_unused_lists_macros_and_params_are_warnings_not_errors() -> None:
    checked = check(
        HEAD
        + """params:
  limit: 3
  min_qty: 2
lists:
  drinks: [cola-500ml]
macros:
  picked: type == "item.picked"
rules:
  - id: r
    where: type == "item.put_back" and data.qty >= min_qty
    alert: {name: a}
"""
    )
    assert checked.errors == []
    assert checked.ruleset is not None and len(checked.ruleset.rules) == 1
    found = sorted((w.line, w.col, w.message) for w in checked.warnings)
    assert found == [
        (4, 3, "'limit' is never used"),
        (7, 3, "'drinks' is never used"),
        (9, 3, "'picked' is never used"),
    ]


def test_the_standard_packs_are_clean() -> None:
    packs = sorted(
        p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
    )
    checked = check_rules(packs, reference())
    assert checked.errors == []
    assert checked.warnings == []


# -- aisle rules check ------------------------------------------------------------------------


def test_rules_check_json_prints_the_errors_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(next(c for c in CASES if c.id == "unknown data field for the pinned type").text)
    worse = tmp_path / "worse.yaml"
    worse.write_text(next(c for c in CASES if c.id == "sequence without within").text)
    result = runner.invoke(
        app, ["rules", "check", "--json", "--layout", str(LAYOUT), str(bad), str(worse)]
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["warnings"] == []
    assert [{k: e[k] for k in ("file", "line", "col")} for e in report["errors"]] == [
        {"file": str(bad), "line": 5, "col": 43},
        {"file": str(worse), "line": 5, "col": 5},
    ]
    assert "item.picked has no field data.skuu" in report["errors"][0]["message"]
    assert "missing its required field 'within'" in report["errors"][1]["message"]


def test_rules_check_text_output_is_file_line_col(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(next(c for c in CASES if c.id == "method call").text)
    result = runner.invoke(app, ["rules", "check", "--layout", str(LAYOUT), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:5:47: 'startswith': methods cannot be called" in result.output


def test_rules_check_passes_a_good_pack_set() -> None:
    packs = ROOT / "rules" / "packs"
    result = runner.invoke(app, ["rules", "check", "--layout", str(LAYOUT), str(packs)])
    assert result.exit_code == 0, result.output
    as_json = runner.invoke(app, ["rules", "check", "--json", "--layout", str(LAYOUT), str(packs)])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {"errors": [], "warnings": []}


def test_rules_check_json_lists_warnings_and_exits_0(tmp_path: Path) -> None:
    pack = tmp_path / "warn.yaml"
    pack.write_text(
        HEAD
        + """lists:
  drinks: [cola-500ml]
rules:
  - id: r
    where: type == "item.picked"
    alert: {name: a}
"""
    )
    result = runner.invoke(app, ["rules", "check", "--json", str(pack)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert report["warnings"] == [
        {"file": str(pack), "line": 4, "col": 3, "message": "'drinks' is never used"}
    ]


def test_a_zone_kind_no_layout_has_is_warned_at_its_place() -> None:
    """`zone_kind(data.zone) == "exit-gate"` passed the check and never fired."""
    checked = check(
        """pack: p
version: "1"
rules:
  - id: gate
    where: type == "zone.entered" and zone_kind(data.zone) == "exit-gate"
    alert: {name: a}
  - id: queues
    where: type == "zone.entered" and zone_kind(data.zone) in ["checkout_queue", "till"]
    alert: {name: b}
"""
    )
    assert checked.errors == []
    found = sorted((w.line, w.col, w.message.split(":")[0]) for w in checked.warnings)
    assert found == [
        (5, 63, "no layout has a zone of kind 'exit-gate' (did you mean 'exit_gate'?)"),
        (8, 82, "no layout has a zone of kind 'till'"),
    ]
