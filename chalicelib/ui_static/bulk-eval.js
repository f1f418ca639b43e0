// Bulk evaluation from the sessions list: the sessions a user ticked are evaluated as one eval batch
// (POST /eval-batches), now or through the vendor's batch API at half price. The dialog shows what the
// batch would create and cost at most (POST /eval-batches/estimate) before the user confirms, then
// follows the batch's progress.

import { api, idempotencyKey, path } from "./api.js";
import { categoryLabel, formatNumber, h, ignoreAbort, loading, nextId, openDialog, replace, sleep, vendorLabel } from "./dom.js";

const POLL_MS = 2000;
const STATUS_LABELS = { creating: "Starting", running: "Running", finished: "Finished", cancelled: "Cancelled" };
const COUNT_LABELS = [["queued", "queued"], ["running", "running"], ["succeeded", "succeeded"], ["failed", "failed"],
  ["timed_out", "timed out"], ["cancelled", "cancelled"]];

export function formatUsd(usd) {
  if (typeof usd !== "number") return "no price known";
  return usd < 0.01 && usd > 0 ? "under $0.01" : `$${usd.toFixed(2)}`;
}

export function batchStatusBadge(status) {
  const kind = { finished: "badge-pass", cancelled: "badge-neutral", running: "badge-info", creating: "badge-info" }[status];
  return h("span", { class: ["badge", kind || "badge-neutral"], "data-testid": "batch-status", "data-status": status },
    STATUS_LABELS[status] || status);
}

export function batchCounts(batch) {
  const parts = COUNT_LABELS.filter(([key]) => batch.counts[key]).map(([key, label]) => `${formatNumber(batch.counts[key])} ${label}`);
  const text = parts.join(", ") || "no runs";
  return h("span", { "data-testid": "batch-counts" }, batch.delayed ? `${text} (${formatNumber(batch.delayed)} waiting for a slot)` : text);
}

/** The "Evaluate selected…" dialog for `sessionIds`. */
export async function openBulkEvaluate(sessionIds, ctx) {
  const content = h("div", { class: "stack" }, loading("Loading the evaluation options…"));
  const dialog = openDialog({ title: `Evaluate ${sessionIds.length} session${sessionIds.length === 1 ? "" : "s"}`,
    content, className: "bulk-dialog" });
  let runners;
  let questions;
  try {
    [runners, questions] = await Promise.all([api("GET", "/eval/runners"), api("GET", "/eval/questions")]);
  } catch (err) {
    replace(content, h("p", { class: "text-error", role: "alert" }, err.message),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Close")));
    return dialog;
  }
  const vendors = runners.body.server.vendors;
  if (!vendors.length) {
    replace(content, h("p", { role: "alert" }, "No vendor is enabled for the server runner, which batches use. "
      + "Ask an admin to configure one in the Eval runner settings."),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Close")));
    content.querySelector("button").focus();
    return dialog;
  }
  new BulkForm(content, dialog, sessionIds, vendors, [...new Set(questions.body.questions.map((q) => q.category))], ctx);
  return dialog;
}

class BulkForm {
  constructor(content, dialog, sessionIds, vendors, categories, ctx) {
    this.content = content;
    this.dialog = dialog;
    this.sessionIds = sessionIds;
    this.ctx = ctx;
    this.estimateSeq = 0;
    const modeName = nextId("bulk-mode");
    this.modes = [["now", "Now", "every run starts as soon as an active-run slot is free"],
      ["batch", "Batch", "through the vendor's batch API at half price; results within 24 hours"]].map(([value, label, hint]) => {
      const id = nextId("bulk-mode-option");
      const radio = h("input", { id, type: "radio", name: modeName, value, checked: value === "now",
        onchange: () => this.estimate() });
      return { radio, el: h("div", { class: "choice" }, radio, h("label", { for: id }, label, " ", h("span", { class: "hint" }, hint))) };
    });
    this.vendor = vendors.length > 1 ? h("select", { id: nextId("bulk-vendor"), onchange: () => this.estimate() },
      vendors.map((v) => h("option", { value: v }, vendorLabel(v)))) : null;
    this.boxes = categories.map((category) => {
      const id = nextId("bulk-cat");
      const box = h("input", { id, type: "checkbox", value: category, checked: true, onchange: () => this.estimate() });
      return { box, el: h("div", { class: "choice" }, box, h("label", { for: id }, categoryLabel(category))) };
    });
    this.summary = h("div", { class: "bulk-estimate", role: "status", "aria-live": "polite", "data-testid": "bulk-estimate" });
    this.start = h("button", { type: "submit", class: "primary", disabled: true, "data-testid": "bulk-start" }, "Start");
    this.form = h("form", { class: "stack", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      ignoreAbort(this.submit());
    } },
    h("div", { class: "field", role: "radiogroup", "aria-label": "Mode" }, h("span", { class: "field-label" }, "Mode"),
      this.modes.map((m) => m.el)),
    this.vendor ? h("div", { class: "field" }, h("label", { for: this.vendor.id }, "Vendor"), this.vendor) : null,
    h("div", { class: "field", role: "group", "aria-label": "Question categories" },
      h("span", { class: "field-label" }, "Question categories"), this.boxes.map((b) => b.el)),
    this.summary,
    h("div", { class: "actions" }, this.start,
      h("button", { type: "button", onclick: () => this.dialog.close() }, "Cancel")));
    replace(content, this.form);
    this.modes[0].radio.focus();
    ignoreAbort(this.estimate());
  }

  request() {
    const categories = this.boxes.filter((b) => b.box.checked).map((b) => b.box.value);
    const body = { session_ids: this.sessionIds, mode: this.modes.find((m) => m.radio.checked).radio.value };
    if (categories.length !== this.boxes.length) body.questions = categories;
    if (this.vendor) body.vendor = this.vendor.value;
    return body;
  }

  async estimate() {
    const seq = ++this.estimateSeq;
    this.start.disabled = true;
    if (!this.boxes.some((b) => b.box.checked)) {
      replace(this.summary, h("p", { class: "text-error" }, "Tick at least one question category."));
      return;
    }
    replace(this.summary, loading("Estimating…"));
    let estimate;
    try {
      estimate = (await api("POST", "/eval-batches/estimate", { json: this.request() })).body;
    } catch (err) {
      if (seq !== this.estimateSeq) return;
      replace(this.summary, h("p", { class: "text-error", role: "alert" }, err.message));
      return;
    }
    if (seq !== this.estimateSeq) return;
    this.start.textContent = `Start ${estimate.runs} evaluation${estimate.runs === 1 ? "" : "s"}`;
    replace(this.summary, h("p", {},
      h("strong", {}, `${formatNumber(estimate.runs)} run${estimate.runs === 1 ? "" : "s"}`),
      ` of ${estimate.questions} question${estimate.questions === 1 ? "" : "s"} each with ${vendorLabel(estimate.vendor)} (${estimate.model}). `,
      estimate.priced ? ["Most likely ", h("strong", { "data-testid": "bulk-usd-low" }, formatUsd(estimate.estimate_usd_low)),
        ", at most ", h("strong", { "data-testid": "bulk-usd-high" }, formatUsd(estimate.estimate_usd_high)),
        estimate.mode === "batch" ? " at the vendor's batch price." : "."]
        : "This model has no price in the price table, so no cost can be estimated."),
    estimate.within_limits ? null
      : h("p", { class: "alert alert-warn", role: "alert", "data-testid": "bulk-blocked" },
        "Your budget cannot take this batch: ", estimate.reason || "a budget would be exceeded."));
    this.start.disabled = !estimate.within_limits;
  }

  async submit() {
    this.start.disabled = true;
    const request = this.request();
    let accepted;
    try {
      accepted = (await api("POST", "/eval-batches", { json: request, headers: { "Idempotency-Key": idempotencyKey() } })).body;
    } catch (err) {
      this.start.disabled = false;
      replace(this.summary, h("p", { class: "text-error", role: "alert" }, err.message));
      return;
    }
    const progress = h("div", { class: "stack", "data-testid": "bulk-progress" });
    const close = h("button", { type: "button", onclick: () => this.dialog.close() }, "Close");
    replace(this.content, h("p", { role: "status" },
      `Batch started: ${accepted.runs} run${accepted.runs === 1 ? "" : "s"}, ${accepted.started} running now`,
      accepted.started < accepted.runs ? ", the rest start as active-run slots free." : "."),
    progress, h("div", { class: "actions" }, close));
    close.focus();
    await ignoreAbort(this.follow(accepted.batch_id, progress));
  }

  async follow(batchId, slot) {
    while (this.dialog.open) {
      let batch;
      try {
        batch = (await api("GET", path`/eval-batches/${batchId}`)).body;
      } catch (err) {
        replace(slot, h("p", { class: "text-error" }, err.message));
        return;
      }
      replace(slot, h("p", {}, batchStatusBadge(batch.status), " ", batchCounts(batch)),
        h("p", { class: "muted small" }, "Cost so far: ", formatUsd(batch.cost.usd)));
      if (batch.status === "finished" || batch.status === "cancelled") return;
      await sleep(POLL_MS, this.ctx.signal);
    }
  }
}
