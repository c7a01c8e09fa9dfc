"""The shelf adapter's two inputs in event time (``adapters/shelf_run.py``): changes wait
for the floor's positions, but no input that stalls, ends or runs on a clock set wrong
holds the other back for longer than ``stall_s``; every change ends up in the outbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from adapters.readings import LineReader, source_from
from adapters.shelf import ShelfAdapter
from adapters.shelf_run import run_shelf
from core import events as ev
from core.config import OutboxConfig
from core.layout import load_layout
from core.memlog import MemoryLog
from core.outbox import Outbox

LAYOUT = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
T = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


def cells(path: Path, take_at_s: float = 5.0, seconds: float = 12.0) -> Path:
    """One cola off fd-3 at ``take_at_s``, read 10 times a second."""
    with path.open("wb") as f:
        for k in range(int(seconds * 10)):
            grams = 6000.0 if k < take_at_s * 10 else 5460.0
            r = {
                "sensor": "fd-3",
                "at": (T + timedelta(seconds=k / 10)).isoformat(),
                "grams": grams,
            }
            f.write(msgspec.json.encode(r) + b"\n")
    return path


async def floor(offset_s: float, seconds: float, then_wait: bool) -> AsyncIterator[ev.Event]:
    """Ann at the drinks fridge, a frame every 0.2 s from ``offset_s`` (the floor's clock
    that far off the readings'); then, with ``then_wait``, nothing more, never ending (a
    live log with no one else coming)."""
    for k in range(int(seconds * 5)):
        at = T + timedelta(seconds=offset_s + k / 5)
        data = ev.PositionData(frame=k, samples=(ev.PositionSample("v-ann", 0.9, 3.0),))
        yield ev.new(ev.PositionSamples, store="corner-01", at=at, source="floor",
                     subject="floor", data=data)  # fmt: skip
    while then_wait:
        await asyncio.sleep(3600)


def trickled(path: Path) -> AsyncIterator[bytes]:
    """The file's lines a second of readings at a time, 0.2 s apart: a live gateway."""

    async def chunks() -> AsyncIterator[bytes]:
        lines = path.read_bytes().splitlines(keepends=True)
        for k in range(0, len(lines), 10):
            yield b"".join(lines[k : k + 10])
            await asyncio.sleep(0.2)

    return chunks()


async def run(
    tmp_path: Path, positions: AsyncIterator[ev.Event] | None, live: bool = False
) -> tuple[list[ev.Event], float]:
    log = MemoryLog()

    async def new_log() -> MemoryLog:
        return log

    adapter = ShelfAdapter(load_layout(LAYOUT))
    name, opener = source_from(str(cells(tmp_path / "cells.jsonl")))
    if live:
        opener = lambda: trickled(tmp_path / "cells.jsonl")  # noqa: E731
    began = time.monotonic()
    async with Outbox.open(tmp_path / "o.db", new_log, OutboxConfig()) as outbox:  # type: ignore[arg-type]
        await asyncio.wait_for(
            run_shelf(adapter, [(LineReader(name), opener)], positions, outbox, stall_s=1.0),
            timeout=30,
        )
    took = time.monotonic() - began
    return [r.event async for r in log.replay(store="corner-01")], took


async def test_a_change_waits_for_the_floor_and_goes_to_the_shopper_there(tmp_path: Path) -> None:
    (e,), took = await run(tmp_path, floor(0.0, 12.0, then_wait=True))
    assert (e.type, e.subject, e.source) == ("item.picked", "v-ann", "fd-3")
    assert took < 5, "the floor that stops moving holds the last change for stall_s only"


async def test_with_no_floor_every_change_is_a_review_at_once(tmp_path: Path) -> None:
    (e,), took = await run(tmp_path, None)
    assert isinstance(e, ev.ShelfUnresolved) and "no one on the floor" in e.data.reason
    assert took < 3


async def test_a_floor_whose_clock_is_a_minute_ahead_holds_nothing_for_long_and_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="adapters.shelf_run"):
        (e,), took = await run(tmp_path, floor(60.0, 30.0, then_wait=True), live=True)
    assert isinstance(e, ev.ShelfUnresolved), "Ann's positions are of another time"
    assert took < 10, "12 s of readings come in 2.4 s; the floor waited 1 s at most"
    assert "the readings are" in caplog.text and "behind the floor's positions" in caplog.text
