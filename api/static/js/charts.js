// Small SVG charts, drawn by hand: a line over time and bars by label. Each chart says in
// its aria-label what it shows and how many points it has (data-points, for tests too).

const SVG = "http://www.w3.org/2000/svg";
const W = 360;
const H = 170;
const PAD = { left: 44, right: 10, top: 10, bottom: 28 };

export function svg(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  return el;
}

// Round steps for an axis from 0 (or the data's minimum, when below 0) to its maximum.
export function ticks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  if (out[out.length - 1] < max) out.push(Number((out[out.length - 1] + step).toPrecision(12)));
  return out;
}

function frame(container, label, n) {
  container.replaceChildren();
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": label,
    "data-points": n,
    class: "chart",
  });
  container.append(root);
  return root;
}

function empty(root, message) {
  root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, message));
}

function yAxis(root, steps, format, bottom = PAD.bottom) {
  const top = steps[steps.length - 1];
  const y = (v) => PAD.top + (H - PAD.top - bottom) * (1 - v / top);
  for (const v of steps) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, format(v)));
  }
  return y;
}

// points: [{x: Date, y: number}] in time order.
export function lineChart(container, points, { label, format = String, timeFormat, emptyText = "no data yet" }) {
  const root = frame(container, `${label}: ${points.length} points`, points.length);
  if (!points.length) return empty(root, emptyText);
  const steps = ticks(Math.max(...points.map((p) => p.y)));
  const y = yAxis(root, steps, format);
  const t0 = points[0].x.getTime();
  const t1 = Math.max(points[points.length - 1].x.getTime(), t0 + 1);
  const x = (d) => PAD.left + (W - PAD.left - PAD.right) * ((d.getTime() - t0) / (t1 - t0));
  // A step line: the value holds until it next changes.
  let d = `M${x(points[0].x)},${y(points[0].y)}`;
  for (let i = 1; i < points.length; i++) d += `H${x(points[i].x)}V${y(points[i].y)}`;
  root.append(svg("path", { d, class: "line" }));
  const last = points[points.length - 1];
  root.append(svg("circle", { cx: x(last.x), cy: y(last.y), r: 3, class: "dot" }));
  for (const [i, p] of [points[0], last].entries()) {
    root.append(
      svg("text", { x: x(p.x), y: H - 8, "text-anchor": i ? "end" : "start", class: "tick" }, timeFormat(p.x)),
    );
  }
  return root;
}

// bars: [{label, value, title}]; labels are shown every few bars when they crowd.
export function barChart(container, bars, { label, format = String, emptyText = "no data yet" }) {
  const root = frame(container, `${label}: ${bars.length} bars`, bars.length);
  if (!bars.length) return empty(root, emptyText);
  const every = Math.ceil(bars.length / 12);
  const long = Math.max(...bars.map((b) => String(b.label).length));
  const tilt = bars.length * long > 48; // labels that would run into each other lean
  const bottom = tilt ? PAD.bottom + Math.min(long, 12) * 3 : PAD.bottom;
  const steps = ticks(Math.max(...bars.map((b) => b.value)));
  const y = yAxis(root, steps, format, bottom);
  const slot = (W - PAD.left - PAD.right) / bars.length;
  bars.forEach((b, i) => {
    const x = PAD.left + i * slot;
    const rect = svg("rect", {
      x: x + slot * 0.15,
      y: y(b.value),
      width: slot * 0.7,
      height: Math.max(0, y(0) - y(b.value)),
      class: "bar",
    });
    rect.append(svg("title", {}, b.title ?? `${b.label}: ${format(b.value)}`));
    root.append(rect);
    if (i % every === 0) {
      const at = { x: x + slot / 2 + 4, y: H - bottom + 13 };
      root.append(svg("text", tilt
        ? { ...at, "text-anchor": "end", class: "tick", transform: `rotate(-30 ${at.x} ${at.y})` }
        : { x: at.x, y: H - 8, "text-anchor": "middle", class: "tick" }, b.label));
    }
  });
  return root;
}
