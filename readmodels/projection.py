"""What a projection is: the event types it reads and how one event changes its tables.

A projection's ``apply`` runs inside the batch's transaction (``readmodels.runner``),
in a savepoint of its own: an event it cannot apply raises ``Unexpected`` naming the field
and the reason, nothing of it is written, it goes to the dead letters, and the batch goes
on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import ClassVar

from sqlmodel import Session, SQLModel

from core import events as ev


class Unexpected(ev.EventError):
    """A valid event this projection cannot apply (a receipt whose total is not the sum of
    its lines, an action on an alert the log never raised): ``field`` and ``reason``."""


class Projection:
    """One read model: the event types it reads, the tables it writes, and ``apply``."""

    name: ClassVar[str]
    types: ClassVar[frozenset[str]]
    tables: ClassVar[tuple[type[SQLModel], ...]]
    # True: ``apply_all`` checks each event before it writes anything, so an event needs
    # no savepoint of its own (a savepoint a message was a large share of a batch's time),
    # and a batch's rows may go in a few statements.
    checks_first: ClassVar[bool] = False

    def wants(self, event: ev.Event) -> bool:
        """Whether the event is this projection's (of its types, some are not: the
        receipts read one metric of many); one it does not want only moves its position."""
        return True

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        """Apply one event (``Unexpected`` if it cannot be)."""
        refused = self.apply_all(session, [(seq, event)])
        if refused:
            raise refused[0]

    def apply_all(
        self, session: Session, batch: Sequence[tuple[int, ev.Event]]
    ) -> dict[int, Unexpected]:
        """Apply a batch of a ``checks_first`` projection's events, in order; those it
        cannot apply (by their index in ``batch``) wrote nothing."""
        refused = {}
        for i, (seq, event) in enumerate(batch):
            try:
                self.apply(session, seq, event)
            except Unexpected as exc:
                refused[i] = exc
        return refused


def hour_of(at: datetime) -> datetime:
    """The UTC hour ``at`` falls in."""
    return at.replace(minute=0, second=0, microsecond=0)


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole hours from ``start`` to ``end``: what rows kept per hour can answer."""
    first, last = hour_of(start), hour_of(end)
    return first, last if last == end else last + timedelta(hours=1)
