"""Encode and decode one event: aisle (msgspec, validating) against the standard library.

aisle's decode validates the whole event into typed structs; the baseline, ``json``, only
parses into dicts, so a ratio below 1 means aisle validates for less than the bare parse
costs. The events are those of ``bench/log_throughput.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.log_throughput import business_events, frames
from core import events as ev

EVENTS = {
    "business event": business_events(1, "c")[0],  # an item picked
    "frame of 20 samples": frames(1, "c")[0],
}


@pytest.mark.parametrize("codec", ["aisle", "json"])
@pytest.mark.parametrize("kind", list(EVENTS))
def test_encode(benchmark: Any, best: Any, kind: str, codec: str) -> None:
    event = EVENTS[kind]
    benchmark.group = f"encode: {kind} ({len(ev.encode(event))} bytes)"
    if codec == "aisle":
        assert ev.decode(benchmark(ev.encode, event)) == event
    else:
        as_dict = json.loads(ev.encode(event))
        assert json.loads(benchmark(lambda d: json.dumps(d).encode(), as_dict)) == as_dict
    best(codec)


@pytest.mark.parametrize("codec", ["aisle", "json"])
@pytest.mark.parametrize("kind", list(EVENTS))
def test_decode(benchmark: Any, best: Any, kind: str, codec: str) -> None:
    event = EVENTS[kind]
    payload = ev.encode(event)
    benchmark.group = f"decode: {kind} (aisle validates, json parses)"
    if codec == "aisle":
        assert benchmark(ev.decode, payload) == event
    else:
        assert benchmark(json.loads, payload)["id"] == event.id
    best(codec)
