"""Snapshots: an engine restored from one carries on exactly as one that never stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import events as ev
from core.layout import load_layout
from rules.engine import Context, Engine
from rules.loader import load_rules
from rules.reference import Reference
from rules.snapshot import SnapshotError, restore, snapshot
from simulator.day import simulate
from simulator.shoppers import Store

ROOT = Path(__file__).resolve().parent.parent
PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


@cache
def day() -> tuple[Store, list[ev.Event], dict[str, str]]:
    store = Store(load_layout(ROOT / "examples" / "stores" / "convenience.yaml"))
    run = simulate(store, OPEN, hours=3, shoppers=60, seed=5)
    return store, run.events, run.members


def engine(lateness_s: float = 0.0, source_idle_s: float = 0.0) -> Engine:
    store, _, members = day()
    context = Context()
    rules = load_rules(PACKS, Reference.of(store.layout, members=members), context)
    return Engine(rules, lateness_s=lateness_s, source_idle_s=source_idle_s, context=context)


def finish(e: Engine, events: list[ev.Event]) -> list[bytes]:
    out = e.process(events)
    out.extend(e.advance("corner-01", events[-1].at.timestamp() + 86400))
    return [ev.encode(d) for d in out.derived]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.floats(0.05, 0.95), lateness=st.sampled_from([0.0, 2.0]))
def test_a_restored_engine_derives_what_an_unbroken_one_does(cut: float, lateness: float) -> None:
    _, events, _ = day()
    unbroken = finish(engine(lateness), events)
    k = int(len(events) * cut)
    first = engine(lateness)
    before = [ev.encode(d) for d in first.process(events[:k]).derived]
    saved = snapshot(first)
    second = engine(lateness)
    restore(second, saved)
    assert before + finish(second, events[k:]) == unbroken
    assert snapshot(second) != saved  # it moved on


@cache
def lagged_day() -> list[ev.Event]:
    """The day as two sources deliver it: the cameras' frames and heartbeats (a second
    apart, when no one is in sight too) 3 s behind the door's events."""
    _, events, _ = day()
    first_s, last_s = int(events[0].at.timestamp()), int(events[-1].at.timestamp())
    beats = [
        ev.new(
            ev.StoreHeartbeat,
            store="corner-01",
            at=datetime.fromtimestamp(t, UTC),
            source="cams",
            subject="cams",
        )
        for t in range(first_s - 5, last_s + 1)
    ]
    cams = {"position.samples", "store.heartbeat"}
    arrivals = sorted(
        (e.at.timestamp() + (3.0 if e.type in cams else 0.0), k, e)
        for k, e in enumerate([*beats, *events])
    )
    return [
        msgspec.structs.replace(e, source="cams" if e.type in cams else "door")
        for _, _, e in arrivals
    ]


def test_a_restored_engine_keeps_each_sources_clock() -> None:
    """Cameras 3 s behind the door: restored mid-day, the store's watermark still waits for
    them, and the output is the unbroken engine's."""
    lagged = lagged_day()
    unbroken = finish(engine(1.0, 10.0), lagged)
    k = len(lagged) // 2
    first = engine(1.0, 10.0)
    out = first.process(lagged[:k])
    second = engine(1.0, 10.0)
    restore(second, snapshot(first))
    assert second.partitions["corner-01"].sources == first.partitions["corner-01"].sources
    rest = second.process(lagged[k:])
    rest.extend(second.advance("corner-01", lagged[-1].at.timestamp() + 86400))
    assert not out.late and not rest.late
    assert [ev.encode(d) for d in out.derived + rest.derived] == unbroken


_HALF = """
import sys
from pathlib import Path

from core import events as ev
from rules.snapshot import restore, snapshot
from tests.test_snapshot import engine, lagged_day

folder, part = Path(sys.argv[1]), sys.argv[2]
events, e = lagged_day(), engine(1.0, 10.0)
k = len(events) // 2
if part == "first":
    out = e.process(events[:k])
    (folder / "snapshot").write_bytes(snapshot(e))
else:
    restore(e, (folder / "snapshot").read_bytes())
    out = e.process(events[k:])
    out.extend(e.advance("corner-01", events[-1].at.timestamp() + 86400))
(folder / part).write_bytes(b"\\n".join(ev.encode(d) for d in out.derived))
"""


def test_each_sources_clock_crosses_processes_with_other_hash_seeds(tmp_path: Path) -> None:
    for part, seed in (("first", "1"), ("second", "2")):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [sys.executable, "-c", _HALF, str(tmp_path), part], env=env, cwd=ROOT, check=True
        )
    got = [*(tmp_path / "first").read_bytes().split(b"\n")]
    got += (tmp_path / "second").read_bytes().split(b"\n")
    assert got == finish(engine(1.0, 10.0), lagged_day())


def test_a_snapshot_holds_data_only() -> None:
    _, events, _ = day()
    e = engine()
    e.process(events[: len(events) // 2])
    data = snapshot(e)
    assert b"pickle" not in data and len(data) < 2_000_000
    with pytest.raises(SnapshotError, match="version"):
        restore(engine(), msgspec.msgpack.encode({"version": 99}))
    with pytest.raises(SnapshotError, match="damaged"):
        restore(engine(), data[: len(data) // 2])
    with pytest.raises(SnapshotError, match="extension"):
        restore(engine(), msgspec.msgpack.encode(msgspec.msgpack.Ext(42, b"\x90")))
    fresh = engine()
    fresh.process(events[:10])
    with pytest.raises(SnapshotError, match="holds state for corner-01"):
        restore(fresh, data)


def test_a_store_moves_alone() -> None:
    """One store's snapshot, restored beside other stores, carries on as if never moved."""
    _, events, _ = day()
    other = [msgspec.structs.replace(e, store="corner-02") for e in events]
    k = len(events) // 2
    unbroken = finish(engine(2.0), events)
    first = engine(2.0)
    before = [ev.encode(d) for d in first.process(events[:k]).derived]
    first.process(other[:k])
    saved = snapshot(first, ["corner-01"])
    first.drop("corner-01")
    assert set(first.partitions) == {"corner-02"} and set(first._seen) == {"corner-02"}
    second = engine(2.0)
    second.process(other)
    assert restore(second, saved) == ["corner-01"]
    assert before + finish(second, events[k:]) == unbroken
