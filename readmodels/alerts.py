"""Alerts and their life cycle: raised and resolved by the rules; acknowledged, confirmed
or dismissed, and closed by people (each an event in the log with who and why)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from core import events as ev
from readmodels.projection import Projection, Unexpected
from readmodels.tables import Alert, AlertAction

ACTIONS = {
    "alert.acknowledged": "acknowledged",
    "alert.confirmed": "confirmed",
    "alert.dismissed": "dismissed",
    "alert.closed": "closed",
}


class Alerts(Projection):
    name = "alerts"
    types = frozenset({"alert.raised", "alert.resolved", *ACTIONS})
    tables = (Alert, AlertAction)
    # Each event is checked before it changes anything (a resolve finds its alert, an
    # action its alert, subject and state, first): a refused one leaves no trace, and a
    # batch needs no savepoint an event.
    checks_first = True

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        match event:
            case ev.AlertRaised():
                d = event.data
                session.add(
                    Alert(
                        id=event.id,
                        seq=seq,
                        store=event.store,
                        name=d.alert,
                        key=d.key,
                        subject=event.subject,
                        severity=d.severity,
                        summary=d.summary,
                        labels=dict(sorted(d.labels.items())),
                        raised_at=event.at,
                        rule_id=event.rule.id,
                        rule_version=event.rule.version,
                        caused_by=list(event.caused_by),
                    )
                )
            case ev.AlertResolved():
                self._resolved(session, event)
            case (
                ev.AlertAcknowledged()
                | ev.AlertConfirmed()
                | ev.AlertDismissed()
                | ev.AlertClosed()
            ):
                self._action(session, seq, event)

    def _resolved(self, session: Session, e: ev.AlertResolved) -> None:
        """Raise and resolve pair on the alert's name and key: the latest one still open."""
        alert = session.exec(
            select(Alert)
            .where(
                Alert.store == e.store,
                Alert.name == e.data.alert,
                Alert.key == e.data.key,
                col(Alert.resolved_at).is_(None),
            )
            .order_by(col(Alert.seq).desc())
        ).first()
        if alert is None:
            raise Unexpected(
                "data.key", f"resolves no open {e.data.alert!r} alert on {e.data.key!r}"
            )
        alert.resolved_at, alert.resolved_event_id = e.at, e.id

    def _action(
        self,
        session: Session,
        seq: int,
        e: ev.AlertAcknowledged | ev.AlertConfirmed | ev.AlertDismissed | ev.AlertClosed,
    ) -> None:
        d = e.data
        alert = session.get(Alert, d.alert)
        if alert is None or alert.store != e.store:
            raise Unexpected("data.alert", f"no alert {d.alert} in store {e.store}")
        if alert.subject != e.subject:
            raise Unexpected(
                "subject", f"{e.subject!r} is not the alert's subject {alert.subject!r}"
            )
        if alert.closed_at is not None:
            raise Unexpected(
                "data.alert",
                f"the alert was closed at {alert.closed_at:%Y-%m-%d %H:%M:%S} by {alert.closed_by}",
            )
        action = ACTIONS[e.type]
        if alert.acknowledged_at is None:  # a decision or a close says it was seen
            alert.acknowledged_at, alert.acknowledged_by = e.at, d.by
        if action in ("confirmed", "dismissed"):
            alert.decision, alert.decided_at, alert.decided_by = action, e.at, d.by
            alert.decision_reason = d.reason
        elif action == "closed":
            alert.closed_at, alert.closed_by, alert.close_reason = e.at, d.by, d.reason
        alert.state = action if action != "acknowledged" or alert.state == "raised" else alert.state
        session.add(
            AlertAction(
                id=e.id,
                seq=seq,
                alert_id=alert.id,
                store=e.store,
                action=action,
                at=e.at,
                by=d.by,
                reason=d.reason,
                source=e.source,
            )
        )
