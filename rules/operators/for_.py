"""``for``: a condition that has held for a duration (pending, firing, resolved).

Per key: ``start`` makes it pending and sets a timer at ``start + duration``; ``until``
before the timer cancels it silently; the timer raises the alert (firing). ``until`` while
firing resolves it, ``keep_firing_for`` later; a new ``start`` in that grace time keeps it
firing, so a condition that flickers does not flap (as Prometheus's ``keep_firing_for``).
Timers live in the partition's state, so they survive a snapshot and a restart.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core import events as ev
from rules.operators.base import Cond, Emitter, KeyFn, Partition, Rule, Scope, key_text

PENDING, FIRING, RESOLVING = "pending", "firing", "resolving"


class Held(msgspec.Struct, gc=False):
    """One key's state: a struct, much smaller than a dict (state is per shopper)."""

    phase: str
    event: ev.AnyEvent  # the start; its time is when the condition began to hold
    token: int
    until: str = ""  # the id of the event that ended it, while it resolves
    silenced: bool = False  # the throttle held its alert back: nothing to resolve


class HeldKeys(msgspec.Struct, kw_only=True):
    """A ``for`` rule's state in a store, as a snapshot holds it: each key's ``Held``."""

    keys: list[tuple[Any, Held]] = []


class For(Rule):
    kind = "for"
    state_type = HeldKeys

    def __init__(
        self,
        *args: Any,
        by: KeyFn,
        start: Cond,
        until: Cond,
        duration_s: float,
        keep_firing_s: float,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.by, self.start, self.until = by, start, until
        self.duration_s, self.keep_firing_s = duration_s, keep_firing_s

    def on_event(self, p: Partition, e: ev.Event, ts: float, out: Emitter) -> None:
        states = p.rule_state(self.id)
        key = self.by(e)
        st = states.get(key)
        if st is not None and self.until(e):
            if st.phase == PENDING:
                p.forget(self.id, key)
            elif st.phase == FIRING:
                if self.keep_firing_s:
                    st.phase, st.token, st.until = RESOLVING, p.new_token(), e.id
                    p.schedule(ts + self.keep_firing_s, self.id, key, st.token)
                else:
                    if not st.silenced:
                        scope = Scope(st.event, self._extra(st, key, ts))
                        self.resolve(p, scope, key, ts, (st.event.id, e.id), out)
                    p.forget(self.id, key)
            return
        if self.start(e):
            if st is None:
                token = p.new_token()  # unique: a timer of an earlier state never matches it
                states[key] = Held(PENDING, e, token)
                p.schedule(ts + self.duration_s, self.id, key, token)
            elif st.phase == RESOLVING:
                st.phase, st.token = FIRING, p.new_token()  # the grace timer is void

    def on_timer(self, p: Partition, key: Any, token: int, ts: float, out: Emitter) -> None:
        states = p.rule_state(self.id)
        st = states.get(key)
        if st is None or st.token != token:
            return
        scope = Scope(st.event, self._extra(st, key, ts))
        if st.phase == PENDING:
            st.phase = FIRING
            # A throttled alert was never raised, so it will not be resolved either.
            st.silenced = not self.fire(p, scope, key, ts, (st.event.id,), out)
        elif st.phase == RESOLVING:
            if not st.silenced:
                self.resolve(p, scope, key, ts, (st.event.id, st.until), out)
            p.forget(self.id, key)

    @staticmethod
    def _extra(st: Held, key: Any, ts: float) -> dict[str, Any]:
        return {"held_s": ts - st.event.at.timestamp(), "key": key_text(key)}
