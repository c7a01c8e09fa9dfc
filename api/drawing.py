"""The floor plan as SVG, and the heatmap as a PNG over it (OpenCV)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

import cv2
import numpy as np

from core.layout import Layout

ZONE_COLOURS = {
    "aisle": "#eef2f7",
    "shelf_front": "#dbeafe",
    "checkout_queue": "#fde68a",
    "exit_gate": "#fecaca",
    "staff_only": "#e5e7eb",
    "entrance": "#bbf7d0",
}


def _bounds(layout: Layout) -> tuple[float, float, float, float]:
    xs = [p[0] for p in layout.floor]
    ys = [p[1] for p in layout.floor]
    for line in layout.lines:
        xs += [p[0] for p in line.points]
        ys += [p[1] for p in line.points]
    return min(xs), min(ys), max(xs), max(ys)


def layout_svg(layout: Layout, scale: float = 60.0) -> str:
    """The floor, zones, shelves and counting lines, north up; one unit a centimetre."""
    x0, y0, x1, y1 = _bounds(layout)
    pad = 0.5
    w, h = (x1 - x0 + 2 * pad) * scale, (y1 - y0 + 2 * pad) * scale

    def pt(p: Sequence[float]) -> str:
        return f"{(p[0] - x0 + pad) * scale:.1f},{(y1 - p[1] + pad) * scale:.1f}"

    def poly(points: Iterable[Sequence[float]]) -> str:
        return " ".join(pt(p) for p in points)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0f} {h:.0f}" '
        f'width="{w:.0f}" height="{h:.0f}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(layout.store.name)} ({escape(layout.store.id)})</title>",
        f'<polygon class="floor" points="{poly(layout.floor)}" fill="#ffffff" '
        'stroke="#111827" stroke-width="3"/>',
    ]
    for z in sorted(layout.zones, key=lambda z: -z.area):
        colour = ZONE_COLOURS.get(z.kind, "#f3f4f6")
        cx = sum(p[0] for p in z.polygon) / len(z.polygon)
        cy = sum(p[1] for p in z.polygon) / len(z.polygon)
        parts.append(
            f'<g class="zone" data-zone="{escape(z.id)}" data-kind="{z.kind}">'
            f'<polygon points="{poly(z.polygon)}" fill="{colour}" fill-opacity="0.7" '
            'stroke="#6b7280" stroke-width="1"/>'
            f'<text x="{pt((cx, cy)).split(",")[0]}" y="{pt((cx, cy)).split(",")[1]}" '
            f'text-anchor="middle" fill="#374151">{escape(z.name or z.id)}</text></g>'
        )
    for s in layout.shelves:
        if len(s.footprint) == 2:
            a, b = pt(s.footprint[0]).split(","), pt(s.footprint[1]).split(",")
            parts.append(
                f'<line class="shelf" data-shelf="{escape(s.id)}" x1="{a[0]}" y1="{a[1]}" '
                f'x2="{b[0]}" y2="{b[1]}" stroke="#92400e" stroke-width="6"/>'
            )
        else:
            parts.append(
                f'<polygon class="shelf" data-shelf="{escape(s.id)}" '
                f'points="{poly(s.footprint)}" fill="#d6a76c" stroke="#92400e"/>'
            )
    for line in layout.lines:
        a, b = pt(line.points[0]).split(","), pt(line.points[1]).split(",")
        parts.append(
            f'<line class="line" data-line="{escape(line.id)}" data-kind="{line.kind}" '
            f'x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" stroke="#059669" '
            'stroke-width="4" stroke-dasharray="8 4"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def heatmap_png(
    layout: Layout | None,
    cells: Sequence[tuple[int, int, float]],
    size: float,
    scale: float = 60.0,
    unit: str = "s",
) -> bytes:
    """``cells`` (x, y, value) coloured by value over the floor plan, clipped to the floor
    polygon (or over the cells' extent where the store has no layout), as a PNG, with a
    legend under it: the colour scale from 0 to the top value, in ``unit``. Light yellow
    to dark red (ColorBrewer's YlOrRd): more is darker, in colour or in grey, where a
    rainbow's blue read as cold to some and as much to others."""
    if layout is not None:
        x0, y0, x1, y1 = _bounds(layout)
    elif cells:
        x0 = min(c[0] for c in cells) * size
        y0 = min(c[1] for c in cells) * size
        x1 = (max(c[0] for c in cells) + 1) * size
        y1 = (max(c[1] for c in cells) + 1) * size
    else:
        x0, y0, x1, y1 = 0.0, 0.0, 1.0, 1.0
    pad = 0.5
    w = max(1, round((x1 - x0 + 2 * pad) * scale))
    h = max(1, round((y1 - y0 + 2 * pad) * scale))
    w, h = min(w, 4000), min(h, 4000)  # a layout is metres; bound the picture anyway

    def px(x: float, y: float) -> tuple[int, int]:
        return round((x - x0 + pad) * scale), round((y1 - y + pad) * scale)

    img = np.full((h, w, 3), 255, np.uint8)
    if layout is not None:
        for z in layout.zones:
            pts = np.array([px(*p) for p in z.polygon], np.int32)
            cv2.fillPoly(img, [pts], (240, 240, 240))
            cv2.polylines(img, [pts], True, (170, 170, 170), 1, cv2.LINE_AA)
    top = max((c[2] for c in cells), default=0.0)
    if cells and top > 0:
        heat = np.zeros((h, w), np.float32)
        mask = np.zeros((h, w), np.uint8)
        for cx, cy, value in cells:
            a = px(cx * size, (cy + 1) * size)
            b = px((cx + 1) * size, cy * size)
            share = math.sqrt(max(value, 0.0) / top)  # as the dashboard: a busy cell
            heat[max(a[1], 0) : max(b[1], 0), max(a[0], 0) : max(b[0], 0)] = share
            mask[max(a[1], 0) : max(b[1], 0), max(a[0], 0) : max(b[0], 0)] = 1
        if layout is not None:  # people seen outside (the pavement) are no floor's heat
            floor = np.zeros((h, w), np.uint8)
            cv2.fillPoly(floor, [np.array([px(*p) for p in layout.floor], np.int32)], 1)
            mask &= floor
        colours = cv2.applyColorMap((heat * 255).astype(np.uint8), _PALETTE)
        blend = cv2.addWeighted(img, 0.25, colours, 0.75, 0)
        img = np.where(mask[..., None] == 1, blend, img)
    if layout is not None:
        floor = np.array([px(*p) for p in layout.floor], np.int32)
        cv2.polylines(img, [floor], True, (40, 40, 40), 3, cv2.LINE_AA)
        for s in layout.shelves:
            pts = np.array([px(*p) for p in s.footprint], np.int32)
            cv2.polylines(img, [pts], len(s.footprint) > 2, (110, 70, 30), 3, cv2.LINE_AA)
    if w < LEGEND_W:  # a narrow plan: the legend's numbers need the room
        img = np.hstack([img, np.full((h, LEGEND_W - w, 3), 255, np.uint8)])
    ok, png = cv2.imencode(".png", np.vstack([img, _legend(max(w, LEGEND_W), top, unit)]))
    assert ok
    return png.tobytes()


# YlOrRd's ends and middle (RGB), a 256-entry lookup table in OpenCV's BGR.
_STOPS = np.array([(255, 255, 204), (253, 141, 60), (128, 0, 38)], np.float32)
_PALETTE = np.stack(
    [np.interp(np.linspace(0, 2, 256), [0, 1, 2], _STOPS[:, c]) for c in (2, 1, 0)], axis=-1
).astype(np.uint8)[:, None, :]
LEGEND_PX = 44
LEGEND_W = 280  # pixels: the bar and its three numbers side by side


def _legend(width: int, top: float, unit: str) -> np.ndarray:
    """A strip ``width`` wide: the colour bar, 0 at its left, ``top`` at its right, and a
    quarter of it in the middle (the colours follow the square root of the value, so
    that one busy cell does not wash out the rest of the floor)."""
    strip = np.full((LEGEND_PX, width, 3), 255, np.uint8)
    bar = min(240, width - 20)
    ramp = cv2.applyColorMap(np.linspace(0, 255, bar).astype(np.uint8)[None, :], _PALETTE)
    strip[6:20, 10 : 10 + bar] = ramp.repeat(14, axis=0)
    cv2.rectangle(strip, (10, 6), (9 + bar, 19), (120, 120, 120), 1)
    font, ink = cv2.FONT_HERSHEY_SIMPLEX, (40, 40, 40)
    cv2.putText(strip, "0", (10, 36), font, 0.4, ink, 1, cv2.LINE_AA)
    if top > 0:
        quarter = f"{top / 4:,.0f}"
        (qw, _), _ = cv2.getTextSize(quarter, font, 0.4, 1)
        cv2.putText(strip, quarter, (10 + bar // 2 - qw // 2, 36), font, 0.4, ink, 1, cv2.LINE_AA)
    label = f"{top:,.0f} {unit}" if top > 0 else "nothing seen"
    (tw, _), _ = cv2.getTextSize(label, font, 0.4, 1)
    cv2.putText(strip, label, (max(10, 10 + bar - tw), 36), font, 0.4, ink, 1, cv2.LINE_AA)
    return strip
