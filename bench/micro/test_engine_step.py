"""One step of the engine: ``Engine.process`` on a batch of 1,000 messages (the service's
batch) with the five standard packs, in a store in full swing.

The workload is ``bench/engine_throughput.py``'s (scripted shoppers in the example
convenience store); a frame of positions is one message. The engine first applies
``WARM`` batches (a store with a dozen shoppers in it and its windows open), then each
round times the next batch, as a worker applies them one after the other. The collector
runs at the worker's thresholds (``aisle engine run``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from bench.engine_throughput import PACKS
from bench.engine_throughput import scripted_workload as workload
from bench.stamp import ROOT
from core import events as ev
from core.layout import load_layout
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from rules.service.partition import ServiceConfig

BATCH = ServiceConfig.batch
WARM = 10  # batches applied before the first timed one
ROUNDS = 40
LAYOUT = load_layout(ROOT / "examples" / "stores" / "convenience.yaml").prepare()
WORKER_GC = (50_000, 50, 100)  # rules/service/cli.py


def counted(e: ev.Event) -> int:
    return len(e.data.samples) if isinstance(e, ev.PositionSamples) else 1


@pytest.fixture(scope="module")
def batches() -> list[list[ev.Event]]:
    events: list[ev.Event] = []
    target = 4 * BATCH * (WARM + ROUNDS + 1)  # about 3.9 counted events a message
    while len(events) < BATCH * (WARM + ROUNDS + 1):
        events, _ = workload(LAYOUT, target)
        target *= 2
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


@pytest.fixture
def worker_gc() -> Iterator[None]:
    before = gc.get_threshold()
    gc.collect()
    gc.set_threshold(*WORKER_GC)
    yield
    gc.set_threshold(*before)


def test_engine_step(benchmark: Any, batches: list[list[ev.Event]], worker_gc: None) -> None:
    config = ServiceConfig(worker="bench")
    engine = Engine(
        load_rules(PACKS, Reference.of(LAYOUT)),
        lateness_s=config.lateness_s,
        source_idle_s=config.source_idle_s,
    )
    for batch in batches[:WARM]:
        engine.process(batch)
    timed = iter(batches[WARM : WARM + ROUNDS])
    derived: list[int] = []

    def step() -> None:
        derived.append(len(engine.process(next(timed)).derived))

    benchmark.group = "engine step: 1,000 messages, standard packs"
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1)
    measured = sum(counted(e) for batch in batches[WARM : WARM + ROUNDS] for e in batch)
    benchmark.extra_info["counted_events_a_step"] = measured / ROUNDS
    benchmark.extra_info["derived_a_step"] = sum(derived) / ROUNDS
    assert len(derived) == ROUNDS and sum(derived) > 0
