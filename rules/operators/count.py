"""``count``: at least ``threshold`` matching events per key within a sliding window.

When the count reaches the threshold the rule fires (caused by the events in the window)
and the key's window starts afresh, so the next alert needs ``threshold`` new events.
A timer at the end of the newest event's window frees a key that went quiet.
"""

from __future__ import annotations

from typing import Any

from core import events as ev
from rules.operators.base import Emitter, KeyFn, Partition, Rule, Scope, key_text


class Count(Rule):
    kind = "count"

    def __init__(self, *args: Any, by: KeyFn, window_s: float, threshold: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.by, self.window_s, self.threshold = by, window_s, threshold

    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        states = p.rule_state(self.id)
        key = self.by(e)
        st = states.get(key)
        if st is None:
            st = states[key] = {"hits": [], "token": 0}
        hits: list[tuple[float, str]] = st["hits"]
        horizon = ts - self.window_s
        while hits and hits[0][0] < horizon:
            hits.pop(0)
        hits.append((ts, e.id))
        if len(hits) >= self.threshold:
            causes = tuple(i for _, i in hits)
            extra = {"count": len(hits), "key": key_text(key), "window_s": self.window_s}
            hits.clear()
            self.fire(p, Scope(e, extra), key, ts, causes, out)
        if hits:
            st["token"] = p.new_token()  # unique: a timer of an earlier state never matches
            p.schedule(ts + self.window_s, self.id, key, st["token"])
        else:
            del states[key]

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:
        states = p.rule_state(self.id)
        st = states.get(key)
        if st is not None and st["token"] == token:
            del states[key]  # the newest hit is a window old: nothing left to count
