"""What-if replay: run a rule set over past events in shadow and diff it against the live one.

A rule author tries a change before deploying it: the store's raw events are read back
from the log and run through a fresh engine with the candidate rules; what it derives is
returned (for a file), never published, because a shadow event would share the live
event's id when the rule version is unchanged and the log would drop one of them, or mix
the two. The comparison is by meaning, not by id: a derived id hashes the rule version, so
a changed rule gives every output a new id.

Matching, in ``diff``:

- receipts by subject, in time order; changed when their lines, total or age check differ;
- alerts (raised and resolved apart) by alert name, subject and key, the n-th with the n-th
  in time order; changed when their time, severity, summary or labels differ;
- metrics by name and labels: the count of metric events and the sum of their values.

The shadow engine starts empty at ``start - warmup``: state older than that (a visit that
began before it) is missing, so outputs near the start of the window can differ for that
reason alone.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import msgspec

from core import events as ev
from core.log import EventLog, read_arrived, stores_of
from rules.engine import Engine, RuleError, RuleSet
from rules.loader import PackError, check_rules, load_rules
from rules.reference import Reference
from rules.service.partition import ServiceConfig

__all__ = [
    "DEFAULT_LATENESS_S",
    "DEFAULT_WARMUP_S",
    "Diff",
    "MetricDelta",
    "Report",
    "Shadow",
    "WhatIfError",
    "diff",
    "live_derived",
    "pack_factory",
    "parse_when",
    "render",
    "run_shadow",
    "shadow_run",
    "what_if",
    "write_events",
]

# aisle engine run's: the live output was made with them.
DEFAULT_LATENESS_S = ServiceConfig.lateness_s
DEFAULT_SOURCE_IDLE_S = ServiceConfig.source_idle_s
DEFAULT_WARMUP_S = 6 * 3600.0  # longer than any visit: carts and queues open at start exist
_TICK = timedelta(microseconds=1)  # event times have microsecond resolution

RulesetFactory = Callable[[], RuleSet]
Alert = ev.AlertRaised | ev.AlertResolved


class WhatIfError(ValueError):
    """The replay cannot run as asked (no such store, an empty window); the message says why."""


# -- running rules in shadow ----------------------------------------------------------------


@dataclass
class Shadow:
    """What a shadow run derived inside the window, and what went wrong on the way."""

    derived: list[ev.Event]
    errors: list[RuleError] = field(default_factory=list)
    late: int = 0
    inputs: int = 0  # raw events run, warmup included
    skipped: int = 0  # raw events before the warmup: their state is missing


def pack_factory(files: Sequence[Path], reference: Reference) -> RulesetFactory:
    """Validate the packs now, so a bad pack fails before the log is read (``PackError``
    with every file:line:col error); compile them again per engine, since a rule set runs
    in one engine at a time (it carries the context that engine fills)."""
    if not files:
        raise WhatIfError("no rule packs to run: the paths hold no *.yaml packs")
    checked = check_rules(files, reference)
    if checked.errors:
        raise PackError(checked.errors)

    def factory() -> RuleSet:
        return load_rules(files, reference)

    return factory


def run_shadow(
    events: Iterable[ev.Event],
    store: str,
    start: datetime,
    end: datetime,
    ruleset_factory: RulesetFactory,
    *,
    warmup_s: float = DEFAULT_WARMUP_S,
    lateness_s: float = DEFAULT_LATENESS_S,
    source_idle_s: float = DEFAULT_SOURCE_IDLE_S,
) -> Shadow:
    """Run a fresh engine over ``events`` (in log order) from ``start - warmup`` up to ``end``.

    Inputs at or after ``end`` are left out and the clock is moved to ``end``, so whatever
    happened before ``end`` is final and nothing after it leaks in: outputs at a time ``t``
    depend only on inputs up to ``t``.
    """
    begin = start - timedelta(seconds=warmup_s)
    engine = Engine(ruleset_factory(), lateness_s=lateness_s, source_idle_s=source_idle_s)
    kept: list[ev.Event] = []
    skipped = 0
    for e in events:
        if e.store != store or e.at >= end:
            continue
        if e.at < begin:
            skipped += 1
        else:
            kept.append(e)
    out = engine.process(kept)
    out.extend(engine.advance(store, end.timestamp()))
    derived = [d for d in out.derived if start <= d.at < end]
    return Shadow(derived, out.errors, len(out.late), len(kept), skipped)


async def shadow_run(
    log: EventLog,
    store: str,
    start: datetime,
    end: datetime,
    ruleset_factory: RulesetFactory,
    *,
    warmup_s: float = DEFAULT_WARMUP_S,
    lateness_s: float = DEFAULT_LATENESS_S,
    source_idle_s: float = DEFAULT_SOURCE_IDLE_S,
) -> Shadow:
    """``run_shadow`` over the store's raw events as the log holds them; publishes nothing."""
    raw = await read_arrived(log, store)  # the order the engine service applies them in
    return run_shadow(
        raw,
        store,
        start,
        end,
        ruleset_factory,
        warmup_s=warmup_s,
        lateness_s=lateness_s,
        source_idle_s=source_idle_s,
    )


async def _all_derived(log: EventLog, store: str) -> list[ev.Event]:
    seen: set[str] = set()
    out: list[ev.Event] = []
    async for r in log.replay(store=store, types=sorted(ev.DERIVED_TYPES)):
        if r.event.id not in seen:  # a publish retried after the duplicate window
            seen.add(r.event.id)
            out.append(r.event)
    return out


def _within(events: Iterable[ev.Event], start: datetime, end: datetime) -> list[ev.Event]:
    return [e for e in events if start <= e.at < end]


async def live_derived(log: EventLog, store: str, start: datetime, end: datetime) -> list[ev.Event]:
    """The derived events the log holds for ``store`` with event time in [start, end)."""
    return _within(await _all_derived(log, store), start, end)


# -- the difference ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDelta:
    """One metric series (name and labels) whose count or sum differs."""

    name: str
    labels: tuple[tuple[str, str], ...]
    live_count: int
    shadow_count: int
    live_sum: float
    shadow_sum: float

    @property
    def count_delta(self) -> int:
        return self.shadow_count - self.live_count

    @property
    def sum_delta(self) -> float:
        return self.shadow_sum - self.live_sum


@dataclass
class Diff:
    """Shadow against live (or against a baseline): what an author checks before deploying."""

    receipts_added: list[ev.ReceiptIssued] = field(default_factory=list)
    receipts_gone: list[ev.ReceiptIssued] = field(default_factory=list)
    receipts_changed: list[tuple[ev.ReceiptIssued, ev.ReceiptIssued]] = field(
        default_factory=list
    )  # (live, shadow)
    alerts_added: list[Alert] = field(default_factory=list)
    alerts_gone: list[Alert] = field(default_factory=list)
    alerts_changed: list[tuple[Alert, Alert]] = field(default_factory=list)  # (live, shadow)
    metrics: list[MetricDelta] = field(default_factory=list)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (live, shadow)

    @property
    def unchanged(self) -> bool:
        return not (
            self.receipts_added
            or self.receipts_gone
            or self.receipts_changed
            or self.alerts_added
            or self.alerts_gone
            or self.alerts_changed
            or self.metrics
        )

    def to_dict(self) -> dict[str, Any]:
        def pairs(changed: Sequence[tuple[ev.Event, ev.Event]]) -> list[dict[str, Any]]:
            return [{"live": _builtins(a), "shadow": _builtins(b)} for a, b in changed]

        return {
            "unchanged": self.unchanged,
            "receipts": {
                "added": [_builtins(e) for e in self.receipts_added],
                "gone": [_builtins(e) for e in self.receipts_gone],
                "changed": pairs(self.receipts_changed),
            },
            "alerts": {
                "added": [_builtins(e) for e in self.alerts_added],
                "gone": [_builtins(e) for e in self.alerts_gone],
                "changed": pairs(self.alerts_changed),
            },
            "metrics": [
                {
                    "name": m.name,
                    "labels": dict(m.labels),
                    "live_count": m.live_count,
                    "shadow_count": m.shadow_count,
                    "live_sum": m.live_sum,
                    "shadow_sum": m.shadow_sum,
                    "count_delta": m.count_delta,
                    "sum_delta": m.sum_delta,
                }
                for m in self.metrics
            ],
            "counts": {t: {"live": a, "shadow": b} for t, a, b in _count_rows(self.counts)},
        }


def _builtins(e: ev.Event) -> dict[str, Any]:
    return msgspec.to_builtins(e)  # type: ignore[no-any-return]


def _count_rows(counts: dict[str, tuple[int, int]]) -> list[tuple[str, int, int]]:
    return [(t, *counts[t]) for t in sorted(counts)]


def _paired(
    live: Iterable[ev.Event], shadow: Iterable[ev.Event], key: Callable[[Any], Any]
) -> tuple[list[Any], list[Any], list[tuple[Any, Any]]]:
    """Pair the n-th event of a key on each side, in time order: (added, gone, pairs)."""
    groups: dict[Any, tuple[list[ev.Event], list[ev.Event]]] = defaultdict(lambda: ([], []))
    for e in live:
        groups[key(e)][0].append(e)
    for e in shadow:
        groups[key(e)][1].append(e)
    added: list[Any] = []
    gone: list[Any] = []
    pairs: list[tuple[Any, Any]] = []
    for a, b in groups.values():
        a.sort(key=lambda e: (e.at, e.id))
        b.sort(key=lambda e: (e.at, e.id))
        pairs += zip(a, b, strict=False)
        gone += a[len(b) :]
        added += b[len(a) :]
    return added, gone, pairs


def _by_time(events: list[Any]) -> list[Any]:
    return sorted(events, key=lambda e: (e.at, e.id))


def _receipt_content(r: ev.ReceiptIssued) -> tuple[Any, ...]:
    return (r.data.lines, r.data.total_cents, r.data.currency, r.data.age_check)


def _alert_content(a: Alert) -> tuple[Any, ...]:
    return (a.at, a.data.severity, a.data.summary, a.data.labels)


def _labels(m: ev.Metric) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(m.data.labels.items()))


def diff(live: Iterable[ev.Event], shadow: Iterable[ev.Event]) -> Diff:
    """Compare two sets of derived events by meaning (see the module notes for the matching)."""
    live, shadow = list(live), list(shadow)
    out = Diff()

    def of(events: list[ev.Event], cls: type[ev.Event] | tuple[type[ev.Event], ...]) -> list[Any]:
        return [e for e in events if isinstance(e, cls)]

    added, gone, pairs = _paired(
        of(live, ev.ReceiptIssued), of(shadow, ev.ReceiptIssued), lambda r: r.subject
    )
    out.receipts_added, out.receipts_gone = _by_time(added), _by_time(gone)
    out.receipts_changed = sorted(
        ((a, b) for a, b in pairs if _receipt_content(a) != _receipt_content(b)),
        key=lambda p: (p[0].at, p[0].id),
    )

    alerts = (ev.AlertRaised, ev.AlertResolved)
    added, gone, pairs = _paired(
        of(live, alerts),
        of(shadow, alerts),
        lambda a: (a.type, a.data.alert, a.subject, a.data.key),
    )
    out.alerts_added, out.alerts_gone = _by_time(added), _by_time(gone)
    out.alerts_changed = sorted(
        ((a, b) for a, b in pairs if _alert_content(a) != _alert_content(b)),
        key=lambda p: (min(p[0].at, p[1].at), p[0].id),
    )

    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = defaultdict(
        lambda: [0, 0, 0.0, 0.0]
    )
    for side, events in ((0, live), (1, shadow)):
        for m in of(events, ev.Metric):
            s = series[(m.data.name, _labels(m))]
            s[side] += 1
            s[2 + side] += m.data.value
    for (name, labels), (lc, sc, ls, ss) in sorted(series.items()):
        if lc != sc or not math.isclose(ls, ss, rel_tol=1e-9, abs_tol=1e-9):
            out.metrics.append(MetricDelta(name, labels, lc, sc, ls, ss))

    a, b = Counter(e.type for e in live), Counter(e.type for e in shadow)
    out.counts = {t: (a[t], b[t]) for t in sorted(set(a) | set(b))}
    return out


# -- rendering -------------------------------------------------------------------------------


def _when(at: datetime, tz: tzinfo) -> str:
    local = at.astimezone(tz)
    text = f"{local:%Y-%m-%d %H:%M:%S}"
    if local.microsecond >= 100_000:
        text += f".{local.microsecond // 100_000}"  # tenths: the clock of camera frames
    return text


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency}"


def _receipt(r: ev.ReceiptIssued) -> str:
    lines = ", ".join(f"{line.qty}× {line.sku}" for line in r.data.lines) or "no lines"
    return f"{lines}; total {_money(r.data.total_cents, r.data.currency)}"


def _receipt_change(a: ev.ReceiptIssued, b: ev.ReceiptIssued) -> str:
    qty: Counter[str] = Counter()
    for line in a.data.lines:
        qty[line.sku] -= line.qty
    for line in b.data.lines:
        qty[line.sku] += line.qty
    lines = ", ".join(f"{n:+d}× {sku}" for sku, n in sorted(qty.items()) if n)
    parts = [
        f"total {_money(a.data.total_cents, a.data.currency)}"
        f" → {_money(b.data.total_cents, b.data.currency)}"
    ]
    if lines:
        parts.append(f"lines {lines}")
    elif a.data.lines != b.data.lines:
        parts.append("same items, different line details (name, price or order)")
    if a.data.age_check != b.data.age_check:
        parts.append(f"age check {a.data.age_check} → {b.data.age_check}")
    return "; ".join(parts)


def _alert(a: Alert, tz: tzinfo) -> str:
    kind = "raised" if isinstance(a, ev.AlertRaised) else "resolved"
    key = f" [{a.data.key}]" if a.data.key != a.subject else ""
    summary = f"  {a.data.summary}" if a.data.summary else ""
    return (
        f"{_when(a.at, tz)}  {kind:<8}  {a.data.alert}  {a.subject}{key}  "
        f"{a.data.severity}{summary}"
    )


def _alert_change(a: Alert, b: Alert, tz: tzinfo, base: str) -> str:
    parts = []
    if a.at != b.at:
        parts.append(f"at {_when(a.at, tz)} → {_when(b.at, tz)}")
    if a.data.severity != b.data.severity:
        parts.append(f"severity {a.data.severity} → {b.data.severity}")
    if a.data.summary != b.data.summary:
        parts.append(f"summary {a.data.summary!r} → {b.data.summary!r}")
    if a.data.labels != b.data.labels:
        parts.append(f"labels {a.data.labels} → {b.data.labels}")
    return f"{_alert(a, tz)}\n      {base} → shadow: " + "; ".join(parts)


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.3f}".rstrip("0")


def render(diff: Diff, tz: tzinfo = UTC, *, base: str = "live") -> str:
    """Plain text for a rule author; times in ``tz`` (the store's), ``base`` names the side
    the shadow is compared with ("live", or "baseline")."""
    rows: list[str] = []

    def section(title: str, items: Sequence[str]) -> None:
        if items:
            rows.append(f"{title} ({len(items)}):")
            rows.extend(f"  {item}" for item in items)

    def total(cls: str) -> str:
        a, b = diff.counts.get(cls, (0, 0))
        return f"{a} {base}, {b} shadow"

    alerts = [diff.counts.get(t, (0, 0)) for t in ("alert.raised", "alert.resolved")]
    rows.append(
        f"receipts: {total('receipt.issued')}; {len(diff.receipts_changed)} changed, "
        f"{len(diff.receipts_added)} added, {len(diff.receipts_gone)} gone"
    )
    rows.append(
        f"alerts: {sum(a for a, _ in alerts)} {base}, {sum(b for _, b in alerts)} shadow; "
        f"{len(diff.alerts_changed)} changed, {len(diff.alerts_added)} added, "
        f"{len(diff.alerts_gone)} gone"
    )
    rows.append(f"metrics: {total('metric')}; {len(diff.metrics)} series differ")
    section(
        "receipts changed",
        [f"{a.subject}: {_receipt_change(a, b)}" for a, b in diff.receipts_changed],
    )
    section(
        "receipts added",
        [f"{_when(r.at, tz)}  {r.subject}  {_receipt(r)}" for r in diff.receipts_added],
    )
    section(
        "receipts gone",
        [f"{_when(r.at, tz)}  {r.subject}  {_receipt(r)}" for r in diff.receipts_gone],
    )
    section("alerts changed", [_alert_change(a, b, tz, base) for a, b in diff.alerts_changed])
    section("alerts added", [_alert(a, tz) for a in diff.alerts_added])
    section("alerts gone", [_alert(a, tz) for a in diff.alerts_gone])
    section(
        "metric deltas",
        [
            f"{m.name}"
            + ("{" + ", ".join(f"{k}={v}" for k, v in m.labels) + "}" if m.labels else "")
            + f"  count {m.live_count} → {m.shadow_count} ({m.count_delta:+d})"
            + f"  sum {_num(m.live_sum)} → {_num(m.shadow_sum)} ({'+' if m.sum_delta >= 0 else '-'}"
            + f"{_num(abs(m.sum_delta))})"
            for m in diff.metrics
        ],
    )
    other = [f"{t} {a} → {b}" for t, a, b in _count_rows(diff.counts) if a != b]
    if other:
        rows.append(f"derived events by type ({base} → shadow): " + ", ".join(other))
    if diff.unchanged:
        rows.append(f"no difference: the shadow rules derive what the {base} rules did")
    return "\n".join(rows)


# -- the whole command, short of its printing ------------------------------------------------


@dataclass
class Report:
    """A what-if replay: its window, both sides' runs, and their difference."""

    store: str
    start: datetime
    end: datetime  # exclusive
    base: str  # "live" or "baseline"
    diff: Diff
    shadow: Shadow
    baseline: Shadow | None = None
    notes: list[str] = field(default_factory=list)

    def render(self, tz: tzinfo = UTC) -> str:
        runs = [("shadow", self.shadow)] + ([("baseline", self.baseline)] if self.baseline else [])
        rows = [
            f"what-if replay of store {self.store}, {_when(self.start, tz)} up to "
            f"{_when(self.end, tz)} ({tz}); shadow against {self.base}"
        ]
        for name, run in runs:
            rows.append(
                f"{name}: {run.inputs:,} raw events run, {len(run.derived):,} derived in the "
                f"window, {run.late} late, {len(run.errors)} rule errors"
            )
            rows += [f"  rule {e.rule} on {e.event}: {e.message}" for e in run.errors[:10]]
            if len(run.errors) > 10:
                rows.append(f"  … {len(run.errors) - 10} more")
        rows += [f"note: {n}" for n in self.notes]
        rows.append(render(self.diff, tz, base=self.base))
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        def run(s: Shadow) -> dict[str, Any]:
            return {
                "inputs": s.inputs,
                "derived": len(s.derived),
                "late": s.late,
                "skipped_before_warmup": s.skipped,
                "errors": [
                    {"rule": e.rule, "event": e.event, "message": e.message} for e in s.errors
                ],
            }

        return {
            "store": self.store,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "base": self.base,
            "shadow": run(self.shadow),
            "baseline": run(self.baseline) if self.baseline else None,
            "notes": self.notes,
            "diff": self.diff.to_dict(),
        }


async def what_if(
    log: EventLog,
    store: str,
    rules: RulesetFactory,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    baseline: RulesetFactory | None = None,
    warmup_s: float = DEFAULT_WARMUP_S,
    lateness_s: float = DEFAULT_LATENESS_S,
    source_idle_s: float = DEFAULT_SOURCE_IDLE_S,
) -> Report:
    """Replay ``rules`` in shadow over [start, end) and diff against the live derived events
    (or against ``baseline`` rules, also in shadow).

    By default the window is the whole log: from the store's first raw event to its clock,
    the newest time the live engine is known to have reached (its newest derived event, or
    its newest raw event less the lateness). A window reaching past that clock is cut
    there: the shadow would fire timers the live engine had not reached yet.
    """
    raw = await read_arrived(log, store)  # the order the engine service applies them in
    if not raw:
        stores = stores_of(await log.stats())
        known = f"; stores in the log: {', '.join(stores)}" if stores else "; the log is empty"
        raise WhatIfError(f"no events of store {store!r} in the log{known}")
    live_all = await _all_derived(log, store) if baseline is None else []
    clock = max(e.at for e in raw) - timedelta(seconds=lateness_s)
    if live_all:
        clock = max(clock, max(e.at for e in live_all))
    horizon = clock + _TICK
    notes: list[str] = []
    start = min(e.at for e in raw) if start is None else start.astimezone(UTC)
    end = horizon if end is None else end.astimezone(UTC)
    if baseline is None and end > horizon:
        notes.append(
            f"the log's clock for {store} reaches {clock.isoformat()}: compared up to there"
        )
        end = horizon
    if start >= end:
        raise WhatIfError(
            f"the window is empty: it starts at {start.isoformat()} and ends at "
            f"{end.isoformat()}" + (" (the log's clock)" if notes else "")
        )
    timing = {"warmup_s": warmup_s, "lateness_s": lateness_s, "source_idle_s": source_idle_s}
    shadow = run_shadow(raw, store, start, end, rules, **timing)
    if shadow.skipped:
        notes.append(
            f"{shadow.skipped:,} raw events before the warmup "
            f"({(start - timedelta(seconds=warmup_s)).isoformat()}) were not run: state they "
            "built (a visit longer than the warmup) is missing from the shadow"
        )
    if baseline is None:
        base_run, base_events, base = None, _within(live_all, start, end), "live"
    else:
        base_run = run_shadow(raw, store, start, end, baseline, **timing)
        base_events, base = base_run.derived, "baseline"
    return Report(
        store,
        start,
        end,
        base,
        diff(base_events, shadow.derived),
        shadow,
        base_run,
        notes,
    )


def parse_when(text: str, tz: tzinfo, option: str) -> datetime:
    """ISO 8601; without an offset, the store's local time (``tz``), as its staff read it."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise WhatIfError(
            f"{option} {text!r} is not an ISO 8601 time, e.g. 2026-11-28T09:00:00+01:00"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


def write_events(path: Path, events: Sequence[ev.Event]) -> None:
    """JSON lines in the log's wire format, so ``aisle`` tools and ``jq`` read them alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(ev.encode(e) + b"\n" for e in events))
