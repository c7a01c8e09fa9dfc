"""Durations as rule authors write them: ``90s``, ``2m``, ``1h30m``, ``500ms``, ``1d``."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(text: str | int | float) -> float:
    """Seconds; a bare number is seconds. Raises ``ValueError`` with what is accepted.

    A duration is finite: YAML's ``.inf`` and ``.nan``, or 400 digits, would make windows
    that never close or fail on every event."""
    if isinstance(text, bool):
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
