"""The privacy check on rule packs: what a pack's declared ``purpose`` lets its rules
read, and what no rule may copy into the derived events (``docs/privacy.md``).

Refused, each with the rule and the reason:

- a rule for shoppers' ``experience`` (frustration, waiting) or for ``marketing`` that
  reads face data (``face.matched``, the watch list): feelings are inferred from
  behaviour only, never from a face (the EU AI Act forbids emotion recognition from
  biometrics at work and in many public places), and biometrics are not for selling;
- an ``experience`` or ``marketing`` rule that reads staff sessions or does not leave
  staff out (``not (subject in staff)``, a set of ``staff.session_started``): the
  behaviour of people at work is not analysed;
- a rule that copies a personal field (``core/privacy.py``: a member's id, a badge, who
  acted) into what it derives (an alert, a metric, an emitted event, or the key that
  becomes a derived event's subject): derived events are kept unencrypted and for
  longer. Only a ``security`` alert, which a person confirms before anything is done,
  may name a member.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core import events as ev
from core.privacy import FIELDS, FROM_BIOMETRICS, DataClass, data_class
from core.yamlsource import SourceError, YamlDocument

PURPOSES: dict[str, str] = {
    "billing": "carts and receipts: what a shopper takes and pays for",
    "operations": "running the store: traffic, queues, shelves, heatmaps",
    "security": "loss prevention and safety: alerts a person checks before anything is done",
    "experience": "shoppers' experience (waits, hesitation, being stuck), from behaviour only",
    "marketing": "offers and promotions",
}
BEHAVIOUR = frozenset({"experience", "marketing"})
FACE_FUNCTIONS = frozenset({"watchlisted", "watch_note"})  # they look a member up
STAFF_TYPES = frozenset({"staff.session_started", "staff.session_ended"})
# Where a rule writes what it derives: these parts of it go into the derived events.
OUTPUTS = frozenset({"alert", "metric", "metrics", "emit"})
# An operator's keys become its alerts' keys and its derived events' subjects (a
# throttle's only decide what is sent, and are not written anywhere).
OPERATORS = frozenset({"for", "count", "sequence", "tally", "aggregate"})
KEYS = frozenset({"by", "key", "subject"})


@dataclass(frozen=True)
class Read:
    """One compiled expression of a pack: where it is, and what it reads."""

    path: tuple[Any, ...]
    paths: frozenset[tuple[str, ...]]
    calls: frozenset[str]


def check(
    doc: YamlDocument,
    purpose: str | None,
    rules: Iterable[tuple[int, str, frozenset[str] | None, str | None]],
    reads: list[Read],
    staff_sets: frozenset[str],
    macros: Mapping[str, ast.expr],
) -> tuple[list[SourceError], list[SourceError]]:
    """Errors and warnings for a pack's rules, each ``(index, id, types, where)``: the
    event types it can match (None: any) and its ``where`` source."""
    errors: list[SourceError] = []
    warnings: list[SourceError] = []
    for i, rule_id, types, where in rules:
        mine = [r for r in reads if r.path[:2] == ("rules", i)]
        at = ("rules", i)
        face = _reads_faces(types, mine)
        if face and purpose in BEHAVIOUR:
            errors.append(
                doc.error(
                    (*at, "where") if where else at,
                    f"rule {rule_id!r} is for {purpose} and reads face data ({face}): "
                    f"{purpose} rules may not use biometrics (frustration and interest are "
                    "inferred from behaviour only; no emotion recognition, no biometric "
                    "marketing)",
                )
            )
        if purpose in BEHAVIOUR and _about_people(types):
            staff = sorted((types or frozenset()) & STAFF_TYPES) or _reads_badge(mine)
            if staff:
                errors.append(
                    doc.error(
                        at,
                        f"rule {rule_id!r} is for {purpose} and reads staff sessions "
                        f"({', '.join(staff)}): the behaviour of people at work is not analysed",
                    )
                )
            elif not _leaves_out(where, staff_sets, macros):
                errors.append(
                    doc.error(
                        (*at, "where") if where else at,
                        f"rule {rule_id!r} is for {purpose} and would apply to staff: add "
                        "`and not (subject in staff)` to its where, with a set `staff` "
                        'that adds on type == "staff.session_started"',
                    )
                )
        for read in mine:
            copied = _personal(types, read.paths)
            part = read.path[2] if len(read.path) > 2 else None
            keyed = part in OPERATORS and any(k in KEYS for k in read.path[3:])
            into = part in OUTPUTS or keyed
            if not copied or not into:
                continue
            if purpose == "security" and part == "alert":
                continue
            field, owner = copied
            errors.append(
                doc.error(
                    read.path,
                    f"rule {rule_id!r} copies {field}, personal ({owner}), into what it "
                    "derives: derived events are kept unencrypted; only a security alert, "
                    "which a person confirms, may name a person",
                )
            )
        if purpose is None and (face or _personal(types, _all_paths(mine))):
            warnings.append(
                doc.error(
                    at,
                    f"rule {rule_id!r} reads personal or face data but its pack declares no "
                    f"purpose: add `purpose:` ({', '.join(PURPOSES)}) so that the privacy "
                    "check can tell whether it may",
                )
            )
    return errors, warnings


def _all_paths(reads: list[Read]) -> frozenset[tuple[str, ...]]:
    return frozenset(p for r in reads for p in r.paths)


def _reads_faces(types: frozenset[str] | None, reads: list[Read]) -> str:
    """What face data a rule reads: a face-match event type it matches, or a look-up of
    the watch list; "" for none."""
    if types is not None and types & FROM_BIOMETRICS:
        return ", ".join(sorted(types & FROM_BIOMETRICS))
    calls = sorted({c for r in reads for c in r.calls} & FACE_FUNCTIONS)
    if calls:
        return ", ".join(f"{c}()" for c in calls)
    if types is None and _personal(FROM_BIOMETRICS, _all_paths(reads)):
        return "face.matched's fields"
    return ""


def _reads_badge(reads: list[Read]) -> list[str]:
    return ["data.badge"] if ("data", "badge") in _all_paths(reads) else []


def _about_people(types: frozenset[str] | None) -> bool:
    """Whether a rule can match events of what a person did (not only the store's own
    derived figures)."""
    if types is None:
        return True
    return bool(types - ev.DERIVED_TYPES - {"store.heartbeat"})


def _personal(
    types: Iterable[str] | None, paths: frozenset[tuple[str, ...]]
) -> tuple[str, str] | None:
    """The first personal field among ``paths`` for the event types (any type's, where
    the rule matches any), and whose it is."""
    for p in sorted(paths):
        if len(p) < 2 or p[0] != "data":
            continue
        field = ".".join(p[:2])
        for t in sorted(types if types is not None else FIELDS):
            if field in FIELDS[t] and data_class(t, field) is DataClass.PERSONAL:
                return field, t
    return None


def _leaves_out(
    where: str | None, staff_sets: frozenset[str], macros: Mapping[str, ast.expr]
) -> bool:
    """Whether ``where`` says ``not (subject in S)`` (or ``subject not in S``), as one of
    its top-level ``and`` parts, for a set ``S`` of staff sessions; macros expanded."""
    if where is None:
        return False
    try:
        node = ast.parse(where.strip(), mode="eval").body
    except SyntaxError:
        return False
    return any(_excludes(part, staff_sets) for part in _conjuncts(node, macros, 0))


def _conjuncts(node: ast.expr, macros: Mapping[str, ast.expr], depth: int) -> list[ast.expr]:
    if isinstance(node, ast.Name) and node.id in macros and depth < 20:
        return _conjuncts(macros[node.id], macros, depth + 1)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [c for v in node.values for c in _conjuncts(v, macros, depth + 1)]
    return [node]


def _excludes(node: ast.expr, staff_sets: frozenset[str]) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        test, negated = node.operand, True
    else:
        test, negated = node, False
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    op, right = test.ops[0], test.comparators[0]
    wanted = ast.In if negated else ast.NotIn
    return (
        isinstance(op, wanted)
        and isinstance(test.left, ast.Name)
        and test.left.id == "subject"
        and isinstance(right, ast.Name)
        and right.id in staff_sets
    )
