"""Edge cases of the operators that once went wrong, pinned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import msgspec

from core import events as ev
from core.layout import load_layout
from core.yamlsource import convert, load_yaml
from rules.engine import Engine
from rules.loader import load_rules
from rules.reference import Reference

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
LAYOUT = load_layout(ROOT / "examples" / "stores" / "convenience.yaml")


def engine(text: str, reference: Reference | None = None) -> Engine:
    return Engine(load_rules([("p.yaml", text)], reference or Reference.of(LAYOUT)))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def picked(s: float, subject: str = "v1", sku: str = "cola-500ml") -> ev.Event:
    data = ev.ItemData(sku=sku, shelf="fridge-drinks")
    return ev.new(
        ev.ItemPicked, store="corner-01", at=at(s), source="c", subject=subject, data=data
    )


def put_back(s: float, subject: str = "v1") -> ev.Event:
    data = ev.ItemData(sku="cola-500ml", shelf="fridge-drinks")
    return ev.new(
        ev.ItemPutBack, store="corner-01", at=at(s), source="c", subject=subject, data=data
    )


def test_an_alert_and_an_emit_of_one_firing_have_their_own_ids() -> None:
    e = engine(
        """
pack: p
version: "1"
rules:
  - id: both
    where: type == "item.picked"
    alert: {name: a}
    emit: {type: metric, data: {name: "'m'", value: data.qty}}
"""
    )
    out = e.process([picked(0)]).derived
    assert [d.type for d in out] == ["alert.raised", "metric"]
    assert out[0].id != out[1].id


def test_two_metrics_of_one_name_have_their_own_ids_and_a_lone_metric_keeps_its_id() -> None:
    e = engine(
        """
pack: p
version: "1"
rules:
  - id: twice
    where: type == "item.picked"
    metrics:
      - {name: picks, value: "1", labels: {shelf: "{data.shelf}"}}
      - {name: picks, value: data.qty, labels: {sku: "{data.sku}"}}
      - {name: alone, value: "1"}
"""
    )
    pick = picked(0)
    out = e.process([pick]).derived
    assert [d.data.name for d in out] == ["picks", "picks", "alone"]
    assert len({d.id for d in out}) == 3
    ref = ev.RuleRef("p.twice", "1")
    assert out[2].id == ev.event_id(ref.id, ref.version, (pick.id,), (None, "alone"))


COUNT = """
pack: p
version: "1"
rules:
  - id: hesitation
    where: type == "item.put_back"
    count: {by: subject, window: 2m, threshold: 3}
    alert: {name: h}
"""


def test_a_count_window_includes_its_edge_whatever_the_timers_do() -> None:
    for times in ([0, 60, 120], [0, 120, 120.0]):
        e = engine(COUNT)
        events = [put_back(t) for t in times]
        # Two put-backs at the same instant are two events: give them distinct ids.
        events[-1] = msgspec.structs.replace(events[-1], id=events[-1].id + "b")
        out = e.process(events).derived
        assert [d.type for d in out] == ["alert.raised"], times
    e = engine(COUNT)
    assert e.process([put_back(0), put_back(60), put_back(120.5)]).derived == []


def test_a_steps_where_sees_the_key() -> None:
    e = engine(
        """
pack: p
version: "1"
rules:
  - id: second_pick
    sequence:
      by: subject
      within: 1h
      steps:
        - {when: type == "item.picked"}
        - {when: type == "item.picked", where: key == "v1"}
    alert: {name: twice}
"""
    )
    out = e.process(
        [picked(0), picked(5, sku="butter-250g"), picked(0, "v2"), picked(5, "v2", "butter-250g")]
    )
    assert [d.subject for d in out.derived] == ["v1"]


STAFF = """
pack: p
version: "1"
sets:
  staff: {add: type == "staff.session_started", remove: type == "staff.session_ended"}
rules:
  - id: shopper_pick
    where: type == "item.picked" and not (subject in staff)
    alert: {name: pick}
"""


def test_what_a_set_holds_belongs_to_the_engine_that_saw_the_events() -> None:
    first = engine(STAFF)
    session = ev.new(
        ev.StaffSessionStarted,
        store="corner-01",
        at=at(0),
        source="c",
        subject="s1",
        data=ev.StaffData(badge="b"),
    )
    assert first.process([session, picked(1, "s1")]).derived == []
    second = engine(STAFF)  # the same packs, loaded again: a second engine of its own
    assert [d.subject for d in second.process([picked(1, "s1")]).derived] == ["s1"]


def test_an_unknown_sku_still_gives_a_receipt_flagged_for_review_and_an_alert() -> None:
    e = engine((ROOT / "rules" / "packs" / "carts.yaml").read_text())
    gate = ev.new(
        ev.ZoneEntered,
        store="corner-01",
        at=at(30),
        source="c",
        subject="v1",
        data=ev.ZoneData(zone="exit-gate"),
    )
    out = e.process([picked(0), picked(1, sku="not-in-catalog"), gate])
    assert out.errors == []
    [receipt] = [d for d in out.derived if isinstance(d, ev.ReceiptIssued)]
    assert receipt.data.needs_review and receipt.data.total_cents == 179
    unknown = receipt.data.lines[1]
    assert (unknown.sku, unknown.name, unknown.unit_cents, unknown.review) == (
        "not-in-catalog",
        "unknown item not-in-catalog",
        0,
        True,
    )
    assert not receipt.data.lines[0].review
    [alert] = [d for d in out.derived if isinstance(d, ev.AlertRaised)]
    assert alert.data.alert == "unknown_item" and alert.caused_by == (receipt.id,)
    assert "v1" not in e.partitions["corner-01"].state["carts.cart"]["carts"]


def test_unquoted_yaml_timestamps_are_datetimes() -> None:
    class Spec(msgspec.Struct):
        start: datetime

    doc = load_yaml("t.yaml", text="start: 2026-11-28T09:00:00+02:00\n")
    assert convert(doc, Spec).start == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def test_members_and_the_watch_list_join_by_pseudonymous_id(tmp_path: Path) -> None:
    from core.yamlsource import SourceError
    from rules.reference import load_reference_list

    watch = load_reference_list(ROOT / "examples" / "reference" / "watchlist.yaml")
    members = load_reference_list(ROOT / "examples" / "reference" / "members.yaml")
    pack = """
pack: p
version: "1"
purpose: security
rules:
  - id: seen
    where: type == "face.matched" and (enrolled(data.member) or watchlisted(data.member))
    alert: {name: seen, summary: "{watch_note(data.member) or 'member'}"}
"""
    e = engine(pack, reference=Reference.of(LAYOUT, members=members, watchlist=watch))

    def face(member: str) -> ev.Event:
        data = ev.FaceMatchData(member=member, confidence=0.9)
        return ev.new(
            ev.FaceMatched, store="corner-01", at=at(0), source="c", subject=member, data=data
        )

    out = e.process([face("m-1a2b3c"), face("m-b72d03"), face("m-nobody")]).derived
    assert [(d.subject, d.data.summary) for d in out] == [
        ("m-1a2b3c", "member"),
        ("m-b72d03", "banned from super-01 until 2027-01-01"),
    ]
    bad = tmp_path / "watch.yaml"
    bad.write_text("entries:\n  m-1: ok\n  nope: [1, 2]\n")
    try:
        load_reference_list(bad)
    except SourceError as exc:
        assert exc.line == 3 and "entries.nope" in exc.message
    else:
        raise AssertionError("a malformed reference list must be refused")


def test_zone_kind_follows_the_store_when_stores_disagree_on_an_id() -> None:
    from core.layout import load_layout_text

    text = (ROOT / "examples" / "stores" / "convenience.yaml").read_text()
    other = load_layout_text(
        text.replace("id: corner-01", "id: corner-02").replace(
            "  - id: aisle-1\n    kind: aisle", "  - id: aisle-1\n    kind: staff_only"
        ),
        "corner-02.yaml",
    )
    assert other.zone("aisle-1").kind == "staff_only"
    pack = """
pack: p
version: "1"
rules:
  - id: staff_area
    where: type == "zone.entered" and zone_kind(data.zone) == "staff_only"
    alert: {name: staff_area}
"""
    e = engine(pack, reference=Reference.of(LAYOUT, other))
    entered = [
        ev.new(
            ev.ZoneEntered,
            store=s,
            at=at(0),
            source="c",
            subject="v1",
            data=ev.ZoneData(zone="aisle-1"),
        )
        for s in ("corner-01", "corner-02")
    ]
    assert [d.store for d in e.process(entered).derived] == ["corner-02"]


def test_an_event_no_guard_lets_through_still_moves_the_clock() -> None:
    """Only guarded rules listen to zone events here; a zone event away from the queue is
    of no use to them, yet it is event time passing: the queue wait fires on it."""
    e = engine(
        """
pack: p
version: "1"
rules:
  - id: queue_wait
    for:
      by: subject
      start: type == "zone.entered" and data.zone == "checkout-queue"
      until: type == "zone.exited" and data.zone == "checkout-queue"
      duration: 90s
    alert: {name: long_wait}
"""
    )
    rules = e.rules
    assert "zone.entered" in rules.gates and "zone.exited" in rules.gates

    def zone(s: float, subject: str, name: str) -> ev.Event:
        data = ev.ZoneData(zone=name)
        return ev.new(
            ev.ZoneEntered, store="corner-01", at=at(s), source="c", subject=subject, data=data
        )

    assert e.process([zone(0, "v1", "checkout-queue")]).derived == []
    out = e.process([zone(95, "v2", "aisle-1")]).derived
    assert [(d.type, d.subject, d.at) for d in out] == [("alert.raised", "v1", at(90))]


def test_throttle_memory_is_forgotten_once_quiet() -> None:
    e = engine(
        """
pack: p
version: "1"
rules:
  - id: each_pick
    where: type == "item.picked"
    alert: {name: pick}
    throttle: {once_within: 1m, by: subject}
"""
    )
    out = e.process([picked(i, subject=f"v{i}") for i in range(3000)])
    assert len(out.derived) == 3000  # every shopper once
    again = e.process([picked(3000 + i, subject=f"v{i}") for i in range(5)])
    assert len(again.derived) == 5  # a minute later: not throttled any more
    assert len(e.partitions["corner-01"].throttled) < 1100  # swept, not one per shopper ever


def test_a_day_window_starts_at_local_midnight_across_dst_changes() -> None:
    """The 24 h local window remembers the store's day; across both DST changes of 2026 in
    Amsterdam, every start it gives is the one the time zone arithmetic gives afresh."""
    e = engine(
        """pack: p
version: "1"
rules:
  - id: day
    where: type == "zone.entered"
    aggregate:
      window: {tumbling: 24h, local: true}
      compute: {n: count()}
"""
    )
    rule = next(r for r in e.rules.rules if r.id.endswith("day"))
    starts = []
    for change in (datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC)):
        for minutes in range(-26 * 60, 26 * 60, 7):
            ts = (change + timedelta(minutes=minutes)).timestamp()
            remembered = rule._starts(ts, "corner-01")
            rule._days.clear()
            assert remembered == rule._starts(ts, "corner-01"), ts
            starts.append(remembered[0])
    days = sorted(set(starts))
    hours = [(b - a) / 3600 for a, b in pairwise(days)]
    assert 23.0 in hours and 25.0 in hours  # the short spring day and the long autumn one


def test_aggregates_that_share_a_fold_derive_what_each_would_alone(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The heatmap's tiles and day (and traffic's two capture rates) fold each item once:
    the state and every derived event are those of the rules folding on their own."""
    from rules import operators
    from rules.snapshot import snapshot
    from tests import enginekit

    events = enginekit.store_day(hours=1, shoppers=30)
    shared = enginekit.engine()
    by_id = shared.rules.by_id
    assert by_id["heatmap.tiles"]._sharers == [by_id["heatmap.day"]]  # type: ignore[attr-defined]
    assert by_id["traffic.capture_rate"]._sharers == [by_id["traffic.capture_rate_of_traffic"]]  # type: ignore[attr-defined]
    monkeypatch.setattr(operators, "share_folds", lambda rules: None)
    alone = enginekit.engine()
    assert not any(getattr(r, "_sharers", None) for r in alone.rules.rules)

    outputs, states = [], []
    for e in (shared, alone):
        out = []
        for i in range(0, len(events), 50):
            out += e.process(events[i : i + 50]).derived
        states.append(snapshot(e))  # the day's windows still open
        out += e.advance("corner-01", events[-1].at.timestamp() + 86400).derived
        outputs.append([ev.encode(d) for d in out])
    assert states[0] == states[1]
    assert outputs[0] == outputs[1]
    assert sum(b'"type":"heatmap.tiles"' in d for d in outputs[0]) > 100


def test_a_dwell_forgets_the_people_it_has_not_seen_for_longer_than_its_cap() -> None:
    """Its table of people's last samples stays bounded by those seen lately, however long
    the day, and what it forgot counts as it would have (0 after a gap over the cap)."""
    e = engine(
        """
pack: p
version: "1"
rules:
  - id: d
    where: type == "position.samples"
    aggregate:
      each: data.samples
      as: s
      window: {tumbling: 10s}
      compute: {dwell: {fn: dwell, of: s.track, cap: 2s}}
"""
    )

    def frame(s: float, tracks: list[str]) -> ev.Event:
        samples = tuple(ev.PositionSample(track=t, x=1.0, y=1.0) for t in tracks)
        data = ev.PositionData(frame=int(s * 10), samples=samples)
        return ev.new(
            ev.PositionSamples, store="corner-01", at=at(s), source="c", subject="c", data=data
        )

    # 5,000 people, 10 new ones every second, each seen twice half a second apart
    frames = []
    for k in range(500):
        tracks = [f"v{k}-{i}" for i in range(10)]
        frames += [frame(k, tracks), frame(k + 0.5, tracks)]
    out = e.process(frames).derived
    out += e.advance("corner-01", at(600).timestamp()).derived
    assert len(e.partitions["corner-01"].state["p.d"]["seen"]) <= 1024
    total = sum(d.data.value for d in out if d.type == "metric")
    assert total == 5000 * 0.5
