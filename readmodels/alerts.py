"""Alerts and their life cycle: raised and resolved by the rules; acknowledged, confirmed
or dismissed, and closed by people (each an event in the log with who and why).

The people's part is a state machine (``NEXT``): a decision (confirmed or dismissed) is
final, so an alert dismissed is never confirmed later; only a close follows it. The API
refuses an action ``NEXT`` does not allow (409), and this projection refuses one that
reaches the log anyway (two API processes acting at once) into the dead letters, so the
first decision stands whatever order the clicks came in. The rule's own ``resolved_at``
(its condition ended) is apart from this: it does not change the state."""

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
# The states an alert's state may move to: raised → acknowledged → confirmed | dismissed →
# closed. A decision implies the alert was seen (raised may be decided at once); a close
# needs someone to have looked (acknowledged) or decided; closed is the end.
NEXT: dict[str, frozenset[str]] = {
    "raised": frozenset({"acknowledged", "confirmed", "dismissed"}),
    "acknowledged": frozenset({"confirmed", "dismissed", "closed"}),
    "confirmed": frozenset({"closed"}),
    "dismissed": frozenset({"closed"}),
    "closed": frozenset(),
}


def refusal(state: str, to: str) -> str | None:
    """Why an alert in ``state`` may not move to ``to`` (None: it may)."""
    if to in NEXT.get(state, frozenset()):
        return None
    allowed = [s for s, nexts in NEXT.items() if to in nexts]  # in the life cycle's order
    return (
        f"the alert is {state}: it may become {to} only when "
        f"{' or '.join(allowed) if allowed else 'never'}"
    )


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
        action = ACTIONS[e.type]
        if (why := refusal(alert.state, action)) is not None:
            raise Unexpected("type", why)
        if alert.acknowledged_at is None:  # a decision or a close says it was seen
            alert.acknowledged_at, alert.acknowledged_by = e.at, d.by
        if action in ("confirmed", "dismissed"):
            alert.decision, alert.decided_at, alert.decided_by = action, e.at, d.by
            alert.decision_reason = d.reason
        elif action == "closed":
            alert.closed_at, alert.closed_by, alert.close_reason = e.at, d.by, d.reason
        alert.state = action
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
