// Automation (admins): online evaluation rules that judge new sessions by themselves — a filter, a
// deterministic sample rate, the vendor and questions, judged now or through the vendor's batch API —
// with what each rule did (sessions matched, runs created, runs skipped and why, the last matches), and
// the organisation's recent eval batches (progress, cost, cancel).

import { api, path } from "./api.js";
import {
  categoryLabel, empty, errorPanel, formatDate, formatNumber, h, ignoreAbort, loading, nextId, openDialog, replace,
  timeEl, vendorLabel,
} from "./dom.js";
import { batchCounts, batchStatusBadge, formatUsd } from "./bulk-eval.js";

const RULES = "/admin/eval-rules";
const FORMATS = { "claude-code": "Claude Code", codex: "Codex", native: "Native trace" };
const MODES = {
  now: ["Now", "judged at once, like the Run button"],
  batch: ["Batch", "through the vendor's batch API at half price, finished within 24 hours"],
};
const REASONS = {
  budget_exceeded: "a budget would have been exceeded",
  vendor_required: "both vendors are enabled and the rule names none",
  vendor_not_enabled: "its vendor is not enabled",
  vendor_suspended: "its vendor's key is suspended",
  no_server_vendor: "no vendor is enabled",
  unknown_question: "a question is no longer in the catalog",
  question_disabled: "a question is disabled in the catalog",
};

export async function renderAutomation(main, ctx) {
  ctx.setTitle("Automation");
  const view = new AutomationView(main, ctx);
  view.renderShell();
  await view.load();
}

function filterSummary(filter) {
  const parts = [];
  if (filter.repository) parts.push(`repository ${filter.repository}`);
  if (filter.format) parts.push(filter.format.map((f) => FORMATS[f] || f).join(" or "));
  if (filter.users) parts.push(`uploaded by ${filter.users.join(", ")}`);
  if (typeof filter.min_entries === "number") parts.push(`at least ${formatNumber(filter.min_entries)} entries`);
  return parts.length ? parts.join(" · ") : "every session";
}

function plural(n, word) {
  return `${formatNumber(n)} ${word}${n === 1 ? "" : "s"}`;
}

function percent(rate) {
  return `${Math.round(rate * 1000) / 10}%`;
}

class AutomationView {
  constructor(main, ctx) {
    this.main = main;
    this.ctx = ctx;
    this.rules = [];
    this.batches = [];
    this.vendors = [];
    this.categories = [];
    this.rulesSlot = h("section", { class: "rules", "aria-labelledby": "rules-title", "data-testid": "rules" });
    this.batchesSlot = h("section", { "aria-labelledby": "batches-title", "data-testid": "batches" });
    this.status = h("p", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "automation-status" });
  }

  renderShell() {
    replace(this.main,
      h("h1", { class: "section-title", tabindex: "-1" }, "Automation"),
      h("p", { class: "lead" }, "Rules judge new sessions by themselves: a session upload that matches a rule's "
        + "filter, and falls inside its sample rate, gets one evaluation per rule. The sample is decided by the "
        + "session alone, so rules with the same rate judge the same sessions. Runs wait for a free active-run "
        + "slot and start as runs end."),
      this.status, this.rulesSlot, this.batchesSlot);
    replace(this.rulesSlot, loading("Loading the rules…"));
    replace(this.batchesSlot, loading("Loading the batches…"));
  }

  async load() {
    const signal = this.ctx.signal;
    const [rules, batches, runners, questions] = await Promise.allSettled([
      api("GET", RULES, { signal }), api("GET", "/eval-batches", { query: { limit: 10 }, signal }),
      api("GET", "/eval/runners", { signal }), api("GET", "/eval/questions", { signal })]);
    for (const result of [rules, batches, runners, questions]) {
      if (result.status === "rejected" && result.reason && result.reason.name === "AbortError") return;
    }
    if (runners.status === "fulfilled") this.vendors = runners.value.body.server.vendors;
    if (questions.status === "fulfilled") {
      this.categories = [...new Set(questions.value.body.questions.map((q) => q.category))];
    }
    if (rules.status === "fulfilled") {
      this.rules = rules.value.body.items;
      this.maxRules = rules.value.body.max_rules;
      this.renderRules();
    } else {
      replace(this.rulesSlot, errorPanel(rules.reason, () => this.load()));
    }
    if (batches.status === "fulfilled") {
      this.batches = batches.value.body.items;
      this.renderBatches();
    } else {
      replace(this.batchesSlot, errorPanel(batches.reason, () => this.load()));
    }
  }

  // -- rules ----------------------------------------------------------------------------------------
  renderRules() {
    const add = h("button", { type: "button", class: "primary", "data-testid": "new-rule",
      disabled: this.rules.length >= (this.maxRules || 50), onclick: () => this.editRule(null) }, "New rule");
    const header = h("div", { class: "card-header" }, h("h2", { id: "rules-title" }, "Rules"), add);
    if (!this.rules.length) {
      replace(this.rulesSlot, header, empty("No rules yet. A rule judges matching sessions as they are uploaded."));
      return;
    }
    replace(this.rulesSlot, header,
      h("ul", { class: "rule-list", "data-testid": "rule-list" }, this.rules.map((rule) => this.ruleCard(rule))));
  }

  ruleCard(rule) {
    const stats = rule.stats;
    const skipped = Object.entries(stats.skipped || {});
    const titleId = nextId("rule");
    return h("li", { class: ["card", "rule-card", rule.enabled ? null : "rule-off"], "data-rule": rule.rule_id,
      "aria-labelledby": titleId },
    h("div", { class: "card-header" },
      h("h3", { id: titleId }, rule.name),
      h("span", { class: ["badge", rule.enabled ? "badge-pass" : "badge-neutral"] }, rule.enabled ? "On" : "Off")),
    h("p", { class: "meta rule-what" },
      `${percent(rule.sample_rate)} of ${filterSummary(rule.filter)} · `,
      rule.questions ? rule.questions.map(categoryLabel).join(", ") : "all questions",
      ` · ${rule.vendor ? vendorLabel(rule.vendor) : "the enabled vendor"} · ${MODES[rule.mode][0]} mode`),
    h("ul", { class: "inline-list stat-line", "data-testid": "rule-stats" },
      h("li", {}, h("strong", {}, formatNumber(stats.matched)), " matched"),
      h("li", {}, h("strong", {}, formatNumber(stats.runs)), stats.runs === 1 ? " run" : " runs"),
      h("li", {}, h("strong", {}, formatNumber(rule.skipped_total)), " skipped"),
      h("li", {}, h("strong", {}, formatNumber(stats.sampled_out)), " not sampled")),
    skipped.length ? h("ul", { class: "skip-reasons", "aria-label": "Why runs were skipped" },
      skipped.map(([code, n]) => h("li", {}, `${formatNumber(n)} × ${REASONS[code] || code} (${code})`))) : null,
    stats.last_matches.length
      ? h("details", { class: "last-matches" }, h("summary", {}, stats.last_matches.length === 1 ? "Last match"
        : `Last ${stats.last_matches.length} matches`),
        h("ul", { class: "match-list" }, stats.last_matches.map((m) => h("li", {},
          h("a", { href: `#/sessions/${encodeURIComponent(m.session_id)}${m.eval_run_id ? `/runs/${encodeURIComponent(m.eval_run_id)}` : ""}` },
            m.session_id),
          " ", h("span", { class: ["badge", m.outcome === "run" ? "badge-info" : "badge-warn"] },
            m.outcome === "run" ? "run" : "skipped"),
          m.reason ? ` ${REASONS[m.reason] || m.reason}` : "", " · ", timeEl(m.at)))))
      : h("p", { class: "muted small" }, "No session has matched yet."),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => this.editRule(rule), "aria-label": `Edit rule ${rule.name}` }, "Edit"),
      h("button", { type: "button", "aria-label": `${rule.enabled ? "Turn off" : "Turn on"} rule ${rule.name}`,
        onclick: () => ignoreAbort(this.toggle(rule)) }, rule.enabled ? "Turn off" : "Turn on"),
      h("button", { type: "button", class: "button-quiet", "aria-label": `Delete rule ${rule.name}`,
        onclick: () => this.confirmDelete(rule) }, "Delete")));
  }

  async toggle(rule) {
    const body = ruleInput(rule);
    body.enabled = !rule.enabled;
    try {
      await api("PUT", path`/admin/eval-rules/${rule.rule_id}`, { json: body, headers: { "If-Match": String(rule.version) } });
    } catch (err) {
      if (err.name === "AbortError") return;
      this.say(`The rule could not be changed: ${err.message}`, true);
      return;
    }
    this.say(`Rule "${rule.name}" is ${body.enabled ? "on" : "off"}.`);
    await this.load();
    this.rulesSlot.querySelector(`[data-rule="${rule.rule_id}"] button:nth-child(2)`)?.focus();
  }

  confirmDelete(rule) {
    const remove = h("button", { type: "button", class: "primary" }, "Delete the rule");
    const dialog = openDialog({
      title: `Delete rule "${rule.name}"?`,
      content: [h("p", {}, "Sessions uploaded from now on are no longer judged by it. Runs it created stay."),
        h("div", { class: "actions" }, remove,
          h("button", { type: "button", onclick: () => dialog.close() }, "Keep it"))],
    });
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try {
        await api("DELETE", path`/admin/eval-rules/${rule.rule_id}`);
      } catch (err) {
        remove.disabled = false;
        this.say(`The rule could not be deleted: ${err.message}`, true);
        dialog.close();
        return;
      }
      dialog.close();
      this.say(`Rule "${rule.name}" deleted.`);
      await ignoreAbort(this.load());
      this.rulesSlot.querySelector("[data-testid=new-rule]")?.focus();
    });
  }

  editRule(rule) {
    const form = new RuleForm(rule, { vendors: this.vendors, categories: this.categories });
    const dialog = openDialog({ title: rule ? `Edit rule "${rule.name}"` : "New rule", content: form.element,
      className: "rule-dialog" });
    form.onCancel = () => dialog.close();
    form.onSave = async (body) => {
      const headers = rule ? { "If-Match": String(rule.version) } : undefined;
      const saved = rule
        ? await api("PUT", path`/admin/eval-rules/${rule.rule_id}`, { json: body, headers })
        : await api("POST", RULES, { json: body });
      dialog.close();
      this.say(`Rule "${saved.body.name}" ${rule ? "saved" : "created"}.`);
      await ignoreAbort(this.load());
      this.rulesSlot.querySelector(`[data-rule="${saved.body.rule_id}"] button`)?.focus();
    };
    form.focusFirst();
  }

  say(text, error = false) {
    replace(this.status, h("span", { class: error ? "text-error" : "text-ok" }, text));
  }

  // -- batches --------------------------------------------------------------------------------------
  renderBatches() {
    const header = h("h2", { id: "batches-title" }, "Recent eval batches");
    if (!this.batches.length) {
      replace(this.batchesSlot, header,
        empty("No batch yet. Select sessions on the Sessions page and choose \u201cEvaluate selected\u201d."));
      return;
    }
    replace(this.batchesSlot, header, h("ul", { class: "batch-list", "data-testid": "batch-list" },
      this.batches.map((batch) => h("li", { class: "card batch-card", "data-batch": batch.batch_id },
        h("div", { class: "card-header" },
          h("h3", {}, `${plural(batch.runs, "session")} · ${MODES[batch.mode][0]} mode`),
          batchStatusBadge(batch.status)),
        h("p", { class: "meta" }, "Started ", timeEl(batch.created_at), ` by ${batch.created_by}`,
          batch.finished_at ? [" · finished ", timeEl(batch.finished_at)] : null),
        h("p", {}, batchCounts(batch), " · cost so far ", h("strong", {}, formatUsd(batch.cost.usd))),
        batch.status === "running"
          ? h("div", { class: "actions" }, h("button", { type: "button", "aria-label": `Cancel batch of ${batch.runs} sessions started ${formatDate(batch.created_at)}`,
            onclick: (event) => ignoreAbort(this.cancelBatch(batch, event.currentTarget)) }, "Cancel batch"))
          : null))));
  }

  async cancelBatch(batch, button) {
    button.disabled = true;
    try {
      await api("POST", path`/eval-batches/${batch.batch_id}/cancel`);
    } catch (err) {
      button.disabled = false;
      if (err.name !== "AbortError") this.say(`The batch could not be cancelled: ${err.message}`, true);
      return;
    }
    this.say("The batch was cancelled: runs that had not ended are cancelled.");
    await this.load();
  }
}

function ruleInput(rule) {
  return {
    name: rule.name, enabled: rule.enabled, filter: rule.filter, sample_rate: rule.sample_rate,
    vendor: rule.vendor, questions: rule.questions, mode: rule.mode,
  };
}

// The rule editor: every field the API takes, its own checks for what the browser can know (the API
// stays the authority: its 400s are shown next to the field it names).
class RuleForm {
  constructor(rule, { vendors, categories }) {
    this.rule = rule;
    this.errors = new Map();
    const r = rule || { name: "", enabled: true, filter: {}, sample_rate: 1, vendor: null, questions: null, mode: "now" };
    const field = (name, label, input, hint) => {
      const hintId = hint ? nextId("hint") : null;
      if (hintId) input.setAttribute("aria-describedby", hintId);
      const error = h("p", { class: "field-error text-error", role: "alert" });
      this.errors.set(name, { error, input });
      return h("div", { class: "field", "data-field": name }, h("label", { for: input.id }, label), input,
        hint ? h("p", { class: "hint", id: hintId }, hint) : null, error);
    };
    this.name = h("input", { id: nextId("rule-name"), type: "text", required: true, maxlength: 100, value: r.name });
    this.enabled = h("input", { id: nextId("rule-on"), type: "checkbox", checked: r.enabled });
    this.repository = h("input", { id: nextId("rule-repo"), type: "text", maxlength: 200, spellcheck: "false",
      value: r.filter.repository || "", placeholder: "github.com/acme/*" });
    this.users = h("input", { id: nextId("rule-users"), type: "text", value: (r.filter.users || []).join(", "),
      placeholder: "alice, bob" });
    this.minEntries = h("input", { id: nextId("rule-min"), type: "number", min: 0, step: 1, inputmode: "numeric",
      value: typeof r.filter.min_entries === "number" ? String(r.filter.min_entries) : "" });
    this.rate = h("input", { id: nextId("rule-rate"), type: "number", min: 0, max: 100, step: "any", required: true,
      value: String(Math.round(r.sample_rate * 1000) / 10) });
    this.vendor = h("select", { id: nextId("rule-vendor") },
      h("option", { value: "", selected: !r.vendor }, "The enabled vendor (when there is only one)"),
      ["anthropic", "openai"].map((v) => h("option", { value: v, selected: r.vendor === v, disabled: !vendors.includes(v) && r.vendor !== v },
        `${vendorLabel(v)}${vendors.includes(v) ? "" : " (not enabled)"}`)));
    this.formats = Object.entries(FORMATS).map(([value, label]) => {
      const id = nextId("rule-format");
      const box = h("input", { id, type: "checkbox", value, checked: (r.filter.format || []).includes(value) });
      return { box, el: h("div", { class: "choice" }, box, h("label", { for: id }, label)) };
    });
    this.questionBoxes = categories.map((category) => {
      const id = nextId("rule-cat");
      const box = h("input", { id, type: "checkbox", value: category, checked: (r.questions || []).includes(category) });
      return { box, el: h("div", { class: "choice" }, box, h("label", { for: id }, categoryLabel(category))) };
    });
    const modeName = nextId("rule-mode");
    this.modes = Object.entries(MODES).map(([value, [label, hint]]) => {
      const id = nextId("rule-mode-option");
      const radio = h("input", { id, type: "radio", name: modeName, value, checked: r.mode === value });
      return { radio, el: h("div", { class: "choice" }, radio, h("label", { for: id }, label, " ", h("span", { class: "hint" }, hint))) };
    });
    const formatsError = h("p", { class: "field-error text-error", role: "alert" });
    this.errors.set("filter.format", { error: formatsError, input: this.formats[0].box });
    const questionsError = h("p", { class: "field-error text-error", role: "alert" });
    this.errors.set("questions", { error: questionsError, input: this.questionBoxes[0]?.box || this.name });
    this.status = h("div", { class: "form-status", role: "status", "aria-live": "polite" });
    this.save = h("button", { type: "submit", class: "primary" }, rule ? "Save rule" : "Create rule");
    this.element = h("form", { class: "stack", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      ignoreAbort(this.submit());
    } },
    field("name", "Name", this.name),
    h("div", { class: "checkbox-field" }, this.enabled, h("label", { for: this.enabled.id }, "On: judge matching uploads")),
    h("fieldset", { class: "fieldset" }, h("legend", {}, "Which sessions"),
      field("filter.repository", "Repository (glob, optional)", this.repository,
        "Whole repository, case-insensitive: * any characters (also /), ? one, [a-z] a set."),
      h("div", { class: "field", "data-field": "filter.format", role: "group", "aria-label": "Formats (none: all)" },
        h("span", { class: "field-label" }, "Formats (none ticked: all)"), this.formats.map((f) => f.el), formatsError),
      field("filter.users", "Uploaded by (optional, comma-separated)", this.users),
      field("filter.min_entries", "At least this many entries (optional)", this.minEntries),
      field("sample_rate", "Sample rate (%)", this.rate,
        "The share of matching sessions judged. The same sessions for every rule with the same rate.")),
    h("fieldset", { class: "fieldset" }, h("legend", {}, "How"),
      field("vendor", "Vendor", this.vendor),
      h("div", { class: "field", "data-field": "questions", role: "group", "aria-label": "Questions (none: all)" },
        h("span", { class: "field-label" }, "Question categories (none ticked: all)"), this.questionBoxes.map((q) => q.el),
        questionsError),
      h("div", { class: "field", "data-field": "mode", role: "radiogroup", "aria-label": "Mode" },
        h("span", { class: "field-label" }, "Mode"), this.modes.map((m) => m.el))),
    h("div", { class: "actions" }, this.save,
      h("button", { type: "button", onclick: () => this.onCancel && this.onCancel() }, "Cancel")),
    this.status);
  }

  focusFirst() {
    this.name.focus();
  }

  body() {
    const filter = {};
    if (this.repository.value.trim()) filter.repository = this.repository.value.trim();
    const formats = this.formats.filter((f) => f.box.checked).map((f) => f.box.value);
    if (formats.length) filter.format = formats;
    const users = this.users.value.split(",").map((u) => u.trim()).filter(Boolean);
    if (users.length) filter.users = users;
    if (this.minEntries.value !== "") filter.min_entries = Number(this.minEntries.value);
    const questions = this.questionBoxes.filter((q) => q.box.checked).map((q) => q.box.value);
    return {
      name: this.name.value.trim(), enabled: this.enabled.checked, filter,
      sample_rate: Number(this.rate.value) / 100, vendor: this.vendor.value || null,
      questions: questions.length ? questions : null,
      mode: (this.modes.find((m) => m.radio.checked) || this.modes[0]).radio.value,
    };
  }

  showErrors(fields) {
    for (const { error } of this.errors.values()) error.textContent = "";
    let first = null;
    for (const { field, message } of fields) {
      const key = [...this.errors.keys()].find((k) => field === k || field.startsWith(`${k}.`)) || null;
      const target = key ? this.errors.get(key) : null;
      if (target) {
        target.error.textContent = message;
        first = first || target.input;
      }
    }
    return first;
  }

  async submit() {
    const problems = [];
    if (!this.name.value.trim()) problems.push({ field: "name", message: "Give the rule a name." });
    const rate = Number(this.rate.value);
    if (this.rate.value === "" || Number.isNaN(rate) || rate < 0 || rate > 100) {
      problems.push({ field: "sample_rate", message: "A percentage from 0 to 100." });
    }
    if (problems.length) {
      this.showErrors(problems)?.focus();
      return;
    }
    this.save.disabled = true;
    replace(this.status, loading("Saving the rule…"));
    try {
      await this.onSave(this.body());
    } catch (err) {
      this.save.disabled = false;
      replace(this.status, h("p", { class: "text-error", role: "alert" }, err.message));
      const fields = (err.details && err.details.fields) || [];
      this.showErrors(fields.map((f) => ({ field: f.field, message: f.message })))?.focus();
    }
  }
}
