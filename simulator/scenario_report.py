"""What a scenario expects, checked against what the pipeline derived, and the report of it.

Each expectation is checked and reported on its own (one JUnit test case each), with what was
expected beside what came, so a QA engineer can read a failure without opening the log.
"""

from __future__ import annotations

import difflib
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from core import events as ev
from core.yamlsource import PathKey, SourceError

Name = Annotated[str, Meta(min_length=1, max_length=128)]
Count = Annotated[int, Meta(ge=0)]
Tolerance = Annotated[float, Meta(ge=0)]
ANY_ALERT = "*"


class _Spec(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ReceiptExpect(_Spec):
    """One cart's receipt; empty ``lines``: no receipt may be issued for the cart."""

    cart: Name
    lines: dict[Name, Annotated[int, Meta(ge=1)]]
    age_check: bool | None = None
    total_cents: Count | None = None


class Within(_Spec):
    within: Annotated[float, Meta(gt=0, le=1)]


class AlertExpect(_Spec):
    alert: Name  # ``*``: any alert
    subject: Name | None = None
    labels: dict[str, str] = {}
    count: Count | None = None  # must: exactly this many (default: at least one)


class Alerts(_Spec):
    must: list[AlertExpect] = []
    must_not: list[AlertExpect] = []
    truth: bool = False  # the alerts the simulator's truth names, for exactly its visitors


TRUTH_ALERTS = ("hesitation", "left_without_receipt", "queue_wait_long")
"""The alerts the simulator's truth predicts (``simulator.shoppers._expected_alerts``)."""


class MetricExpect(_Spec):
    name: Name
    value: float
    tolerance: Tolerance = 0.0
    labels: dict[str, str] = {}
    subject: Name | None = None
    sum: bool = False  # the sum of every matching metric, not the last value


class HeatmapExpect(_Spec):
    """The day's tiles: the one at a floor point (``at``), how many cells were occupied
    (``cells``), or the total dwell over all cells (``dwell_s`` alone)."""

    at: tuple[float, float] | None = None
    visits: Count | None = None
    dwell_s: Annotated[float, Meta(ge=0)] | None = None
    cells: Count | None = None
    tolerance: Tolerance = 0.0


class EventsExpect(_Spec):
    type: Name
    count: Count
    subject: Name | None = None


class Expect(_Spec):
    receipts: Literal["exact"] | Within | list[ReceiptExpect] | None = None
    alerts: Alerts = Alerts()
    metrics: list[MetricExpect] = []
    heatmap: list[HeatmapExpect] = []
    events: list[EventsExpect] = []


@dataclass(frozen=True)
class Expectation:
    """One thing to check, with the line of the scenario file that asks for it."""

    line: int
    what: Any  # "exact", Within, ReceiptExpect, AlertExpect, MetricExpect, HeatmapExpect...
    must: bool = True  # for alerts: must fire, or must not


def expectations(expect: Expect, line_of: Callable[[PathKey], int]) -> list[Expectation]:
    out: list[Expectation] = []
    if isinstance(expect.receipts, list):
        for i, r in enumerate(expect.receipts):
            out.append(Expectation(line_of(("expect", "receipts", i)), r))
    elif expect.receipts is not None:
        out.append(Expectation(line_of(("expect", "receipts")), expect.receipts))
    if expect.alerts.truth:
        out.append(Expectation(line_of(("expect", "alerts", "truth")), "truth"))
    for key, items in (("must", expect.alerts.must), ("must_not", expect.alerts.must_not)):
        for i, a in enumerate(items):
            out.append(Expectation(line_of(("expect", "alerts", key, i)), a, key == "must"))
    for key in ("metrics", "heatmap", "events"):
        for i, x in enumerate(getattr(expect, key)):
            out.append(Expectation(line_of(("expect", key, i)), x))
    return sorted(out, key=lambda x: x.line)  # the report follows the file


# -- what a run gave ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario run produced: the truth, what came back from the log, the derived."""

    store: str
    truth_receipts: dict[str, dict[str, int]]
    truth_alerts: set[tuple[str, str]]  # (visitor, alert name)
    inputs: list[ev.Event]  # raw events as the engine service reads them from the log
    derived: list[ev.Event]
    published: int = 0  # raw events delivered (noise included)
    new: int = 0  # of those and the derived, how many the log did not hold yet
    late: int = 0
    closed: int = 0  # the last of ``derived``: what only closing the run's windows derived
    rule_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    alert_names: frozenset[str] = frozenset()  # what the loaded packs can raise (empty: unknown)


@dataclass(frozen=True)
class Check:
    label: str
    line: int
    ok: bool
    expected: str
    actual: str
    details: tuple[str, ...] = ()


def _num(v: float) -> str:
    return f"{v:.4g}"


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _lines(lines: dict[str, int] | None) -> str:
    if not lines:
        return "no receipt"
    return ", ".join(f"{sku}×{qty}" for sku, qty in sorted(lines.items()))


@dataclass(frozen=True)
class CartReceipts:
    """One cart's receipts against the truth: the lines due (None: no receipt is due) and
    the lines of each receipt issued for it."""

    cart: str
    due: dict[str, int] | None
    issued: tuple[dict[str, int], ...]

    @property
    def right(self) -> bool:
        """Exactly one receipt with the true lines, or none when none is due."""
        return self.issued == (() if self.due is None else (self.due,))

    def wrong(self) -> str:
        """What is wrong with the cart's receipts, for the report."""
        if len(self.issued) > 1:
            expected = "one" if self.due is not None else "none"
            return f"cart {self.cart}: {len(self.issued)} receipts issued, {expected} expected"
        got = self.issued[0] if self.issued else None
        return f"cart {self.cart}: expected {_lines(self.due)}, got {_lines(got)}"


def compare_receipts(
    truth: dict[str, dict[str, int]], derived: Sequence[ev.Event]
) -> list[CartReceipts]:
    """Every cart with a receipt due or issued, in cart order: what QA scenarios and the
    receipt accuracy benchmark count right or wrong (a second receipt for a cart is wrong,
    whatever its lines)."""
    issued: dict[str, list[dict[str, int]]] = {}
    for d in derived:
        if isinstance(d, ev.ReceiptIssued):
            lines: Counter[str] = Counter()
            for line in d.data.lines:
                lines[line.sku] += line.qty
            issued.setdefault(d.data.cart, []).append(dict(lines))
    carts = sorted(set(truth) | set(issued))
    return [CartReceipts(c, truth.get(c), tuple(issued.get(c, ()))) for c in carts]


def _issued(o: Outcome) -> dict[str, list[ev.ReceiptIssued]]:
    out: dict[str, list[ev.ReceiptIssued]] = {}
    for d in o.derived:
        if isinstance(d, ev.ReceiptIssued):
            out.setdefault(d.data.cart, []).append(d)
    return out


def _receipt_lines(receipts: list[ev.ReceiptIssued]) -> dict[str, int] | None:
    if not receipts:
        return None
    total: Counter[str] = Counter()
    for r in receipts:
        total.update({line.sku: line.qty for line in r.data.lines})
    return dict(total)


def _receipt_errors(o: Outcome) -> tuple[int, list[str]]:
    """Carts compared (true or issued), and one line per cart whose receipt is not true."""
    carts = compare_receipts(o.truth_receipts, o.derived)
    return len(carts), [c.wrong() for c in carts if not c.right]


def _check_receipts(x: Expectation, o: Outcome) -> Check:
    total, wrong = _receipt_errors(o)
    right = total - len(wrong)
    if x.what == "exact":
        return Check(
            "receipts: every receipt as true",
            x.line,
            not wrong,
            f"{_n(len(o.truth_receipts), 'receipt')}, each as true",
            f"{right} of {_n(total, 'cart')} right"
            if wrong
            else f"{_n(total, 'receipt')}, all as true",
            tuple(wrong[:20]),
        )
    share = right / total if total else 1.0
    return Check(
        f"receipts: at least {x.what.within:.1%} exactly right",
        x.line,
        share >= x.what.within,
        f"≥ {x.what.within:.1%} of carts exactly right",
        f"{share:.2%} ({right} of {total})",
        tuple(wrong[:20]),
    )


def _check_receipt(x: Expectation, o: Outcome) -> Check:
    r: ReceiptExpect = x.what
    got = _issued(o).get(r.cart, [])
    want = _lines(r.lines)
    extra = [f"age check {r.age_check}"] if r.age_check is not None else []
    extra += [f"total {r.total_cents} cents"] if r.total_cents is not None else []
    expected = "; ".join([want, *extra]) if r.lines else want
    if not got:
        return Check(f"receipt of cart {r.cart}", x.line, not r.lines, expected, "no receipt")
    lines = _receipt_lines(got)
    actual = [_lines(lines)]
    if r.age_check is not None:
        actual.append(f"age check {any(g.data.age_check for g in got)}")
    if r.total_cents is not None:
        actual.append(f"total {sum(g.data.total_cents for g in got)} cents")
    ok = (
        len(got) == 1
        and lines == r.lines
        and (r.age_check is None or got[0].data.age_check == r.age_check)
        and (r.total_cents is None or got[0].data.total_cents == r.total_cents)
    )
    details = (f"{len(got)} receipts issued for the cart",) if len(got) > 1 else ()
    return Check(f"receipt of cart {r.cart}", x.line, ok, expected, "; ".join(actual), details)


def _alert_names(alerts: list[ev.AlertRaised]) -> str:
    seen = Counter(f"{a.data.alert}({a.subject})" for a in alerts)
    return ", ".join(f"{k}×{n}" for k, n in sorted(seen.items())) or "none"


def _check_alert(x: Expectation, o: Outcome) -> Check:
    a: AlertExpect = x.what
    raised = [d for d in o.derived if isinstance(d, ev.AlertRaised)]
    hits = [
        d
        for d in raised
        if (a.alert == ANY_ALERT or d.data.alert == a.alert)
        and (a.subject is None or a.subject in (d.subject, d.data.key))
        and all(d.data.labels.get(k) == v for k, v in a.labels.items())
    ]
    name = "any alert" if a.alert == ANY_ALERT else f"alert {a.alert}"
    who = f" for {a.subject}" if a.subject else ""
    if a.labels:
        who += "{" + ",".join(f"{k}={v}" for k, v in sorted(a.labels.items())) + "}"
    if a.alert != ANY_ALERT and o.alert_names and a.alert not in o.alert_names:
        # A misspelt name must not fire and passes, testing nothing: say so.
        close = difflib.get_close_matches(a.alert, sorted(o.alert_names), n=1)
        return Check(
            f"{name}{who} must {'' if x.must else 'not '}fire",
            x.line,
            False,
            "an alert a loaded pack raises",
            f"no loaded pack raises {a.alert!r}"
            + (f" (did you mean {close[0]!r}?)" if close else ""),
        )
    if not x.must:
        return Check(
            f"{name}{who} must not fire",
            x.line,
            not hits,
            "none",
            f"{len(hits)}: {_alert_names(hits)}" if hits else "none",
        )
    if a.count is None:
        ok, expected = bool(hits), "at least 1"
    else:
        ok, expected = len(hits) == a.count, f"exactly {a.count}"
    actual = f"{len(hits)}" + ("" if ok else f"; alerts raised: {_alert_names(raised)}")
    return Check(f"{name}{who} must fire", x.line, ok, expected, actual)


def _check_truth_alerts(x: Expectation, o: Outcome) -> Check:
    raised = {
        (d.subject, d.data.alert)
        for d in o.derived
        if isinstance(d, ev.AlertRaised) and d.data.alert in TRUTH_ALERTS
    }
    missing = sorted(o.truth_alerts - raised)
    extra = sorted(raised - o.truth_alerts)
    details = [f"{name} for {who}: due, did not fire" for who, name in missing]
    details += [f"{name} for {who}: fired, not due" for who, name in extra]
    return Check(
        f"alerts as the truth says ({', '.join(TRUTH_ALERTS)})",
        x.line,
        not details,
        f"{len(o.truth_alerts)} due",
        f"{len(raised)} fired"
        + (f", {len(missing)} missing, {len(extra)} extra" if details else ""),
        tuple(details[:20]),
    )


def _check_metric(x: Expectation, o: Outcome) -> Check:
    m: MetricExpect = x.what
    labels = ",".join(f"{k}={v}" for k, v in sorted(m.labels.items()))
    label = f"metric {m.name}" + (f"{{{labels}}}" if labels else "")
    label += (f" of {m.subject}" if m.subject else "") + (" (sum)" if m.sum else " (last)")
    metrics = [d for d in o.derived if isinstance(d, ev.Metric)]
    found = [
        d
        for d in metrics
        if d.data.name == m.name
        and all(d.data.labels.get(k) == v for k, v in m.labels.items())
        and (m.subject is None or d.subject == m.subject)
    ]
    expected = f"{_num(m.value)} ± {_num(m.tolerance)}"
    if not found:
        names = ", ".join(sorted({d.data.name for d in metrics})) or "none"
        return Check(
            label, x.line, False, expected, "no such metric", (f"metrics derived: {names}",)
        )
    value = sum(d.data.value for d in found) if m.sum else found[-1].data.value
    ok = abs(value - m.value) <= m.tolerance + 1e-9
    return Check(label, x.line, ok, expected, _num(value))


def day_cells(derived: Sequence[ev.Event]) -> list[tuple[float, ev.HeatmapCell]]:
    """The cells of the day's heatmap (the standard pack's ``floor-day`` windows), each
    with its size in metres."""
    return [
        (d.data.size, cell)
        for d in derived
        if isinstance(d, ev.HeatmapTiles) and d.subject == "floor-day"
        for cell in d.data.cells
    ]


def _check_heatmap(x: Expectation, o: Outcome) -> Check:
    h: HeatmapExpect = x.what
    tiles = day_cells(o.derived)
    tol = f" ± {_num(h.tolerance)}"

    def near(got: float, want: float) -> bool:
        return abs(got - want) <= h.tolerance + 1e-9

    if h.cells is not None:
        cells = {(c.cell_x, c.cell_y) for _, c in tiles if c.visits}
        return Check(
            "heatmap: cells occupied over the day",
            x.line,
            near(len(cells), h.cells),
            f"{h.cells}{tol}",
            str(len(cells)),
        )
    if h.at is None:
        total = sum(c.dwell_s for _, c in tiles)
        want = h.dwell_s or 0.0
        return Check(
            "heatmap: dwell over all cells, the day",
            x.line,
            near(total, want),
            f"{_num(want)} s{tol}",
            f"{_num(total)} s",
        )
    x_m, y_m = h.at
    here = [
        c
        for size, c in tiles
        if (c.cell_x, c.cell_y) == (math.floor(x_m / size), math.floor(y_m / size))
    ]
    visits = sum(c.visits for c in here)
    dwell = sum(c.dwell_s for c in here)
    want, got, ok = [], [], True
    if h.visits is not None:
        want.append(f"visits {h.visits}{tol}")
        got.append(f"visits {visits}")
        ok &= near(visits, h.visits)
    if h.dwell_s is not None:
        want.append(f"dwell {_num(h.dwell_s)} s{tol}")
        got.append(f"dwell {_num(dwell)} s")
        ok &= near(dwell, h.dwell_s)
    return Check(
        f"heatmap: the day's cell at ({_num(x_m)}, {_num(y_m)}) m",
        x.line,
        ok,
        ", ".join(want),
        ", ".join(got) + ("" if here else " (no tile for that cell)"),
    )


def _check_events(x: Expectation, o: Outcome) -> Check:
    e: EventsExpect = x.what
    n = sum(
        1
        for d in (*o.inputs, *o.derived)
        if d.type == e.type and (e.subject is None or d.subject == e.subject)
    )
    who = f" of {e.subject}" if e.subject else ""
    return Check(f"{e.type} events{who}", x.line, n == e.count, str(e.count), str(n))


def check(x: Expectation, o: Outcome) -> Check:
    what = x.what
    if what == "exact" or isinstance(what, Within):
        return _check_receipts(x, o)
    if what == "truth":
        return _check_truth_alerts(x, o)
    checker = {
        ReceiptExpect: _check_receipt,
        AlertExpect: _check_alert,
        MetricExpect: _check_metric,
        HeatmapExpect: _check_heatmap,
        EventsExpect: _check_events,
    }[type(what)]
    return checker(x, o)


# -- reporting ---------------------------------------------------------------------------


@dataclass
class Result:
    """One scenario's run and its checks, as the report and JUnit need them."""

    file: str
    name: str
    outcome: Outcome
    checks: list[Check]
    seeds: dict[str, int] = field(default_factory=dict)  # what reproduces the run

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def report_lines(r: Result) -> list[tuple[str, str]]:
    """The report of one scenario as (kind, text) lines: head, pass, fail or detail."""
    o = r.outcome
    out = [
        ("head", f"scenario {r.name} ({r.file}) in store {o.store}"),
        (
            "detail",
            f"{o.published:,} raw events, {len(o.derived):,} derived ({o.new:,} new to the "
            f"log); {o.late} late, {len(o.rule_errors)} rule errors; {o.seconds:.2f} s",
        ),
    ]
    for c in r.checks:
        if c.ok:
            out.append(("pass", f"{c.label}: {c.actual}"))
        else:
            text = f"{c.label}: expected {c.expected}, got {c.actual}  [{r.file}:{c.line}]"
            out.append(("fail", text))
        out += [("detail", f"    {d}") for d in c.details]
    return out


def summary(results: Sequence[Result], seconds: float) -> str:
    checks = [c for r in results for c in r.checks]
    failed = [c for c in checks if not c.ok]
    bad = sum(1 for r in results if r.failed)
    return (
        f"{_n(len(results), 'scenario')}, {_n(len(checks), 'expectation')}: "
        f"{len(checks) - len(failed)} passed, {len(failed)} failed"
        + (f" (in {_n(bad, 'scenario')})" if bad else "")
        + f"; {seconds:.1f} s"
    )


def write_junit(path: Path, results: Sequence[Result], invalid: Sequence[SourceError] = ()) -> None:
    """One test suite per scenario file, one test case per expectation; a file that is
    not a valid scenario is a suite of one erroneous case, so that the report says so
    (and no stale report of an earlier run stays in its place)."""
    root = ET.Element("testsuites", name="aisle scenarios")
    by_file: dict[str, list[Result]] = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    total = failures = 0
    for file, rs in by_file.items():
        checks = [c for r in rs for c in r.checks]
        failed = sum(1 for c in checks if not c.ok)
        total, failures = total + len(checks), failures + failed
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file,
            tests=str(len(checks)),
            failures=str(failed),
            errors="0",
            time=f"{sum(r.outcome.seconds for r in rs):.3f}",
        )
        properties = ET.SubElement(suite, "properties")  # what reproduces a failure
        for r in rs:
            for key, value in {"store": r.outcome.store, **r.seeds}.items():
                ET.SubElement(properties, "property", name=f"{r.name}.{key}", value=str(value))
        for r in rs:
            for c in r.checks:
                case = ET.SubElement(
                    suite,
                    "testcase",
                    classname=r.name,
                    name=c.label,
                    file=file,
                    line=str(c.line),
                    time=f"{r.outcome.seconds / max(1, len(r.checks)):.3f}",
                )
                if not c.ok:
                    failure = ET.SubElement(
                        case, "failure", message=f"expected {c.expected}, got {c.actual}"
                    )
                    failure.text = "\n".join(
                        [f"{file}:{c.line}: expected {c.expected}, got {c.actual}", *c.details]
                    )
    for e in invalid:
        suite = ET.SubElement(
            root, "testsuite", name=e.file, tests="1", failures="0", errors="1", time="0"
        )
        case = ET.SubElement(
            suite, "testcase", classname=e.file, name="a valid scenario", file=e.file,
            line=str(e.line),
        )  # fmt: skip
        ET.SubElement(case, "error", message=e.message).text = str(e)
    root.set("tests", str(total + len(invalid)))
    root.set("failures", str(failures))
    root.set("errors", str(len(invalid)))
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
