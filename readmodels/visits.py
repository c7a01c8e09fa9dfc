"""Visits: one row per per-visit shopper id, from the door's entry and exit events."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from core import events as ev
from readmodels.projection import Projection
from readmodels.tables import Visit


class Visits(Projection):
    name = "visits"
    types = frozenset({"shopper.entered", "shopper.exited", "staff.session_started"})
    tables = (Visit,)
    checks_first = True  # nothing to check: every entry, exit and session applies

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        visit = session.get(Visit, (event.store, event.subject))
        if visit is None:
            visit = Visit(store=event.store, subject=event.subject)
            session.add(visit)
        if isinstance(event, ev.ShopperEntered):
            # Two counting lines may both see one entry: the first one counts.
            if visit.entered_at is None or event.at < visit.entered_at:
                visit.entered_at, visit.entry_line = event.at, event.data.line
            visit.group = visit.group or event.data.group
        elif isinstance(event, ev.ShopperExited):
            if visit.exited_at is None or event.at > visit.exited_at:
                visit.exited_at, visit.exit_line = event.at, event.data.line
        elif isinstance(event, ev.StaffSessionStarted):
            visit.staff = True
        visit.dwell_s = _dwell(visit.entered_at, visit.exited_at)


def _dwell(entered: datetime | None, exited: datetime | None) -> float | None:
    if entered is None or exited is None or exited < entered:
        return None
    return (exited - entered).total_seconds()
