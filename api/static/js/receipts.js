// Receipts: the store's, newest first, searchable; one receipt with its lines, the
// evidence of each line (the pick or put-back, the camera or sensor that saw it, the rule
// that derived it) and its corrections; and the form that records a correction or refund.

import { api, newKey } from "./client.js";
import { el } from "./format.js";

const PAGE = 50;

export class Receipts {
  constructor({ body, more, dialog, store, fmt, onError }) {
    this.body = body;
    this.more = more;
    this.dialog = dialog;
    this.store = store;
    this.fmt = fmt;
    this.onError = onError;
    this.filters = {};
    this.offset = 0;
    this.current = null; // the receipt open in the dialog
    more.onclick = () => this.load({ append: true }).catch(onError);
  }

  get base() {
    return `/stores/${encodeURIComponent(this.store)}/receipts`;
  }

  async load({ append = false, since, until } = {}) {
    if (since !== undefined) this.range = { from: since, to: until };
    const offset = append ? this.offset : 0;
    const page = await api(this.base, { query: { ...this.range, ...this.filters, limit: PAGE, offset } });
    const rows = page.items.map((r) => this.row(r));
    if (append) this.body.append(...rows);
    else if (rows.length) this.body.replaceChildren(...rows);
    else this.body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No receipts match.")));
    this.offset = page.next_offset ?? offset + page.items.length;
    this.more.hidden = page.next_offset == null;
    return page.items.length;
  }

  row(r) {
    const fmt = this.fmt;
    const notes = [];
    if (r.age_check) notes.push("ID check");
    if (r.needs_review && !r.reviewed) notes.push("needs review");
    if (r.corrections) notes.push(`${r.corrections} correction${r.corrections > 1 ? "s" : ""}`);
    const total = r.corrected_total_cents !== r.total_cents
      ? el("span", {}, el("s", { class: "muted" }, fmt.cents(r.total_cents)), " ", fmt.cents(r.corrected_total_cents))
      : fmt.cents(r.total_cents);
    return el("tr", { dataset: { id: r.id } },
      el("td", {}, fmt.at(r.issued_at)),
      el("td", {}, r.subject),
      el("td", {}, r.cart === r.subject ? "own" : r.cart),
      el("td", { class: "num" }, total),
      el("td", {}, notes.join(", ")),
      el("td", {}, el("button", {
        type: "button", class: "link", "aria-label": `Open the receipt of ${r.subject} at ${fmt.at(r.issued_at)}`,
        onclick: () => this.open(r.id).catch(this.onError),
      }, "evidence")),
    );
  }

  async open(id) {
    const detail = await api(`${this.base}/${encodeURIComponent(id)}`);
    this.current = detail;
    this.show(detail);
    if (!this.dialog.open) this.dialog.showModal();
  }

  show(d) {
    const fmt = this.fmt;
    const r = d.receipt;
    document.getElementById("receipt-title").textContent = `Receipt of ${r.subject}, ${fmt.at(r.issued_at)}`;
    const lines = el("table", { class: "receipt-lines" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "item"), el("th", { scope: "col", class: "num" }, "qty"),
        el("th", { scope: "col", class: "num" }, "unit"), el("th", { scope: "col", class: "num" }, "amount"))),
      el("tbody", {}, d.lines.flatMap(({ line, evidence }) => [
        el("tr", { dataset: { sku: line.sku } },
          el("td", {}, line.name, line.age_restricted ? " (age restricted)" : "", line.review ? " (to review)" : "",
            el("div", { class: "muted" }, line.sku)),
          el("td", { class: "num" }, line.corrected_qty !== line.qty ? `${line.qty} → ${line.corrected_qty}` : line.qty),
          el("td", { class: "num" }, fmt.cents(line.unit_cents)),
          el("td", { class: "num" }, line.corrected_amount_cents !== line.amount_cents
            ? `${fmt.cents(line.amount_cents)} → ${fmt.cents(line.corrected_amount_cents)}`
            : fmt.cents(line.amount_cents))),
        el("tr", {}, el("td", { colspan: 4 }, this.evidence(evidence))),
      ])),
    );
    const corrections = d.corrections.length
      ? el("div", {}, el("h3", {}, "Corrections"), el("ul", {}, d.corrections.map(({ correction: c, adjustments }) =>
          el("li", { class: "correction" }, `${fmt.at(c.at)} by ${c.by}: “${c.reason}” (${c.amount_cents >= 0 ? "+" : ""}${fmt.cents(c.amount_cents)})`,
            adjustments.length ? ` — ${adjustments.map((a) => `${a.sku} ${a.qty >= 0 ? "+" : ""}${a.qty}`).join(", ")}` : ""))))
      : null;
    const total = r.corrected_total_cents !== r.total_cents
      ? `${fmt.cents(r.total_cents)} as issued, ${fmt.cents(r.corrected_total_cents)} after corrections`
      : fmt.cents(r.total_cents);
    document.getElementById("receipt-detail").replaceChildren(
      el("p", {}, `Total ${total}`, r.age_check ? " · ID checked at the gate" : "",
        el("br"), el("span", { class: "muted" }, `receipt ${r.id} · cart ${r.cart} · rule ${r.rule_id}@${r.rule_version}`)),
      ...[lines, corrections].filter(Boolean),
    );
    const sku = document.getElementById("correction-sku");
    sku.replaceChildren(...d.lines.map(({ line }) => el("option", { value: line.sku }, `${line.name} (${line.corrected_qty} × ${fmt.cents(line.unit_cents)})`)));
    document.getElementById("correction-error").textContent = "";
  }

  evidence(items) {
    const fmt = this.fmt;
    if (!items.length) return el("p", { class: "evidence muted" }, "No evidence recorded for this line.");
    return el("ol", { class: "evidence", "aria-label": "Evidence" }, items.map((e) => el("li", {},
      `${e.qty > 0 ? "added" : "removed"} ${Math.abs(e.qty)} at ${fmt.at(e.change_at)} by rule ${e.rule_id}@${e.rule_version}, from `,
      e.cause_type
        ? `${e.cause_type} seen by ${e.source} at shelf ${e.shelf}, ${fmt.at(e.cause_at)} (log seq ${e.cause_seq})`
        : `event ${e.cause_id} (no longer in the log)`,
      e.subject && e.subject !== this.current?.receipt.subject ? ` · picked by ${e.subject}, of the group` : "")));
  }

  // The form's correction: one adjustment of the chosen line.
  async correct(form) {
    const d = this.current;
    const skuValue = form.querySelector("#correction-sku").value;
    const qty = Number.parseInt(form.querySelector("#correction-qty").value, 10);
    const amountText = form.querySelector("#correction-amount").value.trim();
    const reason = form.querySelector("#correction-reason").value.trim();
    const line = d.lines.find((l) => l.line.sku === skuValue)?.line;
    if (!line) throw new Error("choose the line to correct");
    if (!Number.isInteger(qty)) throw new Error("the quantity change is a whole number (negative: taken off)");
    if (!reason) throw new Error("say why: a correction always has a reason");
    const amount = amountText === "" ? qty * line.unit_cents : Number.parseInt(amountText, 10);
    if (!Number.isInteger(amount)) throw new Error("the amount change is in whole cents");
    const body = {
      reason,
      reviewed: form.querySelector("#correction-reviewed").checked,
      adjustments: [{ sku: line.sku, qty, amount_cents: amount }],
    };
    const before = d.receipt.corrections;
    await api(`${this.base}/${encodeURIComponent(d.receipt.id)}/corrections`, {
      method: "POST", body, idempotencyKey: newKey(),
    });
    // Shown once projected: this receipt's row in the list (lighter than the whole
    // receipt; both reads are audited) until it counts the correction, then the receipt.
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 700));
      const page = await api(this.base, { query: { q: d.receipt.id, limit: 1 } });
      if (page.items[0]?.corrections > before) {
        await this.open(d.receipt.id);
        form.querySelector("#correction-reason").value = "";
        return this.current;
      }
    }
    throw new Error("the correction was recorded, but the read models have not shown it yet");
  }
}
