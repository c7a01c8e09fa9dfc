"""Evaluation cost of compiled rule expressions, against Python's eval and a hand-written lambda.

    .venv/bin/python bench/expressions.py

Each expression runs against a real ``ItemPicked`` event (its ``type`` is a property, so
reading it costs a Python call) or, for the position case, a small ``__slots__`` scope.
The baseline is ``eval`` of a pre-compiled code object with the scope's values already in a
dict (generous to eval: building that dict per event is not counted); the floor is a lambda
written by hand. A ratio to the lambda near 1 means the compiled expression adds nothing.
"""

from __future__ import annotations

import timeit
from datetime import UTC, datetime
from typing import Any

from core import events as ev
from rules.expressions import Where, compile_expr, compile_template

AGE_RESTRICTED = ["beer", "wine", "cigarettes", "vodka", "cider", "lottery"] * 5
PRICES = {"beer": 250, "wine": 900}


def price(sku: str) -> int:
    return PRICES.get(sku, 0)


def zone_of(x: float, y: float) -> str:
    return "checkout-queue" if x > 10 else "aisle"


class Scope:
    __slots__ = ("data", "s", "type", "wait_s")

    def __init__(self, event: Any, **extra: Any) -> None:
        self.type = event.type
        self.data = event.data
        for k, v in extra.items():
            setattr(self, k, v)


def per_call_us(fn: Any, arg: Any, number: int = 200_000) -> float:
    best = min(timeit.repeat(lambda: fn(arg), number=number, repeat=5))
    empty = min(timeit.repeat(lambda: None, number=number, repeat=5))
    return (best - empty) / number * 1e6


def main() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    event = ev.new(
        ev.ItemPicked, store="s1", at=at, source="cam", subject="v-1",
        data=ev.ItemData(sku="beer", shelf="A1", qty=2),
    )  # fmt: skip
    sample = ev.PositionSample(track="t1", x=12.5, y=3.0)
    position = Scope(event, s=sample, wait_s=93.4)
    functions = {"price": price, "zone_of": zone_of}
    constants = {"age_restricted": AGE_RESTRICTED}
    cases: list[tuple[str, Any, Any, bool]] = [
        (
            'type == "item.picked" and data.qty >= 2',
            event,
            lambda e: e.type == "item.picked" and e.data.qty >= 2,
            False,
        ),
        (
            "data.sku in age_restricted",
            event,
            lambda e, _k=frozenset(AGE_RESTRICTED): e.data.sku in _k,
            False,
        ),
        ("data.qty * price(data.sku)", event, lambda e: e.data.qty * price(e.data.sku), False),
        (
            'zone_of(s.x, s.y) == "checkout-queue"',
            position,
            lambda e: zone_of(e.s.x, e.s.y) == "checkout-queue",
            False,
        ),
        (
            "Waited {wait_s:.0f} s at {data.sku}",
            position,
            lambda e: f"Waited {e.wait_s:.0f} s at {e.data.sku}",
            True,
        ),
    ]
    names = ["type", "data", "s", "wait_s"]
    print(
        f"{'expression':42} {'compiled':>9} {'eval':>9} {'lambda':>9} {'÷eval':>6} {'÷lambda':>7}"
    )
    for source, scope, hand, template in cases:
        compile_ = compile_template if template else compile_expr
        expr = compile_(source, Where("bench", 1, 1), names=names, functions=functions,
                        constants=constants)  # fmt: skip
        py = f"f{source!r}" if template else source
        code = compile(py, "<eval>", "eval")
        env = {"__builtins__": {}, **functions, **constants}
        values = {n: getattr(scope, n) for n in names if hasattr(scope, n)}
        assert expr.fn(scope) == hand(scope) == eval(code, env, values)
        ours = per_call_us(expr.fn, scope)
        base = per_call_us(lambda v, code=code, env=env: eval(code, env, v), values)
        floor = per_call_us(hand, scope)
        print(
            f"{source:42} {ours:6.3f} µs {base:6.3f} µs {floor:6.3f} µs "
            f"{ours / base:6.2f} {ours / floor:7.2f}"
        )


if __name__ == "__main__":
    main()
