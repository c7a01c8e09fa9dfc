"""The read models of a store day, against what the engine derived (real nats-server,
real SQLite): receipts with their evidence, alerts with their life cycle, metrics,
heatmaps, visits; dead letters for what cannot be applied; a rebuild equals the live run."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import events as ev
from core.jetstream import JetStreamLog
from core.natsd import EmbeddedNats
from readmodels.maintenance import rebuild, standings
from readmodels.receipts import Receipts
from readmodels.runner import (
    PositionMoved,
    ProjectionRunner,
    ProjectionService,
    ScopeConflict,
    by_name,
    projections,
)
from tests.conftest import scratch_log
from tests.readmodelkit import (
    count,
    day_with_derived,
    derived_of,
    dump,
    project,
    publish_lots,
    scalar,
    sqlite_db,
)

pytestmark = pytest.mark.integration
STORE = "corner-01"


@pytest.fixture(scope="module")
def lots() -> list[list[ev.Event]]:
    return day_with_derived(STORE, hours=1, shoppers=35)  # a day with a member of staff


async def test_the_read_models_of_a_day_hold_what_the_engine_derived(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    await publish_lots(jslog, lots)
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db)
    derived = derived_of(lots)
    kinds = Counter(e.type for e in derived)
    receipts = [e for e in derived if isinstance(e, ev.ReceiptIssued)]
    assert receipts, "the day has receipts"
    assert count(db, "receipt") == len(receipts)
    assert count(db, "receipt_line") == sum(len(r.data.lines) for r in receipts)
    assert scalar(db, "SELECT sum(total_cents) FROM receipt") == sum(
        r.data.total_cents for r in receipts
    )
    # Every line rests on its evidence: the picks less the put-backs of its SKU, each seen
    # by a camera or a sensor, and derived by the carts rule at its version.
    assert count(db, "line_evidence", "source IS NULL OR cause_at IS NULL") == 0
    assert (
        scalar(
            db,
            """SELECT count(*) FROM receipt_line l WHERE l.qty != (SELECT coalesce(sum(e.qty), 0)
           FROM line_evidence e WHERE e.receipt_id = l.receipt_id AND e.sku = l.sku)""",
        )
        == 0
    )
    assert count(db, "line_evidence", "rule_id != 'carts.cart' OR rule_version != '1.2.0'") == 0
    assert count(db, "cart", "status = 'paid'") == len(receipts)
    unpaid = [e for e in derived if isinstance(e, ev.Metric) and e.data.name == "carts.unpaid_exit"]
    assert count(db, "cart", "status IN ('exit', 'timeout')") == len(unpaid)
    assert count(db, "cart_change") == kinds["cart.item_added"] + kinds["cart.item_removed"]
    assert count(db, "alert") == kinds["alert.raised"]
    assert count(db, "alert", "resolved_at IS NOT NULL") == kinds["alert.resolved"]
    assert count(db, "metric_point") == kinds["metric"]
    assert scalar(db, "SELECT sum(count) FROM metric_hour") == kinds["metric"]
    footfall = sum(
        e.data.value for e in derived if isinstance(e, ev.Metric) and e.data.name == "footfall"
    )
    assert scalar(db, "SELECT sum(sum) FROM metric_hour WHERE name = 'footfall'") == footfall
    occupancy = [e for e in derived if isinstance(e, ev.Metric) and e.data.name == "occupancy"]
    assert count(db, "occupancy", "zone = ''") == len(occupancy)
    tiles = [e for e in derived if isinstance(e, ev.HeatmapTiles)]
    assert count(db, "heatmap_cell") == sum(len(t.data.cells) for t in tiles)
    dwell = sum(c.dwell_s for t in tiles for c in t.data.cells)
    assert scalar(db, "SELECT sum(dwell_s) FROM heatmap_hour") == pytest.approx(dwell)
    raw = [e for lot in lots for e in lot if e.type in ("shopper.entered", "shopper.exited")]
    staff = {e.subject for lot in lots for e in lot if e.type == "staff.session_started"}
    assert staff, "the day has a member of staff"
    assert count(db, "visit") == len({e.subject for e in raw} | staff)
    assert count(db, "visit", "staff") == len(staff)
    assert (
        count(db, "visit", "entered_at IS NOT NULL AND exited_at IS NOT NULL AND dwell_s > 0") > 0
    )
    assert count(db, "projection_rejection") == 0


def _day_of(db_events: list[ev.Event]) -> datetime:
    return max(e.at for e in db_events)


async def test_operators_actions_and_corrections_show_on_alerts_and_receipts(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    await publish_lots(jslog, lots)
    derived = derived_of(lots)
    alert = next(e for e in derived if isinstance(e, ev.AlertRaised))
    receipt = next(e for e in derived if isinstance(e, ev.ReceiptIssued))
    now = _day_of(derived)

    def act(cls: type[ev.OperatorEvent], by: str, reason: str = "", s: int = 0) -> ev.Event:
        data = ev.AlertActionData(alert=alert.id, by=by, reason=reason)
        at = now.replace(second=s)
        return ev.new(cls, store=STORE, at=at, source="api", subject=alert.subject, data=data)

    line = receipt.data.lines[0]
    refund = ev.ReceiptCorrectionData(
        receipt=receipt.id,
        by="ann",
        reason="the shopper showed the item was put back",
        adjustments=(ev.Adjustment(sku=line.sku, qty=-1, amount_cents=-line.unit_cents),),
        reviewed=True,
    )
    corrected = ev.new(
        ev.ReceiptCorrected, store=STORE, at=now, source="api", subject=receipt.subject, data=refund
    )
    await jslog.publish_many(
        [
            act(ev.AlertAcknowledged, "bob", s=1),
            act(ev.AlertDismissed, "bob", "a shopper waiting for a friend", s=2),
            act(ev.AlertClosed, "ann", "done", s=3),
            corrected,
        ]
    )
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db)
    with db.connect() as conn:
        got = conn.exec_driver_sql(
            "SELECT state, acknowledged_by, decision, decided_by, decision_reason, closed_by "
            "FROM alert WHERE id = ?",
            (alert.id,),
        ).one()
        assert tuple(got) == (
            "closed",
            "bob",
            "dismissed",
            "bob",
            "a shopper waiting for a friend",
            "ann",
        )
        actions = conn.exec_driver_sql(
            "SELECT action, by FROM alert_action WHERE alert_id = ? ORDER BY seq", (alert.id,)
        ).all()
        assert [tuple(x) for x in actions] == [
            ("acknowledged", "bob"),
            ("dismissed", "bob"),
            ("closed", "ann"),
        ]
        r = conn.exec_driver_sql(
            "SELECT total_cents, corrected_total_cents, corrections, reviewed FROM receipt "
            "WHERE id = ?",
            (receipt.id,),
        ).one()
        assert tuple(r) == (
            receipt.data.total_cents,
            receipt.data.total_cents - line.unit_cents,
            1,
            1,
        )
        l_ = conn.exec_driver_sql(
            "SELECT qty, corrected_qty, corrected_amount_cents FROM receipt_line "
            "WHERE receipt_id = ? AND sku = ?",
            (receipt.id, line.sku),
        ).one()
        assert tuple(l_) == (line.qty, line.qty - 1, line.amount_cents - line.unit_cents)
        c = conn.exec_driver_sql(
            "SELECT by, reason, amount_cents FROM receipt_correction WHERE receipt_id = ?",
            (receipt.id,),
        ).one()
        assert tuple(c) == ("ann", refund.reason, -line.unit_cents)


async def test_what_cannot_be_applied_goes_to_the_dead_letters_and_the_rest_goes_on(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    first, rest = lots[:1], lots[1:]
    await publish_lots(jslog, first)
    prefix = jslog.config.prefix
    rule = ev.RuleRef("carts.cart", "1.2.0")
    at = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
    wrong_total = ev.derive(
        ev.ReceiptIssued,
        rule=rule,
        caused_by=("x" * 32,),
        store=STORE,
        at=at,
        subject="v-x",
        data=ev.ReceiptData(
            cart="v-x",
            lines=(
                ev.ReceiptLine(sku="milk", name="Milk", qty=2, unit_cents=100, amount_cents=200),
            ),
            total_cents=150,
            currency="EUR",
        ),
    )
    stray = ev.new(
        ev.AlertConfirmed,
        store=STORE,
        at=at,
        source="api",
        subject="v-x",
        data=ev.AlertActionData(alert="0" * 32, by="eve"),
    )
    await jslog.publish_many([wrong_total, stray])
    # Straight onto a derived subject, around the log's validation: not an event at all.
    await jslog.js.publish(f"{prefix}.{STORE}.alert.raised", b'{"type": "alert.raised", "id": 1}')
    await publish_lots(jslog, rest)
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db, batch=50)
    with db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT event_id, field, deadletter, published FROM projection_rejection ORDER BY seq"
        ).all()
    assert [(r[0], r[1]) for r in rows] == [
        (wrong_total.id, "data.total_cents"),
        (stray.id, "data.alert"),
        (None, "id"),
    ]
    assert all(r[2] and r[3] for r in rows), "kept on the dead-letter subject"
    letters = [d async for _, d in jslog.deadletters(store=STORE)]
    reasons = sorted(d.reason for d in letters)
    assert len(letters) == 3, reasons
    assert any("150 is not the lines' sum 200" in r for r in reasons)
    assert any(f"no alert {'0' * 32}" in r for r in reasons)
    assert {d.source for d in letters} == {"projection:receipts", "projection:alerts"}
    # ...and everything after them was applied.
    receipts = [e for e in derived_of(lots) if isinstance(e, ev.ReceiptIssued)]
    assert count(db, "receipt") == len(receipts)


async def test_a_rebuild_equals_the_read_models_kept_live(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    db = sqlite_db(tmp_path / "rm.db")
    stop = asyncio.Event()
    live = asyncio.create_task(ProjectionService(jslog, db, batch=40).run(stop))
    for lot in lots:  # the day streams in while the projections follow it
        await publish_lots(jslog, [lot])
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    stop.set()
    await live
    await project(jslog, db)  # whatever the live run had not reached yet
    incremental = dump(db)
    assert incremental["receipt"]
    await rebuild(jslog, db)
    assert dump(db) == incremental


async def test_a_second_process_on_the_same_projection_stops_instead_of_applying_twice(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    await publish_lots(jslog, lots[:2])
    db = sqlite_db(tmp_path / "rm.db")
    first = ProjectionRunner(Receipts(), jslog, db, batch=50)
    second = ProjectionRunner(Receipts(), jslog, db, batch=50)
    # A consumer of its own: with the same, the second would fence the first out at once
    # (its next pull finds the consumer gone), and that stops it as well.
    second.consumer += "_2"
    await first.open()
    await second.open()  # both start from the same position...
    try:
        assert await first.step() > 0
        with pytest.raises(PositionMoved, match="another process moved its position"):
            await second.step()  # ...and the second may not commit over the first
    finally:
        await first.close()
        await second.close()


async def test_one_store_and_every_store_are_not_mixed_in_one_database(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    await publish_lots(jslog, lots[:1])
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db, scope=STORE)
    assert count(db, "projection_position", f"scope = '{STORE}'") == 5
    with pytest.raises(ScopeConflict, match=f"already follows store {STORE}"):
        await project(jslog, db)


async def test_dead_letters_a_crash_left_unsent_are_sent_at_the_next_start(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish_lots(jslog, lots[:1])
    at = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
    stray = ev.new(
        ev.AlertDismissed,
        store=STORE,
        at=at,
        source="api",
        subject="v-x",
        data=ev.AlertActionData(alert="1" * 32, by="eve"),
    )
    await jslog.publish(stray)
    db = sqlite_db(tmp_path / "rm.db")

    async def lost(*args: object, **kw: object) -> None:
        raise ConnectionError("the connection went with the dead letter")

    monkeypatch.setattr(jslog, "set_aside", lost)
    with pytest.raises(ConnectionError):
        await ProjectionService(jslog, db, selected=by_name(["alerts"])).run(until_caught_up=True)
    assert count(db, "projection_rejection", "published = 0") == 1, "recorded, not yet sent"
    monkeypatch.undo()
    await project(jslog, db)
    assert count(db, "projection_rejection", "published = 0") == 0
    letters = [d async for _, d in jslog.deadletters(store=STORE)]
    assert [d.source for d in letters] == ["projection:alerts"]
    assert letters[0].payload == ev.encode(stray)


async def test_a_projection_whose_consumer_another_process_took_stops_with_the_reason(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    await publish_lots(jslog, lots[:1])
    db = sqlite_db(tmp_path / "rm.db")
    stop = asyncio.Event()
    first = ProjectionService(jslog, db, selected=by_name(["receipts"]))
    running = asyncio.create_task(first.run(stop))
    while not first.progress[0].caught_up:
        await asyncio.sleep(0.05)
    second = ProjectionRunner(Receipts(), jslog, db)
    await second.open()  # the same consumer, made again: the first is fenced out
    try:
        await publish_lots(jslog, lots[1:2])
        with pytest.raises(PositionMoved, match="another process took its consumer over"):
            await asyncio.wait_for(running, 30)
    finally:
        stop.set()
        await second.close()


async def test_status_counts_the_messages_each_projection_has_yet_to_apply(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    await publish_lots(jslog, lots[:1])
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db)
    assert {s.projection: s.pending for s in await standings(jslog, db)} == dict.fromkeys(
        ("visits", "receipts", "alerts", "metrics", "heatmap"), 0
    )
    await publish_lots(jslog, lots[1:3])
    later = [e for lot in lots[1:3] for e in lot if e.type not in ev.SAMPLE_TYPES]
    lag = {s.projection: s.pending for s in await standings(jslog, db)}
    for p in projections():
        assert lag[p.name] == sum(1 for e in later if e.type in p.types), p.name
    last = (await jslog.js.stream_info(jslog.config.events_stream)).state.last_seq
    assert {s.last_seq for s in await standings(jslog, db)} == {last}


async def test_a_database_of_another_deployment_or_store_is_refused_with_the_reason(
    embedded_nats: EmbeddedNats, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    db = sqlite_db(tmp_path / "rm.db")
    async with scratch_log(embedded_nats.url) as one, scratch_log(embedded_nats.url) as other:
        await publish_lots(one, lots[:1])
        await project(one, db, scope=STORE)
        with pytest.raises(ScopeConflict, match="another AISLE_PREFIX"):
            await project(other, db, scope=STORE)
        await project(one, db, scope="corner-02")  # another store, a process of its own
        with pytest.raises(ScopeConflict, match="a rebuild of store corner-01 alone would drop"):
            await rebuild(one, db, scope=STORE)


async def test_a_rebuild_while_the_projections_run_is_refused_and_stops_nothing(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    """It took their consumers over, and `aisle serve` ended with "another process took
    its consumer over"."""
    await publish_lots(jslog, lots[:1])
    db = sqlite_db(tmp_path / "rm.db")
    service, stop = ProjectionService(jslog, db), asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    try:
        for _ in range(200):
            if service.progress and all(p.caught_up for p in service.progress):
                break
            await asyncio.sleep(0.1)
        with pytest.raises(ScopeConflict, match="the projections are running"):
            await rebuild(jslog, db)
        assert not running.done(), "the running projections carry on"
        receipts = count(db, "receipt")
        assert receipts > 0
    finally:
        stop.set()
        await running
    await rebuild(jslog, db)  # stopped: now it may
    assert count(db, "receipt") == receipts


async def test_an_event_the_log_holds_twice_is_applied_once(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    await publish_lots(jslog, lots)
    derived = derived_of(lots)
    again = [
        next(e for e in derived if isinstance(e, cls))
        for cls in (ev.ReceiptIssued, ev.Metric, ev.HeatmapTiles, ev.AlertRaised)
    ]
    for e in again:  # stored again past the duplicate window: another message id
        subject = f"{jslog.config.prefix}.{e.store}.{e.type}"
        await jslog.js.publish(subject, ev.encode(e), headers={"Nats-Msg-Id": f"{e.id}-again"})
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db, batch=50)
    kinds = Counter(e.type for e in derived)
    assert count(db, "receipt") == kinds["receipt.issued"]
    assert count(db, "metric_point") == kinds["metric"]
    assert scalar(db, "SELECT sum(count) FROM metric_hour") == kinds["metric"]
    assert count(db, "alert") == kinds["alert.raised"]
    tiles = [e for e in derived if isinstance(e, ev.HeatmapTiles)]
    assert scalar(db, "SELECT sum(windows) FROM heatmap_hour") == sum(
        len(t.data.cells) for t in tiles if (t.data.window_end - t.data.window_start).days < 1
    )
    assert count(db, "projection_rejection") == 0
    assert scalar(db, "SELECT sum(events) FROM projection_position") == count(
        db, "projection_applied"
    )


async def test_a_batch_at_a_time_writes_what_an_event_at_a_time_writes_refusals_included(
    jslog: JetStreamLog, lots: list[list[ev.Event]], tmp_path: Path
) -> None:
    """The projections apply a batch in a few statements, checking each event against the
    state the batch leaves: row for row, that is what one event at a time gives, with a
    correction, an over-removal and an id the tables already hold among the batch."""
    half = len(lots) // 2
    await publish_lots(jslog, lots[:half])
    derived = derived_of(lots[:half])
    receipt = next(e for e in derived if isinstance(e, ev.ReceiptIssued))
    pick = next(e for lot in lots[:half] for e in lot if isinstance(e, ev.ItemPicked))
    line = receipt.data.lines[0]
    refund = ev.ReceiptCorrectionData(
        receipt=receipt.id,
        by="ann",
        reason="put back",
        adjustments=(ev.Adjustment(sku=line.sku, qty=-1, amount_cents=-line.unit_cents),),
    )
    at = receipt.at
    corrected = ev.new(
        ev.ReceiptCorrected, store=STORE, at=at, source="api", subject=receipt.subject, data=refund
    )
    rule = ev.RuleRef("carts.cart", "1.2.0")
    added = ev.derive(
        ev.CartItemAdded,
        rule=rule,
        caused_by=("a" * 32,),
        store=STORE,
        at=at,
        subject="v-late",
        data=ev.CartItemData(sku="milk", qty=1, cart="v-late"),
    )
    too_many = ev.derive(
        ev.CartItemRemoved,
        rule=rule,
        caused_by=("b" * 32,),
        store=STORE,
        at=at,
        subject="v-late",
        data=ev.CartItemData(sku="milk", qty=2, cart="v-late"),
    )
    # A put-back under a pick's id (another type, so not a copy of it): the shelf events'
    # table already holds that id.
    clash = ev.ItemPutBack(
        id=pick.id, store=STORE, at=pick.at, source="cam-x", subject=pick.subject, data=pick.data
    )
    await jslog.publish_many([corrected, added, too_many])
    subject = f"{jslog.config.prefix}.{STORE}.item.put_back"
    await jslog.js.publish(subject, ev.encode(clash), headers={"Nats-Msg-Id": "clash"})
    await publish_lots(jslog, lots[half:])
    one, many = sqlite_db(tmp_path / "one.db"), sqlite_db(tmp_path / "many.db")
    await project(jslog, one, batch=1)
    await project(jslog, many, batch=500)
    assert dump(many) == dump(one)
    with many.connect() as conn:
        refused = set(conn.exec_driver_sql("SELECT event_id, field FROM projection_rejection"))
    assert (too_many.id, "data.qty") in refused and (pick.id, "$") in refused, refused
    assert count(many, "receipt_correction") == 1


async def test_a_projection_waits_for_a_database_that_refuses_it_instead_of_ending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace

    from sqlalchemy.exc import OperationalError

    from readmodels.runner import _retrying

    tries = []

    async def open_() -> None:
        tries.append(1)
        if len(tries) < 3:
            raise OperationalError("BEGIN", {}, Exception("database is locked"))

    r = SimpleNamespace(
        projection=SimpleNamespace(name="receipts"), progress=SimpleNamespace(seq=7)
    )
    await _retrying(open_, r, asyncio.Event())  # type: ignore[arg-type]
    assert len(tries) == 3
    said = [x for x in caplog.records if "refused the batch" in x.getMessage()]
    assert len(said) == 2 and said[0].error == "database is locked"  # type: ignore[attr-defined]
    stop = asyncio.Event()
    stop.set()
    tries.clear()
    await _retrying(open_, r, stop, first_s=1.0)  # type: ignore[arg-type]
    assert tries == [], "a stop ends the wait"
