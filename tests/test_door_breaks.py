"""Tracks that break at the doors, on the renderer's frames and boxes of the example
convenience store: each case is one found in the busy hour on rendered video
(``bench/video_accuracy.py``), reduced to the shoppers and frames that make it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from adapters.background import BackgroundSubtraction
from adapters.cli import TRACKING, DetectorKind
from adapters.detection import Frame
from adapters.projector import Projector
from adapters.sources import open_source
from adapters.store_floor import FloorSettings, StoreFloor
from core import events as ev
from core.layout import Layout, load_layout
from simulator.render import Person, RenderOptions, render_camera, truth_boxes
from tests.test_detectors import read_gt

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


@pytest.mark.parametrize(
    "where",
    [(1.2, 0.6), (2.0, -0.3)],
    ids=["inside the entrance", "outside, cut by the image border"],
)
def test_a_body_the_mask_cuts_in_two_is_one_person_by_its_calibrated_size(
    corner: Layout, tmp_path: Path, where: tuple[float, float]
) -> None:
    """In the busy hour, where part of a shopper matches what is behind them (dark legs on
    the dark pavement) the foreground mask parts the body, and the two blobs were two
    people: two tracks, two entries. Here a band of the empty floor is pasted across the
    rendered shopper; sized by the camera's calibration the two pieces are one person
    with the body's box, while by pixels alone they are two."""
    times = [k / FPS for k in range(40)]
    shopper = [Person("cut", *where)]
    stats = render_camera(
        corner,
        FRONT,
        ((t, [] if k < 35 else shopper) for k, t in enumerate(times)),
        tmp_path / "cut.mp4",
        tmp_path / "cut.gt.txt",
        RenderOptions(seed=3),
    )
    assert stats.video_path is not None
    x1, y1, x2, y2 = read_gt(tmp_path / "cut.gt.txt")[40][0][0]
    images = []
    with open_source(stats.video_path, start=ORIGIN) as source:
        images = [frame.image for frame in source]
    band = slice(int(y1 + 0.45 * (y2 - y1)), int(y1 + 0.6 * (y2 - y1)))
    across = slice(int(x1), int(x2))
    plain = BackgroundSubtraction()
    sized = BackgroundSubtraction(person=Projector(corner.camera(FRONT)))
    for k, image in enumerate(images):
        if k >= 35:
            image = image.copy()
            image[band, across] = images[0][band, across]
        frame = Frame(image=image, number=k + 1, offset_s=times[k], at=ORIGIN, source="cut")
        by_pixels, by_size = plain.detect(frame), sized.detect(frame)
    assert len(by_pixels) == 2
    (box,) = by_size.xyxy
    assert sv.box_iou_batch(np.array([box]), np.array([[x1, y1, x2, y2]]))[0, 0] >= 0.9


def test_two_shoppers_pressed_together_at_the_exit_gate_are_two_people(
    corner: Layout, tmp_path: Path
) -> None:
    """From the busy hour: one shopper waits at the exit gate while another walks out
    past them; their blobs touch along a thick middle, one core, one blob. Too large for
    one person standing there, it is split in two by its pixels' positions, and each
    part fits a person better than the whole."""
    times = [k / FPS for k in range(40)]
    pair = [Person("corner-01-1-5", 2.05, 0.6), Person("corner-01-1-9", 2.38, -0.12)]
    stats = render_camera(
        corner,
        FRONT,
        ((t, [] if k < 35 else pair) for k, t in enumerate(times)),
        tmp_path / "pair.mp4",
        tmp_path / "pair.gt.txt",
        RenderOptions(seed=1),
    )
    assert stats.video_path is not None
    truth = np.array([box for box, _ in read_gt(tmp_path / "pair.gt.txt")[40]])
    plain = BackgroundSubtraction()
    sized = BackgroundSubtraction(person=Projector(corner.camera(FRONT)))
    with open_source(stats.video_path, start=ORIGIN) as source:
        for frame in source:
            by_pixels, by_size = plain.detect(frame), sized.detect(frame)
    assert len(by_pixels) == 1
    assert len(by_size) == 2
    iou = sv.box_iou_batch(truth, by_size.xyxy)
    assert (iou.max(axis=1) >= 0.5).all(), iou
