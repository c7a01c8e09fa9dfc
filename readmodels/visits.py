"""Visits: one row per per-visit shopper id, from the door's entry and exit events; and
which visits were an enrolled member's (their face matches)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from core import events as ev
from readmodels import bulk
from readmodels.projection import Projection, Unexpected
from readmodels.tables import FaceMatch, Visit
from readmodels.upsert import fold_into

_EMPTY: dict[str, Any] = {
    "group": None,
    "entered_at": None,
    "entry_line": None,
    "exited_at": None,
    "exit_line": None,
    "dwell_s": None,
    "staff": False,
}


class Visits(Projection):
    name = "visits"
    types = frozenset(
        {"shopper.entered", "shopper.exited", "staff.session_started", "face.matched"}
    )
    tables = (Visit, FaceMatch)
    checks_first = True  # nothing to check: every entry, exit, session and match applies

    def apply_all(
        self, session: Session, batch: Sequence[tuple[int, ev.Event]]
    ) -> dict[int, Unexpected]:
        steps: dict[tuple[Any, ...], list[ev.Event]] = {}
        matches = []
        for seq, event in batch:
            if isinstance(event, ev.FaceMatched):
                d = event.data
                matches.append(
                    {
                        "id": event.id, "seq": seq, "store": event.store,
                        "subject": event.subject, "member": d.member,
                        "watchlist": d.watchlist, "confidence": d.confidence,
                        "source": event.source, "at": event.at,
                    }
                )  # fmt: skip
                continue
            steps.setdefault((event.store, event.subject), []).append(event)
        fold_into(session, _VISIT, steps, _fold)
        bulk.insert(session, _MATCH, matches, conflict="keep")
        return {}


def _fold(row: dict[str, Any] | None, e: ev.Event) -> dict[str, Any]:
    visit = dict(row or _EMPTY)
    if isinstance(e, ev.ShopperEntered):
        # Two counting lines may both see one entry: the first one counts.
        if visit["entered_at"] is None or e.at < visit["entered_at"]:
            visit["entered_at"], visit["entry_line"] = e.at, e.data.line
        visit["group"] = visit["group"] or e.data.group
    elif isinstance(e, ev.ShopperExited):
        if visit["exited_at"] is None or e.at > visit["exited_at"]:
            visit["exited_at"], visit["exit_line"] = e.at, e.data.line
    elif isinstance(e, ev.StaffSessionStarted):
        visit["staff"] = True
    visit["dwell_s"] = _dwell(visit["entered_at"], visit["exited_at"])
    return visit


def _dwell(entered: datetime | None, exited: datetime | None) -> float | None:
    if entered is None or exited is None or exited < entered:
        return None
    return (exited - entered).total_seconds()


_VISIT: sa.Table = Visit.__table__  # type: ignore[attr-defined]
_MATCH: sa.Table = FaceMatch.__table__  # type: ignore[attr-defined]
