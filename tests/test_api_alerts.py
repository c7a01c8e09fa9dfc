"""An alert's life cycle as a state machine (a decision is final, a reason comes with it),
in the API and in the projection, and errors that name their field (a body that is not
JSON included), on a real log and a SQLite read model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.app import create_app
from api.auth import Role, create_token
from api.settings import ApiSettings
from core import events as ev
from core.config import LogConfig, Settings
from core.jetstream import JetStreamLog, connect
from readmodels.alerts import NEXT, refusal
from readmodels.tables import Alert
from tests.conftest import server_url, unique_prefix
from tests.enginekit import LAYOUT_FILE
from tests.readmodelkit import project, sqlite_db

pytestmark = pytest.mark.integration
STORE = "corner-01"
V1 = "/api/v1"


@dataclass
class Desk:
    """An alert in the read models, the API on them and on a log of the test's own."""

    url: str
    config: LogConfig
    db: Engine
    client: TestClient
    headers: dict[str, str]

    def _run(self, coro_fn):  # type: ignore[no-untyped-def]
        async def go():  # type: ignore[no-untyped-def]
            log = JetStreamLog(await connect(self.url, name="aisle-tests"), self.config)
            try:
                return await coro_fn(log)
            finally:
                await log.close()

        return asyncio.run(go())

    def project(self) -> None:
        self._run(lambda log: project(log, self.db))

    def publish(self, events: list[ev.Event]) -> None:
        self._run(lambda log: log.publish_many(events))

    def post(self, alert: str, action: str, reason: str | None = None):  # type: ignore[no-untyped-def]
        body = None if reason is None else {"reason": reason}
        return self.client.post(
            f"{V1}/stores/{STORE}/alerts/{alert}/{action}", headers=self.headers, json=body
        )

    def alert(self, alert: str) -> dict:  # type: ignore[type-arg]
        r = self.client.get(f"{V1}/stores/{STORE}/alerts/{alert}", headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _raise(db: Engine, alert_id: str) -> None:
    with Session(db) as s, s.begin():
        s.add(
            Alert(
                id=alert_id,
                seq=1,
                store=STORE,
                name="hesitant",
                key=f"k-{alert_id}",
                subject="v-1",
                severity="warning",
                summary="a shopper hesitates at the gate",
                raised_at=datetime(2026, 11, 28, 9, tzinfo=UTC),
                rule_id="frustration.hesitant",
                rule_version="1",
            )
        )


@pytest.fixture
def desk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Desk]:
    url = server_url("system", request)
    config = LogConfig(prefix=unique_prefix(), publish_deadline_s=10)

    async def streams(delete: bool) -> None:
        log = await JetStreamLog.open(await connect(url, name="aisle-tests"), config)
        if delete:
            await log.delete_streams()
        await log.close()

    asyncio.run(streams(False))
    db = sqlite_db(tmp_path / "rm.db")
    for a in ("a1", "a2", "a3"):
        _raise(db, a)
    token = create_token(db, Role.OPERATOR, name="ann")[1]
    settings = ApiSettings(
        core=Settings(nats_url=url, log=config),
        database_url=f"sqlite:///{tmp_path / 'rm.db'}",
        layouts=(LAYOUT_FILE,),
    )
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield Desk(url, config, db, c, {"Authorization": f"Bearer {token}"})
    finally:
        asyncio.run(streams(True))


def test_the_life_cycle_allows_only_forward_moves_and_names_them() -> None:
    assert refusal("raised", "acknowledged") is None
    assert refusal("acknowledged", "closed") is None
    assert refusal("dismissed", "closed") is None
    assert refusal("dismissed", "confirmed") == (
        "the alert is dismissed: it may become confirmed only when raised or acknowledged"
    )
    assert refusal("closed", "acknowledged") is not None
    assert refusal("raised", "closed") is not None  # nobody looked at it yet
    for state, nexts in NEXT.items():  # no way back: a decision is never undone
        assert "raised" not in nexts and (state not in nexts)
        if state in ("confirmed", "dismissed"):
            assert nexts == {"closed"}


def test_a_decision_is_final_and_an_action_the_state_refuses_answers_409_with_the_state(
    desk: Desk,
) -> None:
    r = desk.post("a1", "dismiss", "a member of staff restocking")
    assert r.status_code == 202, r.text
    # Before the projections show the dismissal: this process remembers it.
    r = desk.post("a1", "confirm", "it was a theft after all")
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "the alert is dismissed" in r.json()["detail"]
    desk.project()
    assert desk.alert("a1")["alert"]["state"] == "dismissed"
    for action, reason in (("confirm", "no, it was"), ("acknowledge", None)):
        r = desk.post("a1", action, reason)
        assert r.status_code == 409, r.text
        assert "the alert is dismissed" in r.json()["detail"]
        assert r.json()["errors"] == [{"field": "path.alert_id", "reason": r.json()["detail"]}]
    assert desk.post("a1", "resolve", "done").status_code == 202
    desk.project()
    shown = desk.alert("a1")
    assert (shown["alert"]["state"], shown["alert"]["decision"]) == ("closed", "dismissed")
    assert [a["action"] for a in shown["actions"]] == ["dismissed", "closed"]
    r = desk.post("a1", "resolve", "again")
    assert r.status_code == 409 and "the alert is closed" in r.json()["detail"]
    # Closing needs someone to have looked first.
    r = desk.post("a2", "resolve", "nothing to see")
    assert r.status_code == 409 and "the alert is raised" in r.json()["detail"]


def test_confirm_and_dismiss_need_a_reason_naming_the_field(desk: Desk) -> None:
    for action in ("confirm", "dismiss"):
        for reason in (None, "", "   "):
            r = desk.post("a2", action, reason)
            assert r.status_code == 422, r.text
            problem = r.json()
            assert problem["field"] == "body.reason"
            assert problem["errors"][0]["field"] == "body.reason"
            assert "a reason is required" in problem["errors"][0]["reason"]
    assert desk.post("a2", "acknowledge").status_code == 202  # no decision: no reason needed


def test_the_projection_keeps_the_first_decision_whatever_the_log_holds_after(
    desk: Desk,
) -> None:
    """Two API processes may both pass their check: the log then holds a dismissal and a
    confirmation; the read model keeps the first and refuses the second."""
    at = datetime(2026, 11, 28, 9, 5, tzinfo=UTC)

    def act(cls: type[ev.OperatorEvent], reason: str, s: int) -> ev.Event:
        data = ev.AlertActionData(alert="a3", by="bob", reason=reason)
        return ev.new(
            cls, store=STORE, at=at.replace(second=s), source="api", subject="v-1", data=data
        )

    desk.publish([act(ev.AlertDismissed, "staff", 1), act(ev.AlertConfirmed, "theft", 2)])
    desk.project()
    shown = desk.alert("a3")
    assert shown["alert"]["state"] == "dismissed"
    assert shown["alert"]["decision_reason"] == "staff"
    assert [a["action"] for a in shown["actions"]] == ["dismissed"]


def test_a_body_that_is_not_json_is_a_422_naming_the_body_and_where(desk: Desk) -> None:
    r = desk.client.post(
        f"{V1}/stores/{STORE}/alerts/a1/dismiss",
        headers={**desk.headers, "Content-Type": "application/json"},
        content=b'{"reason": ',
    )
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["field"] == "body"
    assert problem["errors"] == [
        {"field": "body", "reason": "malformed JSON at character 11: Expecting value"}
    ]


def test_every_problem_that_names_a_field_lists_it_in_errors(desk: Desk) -> None:
    r = desk.client.get(f"{V1}/stores/{STORE}/alerts/nope", headers=desk.headers)
    assert r.status_code == 404
    assert r.json()["errors"] == [{"field": "path.alert_id", "reason": r.json()["detail"]}]
    r = desk.client.get(
        f"{V1}/stores/{STORE}/metrics?from=2026-11-28T10:00:00", headers=desk.headers
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "query.from"
