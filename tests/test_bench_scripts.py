"""The benchmark scripts count what they claim to: their comparisons, and no row dropped."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import events as ev
from simulator.scenario_report import compare_receipts
from tests.benchkit import load_bench

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def _receipt(cart: str, cause: str, **lines: int) -> ev.ReceiptIssued:
    data = ev.ReceiptData(
        cart=cart,
        lines=tuple(
            ev.ReceiptLine(sku=sku, name=sku, qty=q, unit_cents=100, amount_cents=100 * q)
            for sku, q in lines.items()
        ),
        total_cents=100 * sum(lines.values()),
        currency="EUR",
    )
    rule = ev.RuleRef(id="carts.cart", version="1")
    return ev.derive(
        ev.ReceiptIssued, rule=rule, caused_by=[cause], store="s1", at=T0, subject=cart, data=data
    )


def test_a_second_receipt_for_a_cart_is_counted_wrong_even_with_the_true_lines() -> None:
    truth = {"v1": {"cola": 2}, "v2": {"water": 1}}
    derived: list[ev.Event] = [
        _receipt("v1", "gate-1", cola=2),
        _receipt("v1", "gate-2", cola=2),  # the cart closed twice
        _receipt("v2", "gate-3", water=1),
    ]
    carts = compare_receipts(truth, derived)
    assert [(c.cart, c.right) for c in carts] == [("v1", False), ("v2", True)]
    assert carts[0].wrong() == "cart v1: 2 receipts issued, one expected"

    errors: Counter[str] = Counter()
    assert load_bench("receipt_accuracy").count(carts, errors) == 1
    assert errors == {"more than one receipt for a cart": 1}


def test_receipt_accuracy_counts_each_kind_of_error_once_per_cart() -> None:
    truth = {"v1": {"cola": 2, "water": 1}, "v2": {"water": 1}, "v3": {"tea": 1}}
    derived: list[ev.Event] = [
        _receipt("v1", "gate-1", cola=1, bread=1),  # cola off by one, water missing, bread extra
        _receipt("v4", "gate-4", tea=1),  # no receipt due
    ]
    errors: Counter[str] = Counter()
    right = load_bench("receipt_accuracy").count(compare_receipts(truth, derived), errors)
    assert right == 0
    assert errors == {
        "quantity off": 1,
        "item missing": 1,
        "item too many": 1,
        "receipt missing": 2,
        "receipt not due": 1,
    }


def test_receipt_accuracy_fails_on_an_import_it_lacks_instead_of_dropping_a_row() -> None:
    code = (
        "import runpy, sys\n"
        "sys.modules['simulator.noise'] = None  # the noise part cannot be imported\n"
        "sys.argv = ['bench/receipt_accuracy.py', '--days', '1', '--shoppers', '2']\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "import of simulator.noise halted" in result.stderr, result.stderr
    assert "noise off" not in result.stdout, "no row is printed without the others"


SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "stamp")


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_bench_scripts_help_says_its_whole_first_paragraph(name: str) -> None:
    doc = _bench_doc(name)
    first = " ".join(doc.split("\n\n")[0].split())
    result = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert first in " ".join(result.stdout.split()), (first, result.stdout)


def _bench_doc(name: str) -> str:
    tree = ast.parse((ROOT / "bench" / f"{name}.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc, f"bench/{name}.py has no docstring"
    return doc
