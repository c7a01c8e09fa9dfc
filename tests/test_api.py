"""The HTTP API over real read models projected from a real log, on SQLite and on
PostgreSQL: what each role sees, receipts with their evidence, corrections and alert
actions as events (once, however often retried), metrics, heatmaps, events, rules, the
live stream, and errors as problem details naming the field."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api import audit
from api.auth import authenticate
from core import events as ev
from core.cli import _load_plugins, app
from readmodels.maintenance import reset
from readmodels.runner import projections
from rules.service.leases import Leases, WorkerStatus
from tests.apikit import OTHER, STORE, World, world
from tests.enginekit import OPEN
from tests.readmodelkit import scalar

pytestmark = pytest.mark.integration
V1 = "/api/v1"
DAY = {"from": OPEN.astimezone(UTC).isoformat(), "to": (OPEN + timedelta(days=1)).isoformat()}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def w(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(request, request.param, tmp_path_factory.mktemp("api")) as made:
        yield made


@pytest.fixture(scope="module")
def c(w: World) -> Iterator[TestClient]:
    with w.client() as client:
        yield client


def get(c: TestClient, w: World, who: str, path: str, **params: object) -> object:
    r = c.get(V1 + path, headers=w.auth(who), params=params)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return r.json()


def first_receipt(w: World, store: str = STORE) -> ev.ReceiptIssued:
    return next(e for e in w.derived[store] if isinstance(e, ev.ReceiptIssued))


# -- roles ---------------------------------------------------------------------------------

VIEWER_PATHS = [
    "/stores",
    f"/stores/{STORE}/layout",
    f"/stores/{STORE}/layout.svg",
    f"/stores/{STORE}/live",
    f"/stores/{STORE}/metrics",
    f"/stores/{STORE}/metrics.csv",
    f"/stores/{STORE}/heatmap",
    f"/stores/{STORE}/heatmap.png",
]
OPERATOR_PATHS = [
    f"/stores/{STORE}/receipts",
    f"/stores/{STORE}/alerts",
    f"/stores/{STORE}/events?limit=5",
]
ADMIN_PATHS = ["/rules", "/tokens", "/audit"]


def test_each_role_sees_what_it_may_and_gets_403_for_the_rest(c: TestClient, w: World) -> None:
    allowed = {
        "viewer": VIEWER_PATHS,
        "operator": VIEWER_PATHS + OPERATOR_PATHS,
        "admin": VIEWER_PATHS + OPERATOR_PATHS + ADMIN_PATHS,
    }
    for role, paths in allowed.items():
        for path in VIEWER_PATHS + OPERATOR_PATHS + ADMIN_PATHS:
            r = c.get(V1 + path, headers=w.auth(role))
            want = 200 if path in paths else 403
            assert r.status_code == want, (role, path, r.text)
            if want == 403:
                assert r.headers["content-type"] == "application/problem+json"
    receipt = first_receipt(w)
    r = c.get(f"{V1}/stores/{STORE}/receipts/{receipt.id}", headers=w.auth("viewer"))
    assert r.status_code == 403, "a receipt is tied to a shopper: not a viewer's"
    r = c.post(
        f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections",
        headers=w.auth("viewer"),
        json={"reason": "no"},
    )
    assert r.status_code == 403


def test_a_missing_wrong_or_revoked_token_gets_401(c: TestClient, w: World) -> None:
    path = f"{V1}/stores/{STORE}/live"
    assert c.get(path).status_code == 401
    assert c.get(path, headers={"Authorization": "Bearer nonsense"}).status_code == 401
    bare = c.get(path, headers={"Authorization": w.tokens["viewer"]})  # "Bearer " left out
    assert bare.status_code == 401 and "put `Bearer ` before the token" in bare.json()["detail"]
    token_id, secret = w.tokens["viewer"].split(".")
    wrong = {"Authorization": f"Bearer {token_id}.{secret[:-2]}xx"}
    r = c.get(path, headers=wrong)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["field"] == "header.authorization"
    made = c.post(f"{V1}/tokens", headers=w.auth("admin"), json={"role": "viewer", "name": "tmp"})
    assert made.status_code == 201
    token = made.json()["token"]
    assert c.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    gone = c.delete(f"{V1}/tokens/{made.json()['id']}", headers=w.auth("admin"))
    assert gone.status_code == 200 and gone.json()["revoked_at"]
    assert c.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_token_for_a_store_nobody_knows_is_refused_and_me_says_every_store(
    c: TestClient, w: World
) -> None:
    """A mistyped store id made a token that could open nothing, and /me showed an
    unlimited token's stores as [] (read as: none)."""
    typo = {"role": "viewer", "stores": [STORE, "corner-1"]}
    r = c.post(f"{V1}/tokens", headers=w.auth("admin"), json=typo)
    assert r.status_code == 422 and r.json()["field"] == "body.stores[1]", r.text
    assert "'corner-1'" in r.json()["detail"] and STORE in r.json()["detail"]
    me = c.get(f"{V1}/me", headers=w.auth("viewer")).json()
    assert me["stores"] == [] and me["all_stores"] is True
    empty = c.post(f"{V1}/tokens", headers=w.auth("admin"), json={**typo, "stores": []})
    assert empty.status_code == 422 and "leave `stores` out" in empty.json()["detail"]
    limited = c.post(f"{V1}/tokens", headers=w.auth("admin"), json={**typo, "stores": [STORE]})
    assert limited.status_code == 201, limited.text
    bearer = {"Authorization": f"Bearer {limited.json()['token']}"}
    assert c.get(f"{V1}/me", headers=bearer).json()["all_stores"] is False


def test_tokens_are_stored_hashed_never_as_themselves(w: World) -> None:
    token = w.tokens["operator"]
    token_id, secret = token.split(".")
    stored = scalar(w.db, f"SELECT secret_hash FROM api_token WHERE id = '{token_id}'")
    assert secret not in stored and len(stored) == 64
    assert authenticate(w.db, token) is not None


def test_a_token_limited_to_one_store_sees_nothing_of_another(c: TestClient, w: World) -> None:
    stores = get(c, w, "limited", "/stores")
    assert [s["id"] for s in stores] == [OTHER]  # type: ignore[union-attr]
    everyone = {s["id"] for s in get(c, w, "operator", "/stores")}  # type: ignore[union-attr]
    assert {STORE, OTHER} <= everyone
    receipt = first_receipt(w)
    for path in [
        *VIEWER_PATHS[1:],
        *OPERATOR_PATHS,
        f"/stores/{STORE}/receipts/{receipt.id}",
        f"/stores/{STORE}/stream",
    ]:
        r = c.get(V1 + path, headers=w.auth("limited"))
        assert r.status_code == 403, (path, r.text)
    # Its own store's receipt, asked for under the other store's path, is not found.
    mine = first_receipt(w, OTHER)
    r = c.get(f"{V1}/stores/{STORE}/receipts/{mine.id}", headers=w.auth("operator"))
    assert r.status_code == 404
    assert get(c, w, "limited", f"/stores/{OTHER}/receipts/{mine.id}")


def test_a_viewer_sees_the_people_present_not_carts_or_alerts(c: TestClient, w: World) -> None:
    """A cart opening, or an alert raised, while one person is in the store is theirs:
    a viewer sees neither, nor how many."""
    viewer = get(c, w, "viewer", f"/stores/{STORE}/live")
    operator = get(c, w, "operator", f"/stores/{STORE}/live")
    assert viewer["carts"] is None and viewer["alerts"] is None  # type: ignore[index]
    assert viewer["open_carts"] is None and viewer["active_alerts"] is None  # type: ignore[index]
    assert operator["open_carts"] == len(operator["carts"])  # type: ignore[index]
    assert viewer["occupancy"] is not None  # type: ignore[index]
    listed = get(c, w, "operator", f"/stores/{STORE}/alerts", active=True, limit=500)
    assert len(listed["items"]) == operator["active_alerts"] > 0  # type: ignore[index]


# -- receipts ------------------------------------------------------------------------------


def test_receipts_list_filter_and_search(c: TestClient, w: World) -> None:
    issued = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)]
    page = get(c, w, "operator", f"/stores/{STORE}/receipts", limit=500)
    assert {r["id"] for r in page["items"]} == {e.id for e in issued}  # type: ignore[index]
    one = issued[0]
    by_subject = get(c, w, "operator", f"/stores/{STORE}/receipts", subject=one.subject)
    assert one.id in {r["id"] for r in by_subject["items"]}  # type: ignore[index]
    by_sku = get(c, w, "operator", f"/stores/{STORE}/receipts", q=one.data.lines[0].sku, limit=500)
    with_sku = {e.id for e in issued if any(x.sku == one.data.lines[0].sku for x in e.data.lines)}
    assert {r["id"] for r in by_sku["items"]} == with_sku  # type: ignore[index]
    listed = get(c, w, "admin", "/audit", action="receipts.listed", limit=500)
    assert any(f"subject={one.subject}" in a["detail"] for a in listed["items"])  # type: ignore[index]
    two = get(c, w, "operator", f"/stores/{STORE}/receipts", limit=2)
    assert len(two["items"]) == 2 and two["next_offset"] == 2  # type: ignore[index]
    late = max(e.at for e in issued)
    after = get(c, w, "operator", f"/stores/{STORE}/receipts", **{"from": late.isoformat()})
    assert {r["id"] for r in after["items"]} == {e.id for e in issued if e.at >= late}  # type: ignore[index]


def test_a_receipt_shows_each_line_with_its_evidence_and_the_read_is_audited(
    c: TestClient, w: World
) -> None:
    receipt = first_receipt(w)
    body = get(c, w, "operator", f"/stores/{STORE}/receipts/{receipt.id}")
    lines = body["lines"]  # type: ignore[index]
    assert [x["line"]["sku"] for x in lines] == [x.sku for x in receipt.data.lines]
    for x in lines:
        assert sum(e["qty"] for e in x["evidence"]) == x["line"]["qty"]
        for e in x["evidence"]:
            assert e["rule_id"] and e["rule_version"] and e["cause_id"]
            assert e["source"], "the camera or sensor that saw it"
    audit = get(c, w, "admin", "/audit", action="receipt.read")
    assert any(
        a["target"] == receipt.id and a["who"].startswith("operator-1") for a in audit["items"]
    )  # type: ignore[index]


def test_a_correction_is_an_event_with_who_and_why_published_once_per_key(
    c: TestClient, w: World
) -> None:
    receipt = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)][1]
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    line = receipt.data.lines[0]
    body = {
        "reason": "the shopper put one back at the till",
        "adjustments": [{"sku": line.sku, "qty": -1, "amount_cents": -line.unit_cents}],
    }
    key = {"Idempotency-Key": f"fix-{receipt.id}"}
    first = c.post(path, headers={**w.auth("operator"), **key}, json=body)
    again = c.post(path, headers={**w.auth("operator"), **key}, json=body)
    assert first.status_code == 202 and again.status_code == 202, first.text
    assert first.json()["event_id"] == again.json()["event_id"]
    assert again.json()["duplicate"] is True
    assert w.count(STORE, "receipt.corrected") == 1, "a retried click publishes once"
    w.project()
    shown = get(c, w, "operator", f"/stores/{STORE}/receipts/{receipt.id}")
    r = shown["receipt"]  # type: ignore[index]
    assert r["total_cents"] == receipt.data.total_cents, "the receipt as issued is kept"
    assert r["corrected_total_cents"] == receipt.data.total_cents - line.unit_cents
    (fix,) = shown["corrections"]  # type: ignore[index]
    assert fix["correction"]["by"].startswith("operator-1")
    assert fix["correction"]["reason"] == body["reason"]
    assert fix["adjustments"][0]["qty"] == -1
    audit = get(c, w, "admin", "/audit", action="receipt.corrected")
    assert [a["target"] for a in audit["items"]].count(receipt.id) == 1, "the retry is not"  # type: ignore[index]
    # Retried once applied, the whole line now gone: the same answer, not a refusal.
    late = c.post(path, headers={**w.auth("operator"), **key}, json=body)
    assert late.status_code == 202 and late.json()["duplicate"] is True, late.text
    assert late.json()["event_id"] == first.json()["event_id"]
    other = {**body, "reason": "something else"}
    reused = c.post(path, headers={**w.auth("operator"), **key}, json=other)
    assert reused.status_code == 422, reused.text
    assert reused.json()["field"] == "header.Idempotency-Key"
    assert w.count(STORE, "receipt.corrected") == 1


def test_a_correction_published_but_not_audited_is_audited_by_its_retry(
    c: TestClient, w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event went out, then the audit met a locked database (503): the client's retry
    with the same key found the event in the log and skipped the audit, so the correction
    was never audited. The audit entry is now the event's, written by whichever request
    gets to it, once."""
    receipt = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)][4]
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    body = {
        "reason": "scanned twice",
        "adjustments": [{"sku": receipt.data.lines[0].sku, "qty": -1}],
    }
    key = {"Idempotency-Key": f"locked-{receipt.id}"}
    record = audit.record

    def locked(*args: object, **kwargs: object) -> None:
        raise sa.exc.OperationalError("INSERT INTO api_audit", {}, Exception("database is locked"))

    monkeypatch.setattr(audit, "record", locked)
    before = w.count(STORE, "receipt.corrected")
    first = c.post(path, headers={**w.auth("operator"), **key}, json=body)
    assert first.status_code == 503, first.text
    assert w.count(STORE, "receipt.corrected") == before + 1, "the event was published"
    monkeypatch.setattr(audit, "record", record)
    for _ in range(2):
        again = c.post(path, headers={**w.auth("operator"), **key}, json=body)
        assert again.status_code == 202 and again.json()["duplicate"] is True, again.text
    assert w.count(STORE, "receipt.corrected") == before + 1
    entries = get(c, w, "admin", "/audit", action="receipt.corrected")["items"]  # type: ignore[index]
    assert [a["target"] for a in entries].count(receipt.id) == 1


def test_a_refund_without_an_amount_is_the_quantity_at_the_receipts_unit_price(
    c: TestClient, w: World
) -> None:
    """It answered 202 and refunded nothing; the dashboard's form priced it itself."""
    receipt = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)][2]
    line = receipt.data.lines[0]
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    body = {"reason": "one was broken", "adjustments": [{"sku": line.sku, "qty": -1}]}
    done = c.post(path, headers=w.auth("operator"), json=body)
    assert done.status_code == 202, done.text
    w.project()
    shown = get(c, w, "operator", f"/stores/{STORE}/receipts/{receipt.id}")
    r = shown["receipt"]  # type: ignore[index]
    assert r["corrected_total_cents"] == receipt.data.total_cents - line.unit_cents
    nowhere = {"reason": "x", "adjustments": [{"sku": "no-such-sku", "qty": 1}]}
    refused = c.post(path, headers=w.auth("operator"), json=nowhere)
    assert refused.status_code == 422 and refused.json()["field"] == "body.adjustments[0].sku"


def test_a_reason_of_spaces_and_a_search_for_a_nul_are_refused(c: TestClient, w: World) -> None:
    receipt = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)][3]
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    blank = c.post(path, headers=w.auth("operator"), json={"reason": "   ", "adjustments": []})
    assert blank.status_code == 422 and "reason" in blank.json()["field"], blank.text
    nul = c.get(f"{V1}/stores/{STORE}/receipts", headers=w.auth("operator"), params={"q": "\0zz"})
    assert nul.status_code == 422 and nul.json()["field"] == "query.q", nul.text


def test_a_correction_that_would_leave_a_line_below_zero_is_refused_naming_it(
    c: TestClient, w: World
) -> None:
    receipt = first_receipt(w)
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    line = receipt.data.lines[0]
    body = {"reason": "x", "adjustments": [{"sku": line.sku, "qty": -(line.qty + 1)}]}
    r = c.post(path, headers=w.auth("operator"), json=body)
    assert r.status_code == 422 and r.json()["field"] == "body.adjustments[0]"
    r = c.post(path, headers=w.auth("operator"), json={"reason": ""})
    assert r.status_code == 422 and r.json()["field"] == "body.reason"
    assert r.headers["content-type"] == "application/problem+json"
    r = c.post(path, headers=w.auth("operator"), json={"reason": "bell\x07"})
    assert r.status_code == 422 and r.json()["field"] == "body.reason"


# -- alerts --------------------------------------------------------------------------------


def test_alert_actions_are_events_with_who_once_per_key_and_none_after_close(
    c: TestClient, w: World
) -> None:
    page = get(c, w, "operator", f"/stores/{STORE}/alerts", limit=500, active=True)
    alert = page["items"][0]  # type: ignore[index]
    base = f"{V1}/stores/{STORE}/alerts/{alert['id']}"
    key = {"Idempotency-Key": "ack-1"}
    for _ in range(3):
        r = c.post(f"{base}/acknowledge", headers={**w.auth("operator"), **key})
        assert r.status_code == 202, r.text
    assert w.count(STORE, "alert.acknowledged") == 1
    r = c.post(f"{base}/acknowledge", headers={**w.auth("operator"), **key}, json={"reason": "x"})
    assert r.status_code == 422 and r.json()["field"] == "header.Idempotency-Key", r.text
    r = c.post(f"{base}/dismiss", headers=w.auth("operator"), json={"reason": "a shadow"})
    assert r.status_code == 202
    r = c.post(f"{base}/resolve", headers=w.auth("operator"), json={"reason": "done"})
    assert r.status_code == 202
    w.project()
    shown = get(c, w, "operator", f"/stores/{STORE}/alerts/{alert['id']}")
    a = shown["alert"]  # type: ignore[index]
    assert a["state"] == "closed" and a["decision"] == "dismissed"
    assert a["acknowledged_by"].startswith("operator-1")
    assert [x["action"] for x in shown["actions"]] == ["acknowledged", "dismissed", "closed"]  # type: ignore[index]
    r = c.post(f"{base}/confirm", headers=w.auth("operator"), json={"reason": "it was"})
    assert r.status_code == 409 and r.json()["field"] == "path.alert_id"
    assert "the alert is closed" in r.json()["detail"]
    r = c.post(f"{V1}/stores/{STORE}/alerts/nope/confirm", headers=w.auth("operator"))
    assert r.status_code == 404
    r = c.post(f"{base}/explode", headers=w.auth("operator"))
    assert r.status_code == 422 and r.json()["field"] == "path.action"


# -- metrics and heatmaps ------------------------------------------------------------------


def test_metrics_of_a_day_by_hour_and_by_day_and_as_csv(c: TestClient, w: World) -> None:
    hourly = get(c, w, "viewer", f"/stores/{STORE}/metrics", **DAY)
    daily = get(c, w, "viewer", f"/stores/{STORE}/metrics", granularity="day", **DAY)
    want = sum(
        e.data.value
        for e in w.derived[STORE]
        if isinstance(e, ev.Metric) and e.data.name == "footfall"
    )
    assert want > 0
    assert hourly["kpis"]["footfall"] == pytest.approx(want)  # type: ignore[index]
    foot = [p for p in daily["series"] if p["name"] == "footfall"]  # type: ignore[index]
    assert len(foot) == 1 and foot[0]["sum"] == pytest.approx(want)
    for kpi in ("capture_rate", "capture_rate_of_traffic", "occupancy_max", "dwell_s"):
        assert hourly["kpis"][kpi] is not None, kpi  # type: ignore[index]
    flagged = {  # as projected: a dwell is one visit's, footfall a window's count
        name: {p["per_visit"] for p in hourly["series"] if p["name"] == name}  # type: ignore[index]
        for name in ("zone_visit_s", "footfall")
    }
    assert flagged == {"zone_visit_s": {True}, "footfall": {False}}
    assert all(
        p["last"] is None and (p["count"] >= 5 or p["mean"] is None)
        for p in hourly["series"]  # type: ignore[index]
        if p["per_visit"]
    )
    r = c.get(f"{V1}/stores/{STORE}/metrics.csv", headers=w.auth("viewer"), params=DAY)
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(hourly["series"])  # type: ignore[index]
    assert sum(float(x["sum"]) for x in rows if x["name"] == "footfall") == pytest.approx(want)


def test_the_heatmap_as_cells_and_as_a_png_over_the_floor_plan(c: TestClient, w: World) -> None:
    heat = get(c, w, "operator", f"/stores/{STORE}/heatmap", **DAY)
    assert heat["size"] == 0.5 and heat["cells"] and heat["hours_withheld"] == 0  # type: ignore[index]
    dwell = sum(x["dwell_s"] for x in heat["cells"])  # type: ignore[index]
    assert dwell == pytest.approx(
        scalar(w.db, "SELECT sum(dwell_s) FROM heatmap_hour WHERE store = 'corner-01'")
    )
    # A viewer: the day's one busy hour, not the minute of the next the store's clock is in.
    seen = get(c, w, "viewer", f"/stores/{STORE}/heatmap", **DAY)
    assert seen["hours_withheld"] == 1 and 0 < len(seen["cells"]) <= len(heat["cells"])  # type: ignore[index, arg-type]
    first = OPEN.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    assert sum(x["dwell_s"] for x in seen["cells"]) == pytest.approx(  # type: ignore[index]
        sum(x["dwell_s"] for x in get(c, w, "operator", f"/stores/{STORE}/heatmap", **{
            "from": first.isoformat(), "to": (first + timedelta(hours=1)).isoformat()
        })["cells"])  # type: ignore[index]
    )  # fmt: skip
    # Ten minutes of an hour: the hour's cells, and the answer says it is the hour's.
    t0 = (OPEN + timedelta(hours=1)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)

    def heat_of(start: datetime, end: datetime) -> dict[str, object]:
        q = {"from": start.isoformat(), "to": end.isoformat()}
        return get(c, w, "operator", f"/stores/{STORE}/heatmap", **q)  # type: ignore[return-value]

    part = heat_of(t0 + timedelta(minutes=20), t0 + timedelta(minutes=30))
    hour = heat_of(t0, t0 + timedelta(hours=1))
    assert part == hour and hour["cells"]
    assert datetime.fromisoformat(str(part["start"])) == t0
    assert datetime.fromisoformat(str(part["end"])) == t0 + timedelta(hours=1)
    r = c.get(f"{V1}/stores/{STORE}/heatmap.png", headers=w.auth("viewer"), params=DAY)
    assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    empty = c.get(f"{V1}/stores/{STORE}/heatmap.png", headers=w.auth("viewer"))
    assert empty.status_code == 200 and len(empty.content) < len(r.content)
    svg = c.get(f"{V1}/stores/{STORE}/layout.svg", headers=w.auth("viewer"))
    assert svg.text.startswith("<svg") and 'data-zone="checkout-queue"' in svg.text


# -- events, rules, the live stream --------------------------------------------------------


def test_events_page_by_sequence_and_filter_by_type_and_subject(c: TestClient, w: World) -> None:
    seen: list[int] = []
    after = None
    for _ in range(50):
        params: dict[str, object] = {"type": "receipt.issued", "limit": 7}
        if after is not None:
            params["after"] = after
        page = get(c, w, "operator", f"/stores/{STORE}/events", **params)
        seen += [x["seq"] for x in page["items"]]  # type: ignore[index]
        assert all(x["event"]["type"] == "receipt.issued" for x in page["items"])  # type: ignore[index]
        after = page["next_after"]  # type: ignore[index]
        if after is None:
            break
    issued = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)]
    assert len(seen) == len(issued) and seen == sorted(seen)
    one = issued[0]
    mine = get(c, w, "operator", f"/stores/{STORE}/events", subject=one.subject, limit=1000)
    assert mine["items"] and all(x["event"]["subject"] == one.subject for x in mine["items"])  # type: ignore[index]
    r = c.get(f"{V1}/stores/{STORE}/events", headers=w.auth("operator"), params={"type": "nope"})
    assert r.status_code == 422 and r.json()["field"] == "query.type[0]"
    # A receipt read through the log is audited as one read through /receipts is.
    audit = get(c, w, "admin", "/audit", action="receipt.read", limit=500)
    through = [a for a in audit["items"] if a["detail"].startswith("through /events")]  # type: ignore[index]
    assert through and one.id in " ".join(a["detail"] for a in through)


def test_rules_validate_and_deploy_for_an_admin_audited(c: TestClient, w: World) -> None:
    from tests.enginekit import PACKS

    files = {p.name: p.read_text() for p in PACKS}
    good = c.post(f"{V1}/rules/validate", headers=w.auth("admin"), json={"files": files})
    assert good.status_code == 200 and good.json()["valid"], good.text
    bad = {"broken.yaml": "pack: broken\nrules:\n  - id: x\n    where: type ==\n"}
    r = c.post(f"{V1}/rules/validate", headers=w.auth("admin"), json={"files": bad})
    assert r.status_code == 200 and not r.json()["valid"]
    assert r.json()["errors"][0]["file"] == "broken.yaml"
    r = c.post(f"{V1}/rules/deploy", headers=w.auth("admin"), json={"files": bad})
    assert r.status_code == 422 and r.json()["field"] == "body.files.broken.yaml"
    r = c.post(f"{V1}/rules/deploy", headers=w.auth("operator"), json={"files": files})
    assert r.status_code == 403
    done = c.post(f"{V1}/rules/deploy", headers=w.auth("admin"), json={"files": files})
    assert done.status_code == 200, done.text
    now = get(c, w, "admin", "/rules")
    assert now["version"] == done.json()["version"] and set(now["files"]) == set(files)  # type: ignore[index]
    audit = get(c, w, "admin", "/audit", action="rules.deployed")
    assert audit["items"][0]["target"] == now["version"]  # type: ignore[index]
    assert now["workers"] == []  # type: ignore[index]

    async def a_worker_runs(packs: dict[str, str]) -> None:  # as `aisle engine run` says
        log = await w._log()
        try:
            kv = await log.key_value("engine_leases", ttl_s=30)
            status = WorkerStatus(
                worker="w1", rules_version="local-1", packs=packs, stores=(STORE,),
                started_at=time.time(), seen_at=time.time(),
            )  # fmt: skip
            await Leases(kv, "w1").announce(status)
        finally:
            await log.nc.close()

    asyncio.run(a_worker_runs({"carts": "1.2.0"}))
    (worker,) = get(c, w, "admin", "/rules")["workers"]  # type: ignore[index]
    assert worker["worker"] == "w1" and worker["packs"] == {"carts": "1.2.0"}
    assert worker["behind"] is True and worker["stores"] == [STORE]


def test_an_operator_action_published_around_the_api_is_found_unaudited(
    c: TestClient, w: World
) -> None:
    """The NATS server knows the api user, not the person an operator event's ``by``
    names: an action published with the API's credentials from elsewhere, under anyone's
    name, is told apart by having no audit entry."""
    alerts = get(c, w, "operator", f"/stores/{STORE}/alerts", limit=500, active=True)
    real, forged_on = alerts["items"][-1], alerts["items"][-2]  # type: ignore[index]
    r = c.post(f"{V1}/stores/{STORE}/alerts/{real['id']}/acknowledge", headers=w.auth("operator"))
    assert r.status_code == 202, r.text
    forged = ev.new(
        ev.AlertAcknowledged,
        store=STORE,
        at=datetime.now(UTC),
        source="api",
        subject=forged_on["subject"],
        data=ev.AlertActionData(alert=forged_on["id"], by="the store manager"),
    )
    # And a refund in the name of the operator who made an audited one on that receipt.
    receipt = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)][6]
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    body = {"reason": "broken", "adjustments": [{"sku": receipt.data.lines[0].sku, "qty": -1}]}
    assert c.post(path, headers=w.auth("operator"), json=body).status_code == 202
    w.project()
    real = get(c, w, "operator", f"/stores/{STORE}/receipts/{receipt.id}")["corrections"][0]  # type: ignore[index]
    copied = ev.new(
        ev.ReceiptCorrected,
        store=STORE,
        at=datetime.now(UTC),
        source="api",
        subject=receipt.subject,
        data=ev.ReceiptCorrectionData(
            receipt=receipt.id, by=real["correction"]["by"], reason="looked again",
            reviewed=True,
        ),
    )  # fmt: skip
    w.publish([forged, copied])
    w.project()
    found = audit.unaudited(w.db)
    assert [(x.event_id, x.by, x.action) for x in found] == [
        (forged.id, "the store manager", "alert.acknowledged"),
        (copied.id, real["correction"]["by"], "receipt.corrected"),
    ]
    _load_plugins()
    said = CliRunner().invoke(
        app, ["api", "unaudited", "--json"], env={"AISLE_DATABASE_URL": str(w.db.url)}
    )
    assert said.exit_code == 1 and forged.id in said.stdout, said.output


def _stream_until(c: TestClient, w: World, who: str, wanted: str, make: list[ev.Event]) -> dict:
    """Open the stream, then publish ``make`` one by one until an event of type ``wanted``
    arrives (the stream sees what comes after it opened)."""
    with c.stream(
        "GET",
        f"{V1}/stores/{STORE}/stream",
        headers=w.auth(who),
        params={"heartbeat": 0.2},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines).startswith(": aisle")
        pending = list(make)
        event = None
        for line in lines:
            if line.startswith(": keep-alive") and pending:
                w.publish([pending.pop(0)])
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            if line.startswith("data: ") and event == wanted:
                return json.loads(line.removeprefix("data: "))  # type: ignore[no-any-return]
        raise AssertionError("the stream ended")


def _metrics(n: int) -> list[ev.Event]:
    rule = ev.RuleRef("traffic.occupancy", "1")
    return [
        ev.derive(
            ev.Metric,
            rule=rule,
            caused_by=[f"c{n}-{i}"],
            store=STORE,
            at=datetime.now(UTC),
            subject="shopper-secret",
            data=ev.MetricData(name="occupancy", value=i, labels={"zone": "", "cart": "c9"}),
        )
        for i in range(20)
    ]


def test_the_live_stream_sends_a_viewer_metrics_without_anything_of_a_shopper(
    c: TestClient, w: World
) -> None:
    got = _stream_until(c, w, "viewer", "metric", _metrics(1))
    assert got["event"]["type"] == "metric" and got["event"]["data"]["name"] == "occupancy"
    text = json.dumps(got)
    assert "shopper-secret" not in text and "c9" not in text and "caused_by" not in text


def test_the_viewers_live_stream_leaves_out_what_one_visit_makes(c: TestClient, w: World) -> None:
    """A zone visit's seconds, dated at that shopper's exit, are one person's; so are ten
    seconds of one heatmap cell. The viewer's stream goes on to the next count instead."""
    rule = ev.RuleRef("traffic.zone_visit", "1")
    now = datetime.now(UTC)
    visit = ev.derive(
        ev.Metric, rule=rule, caused_by=["v-visit"], store=STORE, at=now, subject="v-1/sf-dairy",
        data=ev.MetricData(name="zone_visit_s", value=41.5, labels={"zone": "sf-dairy"}),
    )  # fmt: skip
    tile = ev.derive(
        ev.HeatmapTiles, rule=ev.RuleRef("heatmap.cells", "1"), caused_by=["t-1"], store=STORE,
        at=now, subject=STORE,
        data=ev.HeatmapTilesData(
            size=0.5, window_start=now - timedelta(seconds=10), window_end=now,
            cells=(ev.HeatmapCell(cell_x=3, cell_y=4, visits=1, dwell_s=9.5),),
        ),
    )  # fmt: skip
    got = _stream_until(c, w, "viewer", "metric", [visit, tile, *_metrics(2)])
    assert got["event"]["data"]["name"] == "occupancy", got


def test_the_live_stream_sends_an_operator_alerts_as_they_are_raised(
    c: TestClient, w: World
) -> None:
    rule = ev.RuleRef("security.test", "1")
    alerts = [
        ev.derive(
            ev.AlertRaised,
            rule=rule,
            caused_by=[f"x{i}"],
            store=STORE,
            at=datetime.now(UTC),
            subject=f"s{i}",
            data=ev.AlertData(alert="test", key=f"k{i}", severity="warning", summary="look"),
        )
        for i in range(20)
    ]
    got = _stream_until(c, w, "operator", "alert.raised", alerts)
    assert got["event"]["subject"].startswith("s") and got["seq"] > 0
    opened = get(c, w, "admin", "/audit", action="stream.opened")
    assert opened["items"] and opened["items"][0]["store"] == STORE  # type: ignore[index]


# -- errors --------------------------------------------------------------------------------


def test_errors_are_problem_details_naming_the_field(c: TestClient, w: World) -> None:
    cases = [
        (f"/stores/{STORE}/receipts?limit=0", 422, "query.limit"),
        (f"/stores/{STORE}/receipts?from=2026-11-28T07:00:00", 422, "query.from"),
        (f"/stores/{STORE}/metrics?granularity=week", 422, "query.granularity"),
        (f"/stores/{STORE}/metrics?from=2026-11-29T00:00Z&to=2026-11-28T00:00Z", 422, "query.to"),
        ("/stores/nope/live", 404, "path.store"),
        (f"/stores/{STORE}/receipts/nope", 404, "path.receipt_id"),
        (f"/stores/{STORE}/heatmap.png?scale=1e9", 422, "query.scale"),
    ]
    for path, status, field in cases:
        r = c.get(V1 + path, headers=w.auth("admin"))
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["field"] == field, (path, r.json())
    r = c.get(f"{V1}/nothing-here", headers=w.auth("admin"))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_a_rebuild_of_the_projections_keeps_the_tokens_and_the_audit(w: World) -> None:
    before = scalar(w.db, "SELECT count(*) FROM api_audit")
    reset(w.db, projections())
    assert scalar(w.db, "SELECT count(*) FROM receipt") == 0
    assert authenticate(w.db, w.tokens["viewer"]) is not None
    assert scalar(w.db, "SELECT count(*) FROM api_audit") == before
    w.project()
    with w.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM receipt")).scalar_one() > 0


def test_the_app_serves_a_dashboard_folder_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import app as app_module
    from api.app import create_app
    from api.settings import ApiSettings

    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<h1>aisle</h1>")
    monkeypatch.setattr(app_module, "STATIC", static)
    settings = ApiSettings(database_url=f"sqlite:///{tmp_path / 'rm.db'}", log=False)
    with TestClient(create_app(settings)) as client:
        r = client.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == "/dashboard/"
        assert client.get("/dashboard/").text == "<h1>aisle</h1>"
    monkeypatch.setattr(app_module, "STATIC", tmp_path / "none")
    with TestClient(create_app(settings)) as client:
        assert client.get("/", follow_redirects=False).status_code == 404


def test_a_body_past_the_bound_is_refused_with_413_before_it_is_read(
    c: TestClient, w: World
) -> None:
    from api.limits import MAX_BODY

    big = {"files": {"a.yaml": "x" * (MAX_BODY + 1)}}
    r = c.post(f"{V1}/rules/validate", headers=w.auth("admin"), json=big)
    assert r.status_code == 413 and r.json()["field"] == "body"
    chunks = (b"x" * 1024 * 1024 for _ in range(MAX_BODY // (1024 * 1024) + 2))
    r = c.post(f"{V1}/rules/validate", headers=w.auth("admin"), content=chunks)
    assert r.status_code == 413


def test_a_browser_session_keeps_the_token_in_an_httponly_cookie(w: World) -> None:
    with w.client() as browser:
        assert browser.get(f"{V1}/me").status_code == 401
        wrong = browser.post(f"{V1}/session", json={"token": "x.y"})
        assert wrong.status_code == 401 and wrong.json()["field"] == "body.token"
        opened = browser.post(f"{V1}/session", json={"token": w.tokens["viewer"]})
        assert opened.status_code == 200 and opened.json()["role"] == "viewer"
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get(f"{V1}/me").json()["name"] == "viewer-1"
        assert browser.get(f"{V1}/stores/{STORE}/heatmap.png").status_code == 200
        assert browser.get(f"{V1}/stores/{STORE}/receipts").status_code == 403
        assert browser.delete(f"{V1}/session").status_code == 204
        assert browser.get(f"{V1}/me").status_code == 401
    # A change with the cookie alone must come from the server's own pages: another port of
    # 127.0.0.1 is the same site to SameSite=Strict, and its page could post.
    with w.client() as browser:
        browser.post(f"{V1}/session", json={"token": w.tokens["operator"]})
        path = f"{V1}/stores/{STORE}/alerts/no-such-alert/acknowledge"
        forged = browser.post(path, headers={"Origin": "http://127.0.0.1:9999"})
        assert forged.status_code == 403 and forged.json()["field"] == "header.origin"
        assert browser.post(path).status_code == 403, "no Origin at all"
        own = browser.post(path, headers={"Origin": "http://testserver"})
        assert own.status_code == 404, own.text  # past the check: no such alert


def test_an_admin_limited_to_a_store_reaches_no_further_with_the_tokens_it_makes(
    c: TestClient, w: World
) -> None:
    from api.auth import Role, create_token

    _, limited = create_token(w.db, Role.ADMIN, [STORE], "store admin")
    hdr = {"Authorization": f"Bearer {limited}"}
    wider = c.post(V1 + "/tokens", headers=hdr, json={"role": "admin", "stores": []})
    assert wider.status_code == 403 and wider.json()["field"] == "body.stores", wider.text
    other = c.post(V1 + "/tokens", headers=hdr, json={"role": "viewer", "stores": [OTHER]})
    assert other.status_code == 403, other.text
    mine = c.post(V1 + "/tokens", headers=hdr, json={"role": "viewer", "stores": [STORE]})
    assert mine.status_code == 201, mine.text
    listed = c.get(V1 + "/tokens", headers=hdr).json()
    assert listed and all(t["stores"] and set(t["stores"]) <= {STORE} for t in listed)
    everyone = c.get(V1 + "/tokens", headers=w.auth("admin")).json()
    unlimited = next(t for t in everyone if not t["stores"])
    assert c.delete(V1 + f"/tokens/{unlimited['id']}", headers=hdr).status_code == 404
    assert c.get(V1 + "/audit", headers=hdr).status_code == 403
    assert c.get(V1 + "/audit", headers=hdr, params={"store": OTHER}).status_code == 403
    assert c.get(V1 + "/audit", headers=hdr, params={"store": STORE}).status_code == 200
    # A deployment is every store's rules: the store's admin may not make one.
    from tests.enginekit import PACKS

    files = {PACKS[0].name: PACKS[0].read_text()}
    deploy = c.post(V1 + "/rules/deploy", headers=hdr, json={"files": files})
    assert deploy.status_code == 403 and "every store" in deploy.json()["detail"], deploy.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/stores/{s}/metrics", {"to": "0001-01-01T10:00:00Z"}),
        (
            "/stores/{s}/metrics",
            {"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:59:59-14:00"},
        ),
        ("/stores/{s}/heatmap", {"from": "0001-01-01T00:00:00+14:00"}),
        ("/stores/{s}/events", {"from": "9999-12-31T23:59:59-14:00"}),
        ("/stores/{s}/receipts", {"from": "0001-01-01T00:00:00+14:00"}),
        ("/stores/{s}/alerts", {"to": "0001-01-01T00:00:00+14:00"}),
        ("/audit", {"from": "0001-01-01T00:00:00+14:00"}),
    ],
)
def test_times_at_the_ends_of_the_calendar_are_refused_naming_the_parameter(
    c: TestClient, w: World, path: str, params: dict[str, str]
) -> None:
    r = c.get(V1 + path.format(s=STORE), headers=w.auth("admin"), params=params)
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith("query."), r.text
    assert "between the years 2000 and 2200" in r.text


def test_a_token_name_with_control_characters_is_refused(c: TestClient, w: World) -> None:
    for name in ("evil\u001b[2J", "a\u202eb", "x\u0000y"):
        r = c.post(V1 + "/tokens", headers=w.auth("admin"), json={"role": "viewer", "name": name})
        assert r.status_code == 422 and r.json()["field"] == "body.name", r.text


def test_a_refund_sent_before_the_last_one_is_projected_is_checked_against_both(
    c: TestClient, w: World
) -> None:
    receipt = [e for e in w.derived[STORE] if isinstance(e, ev.ReceiptIssued)][3]
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    line = receipt.data.lines[0]
    whole = {
        "reason": "all of it back",
        "adjustments": [{"sku": line.sku, "qty": -line.qty, "amount_cents": -line.amount_cents}],
    }
    first = c.post(path, headers=w.auth("operator"), json=whole)
    assert first.status_code == 202, first.text
    again = c.post(path, headers=w.auth("operator"), json={**whole, "reason": "and again"})
    assert again.status_code == 422 and again.json()["field"] == "body.adjustments[0]", again.text
    assert w.count(STORE, "receipt.corrected") >= 1
    w.project()
    shown = get(c, w, "operator", f"/stores/{STORE}/receipts/{receipt.id}")
    assert shown["receipt"]["corrected_total_cents"] == receipt.data.total_cents - line.amount_cents  # type: ignore[index]


def test_an_open_cart_that_holds_nothing_is_not_shown_as_shopping(c: TestClient, w: World) -> None:
    before = get(c, w, "operator", f"/stores/{STORE}/live")
    with w.db.begin() as conn:  # all put back, then gone out without passing the gate
        conn.execute(
            sa.text(
                "INSERT INTO cart (id, store, cart, opened_at, updated_at, status, items) "
                "VALUES ('e' || :n, :s, 'v-empty', :t, :t, 'open', 0)"
            ),
            {"n": "0" * 31, "s": STORE, "t": datetime(2026, 11, 28, 9, tzinfo=UTC)},
        )
    after = get(c, w, "operator", f"/stores/{STORE}/live")
    assert after["open_carts"] == before["open_carts"]  # type: ignore[index]
    assert "v-empty" not in [x["cart"] for x in after["carts"]]  # type: ignore[index]
    with w.db.begin() as conn:
        conn.execute(sa.text("DELETE FROM cart WHERE cart = 'v-empty'"))


def test_a_correction_names_an_item_of_the_receipt_or_of_the_catalog(
    c: TestClient, w: World
) -> None:
    receipt = first_receipt(w)
    path = f"{V1}/stores/{STORE}/receipts/{receipt.id}/corrections"
    made_up = {
        "reason": "r",
        "adjustments": [{"sku": "totally-made-up", "qty": 5, "amount_cents": 10**8}],
    }
    r = c.post(path, headers=w.auth("operator"), json=made_up)
    assert r.status_code == 422 and r.json()["field"] == "body.adjustments[0].sku", r.text
    assert "neither on the receipt nor in the store's catalog" in r.text
