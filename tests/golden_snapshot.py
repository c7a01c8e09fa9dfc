"""The golden snapshot: a store's engine state, saved by today's code, kept in the tests.

``tests/fixtures/snapshot/`` holds a short store day (``events.jsonl``) and the snapshot
of the standard packs' engine cut half-way through it (``snapshot.msgpack``).
``tests/test_snapshot.py`` loads that snapshot and carries on, and checks that today's
code writes the same bytes: an accidental change of the encoding fails it. After a
deliberate change (a new snapshot or state version, a changed pack), regenerate it:

    .venv/bin/python -m tests.golden_snapshot

and commit both files with the change that made it necessary.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from core import events as ev
from core.layout import load_layout
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from rules.snapshot import snapshot

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "tests" / "fixtures" / "snapshot"
EVENTS, SNAPSHOT = FOLDER / "events.jsonl", FOLDER / "snapshot.msgpack"
PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
LATENESS_S = 2.0


def engine() -> Engine:
    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    return Engine(load_rules(PACKS, Reference.of(layout)), lateness_s=LATENESS_S)


def events() -> list[ev.Event]:
    return [ev.decode(line) for line in EVENTS.read_bytes().splitlines()]


def cut(day: list[ev.Event]) -> int:
    """Just after the middle pick: a cart is open, windows and timers are pending."""
    picks = [i for i, e in enumerate(day) if e.type == "item.picked"]
    return picks[len(picks) // 2] + 1


def main() -> None:
    from simulator.day import simulate  # only to make the day: the fixture holds it

    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")
    opening = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    day = simulate(layout, opening, hours=0.4, shoppers=8, seed=12).events
    FOLDER.mkdir(parents=True, exist_ok=True)
    EVENTS.write_bytes(b"".join(ev.encode(e) + b"\n" for e in day))
    e = engine()
    e.process(events()[: cut(day)])
    SNAPSHOT.write_bytes(snapshot(e))
    print(f"{EVENTS} ({len(day)} events), {SNAPSHOT} ({SNAPSHOT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
