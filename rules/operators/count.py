"""``count``: at least ``threshold`` matching events per key within a sliding window.

When the count reaches the threshold the rule fires (caused by the events in the window)
and the key's window starts afresh, so the next alert needs ``threshold`` new events.
A sweep once a window frees the keys whose newest event is more than a window old (old
hits are dropped as new ones come, so the sweep only frees memory).
"""

from __future__ import annotations

from typing import Any

import msgspec

from core import events as ev
from rules.operators.base import SWEEP, Emitter, KeyFn, Partition, Rule, Scope, key_text


class Hits(msgspec.Struct, gc=False):
    """One key's matching events inside the window, oldest first: (time, id) pairs.

    A tuple, rebuilt on each hit: hits are rare (put-backs, entries) and a tuple is the
    smallest container there is (state is per shopper).
    """

    hits: tuple[tuple[float, str], ...] = ()


class HitKeys(msgspec.Struct, kw_only=True):
    """A ``count`` rule's state in a store, as a snapshot holds it: each key's ``Hits``."""

    keys: list[tuple[Any, Hits]] = []


class Count(Rule):
    kind = "count"
    state_type = HitKeys

    def __init__(self, *args: Any, by: KeyFn, window_s: float, threshold: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.by, self.window_s, self.threshold = by, window_s, threshold
        self.sweep_every_s = window_s

    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        states = p.rule_state(self.id)
        key = self.by(e)
        st = states.get(key)
        if st is None:
            st = states[key] = Hits()
            self.ensure_sweep(p, ts)
        horizon = ts - self.window_s  # inclusive: a hit exactly a window old still counts
        st.hits = (*(h for h in st.hits if h[0] >= horizon), (ts, e.id))
        if len(st.hits) >= self.threshold:
            causes = tuple(i for _, i in st.hits)
            extra = {"count": len(causes), "key": key_text(key), "window_s": self.window_s}
            st.hits = ()
            self.fire(p, Scope(e, extra), key, ts, causes, out)

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:
        if key is SWEEP:
            self.swept(p, token, ts)

    def sweep(self, p: Partition, ts: float) -> None:
        for key, st in list(p.rule_state(self.id).items()):
            if not st.hits or st.hits[-1][0] + self.window_s < ts:
                p.forget(self.id, key)  # the newest hit is more than a window old
