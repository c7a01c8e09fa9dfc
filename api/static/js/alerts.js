// The alert feed: the store's alerts, newest first, with what people did about them, and
// the buttons to act (each action an event in the log, through the API). A new alert from
// the live stream shows at once; the read models' row replaces it once projected.

import { api, ApiError, newKey } from "./client.js";
import { el } from "./format.js";

const OPEN = new Set(["raised", "acknowledged", "confirmed"]);
const SETTLE_MS = 30000; // how long an action waits to show in the read models
const UNPROJECTED_MS = 60000; // how long an alert from the stream waits for them

export class AlertFeed {
  constructor(list, { store, fmt, onError, decide, onChange }) {
    this.list = list;
    this.store = store;
    this.fmt = fmt;
    this.onError = onError;
    this.decide = decide; // (alert, verb) => Promise<reason | null>
    this.onChange = onChange;
    this.rows = new Map(); // id -> alert (as the API gives it)
    this.busy = new Set();
    this.unprojected = new Map(); // from the stream, not in the read models yet
    this.fresh = new Set(); // just arrived: highlighted
    this.activeOnly = true;
  }

  async load({ since, until } = {}) {
    const page = await api(`/stores/${encodeURIComponent(this.store)}/alerts`, {
      query: { from: since, to: until, active: this.activeOnly ? true : undefined, limit: 100 },
    });
    this.rows = new Map(page.items.map((a) => [a.id, a]));
    // An alert the stream brought that the read models do not hold yet stays shown.
    // (Until the read models hold it, or a minute has passed: the projections are behind.)
    for (const [id, a] of this.unprojected) {
      if (this.rows.has(id) || Date.now() - a.seenAt > UNPROJECTED_MS) this.unprojected.delete(id);
      else this.rows.set(id, a);
    }
    this.render();
    return page.items.length;
  }

  // An action on an alert, from the live stream: the read models know the alert.
  actedOn(event) {
    this.unprojected.delete(event.data?.alert);
  }

  // An alert.raised event from the live stream.
  raised(event) {
    if (this.rows.has(event.id)) return;
    const a = {
      id: event.id,
      name: event.data.alert,
      severity: event.data.severity,
      summary: event.data.summary,
      subject: event.subject,
      raised_at: event.at,
      state: "raised",
      labels: event.data.labels || {},
      rule_id: event.rule?.id,
      rule_version: event.rule?.version,
      seenAt: Date.now(),
    };
    this.unprojected.set(a.id, a);
    this.rows.set(a.id, a);
    this.fresh.add(a.id);
    this.render();
    setTimeout(() => this.fresh.delete(a.id), 3000);
  }

  render() {
    const items = [...this.rows.values()]
      .filter((a) => !this.activeOnly || OPEN.has(a.state))
      .sort((a, b) => (a.raised_at < b.raised_at ? 1 : -1));
    if (!items.length) {
      this.list.replaceChildren(el("li", { class: "empty" }, this.activeOnly ? "No open alerts." : "No alerts."));
      return;
    }
    this.list.replaceChildren(...items.map((a) => this.item(a, this.fresh.has(a.id))));
  }

  item(a, fresh) {
    const fmt = this.fmt;
    const who = [];
    if (a.acknowledged_by) who.push(`acknowledged by ${a.acknowledged_by} at ${fmt.at(a.acknowledged_at)}`);
    if (a.decision) who.push(`${a.decision} by ${a.decided_by} at ${fmt.at(a.decided_at)}${a.decision_reason ? `: “${a.decision_reason}”` : ""}`);
    if (a.resolved_at) who.push(`condition ended at ${fmt.at(a.resolved_at)}`);
    if (a.closed_at) who.push(`closed by ${a.closed_by} at ${fmt.at(a.closed_at)}`);
    const busy = this.busy.has(a.id);
    const button = (verb, label, cls) =>
      el("button", {
        type: "button", class: cls, disabled: busy,
        "aria-label": `${label} alert ${a.name} for ${a.subject}`,
        onclick: () => this.act(a, verb),
      }, label);
    const actions = [];
    if (a.state === "raised") actions.push(button("acknowledge", "Acknowledge", "primary"));
    if (a.state === "raised" || a.state === "acknowledged") {
      actions.push(button("confirm", "Confirm…", "danger"), button("dismiss", "Dismiss…", ""));
    }
    if (OPEN.has(a.state) && a.state !== "raised") actions.push(button("resolve", "Close", ""));
    return el(
      "li",
      { class: fresh ? "fresh" : null, dataset: { id: a.id, severity: a.severity, state: a.state } },
      el("div", {},
        el("strong", {}, a.summary || a.name), " ",
        el("span", { class: "state", dataset: { state: a.state } }, busy ? "sending…" : a.state)),
      el("div", { class: "meta" },
        `${fmt.at(a.raised_at)} · ${a.name} · ${a.severity} · ${a.subject}`,
        a.rule_id ? ` · rule ${a.rule_id}@${a.rule_version}` : ""),
      who.length ? el("div", { class: "meta" }, who.join("; ")) : null,
      actions.length ? el("div", { class: "actions" }, actions) : null,
    );
  }

  async act(alert, verb) {
    let body;
    if (verb === "confirm" || verb === "dismiss") {
      const reason = await this.decide(alert, verb);
      if (reason === null) return;
      body = { reason };
    }
    this.busy.add(alert.id);
    this.render();
    const path = `/stores/${encodeURIComponent(this.store)}/alerts/${encodeURIComponent(alert.id)}`;
    try {
      await api(`${path}/${verb}`, { method: "POST", body: body ?? {}, idempotencyKey: newKey() });
      await this.settle(path, alert.state);
    } catch (error) {
      const why = error instanceof ApiError && error.status === 404
        ? "this alert is not in the read models yet: try again in a moment"
        : error.message;
      this.onError(new Error(`Could not ${verb} the alert: ${why}`));
    } finally {
      this.busy.delete(alert.id);
      this.render();
      this.onChange?.();
    }
  }

  // Wait until the projections show the action (the alert's state moves on).
  async settle(path, before) {
    const deadline = Date.now() + SETTLE_MS;
    while (Date.now() < deadline) {
      const detail = await api(path);
      if (detail.alert.state !== before || detail.alert.closed_at) {
        this.unprojected.delete(detail.alert.id);
        this.rows.set(detail.alert.id, detail.alert);
        return detail;
      }
      await new Promise((r) => setTimeout(r, 400));
    }
    throw new Error("the action was recorded, but the read models have not shown it yet");
  }
}
