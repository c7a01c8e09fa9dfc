"""The One Euro filter on floor tracks: jitter goes when standing, the lag stays bounded when
walking, at any frame spacing."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from adapters.smoothing import OneEuro, SmoothingSettings, TrackSmoother


def test_standing_still_with_jitter_the_filtered_point_jitters_far_less() -> None:
    rng = random.Random(3)
    f = OneEuro()
    raw, out = [], []
    for k in range(300):  # 20 s at 15 frames/s, 5 cm of jitter
        p = (2.0 + rng.gauss(0, 0.05), 3.0 + rng.gauss(0, 0.05))
        raw.append(p)
        out.append(f(k / 15, p))
    spread_in = np.std(np.array(raw[30:]), axis=0).max()
    spread_out = np.std(np.array(out[30:]), axis=0).max()
    assert spread_out < spread_in / 2
    assert math.dist(np.mean(out[30:], axis=0), (2.0, 3.0)) < 0.02


@pytest.mark.parametrize("speed", [0.5, 1.2, 3.0])
@pytest.mark.parametrize("fps", [15.0, 2.0])
def test_walking_steadily_the_lag_stays_below_its_bound(speed: float, fps: float) -> None:
    settings = SmoothingSettings()
    f = OneEuro(settings)
    bound = 1 / (2 * math.pi * settings.beta)
    lag = 0.0
    for k in range(int(20 * fps)):
        t = k / fps
        x, _ = f(t, (speed * t, 1.0))
        lag = speed * t - x
    assert 0 < lag < bound
    assert lag > 0.5 * speed / (2 * math.pi * (settings.min_cutoff_hz + settings.beta * speed))


def test_dropped_frames_are_only_a_longer_step() -> None:
    f, g = OneEuro(), OneEuro()
    times = [k / 15 for k in range(150)]
    full = {t: f(t, (t, 0.0)) for t in times}
    kept = {t: g(t, (t, 0.0)) for i, t in enumerate(times) if i % 4 != 1}
    assert all(abs(full[t][0] - kept[t][0]) < 0.01 for t in times[30:] if t in kept)


def test_a_point_going_back_in_time_or_not_finite_is_refused() -> None:
    f = OneEuro()
    f(1.0, (0.0, 0.0))
    with pytest.raises(ValueError, match=r"comes after one at 1\.0 s"):
        f(1.0, (0.1, 0.0))
    with pytest.raises(ValueError, match="not finite"):
        f(2.0, (math.nan, 0.0))
    with pytest.raises(ValueError, match="beta"):
        SmoothingSettings(beta=0.0)


def test_each_track_has_its_own_filter_and_an_ended_one_starts_afresh() -> None:
    smooth = TrackSmoother()
    smooth("a", 0.0, (0.0, 0.0))
    smooth("b", 0.0, (5.0, 5.0))
    assert smooth("a", 0.1, (1.0, 0.0))[0] < 1.0
    assert smooth("b", 0.1, (5.0, 5.0)) == (5.0, 5.0)
    smooth.end("a")
    assert len(smooth) == 1
    assert smooth("a", 0.2, (9.0, 9.0)) == (9.0, 9.0)
