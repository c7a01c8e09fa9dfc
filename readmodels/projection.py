"""What a projection is: the event types it reads and how one event changes its tables.

A projection's ``apply`` runs inside the batch's transaction (``readmodels.runner``),
in a savepoint of its own: an event it cannot apply raises ``Unexpected`` naming the field
and the reason, nothing of it is written, it goes to the dead letters, and the batch goes
on.
"""

from __future__ import annotations

from datetime import datetime
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
    # True: ``apply`` raises ``Unexpected`` before it writes anything, so an event needs no
    # savepoint of its own (a savepoint a message was a large share of a batch's time).
    checks_first: ClassVar[bool] = False

    def wants(self, event: ev.Event) -> bool:
        """Whether the event is this projection's (of its types, some are not: the
        receipts read one metric of many); one it does not want only moves its position."""
        return True

    def apply(self, session: Session, seq: int, event: ev.Event) -> None:
        raise NotImplementedError


def hour_of(at: datetime) -> datetime:
    """The UTC hour ``at`` falls in."""
    return at.replace(minute=0, second=0, microsecond=0)
