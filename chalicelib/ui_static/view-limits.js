// Settings → Limits (admins): the spend budgets, active-run quotas, alert threshold and retention, and
// the judge model price table (shipped defaults, admin overrides). Both save with If-Match; a field the
// API refuses is marked next to its input with the API's message, and nothing is stored.

import { api } from "./api.js";
import { adminsOnly, errorPanel, h, loading, nextId, replace, vendorLabel } from "./dom.js";
import { formatUsd } from "./spend-estimate.js";

const LIMITS = "/admin/settings/eval-runner/limits";
const PRICES = "/admin/settings/eval-runner/prices";
const PRICE_FIELDS = [
  ["input_usd_per_mtok", "Input"], ["output_usd_per_mtok", "Output"], ["cache_write_usd_per_mtok", "Cache write"],
  ["cache_read_usd_per_mtok", "Cache read"],
];

export async function renderLimits(main, ctx) {
  ctx.setTitle("Limits and prices");
  const header = [
    h("h1", {}, "Settings"),
    h("h2", { class: "section-title", tabindex: "-1" }, "Limits and prices"),
    h("p", { class: "lead" },
      "Budgets and quotas keep your organisation's shared vendor keys safe to hand to everyone: a run reserves the ",
      "most it can cost before it starts and gives back the rest when it ends, and a run that does not fit is refused ",
      "before anything is queued. Prices turn the vendors' token counts into dollars."),
    h("p", {}, h("a", { href: "#/settings" }, "Vendors and keys"), " · ", h("a", { href: "#/usage" }, "Usage")),
  ];
  replace(main, ...header, loading("Loading the limits…"));
  let limits;
  let prices;
  try {
    [limits, prices] = await Promise.all([
      api("GET", LIMITS, { signal: ctx.signal }).then((r) => r.body),
      api("GET", PRICES, { signal: ctx.signal }).then((r) => r.body),
    ]);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    if (err.status === 403) {
      adminsOnly(main, ctx, ["Limits and prices can only be viewed and changed by an admin of your organisation."],
        h("a", { href: "#/usage" }, "See your own usage"));
      return;
    }
    replace(main, ...header, errorPanel(err, () => renderLimits(main, ctx)));
    return;
  }
  const view = new LimitsView(main, header, limits, prices);
  view.render();
}

function lastDeliveryWords(d) {
  if (!d) return "No alert has been sent to it yet.";
  const when = new Date(d.at).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  if (d.outcome === "delivered") return `Last alert delivered ${when} (HTTP ${d.status}).`;
  return `Last alert not delivered ${when}: ${d.message || d.outcome}`;
}

function numberOrNull(input) {
  const raw = input.value.trim();
  return raw === "" ? null : Number(raw);
}

class LimitsView {
  constructor(main, header, limits, prices) {
    this.main = main;
    this.header = header;
    this.limits = limits;
    this.prices = prices;
    this.overrides = prices.models.filter((m) => m.source === "admin").map((m) => ({ ...m }));
  }

  render() {
    this.limitsCard = this.renderLimitsCard();
    this.pricesCard = this.renderPricesCard();
    replace(this.main, ...this.header, this.renderNow(), this.limitsCard, this.pricesCard);
  }

  renderNow() {
    const month = (this.limits.budgets || [])[0];
    return h("div", { class: "card", "data-testid": "spend-now" },
      h("h3", {}, "This month"),
      month
        ? h("p", {}, `${formatUsd(month.spent_usd)} spent and ${formatUsd(month.reserved_usd)} held by running `
          + `evaluations, of ${formatUsd(month.limit_usd)}: `, h("strong", {}, `${formatUsd(month.left_usd)} left`), ".")
        : h("p", {}, "No monthly budget: spend is not capped."),
      h("p", { class: "hint" }, `${this.limits.active_runs} evaluation(s) queued or running now.`));
  }

  field(name, label, hint, { value, step = "any", min = "0", nullable = false, suffix = "" }) {
    const id = nextId(name);
    const input = h("input", { id, name, type: "number", inputmode: "decimal", step, min,
      value: value === null || value === undefined ? "" : String(value), "aria-describedby": `${id}-hint ${id}-error` });
    const error = h("p", { class: "text-error field-error", id: `${id}-error`, "data-error-for": name });
    return {
      name, input, nullable,
      element: h("div", { class: "field" }, h("label", { for: id }, label, suffix ? h("span", { class: "hint" }, ` ${suffix}`) : null),
        input, h("p", { class: "hint", id: `${id}-hint` }, hint), error),
      error,
    };
  }

  renderLimitsCard() {
    const l = this.limits;
    this.fields = [
      this.field("tenant_monthly_usd", "Organisation budget per month", "USD per UTC calendar month, all users "
        + "together. Leave empty for no cap.", { value: l.tenant_monthly_usd, nullable: true, suffix: "(USD)" }),
      this.field("user_daily_usd", "Budget per user per day", "USD per UTC calendar day, for each user. Leave "
        + "empty for no cap.", { value: l.user_daily_usd, nullable: true, suffix: "(USD)" }),
      this.field("max_active_runs_per_user", "Evaluations at once per user", "Queued or running; more are refused "
        + "until one finishes.", { value: l.max_active_runs_per_user, step: "1", min: "1" }),
      this.field("max_active_runs_per_tenant", "Evaluations at once for the organisation", "Queued or running, all "
        + "users together.", { value: l.max_active_runs_per_tenant, step: "1", min: "1" }),
      this.field("alert_at_fraction", "Alert at", "A share of a budget (0 to 1, e.g. 0.8): crossing it sends one "
        + "EvalBudgetThresholdReached event per budget period.", { value: l.alert_at_fraction, step: "0.05" }),
      this.field("retention_days", "Keep runs and sessions for", "Days; leave empty to keep them.",
        { value: l.retention_days, nullable: true, step: "1", min: "1", suffix: "(days)" }),
      this.webhookField(l),
    ];
    this.limitsStatus = h("div", { class: "form-status", role: "status", "data-testid": "limits-status" });
    const form = h("form", { class: "stack", novalidate: true, "aria-labelledby": "limits-title",
      onsubmit: (event) => { event.preventDefault(); this.saveLimits(); } },
    h("div", { class: "limits-grid" }, this.fields.map((f) => f.element)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save limits")),
    this.limitsStatus);
    return h("section", { class: "card", "data-testid": "limits-card" },
      h("h3", { id: "limits-title" }, "Budgets and quotas"), form,
      h("p", { class: "meta" }, `Version ${l.version}`, l.updated_by ? ` · last changed by ${l.updated_by}` : ""));
  }

  webhookField(l) {
    const name = "alert_webhook_url";
    const id = nextId(name);
    const input = h("input", { id, name, type: "url", inputmode: "url", autocomplete: "off", spellcheck: "false",
      maxlength: "2048", placeholder: "https://hooks.example.com/…", value: l.alert_webhook_url || "",
      "aria-describedby": `${id}-hint ${id}-last ${id}-error` });
    const error = h("p", { class: "text-error field-error", id: `${id}-error`, "data-error-for": name });
    return {
      name, input, nullable: true, text: true, error,
      element: h("div", { class: "field field-wide" }, h("label", { for: id }, "Alert webhook"), input,
        h("p", { class: "hint", id: `${id}-hint` }, "An https address that receives each budget alert as a JSON "
          + "POST (the same event as EventBridge), once per budget period. Leave empty for none."),
        h("p", { class: "hint", id: `${id}-last`, "data-testid": "webhook-last-delivery" },
          l.alert_webhook_url ? lastDeliveryWords(l.alert_webhook_last_delivery) : ""),
        error),
    };
  }

  async saveLimits() {
    const body = {};
    for (const f of this.fields) {
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
      if (f.text) {
        body[f.name] = f.input.value.trim() || null;
        continue;
      }
      const value = numberOrNull(f.input);
      if (value === null && !f.nullable) {
        this.markField(f.name, "Enter a number.");
        return;
      }
      body[f.name] = value;
    }
    replace(this.limitsStatus, loading("Saving…"));
    try {
      this.limits = (await api("PUT", LIMITS, { json: body, headers: { "If-Match": String(this.limits.version) } })).body;
    } catch (err) {
      this.showSaveError(err, this.limitsStatus, "limits");
      return;
    }
    this.render();
    replace(this.limitsStatus, h("p", { class: "text-ok" }, "Limits saved."));
    this.limitsStatus.focus?.();
  }

  markField(name, message) {
    const f = (this.fields || []).find((x) => x.name === name);
    if (!f) return false;
    f.error.textContent = message;
    f.input.setAttribute("aria-invalid", "true");
    f.input.focus();
    return true;
  }

  showSaveError(err, slot, what) {
    if (err.status === 412) {
      replace(slot, h("div", { class: "alert alert-warn", role: "alert" },
        h("p", {}, `Another admin changed the ${what} while you were editing. Reload to see their version, then apply `
          + "your change again."), h("button", { type: "button", onclick: () => window.location.reload() }, "Reload")));
      return;
    }
    const fields = (err.details && err.details.fields) || [];
    let marked = false;
    for (const f of fields) {
      const name = String(f.field || "").split(".")[0];
      if (this.markField(name, f.message)) marked = true;
    }
    replace(slot, h("p", { class: "text-error", role: "alert" },
      marked ? "Nothing was saved: correct the marked fields." : `Nothing was saved: ${err.message}`,
      fields.length && !marked ? ` (${fields.map((f) => `${f.field}: ${f.message}`).join("; ")})` : ""));
  }

  // -- prices ----------------------------------------------------------------------------------

  renderPricesCard() {
    const rows = this.mergedRows();
    this.pricesStatus = h("div", { class: "form-status", role: "status", "data-testid": "prices-status" });
    const table = h("table", { class: "data-table price-table" },
      h("caption", { class: "visually-hidden" }, "Judge model prices, USD per million tokens"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"), PRICE_FIELDS.map(([, label]) =>
        h("th", { scope: "col" }, label)), h("th", { scope: "col" }, "Batch discount"), h("th", { scope: "col" }, "Source"),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      h("tbody", {}, rows.map((row) => this.priceRow(row))));
    this.newModel = h("input", { id: "new-price-model", name: "new_model", type: "text", autocomplete: "off",
      placeholder: "e.g. claude-sonnet-5-5" });
    this.newVendor = h("select", { id: "new-price-vendor", name: "new_vendor" },
      ["anthropic", "openai"].map((v) => h("option", { value: v }, vendorLabel(v))));
    return h("section", { class: "card", "data-testid": "prices-card" },
      h("h3", {}, "Prices"),
      h("p", { class: "hint" }, "USD per million tokens. The shipped defaults follow the vendors' list prices; an "
        + "override wins for your organisation. A model without a price still runs, but its cost is not tracked."),
      h("div", { class: "table-scroll" }, table),
      h("div", { class: "actions add-price" },
        h("label", { for: "new-price-model" }, "Price another model"), this.newModel,
        h("label", { for: "new-price-vendor", class: "visually-hidden" }, "Vendor"), this.newVendor,
        h("button", { type: "button", onclick: () => this.addModel() }, "Add")),
      h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => this.savePrices() },
        "Save prices")), this.pricesStatus,
      h("p", { class: "meta" }, `Version ${this.prices.version}`));
  }

  mergedRows() {
    const byModel = new Map(this.prices.models.filter((m) => m.source === "default").map((m) => [m.model, m]));
    for (const o of this.overrides) byModel.set(o.model, o);
    return [...byModel.values()].sort((a, b) => (a.vendor + a.model).localeCompare(b.vendor + b.model));
  }

  priceRow(row) {
    const admin = row.source === "admin";
    const cells = PRICE_FIELDS.map(([key, label]) => h("td", {}, admin
      ? h("input", { type: "number", step: "any", min: "0", value: String(row[key]), "aria-label": `${label} price of ${row.model}`,
        "data-model": row.model, "data-key": key, class: "price-input",
        oninput: (e) => { row[key] = e.target.value === "" ? e.target.value : Number(e.target.value); } })
      : String(row[key])));
    const discount = h("td", {}, admin
      ? h("input", { type: "number", step: "0.05", min: "0", max: "1", value: String(row.batch_discount),
        "aria-label": `Batch discount of ${row.model}`, class: "price-input",
        oninput: (e) => { row.batch_discount = Number(e.target.value); } })
      : `${Math.round(row.batch_discount * 100)} %`);
    const action = admin
      ? h("button", { type: "button", class: "button-quiet", onclick: () => this.removeOverride(row.model) }, "Use default")
      : h("button", { type: "button", class: "button-quiet", onclick: () => this.override(row) }, "Override");
    return h("tr", { "data-model": row.model },
      h("th", { scope: "row" }, h("span", { class: "mono" }, row.model), h("span", { class: "hint" }, ` ${vendorLabel(row.vendor)}`)),
      cells, discount,
      h("td", {}, h("span", { class: `badge ${admin ? "badge-info" : "badge-neutral"}` }, admin ? "Override" : "Default")),
      h("td", {}, action));
  }

  override(row) {
    this.overrides.push({ ...row, source: "admin" });
    this.redrawPrices();
  }

  removeOverride(model) {
    this.overrides = this.overrides.filter((o) => o.model !== model);
    this.redrawPrices();
  }

  addModel() {
    const model = this.newModel.value.trim();
    if (!model) return;
    this.overrides.push({ vendor: this.newVendor.value, model, input_usd_per_mtok: 0, output_usd_per_mtok: 0,
      cache_write_usd_per_mtok: 0, cache_read_usd_per_mtok: 0, batch_discount: 0.5, source: "admin" });
    this.redrawPrices();
  }

  redrawPrices() {
    const fresh = this.renderPricesCard();
    this.pricesCard.replaceWith(fresh);
    this.pricesCard = fresh;
  }

  async savePrices() {
    const models = this.overrides.map(({ source, ...row }) => row);
    replace(this.pricesStatus, loading("Saving…"));
    try {
      this.prices = (await api("PUT", PRICES, { json: { models },
        headers: { "If-Match": String(this.prices.version) } })).body;
    } catch (err) {
      if (err.status === 412) {
        this.showSaveError(err, this.pricesStatus, "prices");
        return;
      }
      const fields = (err.details && err.details.fields) || [];
      replace(this.pricesStatus, h("div", { class: "alert alert-error", role: "alert", "data-testid": "prices-error" },
        h("p", {}, "Nothing was saved."),
        h("ul", {}, fields.map((f) => {
          const index = Number(String(f.field).split(".")[1]);
          const model = Number.isInteger(index) && models[index] ? models[index].model : f.field;
          return h("li", {}, `${model}: ${f.message}`);
        }))));
      return;
    }
    this.overrides = this.prices.models.filter((m) => m.source === "admin").map((m) => ({ ...m }));
    this.redrawPrices();
    replace(this.pricesStatus, h("p", { class: "text-ok" }, "Prices saved."));
  }
}
