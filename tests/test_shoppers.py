"""Simulated shoppers: their truth is what the standard rule packs derive from their events."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest

from core import events as ev
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference
from simulator.day import alert_thresholds, standard_packs
from simulator.shoppers import (
    AlertThresholds,
    Persona,
    Store,
    Truth,
    Visitor,
    plan,
    play,
    position_events,
)

ROOT = Path(__file__).resolve().parent.parent
PACKS = standard_packs()
TRUTH_ALERTS = {"hesitation", "queue_wait_long", "left_without_receipt"}
STANDARD = alert_thresholds(PACKS)
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@cache
def store() -> Store:
    from core.layout import load_layout

    return Store(load_layout(ROOT / "examples" / "stores" / "convenience.yaml"))


def packs_with(folder: Path, **params: str | int) -> list[Path]:
    """The standard packs, copied into ``folder`` with the frustration pack's ``params`` set."""
    folder.mkdir()
    for pack in PACKS:
        text = pack.read_text()
        if pack.name == "frustration.yaml":
            for name, value in params.items():
                text, n = re.subn(rf"^  {name}: .*$", f"  {name}: {value}", text, flags=re.M)
                assert n == 1, name
        (folder / pack.name).write_text(text)
    return standard_packs(folder)


def crowd(
    seed: int, n: int = 40, thresholds: AlertThresholds | None = STANDARD
) -> list[tuple[Visitor, list[ev.Event], Truth]]:
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
        events, truth = play(store(), v, thresholds)
        out.append((v, events, truth))
    return out


def derive(
    visits: list[tuple[Visitor, list[ev.Event], Truth]], packs: list[Path] = PACKS
) -> list[ev.Event]:
    events = [e for _, es, _ in visits for e in es] + position_events(
        store(), [(v, t) for v, _, t in visits]
    )
    events.sort(key=lambda e: (e.at, e.id))
    engine = Engine(load_rules(packs, Reference.of(store().layout)))
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
    relevant = {a for a in alerts if a[1] in TRUTH_ALERTS}
    assert relevant == expected
    assert sum(t.paid for _, _, t in visits) >= 20


@pytest.mark.parametrize(
    ("params", "hesitating", "queueing"),
    [
        ({}, {Persona.HESITANT}, {Persona.QUEUE_WAITER}),
        ({"hesitation_count": 4}, set(), {Persona.QUEUE_WAITER}),
        ({"hesitation_window": "5s"}, set(), {Persona.QUEUE_WAITER}),
        ({"queue_wait": "200s"}, {Persona.HESITANT}, set()),
        (  # every shopper queues 3 to 25 s: some of each who pay wait long now
            {"queue_wait": "20s"},
            {Persona.HESITANT},
            {
                Persona.QUEUE_WAITER,
                Persona.MISSION,
                Persona.BROWSER,
                Persona.MEMBER,
                Persona.HESITANT,
                Persona.WRONG_SHELF,  # (which ones: the seed's draws, spots drawn too)
            },
        ),
    ],
)
def test_the_truths_alerts_follow_the_frustration_packs_parameters(
    tmp_path: Path,
    params: dict[str, str | int],
    hesitating: set[Persona],
    queueing: set[Persona],
) -> None:
    """Put-backs of one SKU within the window, one stay in the queue as long as the pack's
    wait: the truth applies the pack's parameters, and the pack derives what it says."""
    packs = packs_with(tmp_path / "packs", **params)
    visits = crowd(1, thresholds=alert_thresholds(packs))
    due = {(v.id, a) for v, _, t in visits for a in t.alerts}
    raised = {
        (d.subject, d.data.alert)
        for d in derive(visits, packs)
        if isinstance(d, ev.AlertRaised) and d.data.alert in TRUTH_ALERTS
    }
    assert raised == due
    persona = {v.id: v.persona for v, _, _ in visits}
    assert {persona[v] for v, a in due if a == "hesitation"} == hesitating
    assert {persona[v] for v, a in due if a == "queue_wait_long"} == queueing


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
