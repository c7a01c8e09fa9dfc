"""The heatmap PNG: heat on the floor only, never outside the floor polygon; a legend."""

from __future__ import annotations

import cv2
import numpy as np

from api.drawing import LEGEND_PX, _bounds, heatmap_png
from core.layout import load_layout
from tests.enginekit import LAYOUT_FILE

SCALE = 60.0
PAD = 0.5


def _pixel(img: np.ndarray, x: float, y: float, top: float) -> tuple[int, ...]:
    """The colour at floor point (x, y) metres, as ``heatmap_png`` places it."""
    x0 = _bounds(load_layout(LAYOUT_FILE))[0]
    col, row = round((x - x0 + PAD) * SCALE), round((top - y + PAD) * SCALE)
    return tuple(int(v) for v in img[row, col])


def test_the_heatmap_png_draws_no_cell_outside_the_floor() -> None:
    layout = load_layout(LAYOUT_FILE)
    _, y0, _, y1 = _bounds(layout)
    assert y0 < 0  # the pavement's counting line lies outside the floor: inside the picture
    size = 0.5
    # One cell on the pavement (x 5-5.5 m, y -2 to -1.5 m), one inside the store.
    cells = [(10, -4, 100.0), (4, 4, 100.0)]
    img = cv2.imdecode(
        np.frombuffer(heatmap_png(layout, cells, size, scale=SCALE), np.uint8), cv2.IMREAD_COLOR
    )
    assert _pixel(img, 5.25, -1.75, y1) == (255, 255, 255)  # outside the floor: untouched
    assert _pixel(img, 2.25, 2.25, y1) != (255, 255, 255)  # inside: heat
    # Without a layout (nothing to clip to) every cell is drawn.
    bare = cv2.imdecode(np.frombuffer(heatmap_png(None, cells, size), np.uint8), cv2.IMREAD_COLOR)
    assert (bare != 255).any(axis=2).sum() > 2 * (size * SCALE) ** 2 * 0.9


def test_the_heatmap_png_has_a_legend_from_nothing_to_the_top_value() -> None:
    """The colours had no scale: a reader could not tell a busy cell from a quiet one in
    seconds or visits, nor which end of the palette meant more."""
    layout = load_layout(LAYOUT_FILE)
    plain = heatmap_png(layout, [], 0.5, scale=SCALE)
    png = heatmap_png(layout, [(4, 4, 10.0), (6, 4, 250.0)], 0.5, scale=SCALE, unit="visits")
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] == cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR).shape[0]
    strip = img[-LEGEND_PX:]
    low, high = strip[12, 11].astype(int), strip[12, 10 + 238].astype(int)
    assert low.sum() > 600 and high.sum() < 250, (low, high)  # light for little, dark for much
    y1 = _bounds(layout)[3]
    quiet, busy = _pixel(img, 2.25, 2.25, y1), _pixel(img, 3.25, 2.25, y1)
    assert sum(busy) < sum(quiet), "the busier cell is the darker"
    assert (strip[24:40] < 128).any(), "the scale's numbers are written under it"


def test_a_narrow_plans_legend_keeps_its_numbers_apart() -> None:
    """At 10 pixels a metre the numbers ran into each other ("0404 visits")."""
    png = heatmap_png(None, [(0, 0, 4.0), (1, 0, 404.0)], 0.5, scale=10, unit="visits")
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[1] >= 280
    ink = (img[-LEGEND_PX + 24 : -4] < 128).any(axis=(0, 2))  # columns with text in them
    runs = np.flatnonzero(np.diff(ink.astype(int)) == 1)  # where each word starts
    assert len(runs) >= 3, "0, a quarter and the top, apart"
