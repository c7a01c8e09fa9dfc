"""The shelf adapter live: reading sources and the floor's positions in, the outbox out.

Two inputs in event time meet here: the load cells' readings and the floor's position
samples (from the log). A change is attributed once the positions have passed it
(``ShelfAdapter.release``); in a replay, where one input can run far ahead of the other,
each waits for the other to catch up (at most ``ahead_s`` of event time apart), so the
positions kept still cover the changes waiting. Neither waits for an input that has
stalled: positions that have not moved for ``stall_s`` of wall time (no camera, nobody
in the store) let the changes go with what is known, and readings that have stopped do
not hold the positions back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from adapters.readings import LineReader, Reading, ReadingSource
from adapters.shelf import ShelfAdapter, UnknownSensor
from core import events as ev
from core.outbox import Outbox, OutboxFull, OutboxStatus

__all__ = ["Clock", "ShelfProgress", "run_shelf"]

log = logging.getLogger(__name__)


@dataclass
class Clock:
    """One input's progress: how far in event time, and when it last moved (wall)."""

    at: datetime | None = None
    moved: float = field(default_factory=time.monotonic)
    ended: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def advance(self, at: datetime) -> None:
        if self.at is None or at > self.at:
            self.at = at
        self.moved = time.monotonic()
        self._changed.set()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    def stalled(self, stall_s: float) -> bool:
        return self.ended or time.monotonic() - self.moved > stall_s

    async def reach(self, at: datetime, stall_s: float) -> bool:
        """Until this input has reached ``at``, ended, or stalled, for ``stall_s`` at most
        (an input that moves but stays behind, as a clock set wrong does, holds nothing
        for longer); whether it did."""
        began = time.monotonic()
        while not (self.at is not None and self.at >= at) and not self.stalled(stall_s):
            self._changed.clear()
            left = stall_s - (time.monotonic() - max(self.moved, began))
            if time.monotonic() - began >= stall_s:
                return False
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, left)):
                    await self._changed.wait()
        return True


@dataclass
class ShelfProgress:
    readings: int = 0
    malformed: Counter[str] = field(default_factory=Counter)  # reason -> lines
    positions: int = 0  # position frames read
    events: Counter[str] = field(default_factory=Counter)
    new: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    outbox: OutboxStatus | None = None


async def run_shelf(
    adapter: ShelfAdapter,
    sources: list[tuple[LineReader, ReadingSource]],
    positions: AsyncIterator[ev.Event] | None,
    outbox: Outbox,
    *,
    entries: AsyncIterator[ev.Event] | None = None,
    stall_s: float = 5.0,
    ahead_s: float = 10.0,
    max_future_s: float = 5.0,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ShelfProgress], None] = lambda p: None,
) -> ShelfProgress:
    """Read every source to its end (or until ``stop``), attribute, publish; then flush
    the outbox. ``positions``: the store's ``position.samples`` as the log has them
    (None: there are none; every change goes with nobody near, to review); ``entries``:
    its ``shopper.entered``, for the groups that share a cart. A reading dated more
    than ``max_future_s`` after now is skipped: one from a gateway whose clock ran away
    would put its cell there, and every true reading after it out of order (the log
    refuses such events alike)."""
    progress = ShelfProgress()
    readings, floor = Clock(), Clock()
    if positions is None:
        floor.end()
    ahead = timedelta(seconds=ahead_s)
    lock = asyncio.Lock()  # one put at a time keeps the events in the order made

    warned: set[str] = set()

    def behind(slow: Clock, fast: Clock, slow_name: str, fast_name: str) -> None:
        """Said once: one input moves, but stays far behind the other."""
        if slow_name in warned or slow.at is None or fast.at is None:
            return
        warned.add(slow_name)
        log.warning(
            "%s are %.0f s behind %s and not catching up: a clock set wrong? (the "
            "changes are attributed with the positions of their own time, if any)",
            slow_name,
            (fast.at - slow.at).total_seconds(),
            fast_name,
        )

    async def put(events: list[ev.Event]) -> None:
        if not events:
            return
        async with lock:
            for e in events:
                progress.events[e.type] += 1
            try:
                progress.new += await outbox.put(events, wait=True)
            except (OutboxFull, ValueError) as exc:
                for e in events:
                    progress.refused[e.type] += 1
                    log.error(
                        "event refused: it can never fit in the outbox",
                        extra={"event": e.id, "type": e.type, "why": str(exc)},
                    )
        progress.outbox = outbox.status()
        on_progress(progress)

    async def read(reader: LineReader, open_source: ReadingSource) -> None:
        async with contextlib.aclosing(open_source()) as chunks:
            async for chunk in chunks:
                await take(reader, reader.feed(chunk))
        await take(reader, reader.end())

    async def take(reader: LineReader, got: list[Reading]) -> None:
        out: list[ev.Event] = []
        now = time.time()
        for r, line in zip(got, reader.numbers, strict=True):
            ahead_of_now = r.at.timestamp() - now
            if ahead_of_now > max_future_s:
                reader.reject(f"sensor {r.sensor!r}: {ahead_of_now:.0f} s in the future", line)
                continue
            try:
                out += adapter.reading(r.sensor, r.at, r.grams)
            except UnknownSensor:
                store = adapter.layout.store.id
                reader.reject(f"sensor {r.sensor!r} is under no slot of store {store!r}", line)
                continue
            except ValueError as exc:
                reader.reject(f"sensor {r.sensor!r}: {exc}", line)
                continue
            progress.readings += 1
            readings.advance(r.at)
        progress.malformed = sum((s.bad for s, _ in sources), Counter())
        out += adapter.release(force=floor.stalled(stall_s))
        await put(out)
        if (  # do not run ahead of the floor
            got and readings.at is not None and not await floor.reach(readings.at - ahead, stall_s)
        ):
            behind(floor, readings, "the floor's positions", "the readings")

    async def follow() -> None:
        assert positions is not None
        try:
            async for e in positions:
                if not isinstance(e, ev.PositionSamples):
                    continue
                # Nothing came between the last frame and this one: the floor is known up
                # to it (an empty store has no frames), whatever waits for it can go.
                adapter.floor_known(e.at - timedelta(microseconds=1))
                floor.advance(e.at - timedelta(microseconds=1))
                await put(adapter.release())
                if not await readings.reach(e.at - ahead, stall_s):  # nor ahead of the shelves
                    behind(readings, floor, "the readings", "the floor's positions")
                adapter.samples(e)
                progress.positions += 1
                floor.advance(e.at)
                await put(adapter.release())
        finally:
            floor.end()

    async def groups() -> None:
        assert entries is not None
        async for e in entries:
            if isinstance(e, ev.ShopperEntered):
                adapter.entered(e)

    async def tick() -> None:
        """Changes whose positions are not coming go after ``stall_s``."""
        while True:
            await asyncio.sleep(min(1.0, stall_s / 2))
            if adapter.waiting and floor.stalled(stall_s):
                await put(adapter.release(force=True))

    following = asyncio.create_task(follow()) if positions is not None else None
    ticking = asyncio.create_task(tick())
    grouping = asyncio.create_task(groups()) if entries is not None else None
    try:
        reading = asyncio.gather(*(read(r, s) for r, s in sources))
        stopping = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Future())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            stopped = not reading.done()
            if stopped:  # the sources are closed where they are
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        if not stopped:
            reading.result()  # a source that failed
        readings.end()
        last = adapter.waiting_until()
        if last is not None:  # the last changes: positions up to them, if they come
            await floor.reach(last + timedelta(seconds=adapter.settings.after_s), stall_s)
        await put(adapter.flush())
    finally:
        helpers = [t for t in (ticking, following, grouping) if t is not None]
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    await outbox.flush()
    progress.outbox = outbox.status()
    on_progress(progress)
    return progress
