// Times in the store's own time zone, money in its currency.

export class Formats {
  constructor(timezone = "UTC", currency = "EUR") {
    this.timezone = timezone || "UTC";
    this.currency = currency || "EUR";
    const tz = { timeZone: this.timezone };
    this.time = new Intl.DateTimeFormat("en-GB", { ...tz, hour: "2-digit", minute: "2-digit", second: "2-digit" });
    this.hm = new Intl.DateTimeFormat("en-GB", { ...tz, hour: "2-digit", minute: "2-digit" });
    this.hour = new Intl.DateTimeFormat("en-GB", { ...tz, hour: "2-digit", hourCycle: "h23" });
    this.day = new Intl.DateTimeFormat("en-GB", { ...tz, weekday: "short", day: "numeric", month: "short", year: "numeric" });
    this.parts = new Intl.DateTimeFormat("en-CA", {
      ...tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hourCycle: "h23",
    });
    this.date = new Intl.DateTimeFormat("en-GB", { ...tz, day: "numeric", month: "short" });
    this.ref = null; // the store's clock, set as it moves
    this.money = new Intl.NumberFormat("en-GB", { style: "currency", currency: this.currency });
  }

  // A time of the store's day (``ref``, its clock) as hh:mm:ss; of another day, with its date.
  at(value) {
    if (!value) return "—";
    const d = new Date(value);
    const sameDay = this.ref && this.dayStart(d).getTime() === this.dayStart(this.ref).getTime();
    return sameDay || !this.ref ? this.time.format(d) : `${this.date.format(d)} ${this.time.format(d)}`;
  }

  cents(value) {
    return this.money.format((value || 0) / 100);
  }

  // The start of the store's local day holding `date`, as a Date (UTC inside).
  dayStart(date) {
    const p = Object.fromEntries(this.parts.formatToParts(date).map((x) => [x.type, x.value]));
    const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second);
    const offset = asUtc - Math.floor(date.getTime() / 1000) * 1000; // the zone's offset then
    const midnightLocal = Date.UTC(+p.year, +p.month - 1, +p.day);
    return new Date(midnightLocal - offset);
  }
}

export const percent = (v) => `${Math.round(v * 100)}%`;
export const whole = (v) => (v === null || v === undefined ? "—" : Math.round(v).toLocaleString("en-GB"));

// Text into an element, never HTML: event fields are data, not markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
