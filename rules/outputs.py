"""A rule's outputs, compiled: the alert it raises, the metrics it reports, the event it emits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from core import events as ev
from rules.operators.base import Scope, key_text
from rules.operators.sequence import StepsScope

# Scopes whose attributes are their extras, then their event's fields.
_SCOPES = (Scope, StepsScope)

Fn = Callable[[Any], Any]


def subject_of(scope: Any, key: Any) -> str:
    """The shopper (or track) the output is about: the scope's subject, else the key."""
    try:
        return str(scope.subject)
    except AttributeError:
        return key_text(key)


def _window(scope: Any, name: str) -> Any:
    """``getattr(scope, name, None)``: a window's bound, or None outside aggregates. A
    scope's extras are read from its ``__dict__`` and the rest from its event, without
    raising and catching an AttributeError in ``Scope.__getattr__`` (a sequence's metric,
    such as a zone visit, has no window)."""
    if type(scope) in _SCOPES:
        found = scope.__dict__
        if name in found:
            return found[name]
        return getattr(found["_event"], name, None)
    return getattr(scope, name, None)


def _labels(labels: Mapping[str, Fn], scope: Any) -> dict[str, str]:
    return {k: str(fn(scope)) for k, fn in labels.items()}


@dataclass(frozen=True, slots=True)
class AlertOut:
    name: str
    severity: str
    summary: Fn | None
    labels: Mapping[str, Fn]
    key: Fn | None

    def data(self, scope: Any, key: Any) -> ev.AlertData:
        return ev.AlertData(
            alert=self.name,
            key=str(self.key(scope)) if self.key else key_text(key),
            severity=self.severity,  # type: ignore[arg-type]
            summary=self.summary(scope) if self.summary else "",
            labels=_labels(self.labels, scope),
        )

    def subject(self, scope: Any, key: Any) -> str:
        return subject_of(scope, key)


@dataclass(frozen=True, slots=True)
class MetricOut:
    name: str
    value: Fn
    labels: Mapping[str, Fn]
    # Its index among the rule's metrics if another of them has its name: the two get ids
    # of their own. None (most rules): the id hashes the name alone, as it always has.
    place: int | None = None

    def data(self, scope: Any) -> ev.MetricData:
        return ev.MetricData(
            name=self.name,
            value=float(self.value(scope)),
            labels=_labels(self.labels, scope),
            window_start=_window(scope, "window_start"),
            window_end=_window(scope, "window_end"),
        )


@dataclass(frozen=True, slots=True)
class GroupsOut:
    """An aggregate's groups as one list in one event: ``into`` the field, each item from
    ``fields`` evaluated on a group's scope."""

    into: str
    fields: Mapping[str, Fn]

    def item(self, scope: Any) -> dict[str, Any]:
        return {k: fn(scope) for k, fn in self.fields.items()}


@dataclass(frozen=True, slots=True)
class EmitOut:
    cls: type[ev.Event]
    data_cls: type[msgspec.Struct]
    subject: Fn | None
    fields: Mapping[str, Fn]
    groups: GroupsOut | None = None

    def build(
        self, scope: Any, key: Any, items: list[dict[str, Any]] | None = None
    ) -> tuple[type[ev.Event], str, msgspec.Struct]:
        fields = {k: fn(scope) for k, fn in self.fields.items()}
        if self.groups is not None:
            fields[self.groups.into] = items or []
        data = msgspec.convert(fields, self.data_cls)
        subject = str(self.subject(scope)) if self.subject else subject_of(scope, key)
        return self.cls, subject, data


def data_class(cls: type[ev.Event]) -> type[msgspec.Struct]:
    return next(f.type for f in msgspec.structs.fields(cls) if f.name == "data")
