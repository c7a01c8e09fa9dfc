"""``count``: at least ``threshold`` matching events per key within a sliding window.

When the count reaches the threshold the rule fires (caused by the events in the window)
and the key's window starts afresh, so the next alert needs ``threshold`` new events.
One timer per key frees it once its newest event is a window old.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from core import events as ev
from rules.operators.base import Emitter, KeyFn, Partition, Rule, Scope, key_text


class Hits(msgspec.Struct, gc=False):
    """One key's matching events inside the window: their times and ids."""

    token: int
    times: list[float]
    ids: list[str]


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
            st = states[key] = Hits(p.new_token(), [], [])
            # One timer per key: when it fires it frees the key or moves on (on_timer).
            p.schedule(ts + self.window_s, self.id, key, st.token)
        horizon = ts - self.window_s
        while st.times and st.times[0] < horizon:
            del st.times[0], st.ids[0]
        st.times.append(ts)
        st.ids.append(e.id)
        if len(st.ids) >= self.threshold:
            causes = tuple(st.ids)
            extra = {"count": len(causes), "key": key_text(key), "window_s": self.window_s}
            st.times.clear()
            st.ids.clear()
            self.fire(p, Scope(e, extra), key, ts, causes, out)

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:
        states = p.rule_state(self.id)
        st = states.get(key)
        if st is None or st.token != token:
            return
        if not st.times or st.times[-1] + self.window_s < ts:
            p.forget(self.id, key)  # the newest hit is more than a window old: nothing to count
        else:
            # The window is inclusive: at exactly a window later the hit still counts, so
            # the key is freed just after that instant, not at it.
            p.schedule(math.nextafter(st.times[-1] + self.window_s, math.inf), self.id, key, token)
