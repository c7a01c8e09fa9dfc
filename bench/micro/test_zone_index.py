"""Which zones hold a point: ``core/geometry.py``'s grid index against shapely's STRtree.

``ZoneIndex`` replaces a shapely ``STRtree`` query with a fresh ``Point`` for speed; this
is the measurement behind that. Each round looks up the same 1,000 random points on the
supermarket's floor (64 cameras, 2,000 m²); the times are per 1,000 lookups.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from shapely import STRtree
from shapely.geometry import Point

from bench.stamp import ROOT
from core.layout import load_layout

LAYOUT = load_layout(ROOT / "examples" / "stores" / "supermarket.yaml")
POINTS = [
    (float(x), float(y))
    for x, y in np.random.default_rng(0).uniform((0, 0), (50, 40), size=(1000, 2))
]


@pytest.mark.parametrize("how", ["aisle", "shapely"])
def test_zones_at(benchmark: Any, best: Any, how: str) -> None:
    benchmark.group = "zones at 1,000 points (supermarket)"
    if how == "aisle":
        zones_at = LAYOUT.zones_at

        def lookup() -> int:
            return sum(bool(zones_at(x, y)) for x, y in POINTS)
    else:
        tree = STRtree([z.shape for z in LAYOUT.zones])

        def lookup() -> int:
            return sum(len(tree.query(Point(x, y), predicate="within")) > 0 for x, y in POINTS)

    found = benchmark(lookup)
    assert 0 < found <= len(POINTS)
    best(how)


def test_zone_at(benchmark: Any) -> None:
    """The most specific zone only: what the simulator asks per sample."""
    benchmark.group = "zone at 1,000 points (supermarket)"
    zone_at = LAYOUT.zone_at
    assert benchmark(lambda: sum(zone_at(x, y) is not None for x, y in POINTS)) > 0
