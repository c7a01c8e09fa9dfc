"""The end-to-end check's report: the packs' figures over the truth and over the adapters,
metric by metric, with a target each; as a terminal table, Markdown, and JUnit XML.

Each row is one metric: what the packs made of the simulator's true events, what they made
of the adapters', the difference, the target and whether it was met. Targets the issue
sets (entries and exits right, dwell within 1 s, heatmap r) are its own; the others
(counts within a share, means within a second) are this report's, and every one can be
changed (``Targets``, ``aisle simulate --video --target NAME=VALUE``). Rows without a
target (tracking scores) are reported only. A metric the film cannot show (passers-by:
the simulator has them walk past without a path, so no camera films them) is skipped,
with the reason, rather than failed.
"""

from __future__ import annotations

import math
import statistics
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
from rich.markup import escape
from rich.table import Table

from core import events as ev
from simulator.eyes import accuracy
from simulator.eyes.accuracy import Figures
from simulator.eyes.video import Checked, Side
from simulator.scenario_report import day_cells

__all__ = [
    "Row",
    "TargetError",
    "Targets",
    "figures_of",
    "markdown",
    "parse_targets",
    "rows",
    "table",
    "write_junit",
]

QUEUE_MIN_S = 10.0
"""Queue waits shorter than this are steps across the queue zone, not waits (both sides)."""


class TargetError(ValueError):
    """A target that is unknown or out of its range, named."""


class Targets(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the adapters must reach against the truth."""

    crossings_right: float = 0.99
    """Entries, and exits, paired with a true one within 2 s, no double counts (a share)."""
    footfall_pct: float = 1.0
    """The traffic pack's footfall within this many percent of the truth's."""
    dwell_within_1s: float = 0.95
    """The share of true zone visits (10 s or more) found with their dwell within 1 s."""
    heatmap_r: float = 0.95
    """The heatmap pack's day cells: dwell correlated with the truth's at least this much."""
    count_pct: float = 5.0
    """Passers-by, zone visits, queue waits: counts within this many percent."""
    mean_s: float = 1.0
    """Mean zone visit dwell and mean queue wait within this many seconds."""
    capture_rate: float = 0.02
    """The capture rate (entries per passer-by, the hours' mean) within this much."""

    def __post_init__(self) -> None:
        for name in ("crossings_right", "dwell_within_1s"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TargetError(f"target {name}: {getattr(self, name)!r} is not in [0, 1]")
        if not -1.0 <= self.heatmap_r <= 1.0:
            raise TargetError(f"target heatmap_r: {self.heatmap_r!r} is not in [-1, 1]")
        for name in ("footfall_pct", "count_pct", "mean_s", "capture_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1e6):
                raise TargetError(f"target {name}: {value!r} is not in [0, 1000000]")


def parse_targets(items: Sequence[str], base: Targets | None = None) -> Targets:
    """``NAME=VALUE`` pairs over ``base`` (default: the defaults)."""
    names = list(Targets.__struct_fields__)
    values = msgspec.structs.asdict(base or Targets())
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise TargetError(
                f"--target {item!r}: give NAME=VALUE (NAME one of {', '.join(names)})"
            )
        if name not in names:
            raise TargetError(f"--target {item!r}: no target {name!r}; targets: {', '.join(names)}")
        try:
            values[name] = float(text)
        except ValueError:
            raise TargetError(f"--target {item!r}: {text!r} is not a number") from None
    return Targets(**values)


Status = Literal["pass", "fail", "skip", "info"]


@dataclass(frozen=True)
class Row:
    """One metric of the report."""

    metric: str
    truth: str
    adapters: str
    difference: str
    target: str  # "" when only reported
    status: Status
    why: str = ""  # for a failed or skipped row: the reason, in words


def _metrics(side: Side) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for d in side.derived:
        if isinstance(d, ev.Metric):
            found.setdefault(d.data.name, []).append(d.data.value)
    return found


def _count(side: Side, kind: type) -> int:
    return sum(isinstance(e, kind) for e in side.inputs)


def _num(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:,.0f}" if v == int(v) and abs(v) < 1e15 else f"{v:,.2f}"


def _signed(v: float, unit: str = "") -> str:
    if math.isnan(v):
        return "n/a"
    return (f"{v:+,.0f}" if v == int(v) else f"{v:+,.2f}") + unit


def _pct(a: float, b: float) -> float:
    """b against a, in percent of a (0 when both are 0)."""
    if a == 0:
        return 0.0 if b == 0 else math.inf
    return 100.0 * (b - a) / a


def _within_pct(metric: str, t: float, a: float, pct: float) -> Row:
    off = _pct(t, a)
    ok = abs(off) <= pct + 1e-9
    diff = f"{_signed(a - t)} ({off:+.1f}%)" if math.isfinite(off) else _signed(a - t)
    why = "" if ok else f"{metric}: {_num(a)} against {_num(t)}, {diff} (target ±{pct:g}%)"
    return Row(metric, _num(t), _num(a), diff, f"±{pct:g}%", "pass" if ok else "fail", why)


def _mean_within(metric: str, t: list[float], a: list[float], within: float) -> Row:
    mt = statistics.fmean(t) if t else math.nan
    ma = statistics.fmean(a) if a else math.nan
    if not t and not a:
        return Row(metric, "none", "none", "", f"±{within:g} s", "pass")
    d = ma - mt
    ok = math.isfinite(d) and abs(d) <= within + 1e-9
    why = "" if ok else f"{metric}: {_num(ma)} s against {_num(mt)} s (target ±{within:g} s)"
    return Row(
        metric,
        f"{_num(mt)} s",
        f"{_num(ma)} s",
        _signed(d, " s"),
        f"±{within:g} s",
        "pass" if ok else "fail",
        why,
    )


def _share_row(
    metric: str,
    truth: str,
    adapters: str,
    share: float,
    target: float,
    why: str,
    extra: str = "",
) -> Row:
    ok = share >= target - 1e-12
    return Row(
        metric,
        truth,
        adapters,
        f"{100 * share:.1f}% right{extra}",
        f"≥ {100 * target:g}%",
        "pass" if ok else "fail",
        "" if ok else f"{why}: {100 * share:.1f}% (target ≥ {100 * target:g}%)",
    )


def figures_of(checked: Checked) -> Figures:
    """The event-by-event comparison (``simulator/eyes/accuracy.py``) of the two sides."""
    film = checked.film
    return accuracy.compare(
        checked.truth.layout,
        film.origin,
        checked.truth.inputs,
        checked.video.inputs,
        {c: (checked.camera_truth[c], checked.tracked[c]) for c in checked.tracked},
        visitors=len(film.run.visitors),
        seconds=checked.seconds,
    )


def _cells(side: Side) -> Counter[tuple[int, int]]:
    dwell: Counter[tuple[int, int]] = Counter()
    for _, c in day_cells(side.derived):
        dwell[(c.cell_x, c.cell_y)] += c.dwell_s
    return dwell


def rows(checked: Checked, figures: Figures, targets: Targets | None = None) -> list[Row]:
    """The report's rows, in the order a QA engineer reads them."""
    targets = targets or Targets()
    truth, video = checked.truth, checked.video
    tm, vm = _metrics(truth), _metrics(video)
    f = figures
    out = [
        _within_pct(
            "footfall (traffic pack)",
            sum(tm.get("footfall", [])),
            sum(vm.get("footfall", [])),
            targets.footfall_pct,
        ),
        _share_row(
            "entries (paired within 2 s)",
            str(f.true_entries),
            f"{f.entries} ({f.entries_paired} paired)",
            f.entries_right,
            targets.crossings_right,
            "entries right",
            f", {f.entries - f.entries_paired} unpaired",
        ),
        _share_row(
            "exits (paired within 2 s)",
            str(f.true_exits),
            f"{f.exits} ({f.exits_paired} paired)",
            f.exits_right,
            targets.crossings_right,
            "exits right",
            f", {f.exits - f.exits_paired} unpaired",
        ),
    ]
    tp, vp = _count(truth, ev.PasserbySeen), _count(video, ev.PasserbySeen)
    not_filmed = "the simulator's passers-by have no path: no camera films them"
    if tp and not vp:  # Run.people (what is rendered) holds the visitors only
        out.append(
            Row("passers-by", str(tp), str(vp), "", f"±{targets.count_pct:g}%", "skip", not_filmed)
        )
        out.append(Row("capture rate (traffic pack)", "", "", "", "", "skip", not_filmed))
    else:
        out.append(_within_pct("passers-by", tp, vp, targets.count_pct))
        tc, vc = tm.get("capture_rate", []), vm.get("capture_rate", [])
        mt = statistics.fmean(tc) if tc else math.nan
        mv = statistics.fmean(vc) if vc else math.nan
        ok = (not tc and not vc) or abs(mv - mt) <= targets.capture_rate + 1e-9
        out.append(
            Row(
                "capture rate (traffic pack)",
                _num(mt),
                _num(mv),
                _signed(mv - mt),
                f"±{targets.capture_rate:g}",
                "pass" if ok else "fail",
                "" if ok else f"capture rate {_num(mv)} against {_num(mt)}",
            )
        )
    tz, vz = tm.get("zone_visit_s", []), vm.get("zone_visit_s", [])
    out.append(_within_pct("zone visits (traffic pack)", len(tz), len(vz), targets.count_pct))
    out.append(_mean_within("zone visit dwell, mean", tz, vz, targets.mean_s))
    out.append(
        _share_row(
            "zone visit dwell within 1 s",
            f"{f.true_visits} visits",
            f"{f.visits_found} found, {f.visits_within_1s} within 1 s",
            f.dwell_within_1s,
            targets.dwell_within_1s,
            "zone visits with the dwell within 1 s",
        )
    )
    tq = [w for w in tm.get("queue_wait_s", []) if w >= QUEUE_MIN_S]
    vq = [w for w in vm.get("queue_wait_s", []) if w >= QUEUE_MIN_S]
    out.append(
        _within_pct(
            f"queue waits of {QUEUE_MIN_S:g} s or more", len(tq), len(vq), targets.count_pct
        )
    )
    out.append(_mean_within("queue wait, mean", tq, vq, targets.mean_s))
    tcells, vcells = _cells(truth), _cells(video)
    keys = sorted(set(tcells) | set(vcells))
    r = accuracy.correlation([tcells[k] for k in keys], [vcells[k] for k in keys])
    ok = not math.isnan(r) and r >= targets.heatmap_r - 1e-12
    out.append(
        Row(
            "heatmap cell dwell (heatmap pack, day)",
            f"{sum(1 for k in keys if tcells[k])} cells, {_num(sum(tcells.values()))} s",
            f"{sum(1 for k in keys if vcells[k])} cells, {_num(sum(vcells.values()))} s",
            f"r = {r:.3f}" if not math.isnan(r) else "r undefined",
            f"r ≥ {targets.heatmap_r:g}",
            "pass" if ok else "fail",
            "" if ok else f"heatmap cell dwell r = {r:.3f} (target ≥ {targets.heatmap_r:g})",
        )
    )
    errors = len(truth.rule_errors) + len(video.rule_errors)
    out.append(
        Row(
            "rule errors",
            str(len(truth.rule_errors)),
            str(len(video.rule_errors)),
            "",
            "0",
            "fail" if errors else "pass",
            "; ".join([*truth.rule_errors, *video.rule_errors][:5]),
        )
    )
    out.append(
        Row(
            "floor tracks, fused: MOTA / IDF1",
            "",
            f"{f.floor.mota:.3f} / {f.floor.idf1:.3f}",
            "",
            "",
            "info",
        )
    )
    out.append(
        Row(
            "cross-camera id switches",
            "",
            str(f.floor.switches),
            "",
            "",
            "info",
        )
    )
    out.append(
        Row(
            "subjects per visitor seen",
            "1",
            f"{f.subjects_per_visitor:.2f} ({f.subjects} subjects)",
            "",
            "",
            "info",
        )
    )
    for camera, s in f.cameras.items():
        seen = len(checked.camera_truth.get(camera, ())) > 0
        scores = f"{s.mota:.3f} / {s.idf1:.3f} ({s.switches})"
        none = f"nobody in view; {s.false_positives} false boxes"
        out.append(
            Row(
                f"{camera}: MOTA / IDF1 (id switches)",
                "" if seen else "nobody",
                scores if seen else none,
                "",
                "",
                "info",
            )
        )
    return out


_MARK = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "info": ""}
_STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow", "info": ""}


def table(rs: Sequence[Row], title: str) -> Table:
    """The rows as a terminal table (rich)."""
    t = Table(title=escape(title), title_justify="left")
    for name, justify in (
        ("metric", "left"),
        ("truth", "right"),
        ("adapters", "right"),
        ("difference", "right"),
        ("target", "right"),
        ("result", "left"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rs:
        mark = _MARK[r.status]
        result = f"[{_STYLE[r.status]}]{mark}[/]" if mark else "reported"
        t.add_row(
            *(escape(x) for x in (r.metric, r.truth, r.adapters, r.difference, r.target)), result
        )
    return t


def markdown(rs: Sequence[Row]) -> str:
    """The rows as a Markdown table (docs/benchmarks.md); a missed target is MISSED."""
    word = {"pass": "met", "fail": "**MISSED**", "skip": "skipped", "info": "reported"}
    lines = [
        "| metric | truth | adapters | difference | target | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rs:
        cells = [r.metric, r.truth, r.adapters, r.difference, r.target, word[r.status]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def write_junit(path: Path, rs: Sequence[Row], suite: str, seconds: float) -> None:
    """One test suite, one test case per metric: a failure for a missed target, skipped
    for a metric the film cannot show, the value in ``system-out`` for every case."""
    root = ET.Element("testsuites", name="aisle simulate --video")
    failures = sum(r.status == "fail" for r in rs)
    skipped = sum(r.status == "skip" for r in rs)
    attrs = {
        "name": suite,
        "tests": str(len(rs)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": f"{seconds:.3f}",
    }
    node = ET.SubElement(root, "testsuite", attrs)
    for r in rs:
        case = ET.SubElement(node, "testcase", classname=suite, name=r.metric, time="0")
        parts = zip(
            ("truth", "adapters", "difference", "target"),
            (r.truth, r.adapters, r.difference, r.target),
            strict=True,
        )
        said = "; ".join(f"{name} {value}" for name, value in parts if value)
        if r.status == "fail":
            failure = ET.SubElement(case, "failure", message=r.why or said)
            failure.text = said
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.why)
        ET.SubElement(case, "system-out").text = said
    root.set("tests", str(len(rs)))
    root.set("failures", str(failures))
    root.set("skipped", str(skipped))
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
