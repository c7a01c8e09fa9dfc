// The dashboard: a store's floor and heatmap, its live counts, traffic charts, alerts,
// open carts and receipts, kept up to date from the API's live stream.

import { AlertFeed } from "./alerts.js";
import { api, ApiError, headers, token, url } from "./client.js";
import { barChart, lineChart } from "./charts.js";
import { FloorPlan } from "./floor.js";
import { el, Formats, percent, whole } from "./format.js";
import { Receipts } from "./receipts.js";
import { follow } from "./stream.js";

const $ = (id) => document.getElementById(id);
const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;

const state = {
  stores: [],
  store: null, // the StoreOut picked
  fmt: new Formats(),
  floor: null,
  now: null, // the store's clock: its newest event's time
  me: null, // who the token is (GET /me)
  operator: false, // the token may see receipts, alerts and carts
  stream: null, // AbortController of the live stream
  alerts: null,
  receipts: null,
  timers: new Map(),
};

// -- errors ----------------------------------------------------------------------------

function showError(error) {
  if (error instanceof ApiError && error.unauthorized) {
    token.clear(); // a revoked or wrong token is not kept for the next load
    setStatus("refused", "token refused");
    askToken("The API refused this token (401): give another.");
    return;
  }
  const message = error instanceof ApiError && error.status === 403
    ? `This token may not do that (403): ${error.message}`
    : error.message || String(error);
  $("error-text").textContent = message;
  $("error-banner").hidden = false;
  console.error(error);
}

$("error-close").onclick = () => {
  $("error-banner").hidden = true;
};

function setStatus(kind, text) {
  const s = $("live-status");
  s.dataset.state = kind;
  s.textContent = text;
}

// -- the token -------------------------------------------------------------------------

function askToken(message = "") {
  $("token-error").textContent = message;
  $("token-input").value = "";
  if (!$("token-dialog").open) $("token-dialog").showModal();
  $("token-input").focus();
}

$("token-button").onclick = () => askToken();
$("token-forget").onclick = () => {
  token.clear();
  stopStream();
  setStatus("offline", "no token");
  askToken("Forgotten. Give a token to go on.");
};
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) {
    $("token-error").textContent = "The token is empty.";
    return;
  }
  token.set(value);
  $("token-dialog").close();
  $("error-banner").hidden = true;
  start().catch(showError);
});

// -- the store -------------------------------------------------------------------------

async function start() {
  if (!token.get()) {
    askToken();
    return;
  }
  state.me = await api("/me");
  state.operator = state.me.role !== "viewer";
  $("who").textContent = `${state.me.name || `token ${state.me.token_id}`} · ${state.me.role}`;
  state.stores = await api("/stores");
  const picker = $("store-picker");
  if (!state.stores.length) {
    picker.replaceChildren(el("option", {}, "no store yet"));
    picker.disabled = true;
    setStatus("offline", "no store in the read models yet");
    setTimeout(() => start().catch(showError), 3000);
    return;
  }
  picker.replaceChildren(...state.stores.map((s) => el("option", { value: s.id }, s.name === s.id ? s.id : `${s.name} (${s.id})`)));
  picker.disabled = false;
  const wanted = new URLSearchParams(location.search).get("store") || sessionStorage.getItem("aisle.store");
  const chosen = state.stores.find((s) => s.id === wanted) || state.stores[0];
  picker.value = chosen.id;
  await selectStore(chosen.id);
}

$("store-picker").addEventListener("change", (e) => {
  selectStore(e.target.value).catch(showError);
});

async function selectStore(id) {
  stopStream();
  const store = state.stores.find((s) => s.id === id);
  state.store = store;
  sessionStorage.setItem("aisle.store", id);
  const u = new URL(location.href);
  u.searchParams.set("store", id);
  history.replaceState(null, "", u);
  state.fmt = new Formats(store.timezone || "UTC", store.currency || "EUR");
  state.now = null;
  document.title = `aisle · ${store.name}`;
  const base = `/stores/${encodeURIComponent(id)}`;
  if (store.layout) {
    state.floor = new FloorPlan($("floor"), await api(`${base}/layout`));
  } else {
    state.floor = null;
    $("floor").replaceChildren(el("p", { class: "empty" }, "The API has no layout for this store: no floor plan."));
  }
  const live = await refreshLive();
  for (const p of ["alerts-panel", "carts-panel", "receipts-panel"]) $(p).hidden = !state.operator;
  $("viewer-note").hidden = state.operator;
  await findClock(live);
  state.alerts = state.operator ? new AlertFeed($("alert-feed"), {
    store: id, fmt: state.fmt, onError: showError, decide, onChange: () => soon("live", refreshLive, 300),
  }) : null;
  if (state.alerts) state.alerts.activeOnly = $("alerts-active").checked;
  state.receipts = state.operator ? new Receipts({
    body: $("receipts-body"), more: $("receipts-more"), dialog: $("receipt-dialog"),
    store: id, fmt: state.fmt, onError: showError,
  }) : null;
  await Promise.all([refreshCharts(), refreshHeatmap(), refreshAlerts(), refreshReceipts()]);
  startStream();
}

// The store's clock: its newest event's time (the log may hold a day past, as the demo's).
async function findClock(live) {
  let newest = live.occupancy_at ? new Date(live.occupancy_at) : null;
  if (state.operator) {
    const page = await api(`/stores/${encodeURIComponent(state.store.id)}/receipts`, { query: { limit: 1 } });
    const r = page.items[0];
    if (r && (!newest || new Date(r.issued_at) > newest)) newest = new Date(r.issued_at);
  }
  tick(newest || new Date());
}

function tick(at) {
  if (state.now && at <= state.now) return;
  const newDay = state.now && state.fmt.dayStart(at).getTime() !== state.fmt.dayStart(state.now).getTime();
  state.now = at;
  state.fmt.ref = at;
  $("store-clock").textContent = `store time ${state.fmt.day.format(at)} ${state.fmt.time.format(at)}`;
  if (newDay) refreshAll();
}

function refreshAll() {
  soon("all", () => Promise.all([refreshLive(), refreshCharts(), refreshHeatmap(), refreshReceipts(), refreshAlerts()]), 500);
}

function today() {
  const start = state.fmt.dayStart(state.now || new Date());
  return { since: start.toISOString(), until: new Date(start.getTime() + DAY).toISOString(), start };
}

// -- what the store holds now ----------------------------------------------------------

async function refreshLive() {
  const live = await api(`/stores/${encodeURIComponent(state.store.id)}/live`);
  $("tile-occupancy").textContent = whole(live.occupancy);
  const queue = live.queues.reduce((n, q) => n + q.length, 0);
  $("tile-queue").textContent = live.queues.length ? whole(queue) : "—";
  $("tile-carts").textContent = live.open_carts == null ? "—" : whole(live.open_carts);
  $("tile-alerts").textContent = live.active_alerts == null ? "—" : whole(live.active_alerts);
  if (live.carts) {
    const fmt = state.fmt;
    $("carts-body").replaceChildren(...(live.carts.length
      ? live.carts.map((c) => el("tr", { dataset: { id: c.id } },
          el("td", {}, c.cart), el("td", {}, fmt.at(c.opened_at)), el("td", {}, fmt.at(c.updated_at)),
          el("td", { class: "num" }, c.items)))
      : [el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No open carts."))]));
  }
  return live;
}

// -- the charts ------------------------------------------------------------------------

async function refreshCharts() {
  const { since, until, start } = today();
  const m = await api(`/stores/${encodeURIComponent(state.store.id)}/metrics`, {
    query: { from: since, to: until, granularity: "hour", name: ["occupancy", "footfall", "zone_conversion", "store_conversion"] },
  });
  const fmt = state.fmt;
  $("charts-range").textContent = fmt.day.format(start);
  const of = (name, zone = "") => m.series.filter((p) => p.name === name && (zone === null || p.zone === zone));
  const occupancy = of("occupancy").map((p) => ({ x: new Date(p.start), y: p.max }));
  lineChart($("chart-occupancy"), occupancy, {
    label: "Occupancy, the highest each hour", format: whole, timeFormat: (d) => fmt.hm.format(d),
  });
  const footfall = of("footfall").map((p) => ({
    label: fmt.hour.format(new Date(p.start)), value: p.sum, title: `${fmt.hm.format(new Date(p.start))}: ${whole(p.sum)} in`,
  }));
  barChart($("chart-footfall"), footfall, { label: "Footfall per hour", format: whole });
  const zones = new Map();
  for (const p of of("zone_conversion", null)) {
    const z = zones.get(p.zone) || { sum: 0, count: 0 };
    z.sum += p.sum;
    z.count += p.count;
    zones.set(p.zone, z);
  }
  const conversion = [...zones.entries()]
    .map(([zone, z]) => ({ label: zone.replace(/^sf-/, ""), value: z.count ? z.sum / z.count : 0, title: `${zone}: ${percent(z.count ? z.sum / z.count : 0)} of ${z.count} hourly figures` }))
    .sort((a, b) => a.label.localeCompare(b.label));
  barChart($("chart-conversion"), conversion, { label: "Conversion by shelf front", format: percent });
  $("tile-footfall").textContent = whole(m.kpis.footfall);
  $("tile-conversion").textContent = m.kpis.store_conversion == null ? "—" : percent(m.kpis.store_conversion);
  $("tile-conversion").title = m.kpis.store_conversion == null ? "reported when the store's day closes" : "";
}

async function refreshHeatmap() {
  if (!state.floor) return;
  const span = $("heatmap-span").value;
  const end = state.now || new Date();
  const range = span === "hour"
    ? { since: new Date(end.getTime() - HOUR).toISOString(), until: new Date(end.getTime() + 1000).toISOString() }
    : today();
  const h = await api(`/stores/${encodeURIComponent(state.store.id)}/heatmap`, { query: { from: range.since, to: range.until } });
  const drawn = state.floor.setCells(h.cells, h.size);
  const fmt = state.fmt;
  $("heatmap-range").textContent = span === "hour" ? `the hour to ${fmt.hm.format(end)}` : fmt.day.format(today().start);
  $("heatmap-summary").textContent = h.cells.length
    ? `${h.cells.length} cells of ${h.size} m with people in them; the busiest held ${Math.round(drawn.top)} s of dwell.`
    : "No one on the floor in this time yet.";
}

$("heatmap-span").addEventListener("change", () => refreshHeatmap().catch(showError));

// -- alerts and receipts ---------------------------------------------------------------

async function refreshAlerts() {
  if (!state.alerts) return;
  const n = await state.alerts.load({});
  $("alerts-count").textContent = `${n}${n === 100 ? "+" : ""} ${state.alerts.activeOnly ? "open" : "in all"}`;
}

$("alerts-active").addEventListener("change", (e) => {
  if (!state.alerts) return;
  state.alerts.activeOnly = e.target.checked;
  refreshAlerts().catch(showError);
});

async function refreshReceipts() {
  if (!state.receipts) return;
  await state.receipts.load({});
}

$("receipt-search").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!state.receipts) return;
  const q = $("receipt-q").value.trim();
  const review = $("receipt-review").value;
  state.receipts.filters = {
    q: q || undefined,
    needs_review: review === "needs_review" ? true : undefined,
    corrected: review === "corrected" ? true : undefined,
  };
  state.receipts.load({}).catch(showError);
});

$("receipt-close").onclick = () => $("receipt-dialog").close();
$("correction-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const button = $("correction-submit");
  button.disabled = true;
  $("correction-error").textContent = "";
  state.receipts.correct(e.target)
    .then(() => {
      $("correction-error").textContent = "";
      soon("receipts", refreshReceipts, 100);
    })
    .catch((error) => {
      if (error instanceof ApiError && error.unauthorized) return showError(error);
      $("correction-error").textContent = error.message;
    })
    .finally(() => {
      button.disabled = false;
    });
});

// Confirm or dismiss: the reason comes from a dialog; null when cancelled.
function decide(alert, verb) {
  const dialog = $("decision-dialog");
  $("decision-title").textContent = verb === "confirm" ? "Confirm the alert" : "Dismiss the alert";
  $("decision-what").textContent = `${alert.summary || alert.name} (${alert.subject}, ${state.fmt.at(alert.raised_at)})`;
  $("decision-ok").textContent = verb === "confirm" ? "Confirm: it is right" : "Dismiss: a false alarm";
  $("decision-reason").value = "";
  $("decision-error").textContent = "";
  dialog.showModal();
  return new Promise((resolve) => {
    const done = (value) => {
      $("decision-form").onsubmit = null;
      $("decision-cancel").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    $("decision-form").onsubmit = (e) => {
      e.preventDefault();
      done($("decision-reason").value.trim());
    };
    $("decision-cancel").onclick = () => done(null);
    dialog.onclose = () => done(null);
  });
}

// -- live ------------------------------------------------------------------------------

// Run `fn` once, `ms` from the first call: a burst of events makes one refresh.
function soon(name, fn, ms) {
  if (state.timers.has(name)) return;
  state.timers.set(name, setTimeout(() => {
    state.timers.delete(name);
    Promise.resolve(fn()).catch(showError);
  }, ms));
}

function stopStream() {
  state.stream?.abort();
  state.stream = null;
  for (const t of state.timers.values()) clearTimeout(t);
  state.timers.clear();
}

function startStream() {
  const controller = new AbortController();
  state.stream = controller;
  const path = `/stores/${encodeURIComponent(state.store.id)}/stream`;
  follow(url(path), {
    headers: () => headers(),
    signal: controller.signal,
    onState(kind, detail) {
      if (kind === "live") {
        // The stream starts at its connection: what came while it was away is read again.
        if ($("live-status").dataset.state === "reconnecting") refreshAll();
        setStatus("live", "live");
      }
      else if (kind === "reconnecting") setStatus("reconnecting", "reconnecting…");
      else if (kind === "refused") {
        setStatus("refused", "live stream refused");
        if (detail.status === 401) askToken("The API refused this token (401): give another.");
      }
    },
    onMessage(m) {
      let record;
      try {
        record = JSON.parse(m.data); // {seq, stored_at, event}
      } catch {
        return; // not an event
      }
      const event = record?.event;
      if (event?.type) onEvent(event);
    },
  });
}

// What an operator did is dated by the wall clock, not the store's: it must not move the
// store's clock (a demo's day is in the past). core/events.py OPERATOR_TYPES; a test
// keeps the two the same.
const OPERATOR_TYPES = new Set(["alert.acknowledged", "alert.closed", "alert.confirmed", "alert.dismissed", "receipt.corrected"]);

function onEvent(e) {
  if (e.at && !OPERATOR_TYPES.has(e.type)) tick(new Date(e.at));
  switch (e.type) {
    case "alert.raised":
      state.alerts?.raised(e);
      soon("alerts", refreshAlerts, 1500);
      soon("live", refreshLive, 1000);
      break;
    case "alert.acknowledged":
    case "alert.confirmed":
    case "alert.dismissed":
    case "alert.closed":
      state.alerts?.actedOn(e);
    // falls through
    case "alert.resolved":
      soon("alerts", refreshAlerts, 1000);
      soon("live", refreshLive, 1000);
      break;
    case "cart.item_added":
    case "cart.item_removed":
      soon("live", refreshLive, 1000);
      break;
    case "receipt.issued":
    case "receipt.corrected":
      soon("live", refreshLive, 1000);
      soon("receipts", refreshReceipts, 2000);
      break;
    case "metric":
      if (e.data?.name === "occupancy" && !(e.data.labels?.zone || e.data.zone)) $("tile-occupancy").textContent = whole(e.data.value);
      soon("live", refreshLive, 2000);
      soon("charts", refreshCharts, 5000);
      break;
    case "heatmap.tiles":
    case "heatmap.tile":
      soon("heatmap", refreshHeatmap, 5000);
      break;
    default:
      break;
  }
}

// -- go --------------------------------------------------------------------------------

token.fromLocation();
start().catch(showError);
