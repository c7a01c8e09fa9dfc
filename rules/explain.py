"""Why is this item on my receipt? Walk ``caused_by`` back to the raw events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from core import events as ev


@dataclass
class Link:
    """One event of the chain; ``missing`` when the log no longer holds it."""

    id: str
    event: ev.Event | None
    causes: list[Link] = field(default_factory=list)

    @property
    def missing(self) -> bool:
        return self.event is None


def explain_chain(event_id: str, index: Mapping[str, ev.Event], _depth: int = 0) -> Link | None:
    event = index.get(event_id)
    if event is None:
        return None if _depth == 0 else Link(event_id, None)
    link = Link(event_id, event)
    if isinstance(event, ev.DerivedEvent) and _depth < 32:
        for cause in event.caused_by:
            link.causes.append(explain_chain(cause, index, _depth + 1) or Link(cause, None))
    return link


def _line(link: Link) -> str:
    e = link.event
    if e is None:
        return f"{link.id}  (not in the log: past retention, or another stream)"
    data = msgspec.json.encode(e.data).decode()
    if len(data) > 140:
        data = data[:137] + "..."
    made = (
        f"  [rule {e.rule.id} version {e.rule.version}]"
        if isinstance(e, ev.DerivedEvent)
        else "  [raw]"
    )
    return f"{e.at:%H:%M:%S.%f}"[:-3] + f" {e.type} {e.subject} {data}{made}  id={e.id}"


def render_chain(link: Link, indent: str = "") -> str:
    lines = [indent + _line(link)]
    for i, cause in enumerate(link.causes):
        last = i == len(link.causes) - 1
        branch = indent + ("└─ " if last else "├─ ")
        sub = render_chain(cause, indent + ("   " if last else "│  "))
        lines.append(branch + sub[len(indent + ("   " if last else "│  ")) :])
    return "\n".join(lines)
