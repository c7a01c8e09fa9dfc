"""Encode and decode cost of aisle's events, against the standard library's json.

    .venv/bin/python bench/event_codec.py

aisle's decode validates the whole event into typed structs; the baseline only parses JSON
into dicts (no validation at all), so a ratio below 1 means aisle validates for less than
the bare parse costs.
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from log_throughput import business_events, frames

from core import events as ev


def per_item_us(fn, items: list, repeat: int = 5) -> float:  # type: ignore[no-untyped-def,type-arg]
    best = min(timeit.repeat(lambda: [fn(x) for x in items], number=1, repeat=repeat))
    return best / len(items) * 1e6


def main() -> None:
    for label, events in (
        ("business event", business_events(20_000, "c")),
        ("frame of 20 samples", frames(2_000, "c")),
    ):
        payloads = [ev.encode(e) for e in events]
        dicts = [json.loads(p) for p in payloads]
        rows = [
            (
                "encode",
                per_item_us(ev.encode, events),
                per_item_us(lambda d: json.dumps(d).encode(), dicts),
            ),
            (
                "decode + validate",
                per_item_us(ev.decode, payloads),
                per_item_us(json.loads, payloads),
            ),
        ]
        print(f"\n{label} ({len(payloads[0])} bytes)      aisle (msgspec)   stdlib json   ratio")
        for name, ours, base in rows:
            print(f"  {name:26} {ours:10.2f} µs {base:12.2f} µs {ours / base:7.2f}")


if __name__ == "__main__":
    main()
