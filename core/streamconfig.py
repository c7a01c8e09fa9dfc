"""An existing stream's settings against aisle's: what aisle adds, and what it only reports.

An operator may tighten a stream that aisle created (a byte limit, a shorter ``max_age``,
three replicas). aisle keeps what it finds: it adds only the subjects it cannot work
without, and reports every other difference (``aisle log configure --apply`` sets aisle's).
Settings are compared in the server's own JSON (durations in nanoseconds), and an update
sends back the server's configuration with the subjects added, so that a field nats-py does
not know survives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The settings compared, with the server's value when a configuration leaves one out:
# the limits aisle never sets are unlimited on its streams.
COMPARED: dict[str, object] = {
    "retention": "limits",
    "storage": "file",
    "discard": "old",
    "num_replicas": 1,
    "duplicate_window": 0,
    "max_age": 0,
    "max_msgs": -1,
    "max_bytes": -1,
    "max_msg_size": -1,
    "max_msgs_per_subject": -1,
    "max_consumers": -1,
}
_DURATIONS = {"duplicate_window", "max_age"}


@dataclass(frozen=True, slots=True)
class StreamDifference:
    """One setting of an existing stream that is not aisle's: the stream keeps its own."""

    stream: str
    field: str
    theirs: str
    ours: str

    def __str__(self) -> str:
        return f"{self.stream} {self.field}: {self.theirs} (aisle's: {self.ours})"


def wire(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as the server's JSON has it (enums as their strings)."""
    return {k: getattr(v, "value", v) for k, v in config.items()}


def missing_subjects(ours: Sequence[str], theirs: Sequence[str]) -> list[str]:
    """aisle's subjects that none of the stream's own subjects covers."""
    return [s for s in ours if not any(_covers(t, s) for t in theirs)]


def differences(
    name: str, ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> list[StreamDifference]:
    """Where the stream ``theirs`` differs from aisle's ``ours`` (both in the server's JSON)."""
    found = []
    missing = missing_subjects(ours.get("subjects") or [], theirs.get("subjects") or [])
    if missing:
        found.append(StreamDifference(name, "subjects", f"without {', '.join(missing)}", "with"))
    for key, default in COMPARED.items():
        mine, its = ours.get(key, default), theirs.get(key, default)
        if mine != its:
            found.append(StreamDifference(name, key, _shown(key, its), _shown(key, mine)))
    return found


def with_subjects(theirs: Mapping[str, Any], missing: Sequence[str]) -> dict[str, Any]:
    """The stream's own configuration, and the subjects aisle needs added to it."""
    return {**theirs, "subjects": [*(theirs.get("subjects") or []), *missing]}


def aisles(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """The stream's configuration with aisle's settings over its own (what ``aisle log
    configure --apply`` sends); what aisle does not set, extra subjects included, stays."""
    missing = missing_subjects(ours.get("subjects") or [], theirs.get("subjects") or [])
    settings = {k: ours.get(k, default) for k, default in COMPARED.items()}
    return {**with_subjects(theirs, missing), **settings}


def _shown(key: str, value: object) -> str:
    if key in _DURATIONS and isinstance(value, int):
        return "unlimited" if value == 0 and key == "max_age" else _duration(value / 1e9)
    if key in COMPARED and COMPARED[key] == -1 and value == -1:
        return "unlimited"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _covers(pattern: str, subject: str) -> bool:
    """Whether the filter ``pattern`` takes in every subject ``subject`` (itself a filter) does."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or s[i] == ">" or (token != "*" and token != s[i]):
            return False
    return len(s) == len(p)
