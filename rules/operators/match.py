"""``match``: one event meets the condition; the rule fires at once."""

from __future__ import annotations

from core import events as ev
from rules.operators.base import Emitter, Partition, Rule


class Match(Rule):
    kind = "match"

    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        self.fire(p, e, e.subject, ts, (e.id,), out)
