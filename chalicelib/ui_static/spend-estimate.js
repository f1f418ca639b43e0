// The eval dialog's cost panel: what the run would cost (POST …/eval-runs/estimate for the request as
// currently filled in), what the user's and the organisation's budgets leave, and — when a limit
// would refuse the run — why, in words. Its `quote` goes with the dispatch, so the run reserves
// exactly the estimate shown. A refusal of the dispatch itself (402/429) is explained the same way.

import { api } from "./api.js";
import { h, replace } from "./dom.js";

export function formatUsd(value) {
  if (value === null || value === undefined) return "—";
  if (value > 0 && value < 0.01) return "< $0.01";
  return `$${Number(value).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

const BUDGET_LABEL = { user_daily: "Your daily eval budget", tenant_monthly: "Your organisation's monthly budget" };

function resetsIn(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "";
  return ` (resets ${at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })})`;
}

/** Words for a spend refusal: a 402/429 from dispatch, or an estimate that is blocked. */
export function refusalWords(code, message, details) {
  if (code === "too_many_active_runs") {
    const limit = details && details.limit;
    const who = details && details.quota === "max_active_runs_per_tenant" ? "Your organisation has" : "You have";
    return `${who} as many evaluations queued or running as allowed${limit ? ` (${limit})` : ""}. `
      + "Wait for one to finish, then start this one.";
  }
  if (code === "budget_exceeded") return message;
  return message || "This evaluation cannot start now.";
}

export class CostPanel {
  constructor({ sessionId, currentRequest }) {
    this.sessionId = sessionId;
    this.currentRequest = currentRequest;
    this.quote = null;
    this.blocked = false;
    this.seq = 0;
    this.timer = null;
    this.element = h("section", {
      class: "cost-panel", "aria-live": "polite", "aria-label": "Estimated cost", "data-testid": "cost-panel",
    });
  }

  /** Re-estimate shortly after the last change (typing in the threshold must not send a request a key). */
  schedule(delay = 250) {
    clearTimeout(this.timer);
    // The form changed: the last quote was for another request, so it must not go with a dispatch.
    this.quote = null;
    this.timer = setTimeout(() => this.refresh(), delay);
  }

  async refresh() {
    const request = this.currentRequest();
    const seq = ++this.seq;
    this.quote = null;
    if (request === null) {
      replace(this.element, h("p", { class: "muted" }, "Complete the choices above to see what this evaluation would cost."));
      return;
    }
    replace(this.element, h("p", { class: "muted", "data-testid": "cost-estimating" }, "Estimating the cost…"));
    let estimate;
    try {
      estimate = (await api("POST", `/sessions/${encodeURIComponent(this.sessionId)}/eval-runs/estimate`,
        { json: request })).body;
    } catch (err) {
      if (seq !== this.seq) return;
      this.blocked = false;
      replace(this.element, h("p", { class: "muted" }, `The cost could not be estimated: ${err.message}`));
      return;
    }
    if (seq !== this.seq) return;
    this.quote = estimate.quote || null;
    this.blocked = !estimate.within_limits;
    this.render(estimate);
  }

  render(e) {
    const parts = [h("h3", { class: "cost-title" }, "Cost")];
    if (e.runner === "daemon") {
      parts.push(h("p", { "data-testid": "cost-daemon" },
        "Runs on your daemon with your own Claude or Codex subscription: nothing is charged to your organisation's "
        + "budget."));
    } else if (!e.priced) {
      parts.push(h("div", { class: "alert alert-warn", "data-testid": "cost-unpriced" },
        h("p", {}, `No price is set for ${e.model || "this model"}, so this run's cost cannot be tracked or `
          + "counted against budgets. An admin can add its price under Limits.")));
    } else {
      parts.push(h("p", { class: "cost-figures", "data-testid": "cost-figures" },
        h("span", {}, "Expected about ", h("strong", { "data-testid": "cost-low" }, formatUsd(e.usd_low))),
        h("span", {}, " · at most ", h("strong", { "data-testid": "cost-high" }, formatUsd(e.usd_high))),
        h("span", { class: "hint" }, ` for ${e.questions} question${e.questions === 1 ? "" : "s"}. `
          + "The most it can cost is held from your budget while it runs; the rest comes back when it ends.")));
    }
    if (e.budgets && e.budgets.length && e.runner !== "daemon") {
      parts.push(h("ul", { class: "budget-list" }, e.budgets.map((b) => h("li", { "data-budget": b.budget },
        `${BUDGET_LABEL[b.budget] || b.budget}: `, h("strong", {}, `${formatUsd(b.left_usd)} left`),
        ` of ${formatUsd(b.limit_usd)}${resetsIn(b.resets_at)}`))));
    }
    const a = e.active_runs;
    if (a) {
      parts.push(h("p", { class: "hint" },
        `Running now: ${a.user} of your ${a.user_limit} allowed, ${a.tenant} of ${a.tenant_limit} for your organisation.`));
    }
    if (!e.within_limits) {
      parts.push(h("div", { class: "alert alert-error", role: "alert", "data-testid": "cost-blocked" },
        h("p", { class: "alert-title" }, e.blocked_by === "budget_exceeded" ? "Over budget" : "Too many runs at once"),
        h("p", {}, refusalWords(e.blocked_by, e.reason, null))));
    }
    replace(this.element, parts);
  }
}
