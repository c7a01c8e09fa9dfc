// The store's floor plan from its layout (metres, y from the front wall towards the
// back, drawn with the front at the bottom), and the heatmap's cells over it.

import { svg } from "./charts.js";

const MARGIN = 0.4; // metres around the floor

function bounds(points) {
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  return { x0: Math.min(...xs), x1: Math.max(...xs), y0: Math.min(...ys), y1: Math.max(...ys) };
}

const path = (points) => `M${points.map((p) => `${p[0]},${p[1]}`).join("L")}Z`;

// A colour for a share of the busiest cell: pale yellow to deep red, more opaque as it heats.
export function heat(share) {
  const stops = [
    [0, [255, 237, 160]],
    [0.35, [254, 178, 76]],
    [0.7, [240, 59, 32]],
    [1, [128, 0, 38]],
  ];
  const s = Math.max(0, Math.min(1, share));
  let i = 1;
  while (i < stops.length - 1 && stops[i][0] < s) i++;
  const [a, ca] = stops[i - 1];
  const [b, cb] = stops[i];
  const t = (s - a) / (b - a || 1);
  const rgb = ca.map((c, k) => Math.round(c + (cb[k] - c) * t));
  return `rgba(${rgb.join(",")},${(0.35 + 0.6 * s).toFixed(2)})`;
}

export class FloorPlan {
  constructor(container, layout, { describe } = {}) {
    this.container = container;
    this.layout = layout;
    this.describe = describe;
    const b = bounds(layout.floor);
    this.b = b;
    const w = b.x1 - b.x0 + 2 * MARGIN;
    const h = b.y1 - b.y0 + 2 * MARGIN;
    this.root = svg("svg", {
      viewBox: `${b.x0 - MARGIN} ${b.y0 - MARGIN} ${w} ${h}`,
      role: "img",
      "aria-label": `Floor plan of ${layout.store.name}, ${(b.x1 - b.x0).toFixed(1)} by ${(b.y1 - b.y0).toFixed(1)} m`,
      "data-store": layout.store.id,
    });
    // Flip y: the front wall (y = 0, the doors) at the bottom of the drawing.
    this.plan = svg("g", { transform: `translate(0 ${b.y0 + b.y1}) scale(1 -1)` });
    const clip = svg("clipPath", { id: `floor-clip-${layout.store.id}` });
    clip.append(svg("path", { d: path(layout.floor) }));
    const defs = svg("defs");
    defs.append(clip);
    this.root.append(defs, this.plan);
    this.plan.append(svg("path", { d: path(layout.floor), class: "outline" }));
    this.cells = svg("g", { class: "cells", "clip-path": `url(#floor-clip-${layout.store.id})` });
    this.plan.append(this.cells);
    for (const shelf of layout.shelves || []) {
      const fp = shelf.footprint;
      const el = fp.length > 2 ? svg("path", { d: path(fp), class: "shelf" }) : svg("polyline", {
        points: fp.map((p) => p.join(",")).join(" "), class: "shelf", "stroke-width": 0.12,
      });
      el.append(svg("title", {}, `shelf ${shelf.name || shelf.id}`));
      this.plan.append(el);
    }
    for (const zone of layout.zones || []) {
      if (zone.kind === "shelf_front") continue; // drawn by their shelves
      const el = svg("path", { d: path(zone.polygon), class: `zone ${zone.kind}` });
      el.append(svg("title", {}, zone.name || zone.id));
      this.plan.append(el);
    }
    for (const line of layout.lines || []) {
      if (line.kind === "passby") continue;
      const [p, q] = line.points;
      const el = svg("line", { x1: p[0], y1: p[1], x2: q[0], y2: q[1], class: `door ${line.kind}` });
      el.append(svg("title", {}, `${line.kind} line ${line.id}`));
      this.plan.append(el);
    }
    // Labels upright, outside the flipped group.
    for (const zone of layout.zones || []) {
      if (!["aisle", "checkout_queue", "exit_gate"].includes(zone.kind)) continue;
      const zb = bounds(zone.polygon);
      const x = (zb.x0 + zb.x1) / 2;
      const y = b.y0 + b.y1 - (zb.y0 + zb.y1) / 2;
      this.root.append(svg("text", { x, y, "text-anchor": "middle" }, zone.id));
    }
    container.replaceChildren(this.root);
  }

  // cells: [{x, y, dwell_s, visits}] in cells of `size` metres.
  setCells(cells, size, what = "dwell_s") {
    this.cells.replaceChildren();
    const top = Math.max(0, ...cells.map((c) => c[what]));
    this.root.setAttribute("data-cells", String(cells.length));
    if (!top || !size) return { cells: 0, top: 0 };
    for (const c of cells) {
      if (!c[what]) continue;
      const share = Math.sqrt(c[what] / top); // a square root: quiet cells stay visible
      const rect = svg("rect", {
        x: c.x * size, y: c.y * size, width: size, height: size, class: "cell", fill: heat(share),
      });
      rect.append(svg("title", {}, `${(c.x * size).toFixed(1)}, ${(c.y * size).toFixed(1)} m: ${Math.round(c.dwell_s)} s dwell, ${c.visits} visits`));
      this.cells.append(rect);
    }
    return { cells: cells.length, top };
  }
}
