"""Micro-benchmarks under pytest-benchmark, kept out of ``make test`` (``testpaths``).

    .venv/bin/pytest bench/micro --benchmark-only                     # measure, compare
    .venv/bin/pytest bench/micro --benchmark-only --benchmark-save=baseline   # a new baseline

``make bench-micro`` runs them against the baseline committed in ``bench/results/``
(``--benchmark-compare``); ``docs/benchmarks.md`` says how to read and renew it.

Each group holds aisle's code and what it is compared with, measured in the same run; at
the end a summary divides aisle's best time by each baseline's (the ratios hold better
than the absolute times from one machine, or one load, to another).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import stamp  # noqa: E402

# group -> role -> best seconds a call; the role "aisle" is divided by each other role.
BEST: dict[str, dict[str, float]] = defaultdict(dict)
SUBJECT = "aisle"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return stamp.lines()


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    """The saved JSON carries the stamp too (not in ``machine_info``, which a comparison
    checks for equality: the load differs from run to run)."""
    output_json["aisle_stamp"] = {
        "commit": stamp.commit(),
        "machine": stamp.machine(),
        "load_at_the_end": stamp.load(),
    }


@pytest.fixture
def best(benchmark: Any) -> Any:
    """``best(role)`` after ``benchmark(...)``: keep its best time for the ratios."""

    def keep(role: str) -> None:
        if benchmark.stats is not None:  # None where benchmarks are disabled
            BEST[benchmark.group][role] = benchmark.stats.stats.min

    return keep


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = [
        (group, role, roles[SUBJECT] / t)
        for group, roles in sorted(BEST.items())
        if SUBJECT in roles
        for role, t in roles.items()
        if role != SUBJECT
    ]
    if not rows:
        return
    terminalreporter.write_sep("-", "aisle's best time divided by the baseline's, same run")
    width = max(len(g) for g, _, _ in rows)
    for group, role, ratio in rows:
        terminalreporter.write_line(f"{group:{width}}  ÷ {role:8} {ratio:6.2f}")
    terminalreporter.write_line(stamp.load() + " at the end")
