"""One evaluation of a compiled rule expression, against Python's ``eval`` and a lambda.

Each expression runs against a real ``ItemPicked`` event (its ``type`` is a property, so
reading it costs a Python call) or, for the position case, a small ``__slots__`` scope.
The baseline is ``eval`` of a pre-compiled code object with the scope's values already in
a dict (generous to eval: building that dict per event is not counted); the floor is a
lambda written by hand. A ratio to the lambda near 1 means the compiled expression adds
nothing. Each time includes pytest-benchmark's call of the function, the same for all three.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core import events as ev
from rules.expressions import Where, compile_expr, compile_template

AGE_RESTRICTED = ["beer", "wine", "cigarettes", "vodka", "cider", "lottery"] * 5
PRICES = {"beer": 250, "wine": 900}
NAMES = ["type", "data", "s", "wait_s"]


def price(sku: str) -> int:
    return PRICES.get(sku, 0)


def zone_of(x: float, y: float) -> str:
    return "checkout-queue" if x > 10 else "aisle"


FUNCTIONS = {"price": price, "zone_of": zone_of}
CONSTANTS = {"age_restricted": AGE_RESTRICTED}


class Scope:
    __slots__ = ("data", "s", "type", "wait_s")

    def __init__(self, event: Any, **extra: Any) -> None:
        self.type = event.type
        self.data = event.data
        for k, v in extra.items():
            setattr(self, k, v)


EVENT = ev.new(
    ev.ItemPicked, store="s1", at=datetime(2026, 1, 1, tzinfo=UTC), source="cam",
    subject="v-1", data=ev.ItemData(sku="beer", shelf="A1", qty=2),
)  # fmt: skip
POSITION = Scope(EVENT, s=ev.PositionSample(track="t1", x=12.5, y=3.0), wait_s=93.4)
_RESTRICTED = frozenset(AGE_RESTRICTED)

# source, scope, the hand-written lambda, whether it is a template
CASES: dict[str, tuple[Any, Any, bool]] = {
    'type == "item.picked" and data.qty >= 2': (
        EVENT,
        lambda e: e.type == "item.picked" and e.data.qty >= 2,
        False,
    ),
    "data.sku in age_restricted": (EVENT, lambda e: e.data.sku in _RESTRICTED, False),
    "data.qty * price(data.sku)": (EVENT, lambda e: e.data.qty * price(e.data.sku), False),
    'zone_of(s.x, s.y) == "checkout-queue"': (
        POSITION,
        lambda e: zone_of(e.s.x, e.s.y) == "checkout-queue",
        False,
    ),
    "Waited {wait_s:.0f} s at {data.sku}": (
        POSITION,
        lambda e: f"Waited {e.wait_s:.0f} s at {e.data.sku}",
        True,
    ),
}


@pytest.mark.parametrize("how", ["aisle", "eval", "lambda"])
@pytest.mark.parametrize("source", list(CASES))
def test_evaluate(benchmark: Any, best: Any, source: str, how: str) -> None:
    scope, hand, template = CASES[source]
    benchmark.group = f"expression: {source}"
    expected = hand(scope)
    if how == "aisle":
        compile_ = compile_template if template else compile_expr
        expr = compile_(source, Where("bench", 1, 1), names=NAMES, functions=FUNCTIONS,
                        constants=CONSTANTS)  # fmt: skip
        assert benchmark(expr.fn, scope) == expected
    elif how == "eval":
        code = compile(f"f{source!r}" if template else source, "<eval>", "eval")
        env = {"__builtins__": {}, **FUNCTIONS, **CONSTANTS}
        values = {n: getattr(scope, n) for n in NAMES if hasattr(scope, n)}
        assert benchmark(eval, code, env, values) == expected
    else:
        assert benchmark(hand, scope) == expected
    best(how)
