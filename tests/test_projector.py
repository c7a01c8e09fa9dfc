"""Foot points: a person's box through the calibration to where they stand, checked against
the renderer, whose boxes are the drawn pixels of people at known floor points.

The overhead camera is the convenience store's cam-front-west (3.2 m up over (2, 1.5));
the angled one is the test shop of ``test_render`` (3 m up, tipped 30° down).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from adapters.projector import Projector
from adapters.tracking import bottom_centre
from core.layout import Layout, load_layout, load_layout_text
from simulator.render import Person, RenderOptions, truth_boxes
from tests.test_render import angled_layout

STORES = Path(__file__).resolve().parent.parent / "examples" / "stores"


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(STORES / "convenience.yaml")


def boxes_of(
    layout: Layout, camera: str, people: list[Person], min_visibility: float = 0.0
) -> dict[str, tuple[float, ...]]:
    """Each person's ground-truth box (x1, y1, x2, y2), alone in the frame (no occlusion)."""
    options = RenderOptions(min_visibility=min_visibility)
    out = {}
    for person in people:
        (frame,) = truth_boxes(layout, camera, [(0.0, [person])], options)
        for track, (x, y, w, h), _ in frame:
            out[track] = (float(x), float(y), float(x + w), float(y + h))
    return out


def grid(xs: np.ndarray, ys: np.ndarray) -> list[Person]:
    return [
        Person(f"p{i}", float(x), float(y))
        for i, (x, y) in enumerate((x, y) for x in xs for y in ys)
    ]


def errors(layout: Layout, camera: str, people: list[Person], clipped: bool | None) -> list[float]:
    """How far from each person the projector puts them, of those shown a quarter or more
    (the ground truth's threshold) and, unless None, cut or not by the border."""
    projector = Projector(layout.camera(camera))
    out = []
    for person in people:
        box = boxes_of(layout, camera, [person], min_visibility=0.25).get(person.track)
        if box is None or (clipped is not None and projector.clipped(box) != clipped):
            continue
        x, y = projector.foot(box)
        out.append(math.hypot(x - person.x, y - person.y))
    return out


def test_overhead_a_person_seen_whole_is_placed_within_6_cm_where_the_box_bottom_is_far_off(
    corner: Layout,
) -> None:
    people = grid(np.linspace(1.2, 2.8, 5), np.linspace(1.0, 2.3, 4))
    found = errors(corner, "cam-front-west", people, clipped=False)
    assert len(found) >= 15
    assert max(found) < 0.06  # a wide lens: a pixel is a centimetre on the floor
    camera = corner.camera("cam-front-west")
    naive = [
        math.dist(camera.to_floor(*bottom_centre(box)), (p.x, p.y))
        for p in people
        if (box := boxes_of(corner, "cam-front-west", [p]).get(p.track)) is not None
    ]
    assert np.median(naive) > 0.3  # the box's bottom middle is not the feet from above


def test_overhead_a_person_cut_by_the_image_border_is_placed_within_40_cm(corner: Layout) -> None:
    people = grid(np.linspace(0.2, 4.2, 9), np.array([3.5, 3.8, 4.1]))  # beyond its view
    found = errors(corner, "cam-front-west", people, clipped=True)
    assert len(found) >= 15
    assert max(found) < 0.4
    assert float(np.median(found)) < 0.12


def test_angled_a_persons_feet_are_found_whole_or_cut() -> None:
    layout = angled_layout()
    people = grid(np.linspace(2.0, 8.0, 5), np.linspace(1.5, 6.5, 4))
    found = errors(layout, "cam-angled", people, clipped=None)
    assert len(found) >= 15
    assert max(found) < 0.15


def test_the_model_persons_box_is_where_the_renderer_draws_one(corner: Layout) -> None:
    projector = Projector(corner.camera("cam-front-west"))
    for x, y in ((1.5, 1.2), (2.5, 2.0), (2.0, 1.6)):
        drawn = boxes_of(corner, "cam-front-west", [Person("p", x, y)])["p"]
        model = projector.box_of(x, y)
        size = max(drawn[2] - drawn[0], drawn[3] - drawn[1])
        # discs for a body whose width depends on where it faces: a fifth of its size
        assert max(abs(a - b) for a, b in zip(drawn, model, strict=True)) < 0.2 * size


def test_the_same_box_gives_the_same_point_and_a_box_on_the_border_is_flagged(
    corner: Layout,
) -> None:
    projector = Projector(corner.camera("cam-front-west"))
    box = (276.0, 577.0, 497.0, 720.0)
    assert projector.foot(box) == projector.foot(box)
    assert projector.clipped(box) and not projector.clipped((400.0, 300.0, 600.0, 500.0))
    assert projector.feet(np.array([box, box])).shape == (2, 2)


def test_a_camera_below_the_heads_it_should_see_is_refused() -> None:
    text = (STORES / "convenience.yaml").read_text().replace("[2, 1.5, 3.2]", "[2, 1.5, 1.7]")
    layout = load_layout_text(text, "low.yaml")
    with pytest.raises(ValueError, match=r"cam-front-west: mounted 1\.7 m up"):
        Projector(layout.camera("cam-front-west"))
    with pytest.raises(ValueError, match=r"height of 3\.0 m"):
        Projector(layout.camera("cam-back-west"), height_m=3.0)
