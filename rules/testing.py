"""Rule unit tests in YAML, in the spirit of ``promtool test rules``.

A test file names the packs under test and a store layout, then lists tests: input events
on a virtual clock (``10s item.picked v1 sku=cola shelf=A1``, or the same as a mapping),
how far to run the clock, and the derived events expected at given times. For every type
that appears under ``expect``, the derived events of that type must be exactly those
listed, in order; ``absent`` lists patterns nothing may match. Fields not written are not
compared, so a test says what matters and no more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from ruamel.yaml import YAML

from core import events as ev
from core.durations import parse_duration
from core.layout import load_layout
from core.yamlsource import SourceError, YamlDocument, convert, load_yaml
from rules.engine import Engine
from rules.loader import PackError, load_rules
from rules.reference import Reference, load_reference_list

DEFAULT_START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
_scalar = YAML(typ="safe", pure=True)


class TestCase(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    events: list[str | dict[str, Any]] = []
    run_until: str | int | float | None = None
    expect: list[dict[str, Any]] = []
    absent: list[dict[str, Any]] = []
    lateness: str | int | float = 0


class TestFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    packs: list[str]
    layout: str | None = None
    members: str | None = None  # reference files, as rules.reference.load_reference_list reads
    watchlist: str | None = None
    store: str | None = None
    start: datetime = DEFAULT_START
    tests: list[TestCase]


def is_test_file(path: Path) -> bool:
    """Whether a file is a rule test file (``tests:`` beside ``packs:``), not a pack: what
    ``rules check rules/packs/*.yaml`` meets beside the packs."""
    if path.name.endswith("_test.yaml"):
        return True
    try:
        data = load_yaml(path).data
    except SourceError:
        return False  # the pack check says what is wrong with it
    return isinstance(data, dict) and "tests" in data and "rules" not in data


@dataclass
class Result:
    file: str
    name: str
    line: int
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _offset(start: datetime, value: str | int | float | datetime) -> datetime:
    """``at``: a duration from the test's start, or a time (YAML reads an unquoted ISO
    time as one; a time without a zone is UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and "T" in value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return start + timedelta(seconds=parse_duration(value))


def _parse_compact(text: str) -> dict[str, Any]:
    """``10s item.picked v1 sku=cola shelf=A1`` -> a mapping."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(
            "write '<time> <type> <subject> field=value ...', "
            "e.g. '10s item.picked v1 sku=cola shelf=A1'"
        )
    at, kind, subject, *fields = parts
    data: dict[str, Any] = {}
    for f in fields:
        k, sep, v = f.partition("=")
        if not sep:
            raise ValueError(f"{f!r}: data fields are written name=value")
        data[k] = _scalar.load(v) if v else ""
    return {"at": at, "type": kind, "subject": subject, "data": data}


def _event(store: str, start: datetime, spec: dict[str, Any]) -> ev.Event:
    spec = dict(spec)
    kind = spec.pop("type", None)
    cls = ev.EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    at = _offset(start, spec.pop("at", 0))
    obj = {
        "type": kind,
        "store": spec.pop("store", store),
        "at": at.isoformat(),
        "source": spec.pop("source", "test"),
        "subject": str(spec.pop("subject", "test")),
        "data": spec.pop("data", {}),
    }
    if spec:
        raise ValueError(
            f"unknown keys {sorted(spec)}: an input event has at, type, subject, source, data"
        )
    obj["id"] = ev.event_id(
        obj["type"], obj["store"], obj["at"], obj["source"], obj["subject"], obj["data"]
    )
    return ev.decode(msgspec.json.encode(obj))


def _matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list | tuple)
            and len(expected) == len(actual)
            and all(_matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, float) or isinstance(actual, float):
        try:
            return abs(float(expected) - float(actual)) < 1e-6
        except (TypeError, ValueError):
            return False
    return expected == actual


def _show(e: dict[str, Any], start: datetime) -> str:
    at = e.get("at")
    when = ""
    if isinstance(at, str):
        delta = datetime.fromisoformat(at.replace("Z", "+00:00")) - start
        when = f"{delta.total_seconds():g}s "
    data = msgspec.json.encode(e.get("data", {})).decode()
    return f"{when}{e.get('type', '?')} {e.get('subject', '')} {data}".strip()


def _expected(spec: dict[str, Any], start: datetime) -> dict[str, Any]:
    out = dict(spec)
    if "at" in out:
        out["at"] = _offset(start, out["at"]).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


def run_file(path: str | Path) -> list[Result]:
    doc = load_yaml(path)
    if isinstance(doc.data, dict) and "rules" in doc.data and "tests" not in doc.data:
        raise doc.error(
            (), "this is a rule pack, not a test file: check it with 'aisle rules check'"
        )
    tf = convert(doc, TestFile)
    base = Path(path).parent
    layout = load_layout(base / tf.layout) if tf.layout else None
    members = load_reference_list(base / tf.members) if tf.members else None
    watchlist = load_reference_list(base / tf.watchlist) if tf.watchlist else None
    layouts = {layout.store.id: layout} if layout else {}
    reference = Reference(layouts, members=members, watchlist=watchlist)
    try:
        rules = load_rules([base / p for p in tf.packs], reference)
    except PackError as exc:
        raise exc.errors[0] from None
    store = tf.store or (layout.store.id if layout else "store-1")
    return [_run(doc, i, t, rules, reference, store, tf.start) for i, t in enumerate(tf.tests)]


def _run(
    doc: YamlDocument,
    i: int,
    t: TestCase,
    rules: Any,
    reference: Reference,
    store: str,
    start: datetime,
) -> Result:
    path = ("tests", i)
    result = Result(doc.file, t.name, doc.where(path)[0])
    events = []
    for j, spec in enumerate(t.events):
        try:
            events.append(
                _event(store, start, _parse_compact(spec) if isinstance(spec, str) else spec)
            )
        except (ValueError, ev.EventError) as exc:
            raise doc.error((*path, "events", j), f"input event: {exc}") from None
    engine = Engine(rules, lateness_s=parse_duration(t.lateness))
    out = engine.process(events)
    until = (
        _offset(start, t.run_until)
        if t.run_until is not None
        else max((e.at for e in events), default=start)
    )
    out.extend(engine.advance(store, until.timestamp()))
    # A late input event is never applied: say so, or the test would pass without it.
    result.failures += [
        f"input event {_show(msgspec.to_builtins(e), start)} is late (older than the "
        "watermark, so the engine did not apply it): write the events in time order, "
        "or give the test a lateness"
        for e in out.late
    ]
    result.failures += [f"rule {e.rule} failed on {e.event}: {e.message}" for e in out.errors]
    actual = [msgspec.to_builtins(d) for d in out.derived]
    for k, spec in enumerate(t.expect):
        if "type" not in spec:
            raise doc.error((*path, "expect", k), "an expected event names its type")
    expected = []
    for k, spec in enumerate([*t.expect, *t.absent]):
        part = ("expect", k) if k < len(t.expect) else ("absent", k - len(t.expect))
        try:
            expected.append(_expected(spec, start))
        except ValueError as exc:
            raise doc.error((*path, *part, "at"), f"expected event's time: {exc}") from None
    for kind in dict.fromkeys(s["type"] for s in t.expect):
        want = [w for w in expected[: len(t.expect)] if w["type"] == kind]
        got = [a for a in actual if a["type"] == kind]
        if len(want) != len(got) or not all(
            _matches(w, g) for w, g in zip(want, got, strict=False)
        ):
            lines = [f"{kind}: expected {len(want)}, got {len(got)}"]
            lines += [f"  - expected: {_show(w, start)}" for w in want]
            lines += [f"  + got:      {_show(g, start)}" for g in got]
            result.failures.append("\n".join(lines))
    for pattern in expected[len(t.expect) :]:
        hits = [a for a in actual if _matches(pattern, a)]
        if hits:
            result.failures.append(
                "expected nothing like "
                + _show(pattern, start)
                + ", got:\n"
                + "\n".join(f"  + {_show(h, start)}" for h in hits)
            )
    return result


def run_paths(paths: Iterable[str | Path]) -> tuple[list[Result], list[SourceError]]:
    """Run test files (a folder means its ``*_test.yaml``); errors are files that could not run."""
    results: list[Result] = []
    errors: list[SourceError] = []
    for path in paths:
        p = Path(path)
        files = sorted(p.glob("*_test.yaml")) if p.is_dir() else [p]
        for f in files:
            try:
                results += run_file(f)
            except SourceError as exc:
                errors.append(exc)
    return results, errors
