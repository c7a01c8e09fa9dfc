"""The dashboard in a real browser: headless Chromium (the system's, through Playwright)
against ``aisle serve`` on a free loopback port, over a real log (its embedded
nats-server) and real projections into SQLite.

One server for the module: two stores of a chain, a few hours of each in the log with what
the rules derived from them (published by the test, as the engine would: ``--no-engine``).
Screenshots go to a temporary folder, or to ``AISLE_SCREENSHOTS`` (``docs/img`` to renew
the README's).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from api.auth import Role as ApiRole
from api.auth import create_token
from api.serve import EXAMPLE, chain_layouts
from core import events as ev
from readmodels.database import make_engine
from tests.readmodelkit import day_with_derived
from tests.servekit import Served, start_serve

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra")

CHROMIUM = Path(os.environ.get("AISLE_CHROMIUM", "/usr/bin/chromium"))
STORES = ("corner-01", "corner-02")
LIVE_S = 10.0  # a live alert shows within this many seconds of its event in the log

pytestmark = pytest.mark.integration


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set AISLE_CHROMIUM)"
    if os.environ.get("AISLE_TEST_REQUIRE_SERVICES"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _need_chromium()
    tmp = tmp_path_factory.mktemp("dashboard")
    layouts = chain_layouts(EXAMPLE, 2, tmp / "chain")
    args = [a for p in layouts for a in ("--layout", str(p))]
    server = start_serve(tmp, "--no-engine", *args, ready_s=0)
    try:  # the days are made while it starts
        first = [e for lot in day_with_derived(STORES[0], hours=3, shoppers=40) for e in lot]
        second = [e for lot in day_with_derived(STORES[1], hours=1, shoppers=10) for e in lot]
        server.ready()
        began = time.monotonic()
        server.publish(first + second)
        server.newest = max(e.at for e in first)
        for store in STORES:
            server.wait_for(
                f"{store}'s receipts projected",
                lambda s=store: bool(server.get(f"/stores/{s}/receipts?limit=1")["items"]),
                timeout_s=90,
            )
        print(
            f"{len(first) + len(second):,} events published and projected in "
            f"{time.monotonic() - began:.1f} s"
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield b
        finally:
            b.close()


class Page:
    """A fresh browser tab on the dashboard, with what went wrong in it recorded."""

    def __init__(self, browser: Any, served: Served, token: str | None = None) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1100})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on(
            "response",
            lambda r: self.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console: {m.text}")
                if "Content Security Policy" in m.text
                else None
            ),
        )
        self.page.goto(f"{served.url}#token={token or served.token}")

    def live(self) -> Any:
        """The page once its live stream is connected."""
        self.page.locator('#live-status[data-state="live"]').wait_for(timeout=20_000)
        return self.page

    def until(self, locator: Any, *, state: str = "visible", timeout_s: float = 30.0) -> None:
        """Wait for ``locator``; on a timeout, say what the page showed (its error banner)."""
        try:
            locator.wait_for(state=state, timeout=timeout_s * 1000)
        except playwright.TimeoutError:
            banner = self.page.locator("#error-banner")
            shown = banner.inner_text() if banner.is_visible() else "no error shown"
            raise AssertionError(
                f"{locator} not {state} in {timeout_s:.0f} s; the page: {shown}; {self.problems}"
            ) from None

    def poll(self, what: str, check: Callable[[], bool], timeout_s: float) -> None:
        """Wait until ``check()`` holds, asked from here: the page's policy lets no
        predicate string be evaluated in it (Playwright's ``wait_for_function``)."""
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s:.0f} s; {self.problems}")
            self.page.wait_for_timeout(100)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, served: Served) -> Iterator[Page]:
    page = Page(browser, served)
    try:
        yield page
    finally:
        page.close()


def _shots() -> Path:
    where = os.environ.get("AISLE_SCREENSHOTS")
    path = Path(where) if where else Path(os.environ.get("TMPDIR", "/tmp")) / "aisle-shots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _alert(served: Served, summary: str, *, minutes: float = 1) -> ev.AlertRaised:
    """An alert as the frustration rules raise one, dated in the store's day."""
    assert served.newest is not None
    at = served.newest + timedelta(minutes=minutes)
    rule = ev.RuleRef("frustration.queue_wait", "1.0.0")
    who = f"s-{uuid.uuid4().hex[:8]}"
    data = ev.AlertData(alert="queue_wait_long", key=who, severity="warning", summary=summary)
    return ev.derive(
        ev.AlertRaised,
        rule=rule,
        caused_by=[uuid.uuid4().hex],
        store=STORES[0],
        at=at,
        subject=who,
        data=data,
    )


def _admin(served: Served) -> str:
    db = make_engine(served.database_url)
    try:
        return create_token(db, ApiRole.ADMIN, (), "test admin")[1]
    finally:
        db.dispose()


def _token_id(token: str) -> str:
    return token.split(".", 1)[0]


# -- the page ----------------------------------------------------------------------------


def test_the_dashboard_loads_the_first_store_and_goes_live(tab: Page) -> None:
    page = tab.live()
    assert page.title() == "aisle · Corner Shop Oostpoort #1"
    assert page.locator("#store-picker").input_value() == STORES[0]
    assert page.locator("#store-picker option").all_inner_texts() == [
        f"Corner Shop Oostpoort #{k} ({s})" for k, s in enumerate(STORES, 1)
    ]
    # The store's clock is its newest event's (a day in the past), in its time zone.
    assert "28 Nov 2026" in page.locator("#store-clock").inner_text()
    assert page.locator("#error-banner").is_hidden()
    assert not tab.problems


def test_the_heatmap_and_the_charts_draw_with_data(tab: Page) -> None:
    page = tab.live()
    floor = page.locator(f'#floor svg[data-store="{STORES[0]}"]')
    floor.wait_for()
    page.locator("#floor rect.cell").nth(20).wait_for(state="attached")
    cells = page.locator("#floor rect.cell").count()
    assert int(floor.get_attribute("data-cells") or 0) >= cells > 20
    assert "cells of 0.5 m" in page.locator("#heatmap-summary").inner_text()
    for chart, least in (("occupancy", 2), ("footfall", 3), ("conversion", 3)):
        svg = page.locator(f"#chart-{chart} svg.chart")
        assert int(svg.get_attribute("data-points") or 0) >= least, chart
    bars = page.locator("#chart-footfall rect.bar")
    assert bars.count() == int(page.locator("#chart-footfall svg").get_attribute("data-points"))
    heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
    assert max(heights) > 0
    assert int(page.locator("#tile-footfall").inner_text()) > 10
    page.screenshot(path=str(_shots() / "dashboard.png"), full_page=True)
    # The last hour only: fewer cells than the whole day.
    page.select_option("#heatmap-span", "hour")
    tab.poll("fewer cells", lambda: page.locator("#floor rect.cell").count() < cells, 10)
    assert not tab.problems


def test_a_live_alert_appears_within_seconds_of_its_event_in_the_log(
    tab: Page, served: Served
) -> None:
    page = tab.live()
    summary = f"Waiting in the queue for 95 s ({uuid.uuid4().hex[:8]})"
    item = page.locator("#alert-feed li", has_text=summary)
    assert item.count() == 0
    began = time.monotonic()
    served.publish([_alert(served, summary)])
    item.wait_for(timeout=LIVE_S * 1000)
    took = time.monotonic() - began
    assert item.get_attribute("data-severity") == "warning"
    assert "queue_wait_long" in item.inner_text()
    print(f"live alert on the page {took:.2f} s after its publish")
    assert not tab.problems


def test_acknowledging_an_alert_shows_who_did_it_and_is_audited(tab: Page, served: Served) -> None:
    page = tab.live()
    summary = f"Waiting in the queue for 120 s ({uuid.uuid4().hex[:8]})"
    alert = _alert(served, summary, minutes=2)
    served.publish([alert])
    served.wait_for(
        "the alert projected",
        lambda: served.get(f"/stores/{STORES[0]}/alerts/{alert.id}")["alert"]["id"] == alert.id,
        timeout_s=20,
    )
    item = page.locator(f'#alert-feed li[data-id="{alert.id}"]')
    clock = page.locator("#store-clock").inner_text()
    item.get_by_role("button", name=re.compile("^Acknowledge")).click()
    tab.until(page.locator(f'#alert-feed li[data-id="{alert.id}"][data-state="acknowledged"]'))
    page.wait_for_timeout(1500)  # the acknowledgement's own event comes by the stream
    assert page.locator("#store-clock").inner_text() == clock, "an operator's act is no store time"
    me = _token_id(served.token)
    assert f"acknowledged by aisle serve (token {me})" in item.inner_text()
    # Through the API: the alert's life cycle, and the audit (an admin's to read).
    detail = served.get(f"/stores/{STORES[0]}/alerts/{alert.id}")
    assert detail["alert"]["state"] == "acknowledged"
    assert [a["action"] for a in detail["actions"]] == ["acknowledged"]
    assert me in detail["actions"][0]["by"]
    audit = served.get("/audit?action=alert.acknowledged", token=_admin(served))["items"]
    mine = [a for a in audit if a["target"] == alert.id]
    assert len(mine) == 1 and mine[0]["token_id"] == me and mine[0]["store"] == STORES[0]
    assert not tab.problems


def test_dismissing_an_alert_asks_why_and_records_it(tab: Page, served: Served) -> None:
    page = tab.live()
    alert = _alert(served, f"Waiting in the queue for 70 s ({uuid.uuid4().hex[:8]})", minutes=3)
    served.publish([alert])
    served.wait_for(
        "the alert projected",
        lambda: bool(served.get(f"/stores/{STORES[0]}/alerts/{alert.id}")),
        timeout_s=20,
    )
    item = page.locator(f'#alert-feed li[data-id="{alert.id}"]')
    item.get_by_role("button", name=re.compile("^Dismiss")).click()
    dialog = page.locator("#decision-dialog")
    assert dialog.is_visible()
    page.fill("#decision-reason", "a member of staff restocking")
    page.click("#decision-ok")
    tab.until(item, state="detached")  # no longer open: off the open-only feed
    detail = served.get(f"/stores/{STORES[0]}/alerts/{alert.id}")["alert"]
    assert (detail["state"], detail["decision"]) == ("dismissed", "dismissed")
    assert detail["decision_reason"] == "a member of staff restocking"
    assert not tab.problems


def test_a_receipts_evidence_opens_with_the_pick_and_the_camera_that_saw_it(
    tab: Page, served: Served
) -> None:
    page = tab.live()
    first = page.locator("#receipts-body tr").first
    first.get_by_role("button", name=re.compile("^Open the receipt")).click()
    dialog = page.locator("#receipt-dialog")
    dialog.wait_for()
    evidence = dialog.locator("ol.evidence li")
    evidence.first.wait_for()
    text = evidence.first.inner_text()
    assert re.search(r"added \d+ at .* by rule carts\.\S+@\S+, from item\.picked seen by \S+", text)
    assert dialog.locator("tr[data-sku]").count() >= 1
    page.screenshot(path=str(_shots() / "receipt-evidence.png"))
    receipt_id = first.get_attribute("data-id")
    audit = served.get(f"/audit?action=receipt.read&store={STORES[0]}", token=_admin(served))
    assert any(a["target"] == receipt_id for a in audit["items"])
    assert not tab.problems


def test_a_correction_is_recorded_as_an_event_and_shown_beside_the_receipt(
    tab: Page, served: Served
) -> None:
    page = tab.live()
    row = page.locator("#receipts-body tr").nth(1)
    receipt_id = row.get_attribute("data-id")
    row.get_by_role("button", name=re.compile("^Open the receipt")).click()
    dialog = page.locator("#receipt-dialog")
    dialog.locator("ol.evidence").first.wait_for()
    before = served.get(f"/stores/{STORES[0]}/receipts?q={receipt_id}")["items"][0]
    page.fill("#correction-qty", "-1")
    page.fill("#correction-reason", "the shopper put it back at the gate")
    page.click("#correction-submit")
    tab.until(dialog.locator("li.correction", has_text="the shopper put it back at the gate"))
    after = served.get(f"/stores/{STORES[0]}/receipts?q={receipt_id}")["items"][0]
    assert after["corrections"] == before["corrections"] + 1
    assert after["corrected_total_cents"] < before["corrected_total_cents"]
    assert after["total_cents"] == before["total_cents"]  # as issued: never edited
    audit = served.get(f"/audit?action=receipt.corrected&store={STORES[0]}", token=_admin(served))
    assert any(a["target"] == receipt_id for a in audit["items"])
    assert page.locator("#correction-error").inner_text() == ""
    assert not tab.problems


def test_a_bad_correction_is_refused_with_the_reason_beside_the_form(tab: Page) -> None:
    page = tab.live()
    page.locator("#receipts-body tr").first.get_by_role(
        "button", name=re.compile("^Open the receipt")
    ).click()
    page.locator("#receipt-dialog ol.evidence").first.wait_for()
    page.fill("#correction-qty", "-999")
    page.fill("#correction-reason", "too much")
    page.click("#correction-submit")
    error = page.locator("#correction-error")
    tab.poll("the correction's error", lambda: error.inner_text() != "", 30)
    assert "would leave" in error.inner_text() and "body.adjustments[0]" in error.inner_text()


def test_the_store_picker_switches_to_another_store_of_the_chain(tab: Page) -> None:
    page = tab.live()
    page.select_option("#store-picker", STORES[1])
    page.locator(f'#floor svg[data-store="{STORES[1]}"]').wait_for()
    tab.live()
    page.locator("#receipts-body td", has_text=STORES[1]).first.wait_for()
    assert page.title() == "aisle · Corner Shop Oostpoort #2"
    assert f"store={STORES[1]}" in page.url
    assert not tab.problems


def test_a_refused_token_asks_for_another_and_says_why(browser: Any, served: Served) -> None:
    tab = Page(browser, served, token="0123456789abcdef.not-the-right-secret-at-all")
    try:
        dialog = tab.page.locator("#token-dialog")
        dialog.wait_for()
        assert "refused this token (401)" in tab.page.locator("#token-error").inner_text()
        assert tab.page.evaluate("sessionStorage.getItem('aisle.token')") is None  # not kept
        tab.page.fill("#token-input", served.token)
        tab.page.click("#token-save")
        tab.live()
        assert tab.page.evaluate("sessionStorage.getItem('aisle.token')") == served.token
        assert "#token" not in tab.page.url  # taken off the address bar
    finally:
        tab.close()


def test_forgetting_the_token_leaves_none_in_the_tab_under_a_strict_script_policy(
    tab: Page, served: Served
) -> None:
    page = tab.live()
    policy = page.request.get(served.url).headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.evaluate("sessionStorage.getItem('aisle.token')") == served.token
    page.click("#token-button")
    page.click("#token-forget")
    assert page.evaluate("sessionStorage.getItem('aisle.token')") is None
    page.reload()  # nothing left to start with: the page asks
    tab.until(page.locator("#token-dialog"))
    assert page.locator("#live-status").get_attribute("data-state") != "live"
    assert not [p for p in tab.problems if p.startswith("console:")], tab.problems


def test_a_viewer_sees_traffic_and_heatmap_but_nothing_tied_to_a_shopper(
    browser: Any, served: Served
) -> None:
    db = make_engine(served.database_url)
    try:
        viewer = create_token(db, ApiRole.VIEWER, (), "test viewer")[1]
    finally:
        db.dispose()
    tab = Page(browser, served, token=viewer)
    try:
        page = tab.live()
        page.locator("#floor rect.cell").first.wait_for(state="attached")
        for panel in ("alerts-panel", "carts-panel", "receipts-panel"):
            assert page.locator(f"#{panel}").is_hidden(), panel
        assert "viewer's" in page.locator("#now-panel").inner_text()
        assert int(page.locator("#chart-footfall svg").get_attribute("data-points") or 0) > 0
        assert not tab.problems  # it asked for nothing it may not see
    finally:
        tab.close()


def test_every_control_and_panel_has_a_name_a_screen_reader_can_read(tab: Page) -> None:
    page = tab.live()
    page.locator("#receipts-body tr button").first.wait_for()
    unnamed = page.evaluate(
        """() => {
        const named = (el) =>
          (el.labels && el.labels.length > 0) || el.getAttribute("aria-label") ||
          el.getAttribute("aria-labelledby") ||
          (el.tagName === "BUTTON" && el.textContent.trim() !== "");
        const controls = [...document.querySelectorAll("button, input, select, textarea")];
        const out = controls.filter((el) => !named(el)).map((el) => el.outerHTML.slice(0, 80));
        for (const s of document.querySelectorAll("section, dialog, [aria-labelledby]")) {
          const id = s.getAttribute("aria-labelledby");
          if (!id || !document.getElementById(id)) out.push(`${s.tagName}#${s.id}: no heading`);
        }
        for (const g of document.querySelectorAll("svg[role=img]")) {
          if (!g.getAttribute("aria-label")) out.push(`svg in ${g.parentElement.id}: no label`);
        }
        return out;
    }"""
    )
    assert unnamed == []
    assert page.locator("#alert-feed").get_attribute("aria-live") == "polite"
    assert page.locator("#live-status").get_attribute("role") == "status"
    assert page.locator("#error-banner").get_attribute("role") == "alert"


def test_the_dashboard_knows_the_operator_event_types_the_log_has() -> None:
    script = (Path(__file__).resolve().parent.parent / "api/static/js/app.js").read_text()
    listed = re.search(r"const OPERATOR_TYPES = new Set\(\[([^\]]*)\]\)", script)
    assert listed is not None
    assert set(re.findall(r'"([a-z._]+)"', listed.group(1))) == set(ev.OPERATOR_TYPES)
