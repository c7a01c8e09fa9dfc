"""Snapshots: an engine restored from one carries on exactly as one that never stopped."""

from __future__ import annotations

import json
import os
import re
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
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from rules.snapshot import Snapshot, SnapshotError, restore, snapshot
from simulator.day import simulate
from simulator.shoppers import Store
from tests import golden_snapshot as golden

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


def engine(
    lateness_s: float = 0.0,
    source_idle_s: float = 0.0,
    members: dict[str, str] | None = None,
) -> Engine:
    store, _, simulated = day()
    members = simulated if members is None else members
    rules = load_rules(PACKS, Reference.of(store.layout, members=members))
    return Engine(rules, lateness_s=lateness_s, source_idle_s=source_idle_s)


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
    unbroken = finish(engine(1.0, source_idle_s=10.0), lagged)
    k = len(lagged) // 2
    first = engine(1.0, source_idle_s=10.0)
    out = first.process(lagged[:k])
    second = engine(1.0, source_idle_s=10.0)
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
events, e = lagged_day(), engine(1.0, source_idle_s=10.0)
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
    assert got == finish(engine(1.0, source_idle_s=10.0), lagged_day())


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


# One step of a store's life in a process of its own: ``first`` applies the events before
# the cut and saves its snapshot; ``second`` restores it, is sent the last ``again`` events
# before the cut once more (a redelivery), then the rest of the day.
_STEP = """
import json, sys
from pathlib import Path
from core import events as ev
from rules.snapshot import restore, snapshot
from tests.test_snapshot import engine, finish
step, folder, cut, again = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
events = [ev.decode(line) for line in (folder / "events.jsonl").read_bytes().splitlines()]
e = engine(2.0, members=json.loads((folder / "members.json").read_text()))
if step == "first":
    derived = [ev.encode(d) for d in e.process(events[:cut]).derived]
    (folder / "snapshot").write_bytes(snapshot(e))
else:
    restore(e, (folder / "snapshot").read_bytes())
    late = e.partitions["corner-01"].late
    derived = finish(e, events[cut - again :])
    print(e.partitions["corner-01"].late - late)
(folder / step).write_bytes(b"\\n".join(derived))
"""


def _step(step: str, folder: Path, cut: int, again: int, hash_seed: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", _STEP, step, str(folder), str(cut), str(again)],
        cwd=ROOT,
        env=os.environ | {"PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return data.split(b"\n") if data else []


def test_a_redelivered_pick_after_a_restore_in_a_new_process_is_not_charged_twice(
    tmp_path: Path,
) -> None:
    """Snapshot in one process, restore in another with another hash seed, and send the
    events just before the cut again: those still within the lateness are known, and
    dropped, so the receipts are those of a run that never stopped."""
    _, events, members = day()
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(ev.encode(e) for e in events))
    (tmp_path / "members.json").write_text(json.dumps(members))
    # A cut just after a pick: the pick is still in the buffer (lateness 2 s) when saved.
    picks = [i for i, e in enumerate(events) if e.type == "item.picked"]
    cut, again = picks[len(picks) // 2] + 1, 200
    _step("first", tmp_path, cut, again, hash_seed="1")
    late = int(_step("second", tmp_path, cut, again, hash_seed="2"))
    assert late < again  # some of the redelivered events were within the lateness
    got = _lines(tmp_path / "first") + _lines(tmp_path / "second")
    unbroken = finish(engine(2.0), events)
    receipts = [d for d in unbroken if b'"receipt.issued"' in d]
    assert [d for d in got if b'"receipt.issued"' in d] == receipts and receipts
    assert got == unbroken


def _edited(data: bytes, rule_id: str, **changes: object) -> bytes:
    """The snapshot with one rule's recorded kind, state version or rule version changed."""
    body = msgspec.msgpack.decode(data, type=Snapshot)
    for store in body.stores.values():
        saved = store.rules[rule_id]
        store.rules[rule_id] = msgspec.structs.replace(saved, **changes)  # type: ignore[arg-type]
    return msgspec.msgpack.encode(body)


def _half_day() -> tuple[Engine, bytes, list[ev.Event]]:
    """An engine cut half-way through the day, just after a pick (a cart is open)."""
    _, events, _ = day()
    picks = [i for i, e in enumerate(events) if e.type == "item.picked"]
    cut = picks[len(picks) // 2] + 1
    first = engine()
    first.process(events[:cut])
    return first, snapshot(first), events[cut:]


def test_each_rule_state_is_written_by_its_operator_with_its_kind_and_versions() -> None:
    first, data, _ = _half_day()
    body = msgspec.msgpack.decode(data, type=Snapshot)
    rules = body.stores["corner-01"].rules
    assert body.packs == first.rules.packs
    assert rules["carts.cart"].kind == "tally" and rules["carts.cart"].version == 1
    assert rules["carts.cart"].rule_version == first.rules.packs["carts"]
    carts = msgspec.msgpack.decode(rules["carts.cart"].state)
    assert set(carts) == {"carts", "causes", "alias", "crew", "opened"}  # by name
    assert {r.kind for r in rules.values()} >= {"tally", "aggregate", "sequence", "for"}


def test_an_open_cart_restored_from_a_snapshot_still_closes_at_its_longest_visit() -> None:
    """The carts pack's ``max_visit`` timers are partition state: carts open at the cut, whose
    gate and exit never come, close without a receipt after a restore as they would have."""
    first, data, _ = _half_day()
    carts = first.partitions["corner-01"].state["carts.cart"]["carts"]
    full = {cart for cart, items in carts.items() if items}
    assert full  # the cut is just after a pick
    restored = engine()
    restore(restored, data)
    until = first.partitions["corner-01"].newest + 86400
    unbroken = first.advance("corner-01", until).derived
    out = restored.advance("corner-01", until).derived
    assert [ev.encode(d) for d in out] == [ev.encode(d) for d in unbroken]
    unpaid = [d.data for d in out if d.type == "metric" and d.data.name == "carts.unpaid_exit"]
    assert {m.labels["cart"] for m in unpaid} == full
    assert {m.labels["closed_by"] for m in unpaid} == {"timeout"}
    assert not restored.partitions["corner-01"].state["carts.cart"]["carts"]


def test_a_state_of_another_operator_version_is_refused_naming_the_rule() -> None:
    _, data, _ = _half_day()
    with pytest.raises(SnapshotError, match=r"'carts.cart' is tally state version 99.*version 1"):
        restore(engine(), _edited(data, "carts.cart", version=99))
    with pytest.raises(SnapshotError, match=r"'carts.cart' is for state version 1"):
        restore(engine(), _edited(data, "carts.cart", kind="for"))
    fresh = engine()
    with pytest.raises(SnapshotError):
        restore(fresh, _edited(data, "carts.cart", version=99))
    assert fresh.partitions == {}  # a refused snapshot loads nothing


def test_a_new_pack_version_keeps_the_state_it_can_read_and_drops_what_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As a reload does: carts opened before the upgrade are paid after it. A state the
    new rule version cannot read is dropped, with a warning: the rule starts afresh."""
    store, _, members = day()
    first, data, rest = _half_day()
    carts = (ROOT / "rules" / "packs" / "carts.yaml").read_text()
    version = re.search(r'^version: "([^"]+)"', carts, re.M)
    assert version is not None
    newer = [p for p in PACKS if p.name != "carts.yaml"]
    bumped = f'version: "{version.group(1)}-next"'
    newer_carts = ("carts.yaml", carts.replace(version.group(0), bumped, 1))
    reference = Reference.of(store.layout, members=members)
    upgraded = Engine(load_rules([*newer, newer_carts], reference))
    with caplog.at_level("INFO", logger="aisle.engine"):
        restore(upgraded, data)
    assert "rule state kept across a new rule version" in caplog.text
    opened = {c for c, n in first.partitions["corner-01"].state["carts.cart"]["carts"].items() if n}
    paid = {d.data.cart for d in upgraded.process(rest).derived if isinstance(d, ev.ReceiptIssued)}
    assert opened and opened & paid
    caplog.clear()
    again = Engine(load_rules([*newer, newer_carts], reference))
    with caplog.at_level("INFO", logger="aisle.engine"):
        restore(again, _edited(data, "carts.cart", kind="count"))
    assert "rule state dropped: the new rule version cannot read it" in caplog.text
    assert "carts.cart" not in again.partitions["corner-01"].state


def test_the_golden_snapshot_loads_carries_on_and_is_what_todays_code_writes() -> None:
    """``tests/fixtures/snapshot``: saved by the code of its commit (regenerate it with
    ``python -m tests.golden_snapshot`` after a deliberate change, and say why)."""
    events = golden.events()
    k = golden.cut(events)
    unbroken = finish(golden.engine(), events)
    first = golden.engine()
    before = [ev.encode(d) for d in first.process(events[:k]).derived]
    restored = golden.engine()
    assert restore(restored, golden.SNAPSHOT.read_bytes()) == ["corner-01"]
    assert before + finish(restored, events[k:]) == unbroken
    assert snapshot(first) == golden.SNAPSHOT.read_bytes(), (
        "the snapshot encoding changed: if on purpose, bump the version that says so and "
        "run python -m tests.golden_snapshot"
    )


def test_a_version_1_snapshot_is_read_once_after_the_upgrade(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``tests/fixtures/snapshot/v1.msgpack``: the golden day's cut, saved by the code before
    version 2 (commit ab85a82). A store checkpointed then opens after the upgrade and
    carries on as if never stopped; only the ids it remembered (salted hashes) are lost."""
    events = golden.events()
    k = golden.cut(events)
    unbroken = finish(golden.engine(), events)
    before = [ev.encode(d) for d in golden.engine().process(events[:k]).derived]
    restored = golden.engine()
    with caplog.at_level("INFO", logger="aisle.engine"):
        assert restore(restored, (golden.FOLDER / "v1.msgpack").read_bytes()) == ["corner-01"]
    assert "a version 1 snapshot" in caplog.text
    assert restored.partitions["corner-01"].state["carts.cart"]["carts"]  # a cart is open
    # The fixture's state holds the ids its packs derived then (ids carry the rule's
    # version): what must carry on is what the shoppers are charged and alerted for.
    got = before + finish(restored, events[k:])
    assert _charged(got) == _charged(unbroken) and _charged(got)


def _charged(derived: list[bytes]) -> list[tuple[str, object]]:
    """Receipts and alerts as a shopper sees them: no ids, no causes."""
    out: list[tuple[str, object]] = []
    for d in map(ev.decode, derived):
        if isinstance(d, ev.ReceiptIssued | ev.AlertRaised | ev.AlertResolved):
            out.append((d.type, msgspec.to_builtins(d.data)))
    return out
