"""Smoothing tracks in floor coordinates: the One Euro filter, one per track.

Foot points jitter from frame to frame (a detector's box breathes, a camera hands over to
another whose estimate differs by centimetres). A fixed low-pass would either leave the
jitter of a person standing at a shelf or drag behind a person walking. The One Euro filter
(Casiez, Roussel and Vogel, CHI 2012) is a first-order low-pass whose cutoff rises with
speed: ``cutoff = min_cutoff_hz + beta * speed``. Standing still, the cutoff is low and the
jitter goes; walking, it is high and the lag small. At a steady speed v the filtered point
trails the true one by v / (2π (min_cutoff_hz + beta v)), which is less than 1 / (2π beta)
metres at any speed: the lag is bounded. It works on each point's own time, so dropped
frames and sampling rates that differ by camera need nothing special.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import msgspec

__all__ = ["OneEuro", "SmoothingSettings", "TrackSmoother"]

Point = tuple[float, float]


class SmoothingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The One Euro filter's three settings (frequencies in hertz, speeds in m/s)."""

    min_cutoff_hz: float = 0.5
    """Cutoff when standing still: lower removes more jitter, and reacts slower to a start."""
    beta: float = 2.0
    """How fast the cutoff rises with speed (per m/s); the lag stays below 1/(2π beta) m."""
    d_cutoff_hz: float = 1.0
    """Cutoff of the speed estimate the cutoff is computed from."""

    def __post_init__(self) -> None:
        for name in ("min_cutoff_hz", "beta", "d_cutoff_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 1000):
                raise ValueError(f"smoothing setting {name}: {value!r} is not in (0, 1000]")


def _alpha(cutoff_hz: float, dt: float) -> float:
    """The exponential smoothing factor of a first-order low-pass at ``cutoff_hz``."""
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """One track's filter: feed its points in time order, get the filtered points."""

    def __init__(self, settings: SmoothingSettings | None = None) -> None:
        self.settings = settings or SmoothingSettings()
        self._at: float | None = None
        self._point: Point = (0.0, 0.0)
        self._velocity: Point = (0.0, 0.0)

    def __call__(self, at: float, point: Point) -> Point:
        x, y = float(point[0]), float(point[1])
        if not (math.isfinite(at) and math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"smoothing: the point {point} at {at} s is not finite")
        if self._at is None:
            self._at, self._point = at, (x, y)
            return self._point
        dt = at - self._at
        if dt <= 0:
            raise ValueError(f"smoothing: a point at {at} s comes after one at {self._at} s")
        s = self.settings
        px, py = self._point
        a_d = _alpha(s.d_cutoff_hz, dt)
        vx = a_d * (x - px) / dt + (1.0 - a_d) * self._velocity[0]
        vy = a_d * (y - py) / dt + (1.0 - a_d) * self._velocity[1]
        a = _alpha(s.min_cutoff_hz + s.beta * math.hypot(vx, vy), dt)
        self._at = at
        self._velocity = (vx, vy)
        self._point = (a * x + (1.0 - a) * px, a * y + (1.0 - a) * py)
        return self._point


class TrackSmoother:
    """A One Euro filter per track, each forgotten once its track has ended."""

    def __init__(self, settings: SmoothingSettings | None = None) -> None:
        self.settings = settings or SmoothingSettings()
        self._filters: dict[Hashable, OneEuro] = {}

    def __call__(self, track: Hashable, at: float, point: Point) -> Point:
        f = self._filters.get(track)
        if f is None:
            f = self._filters[track] = OneEuro(self.settings)
        return f(at, point)

    def end(self, track: Hashable) -> None:
        """Forget a track (a later point under the same id starts afresh)."""
        self._filters.pop(track, None)

    def __len__(self) -> int:
        return len(self._filters)
