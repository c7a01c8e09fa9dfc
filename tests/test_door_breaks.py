"""Tracks that break at the doors, on the renderer's frames and boxes of the example
convenience store: each case is one found in the busy hour on rendered video
(``bench/video_accuracy.py``), reduced to the shoppers and frames that make it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from adapters.cli import TRACKING, DetectorKind
from adapters.store_floor import FloorSettings, StoreFloor
from core import events as ev
from core.layout import Layout, load_layout
from simulator.render import Person, RenderOptions, truth_boxes

STORES = Path(__file__).resolve().parent.parent / "examples" / "stores"
ORIGIN = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
FRONT = "cam-front-west"
FPS = 5.0


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(STORES / "convenience.yaml")


def floor_events(
    layout: Layout, camera: str, frames: list[tuple[float, list[Person]]]
) -> list[ev.Event]:
    """What the store's floor makes of one camera's ground-truth boxes (the MOG2 tracker
    settings, as ``aisle adapt`` runs them)."""
    floor = StoreFloor(
        layout,
        ORIGIN,
        FloorSettings(tracker=TRACKING[DetectorKind.mog2]),
        cameras=[camera],
    )
    out: list[ev.Event] = []
    boxes = truth_boxes(layout, camera, frames, RenderOptions(min_visibility=0.3))
    for number, ((t, _), seen) in enumerate(zip(frames, boxes, strict=True), start=1):
        xyxy = np.array([(x, y, x + w, y + h) for _, (x, y, w, h), _ in seen], dtype=float)
        out += floor.frame(camera, number, t, xyxy.reshape(-1, 4), np.full(len(seen), 0.9))
    return out + floor.close()


def test_a_shopper_lost_on_the_way_out_and_found_at_the_exit_gate_leaves_once(
    corner: Layout,
) -> None:
    """Walking out at 1 m/s, the shopper is not detected for 1.2 s and found again 0.4 m
    from the exit-only door, 1.2 m from where they were lost: further than ``birth_m``,
    which near an entrance makes a new shopper coming in. By an exit nobody comes in: one
    exit, no entry (before: an entry through the exit, and a visit left open)."""
    frames: list[tuple[float, list[Person]]] = []
    for k in range(int(3.6 * FPS)):
        t = k / FPS
        y = 2.5 - t  # from the front aisle straight out through the exit leaf
        hidden = 0.4 < y < 1.6
        frames.append((t, [] if hidden else [Person("leaving", 2.4, y)]))
    frames += [(3.6 + k / FPS, []) for k in range(int(10 * FPS))]
    events = floor_events(corner, FRONT, frames)
    assert [e.data.line for e in events if isinstance(e, ev.ShopperExited)] == ["exit"]
    assert [e for e in events if isinstance(e, ev.ShopperEntered)] == []
