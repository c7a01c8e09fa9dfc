"""Simulated shoppers: their truth is what the standard rule packs derive from their events."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from core import events as ev
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from simulator.shoppers import Persona, Store, Truth, Visitor, plan, play, position_events

ROOT = Path(__file__).resolve().parent.parent
PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@cache
def store() -> Store:
    from core.layout import load_layout

    return Store(load_layout(ROOT / "examples" / "stores" / "convenience.yaml"))


def crowd(seed: int, n: int = 40) -> list[tuple[Visitor, list[ev.Event], Truth]]:
    rng = random.Random(seed)
    personas = [p for p in Persona if p not in (Persona.PASSERBY, Persona.GROUP)]
    out = []
    for i in range(n):
        persona = personas[i % len(personas)]
        member = "m-1a2b3c" if persona is Persona.MEMBER else None
        v = Visitor(
            f"v{seed}-{i}",
            persona,
            T0 + timedelta(seconds=20 * i),
            member=member,
            acts=plan(store(), persona, rng),
        )
        events, truth = play(store(), v)
        out.append((v, events, truth))
    return out


def derive(visits: list[tuple[Visitor, list[ev.Event], Truth]]) -> list[ev.Event]:
    events = [e for _, es, _ in visits for e in es] + position_events(
        store(), [(v, t) for v, _, t in visits]
    )
    events.sort(key=lambda e: (e.at, e.id))
    engine = Engine(load_rules(PACKS, Reference.of(store().layout)))
    out = engine.process(events)
    out.extend(engine.advance("corner-01", events[-1].at.timestamp() + 86400))
    assert not out.errors and not out.late
    return out.derived


def test_the_same_seed_gives_the_same_events_and_truth() -> None:
    def run() -> list[bytes]:
        return [ev.encode(e) for _, es, _ in crowd(3, 12) for e in es]

    assert run() == run()
    assert run() != [ev.encode(e) for _, es, _ in crowd(4, 12) for e in es]


def test_receipts_and_alerts_match_the_truth() -> None:
    visits = crowd(1)
    derived = derive(visits)
    receipts = {
        d.subject: {line.sku: line.qty for line in d.data.lines}
        for d in derived
        if isinstance(d, ev.ReceiptIssued)
    }
    alerts = {(d.subject, d.data.alert) for d in derived if isinstance(d, ev.AlertRaised)}
    for v, _, truth in visits:
        if truth.paid:
            assert receipts.get(v.id) == dict(truth.cart), (v.persona, v.id)
        else:
            assert v.id not in receipts, (v.persona, v.id)
        for name in truth.alerts:
            assert (v.id, name) in alerts, (v.persona, name)
    expected = {(v.id, a) for v, _, t in visits for a in t.alerts}
    relevant = {
        a for a in alerts if a[1] in {"hesitation", "queue_wait_long", "left_without_receipt"}
    }
    assert relevant == expected
    assert sum(t.paid for _, _, t in visits) >= 20


def test_every_persona_does_what_it_says() -> None:
    visits = crowd(2, 27)
    by = {}
    for v, events, truth in visits:
        by.setdefault(v.persona, []).append((events, truth))
    for events, _ in by[Persona.HESITANT]:
        backs = [e for e in events if isinstance(e, ev.ItemPutBack)]
        assert len(backs) == 3 and len({e.data.sku for e in backs}) == 1
    for events, _ in by[Persona.WRONG_SHELF]:
        picked = next(e for e in events if isinstance(e, ev.ItemPicked))
        back = next(e for e in events if isinstance(e, ev.ItemPutBack))
        assert back.data.sku == picked.data.sku and back.data.shelf != picked.data.shelf
    for events, truth in by[Persona.NO_RECEIPT]:
        assert not truth.paid and truth.cart
        exits = [e for e in events if isinstance(e, ev.ShopperExited)]
        assert [e.data.line for e in exits] == ["entrance"]
    for events, truth in by[Persona.STAFF]:
        assert events[0].type == "staff.session_started" and not truth.cart
        assert truth.dwell["stock-room"] > 0
    for _, truth in by[Persona.QUEUE_WAITER]:
        assert truth.dwell["checkout-queue"] >= 100
    for events, _ in by[Persona.MEMBER]:
        assert any(isinstance(e, ev.FaceMatched) and e.data.member == "m-1a2b3c" for e in events)
