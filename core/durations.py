"""Durations as rule authors and command lines write them: ``90s``, ``2m``, ``1h30m``,
``500ms``, ``1d``."""

from __future__ import annotations

import math
import re

import typer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str | int | float) -> float:
    """Seconds; a bare number is seconds. Raises ``ValueError`` with what is accepted.

    A duration is finite: YAML's ``.inf`` and ``.nan``, or 400 digits, would make windows
    that never close or fail on every event."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration {text} is negative")
        seconds = float(text)
    else:
        s = text.strip().replace(" ", "")
        if not _WHOLE.fullmatch(s):
            raise ValueError(
                f"{text!r} is not a duration: write a number and a unit (ms, s, m, h, d), "
                "e.g. 90s, 2m, 1h30m"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(s))
    if not math.isfinite(seconds):
        raise ValueError(f"duration {text!r} is not finite")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def duration_option(text: str | float) -> float:
    """A command-line duration: ``2s``, ``500ms``, ``1m``, or a bare number of seconds, the
    same form for every option (``--lateness`` was seconds in one command and a duration
    in another)."""
    try:
        if isinstance(text, str) and _NUMBER.fullmatch(text.strip()):
            return float(text)
        return parse_duration(text)  # a text, or an option's default (a number)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def duration_flag(help: str, default: float | None = None) -> typer.models.OptionInfo:
    """A typer option that takes a duration (``duration_option``), shown as one."""
    shown = format_duration(default) if default is not None else False
    return typer.Option(parser=duration_option, metavar="DURATION", show_default=shown, help=help)
