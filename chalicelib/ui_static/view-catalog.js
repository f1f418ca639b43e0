// Judge catalog (admins): the organisation's judge questions in the order judges see them. The 13
// built-ins can be disabled and moved, never edited; the organisation's own questions can be added,
// edited, disabled, moved and removed. Changes stay in this page until "Save catalog" stores them as
// a new version (If-Match: a concurrent save answers 412 and the page says who saved). Any question,
// saved or not, can be previewed (the exact prompt one judge call sends) and tried on a session: a
// one-question run through the server worker that this page follows live.

import { api, idempotencyKey } from "./api.js";
import {
  adminsOnly, categoryLabel, errorPanel, h, loading, nextId, openDialog, replace, timeEl, vendorLabel,
} from "./dom.js";
import { forgetQuestions } from "./questions.js";
import { mountRun } from "./run-panel.js";

const CATALOG = "/admin/eval-questions";
const BUILTIN_CATEGORIES = ["safety", "plan_adherence", "quality", "efficiency"];
// The same rules the API applies (it stays the authority: its 400s are shown next to the field).
const ID_RULE = /^[a-z][a-z0-9_]{2,40}$/;
const CATEGORY_RULE = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;

const ACTIONS = {
  added: "added", removed: "removed", enabled: "enabled", disabled: "disabled", edited: "edited", reordered: "reordered",
};

export async function renderCatalog(main, ctx) {
  ctx.setTitle("Judge catalog");
  const header = [
    h("h1", { class: "section-title", tabindex: "-1" }, "Judge catalog"),
    h("p", { class: "lead" },
      "The questions every evaluation of your organisation asks, in this order, on the server runner and on ",
      "daemons alike. The 13 built-in questions can be switched off or moved; add your own team's standards ",
      "with a rubric saying what each score means. Saving makes a new version: runs record the version they ",
      "used, and reruns judge that same version."),
  ];
  replace(main, ...header, loading("Loading the judge catalog…"));
  const view = new CatalogView(main, header, ctx);
  await view.load();
}

function copyEntry(q) {
  return {
    id: q.id, category: q.category, text: q.text, rubric: q.rubric || null, needs_tools: Boolean(q.needs_tools),
    enabled: q.enabled !== false, builtin: Boolean(q.builtin), prompt: q.prompt || null,
  };
}

function toInput(entry) {
  if (entry.builtin) return { id: entry.id, enabled: entry.enabled };
  return {
    id: entry.id, category: entry.category, text: entry.text, rubric: entry.rubric, needs_tools: entry.needs_tools,
    enabled: entry.enabled,
  };
}

function toDraft(entry) {
  return { id: entry.id, category: entry.category, text: entry.text, rubric: entry.rubric, needs_tools: entry.needs_tools };
}

class CatalogView {
  constructor(main, header, ctx) {
    this.main = main;
    this.header = header;
    this.ctx = ctx;
    this.server = null;
    this.entries = [];
    this.errors = new Map();
    this.message = null;
    this.conflict = null;
    this.audit = null;
    this.sessions = null;
    this.runners = null;
  }

  async load() {
    let body;
    try {
      body = (await api("GET", CATALOG, { signal: this.ctx.signal })).body;
    } catch (err) {
      if (err.name === "AbortError") throw err;
      if (err.status === 403) {
        adminsOnly(this.main, this.ctx, ["The judge catalog can only be changed by an admin of your organisation. ",
          "The questions your evaluations ask are listed in the Run evaluation dialog of any session."],
        h("a", { href: "#/sessions" }, "Back to sessions"));
        return;
      }
      replace(this.main, ...this.header, errorPanel(err, () => this.reload()));
      return;
    }
    this.adopt(body);
    this.render();
    this.loadAudit();
    this.loadSessions();
  }

  adopt(body) {
    this.server = body;
    this.entries = body.questions.map(copyEntry);
    this.errors = new Map();
    this.conflict = null;
  }

  async reload() {
    replace(this.main, ...this.header, loading("Loading the judge catalog…"));
    this.message = null;
    try {
      await this.load();
    } catch (err) {
      if (err.name !== "AbortError") throw err;
      return;
    }
    this.main.querySelector("h1")?.focus();
  }

  async loadAudit() {
    try {
      this.audit = (await api("GET", `${CATALOG}/audit`, { signal: this.ctx.signal })).body.items;
      this.auditError = null;
    } catch (err) {
      if (err.name === "AbortError") return;
      this.auditError = err;
    }
    this.renderAudit();
  }

  async loadSessions() {
    // For "try it" and previews with a real trace; the runners decide whether a vendor must be chosen.
    const [sessions, runners] = await Promise.allSettled([
      api("GET", "/sessions", { query: { limit: 50 }, signal: this.ctx.signal }),
      api("GET", "/eval/runners", { signal: this.ctx.signal }),
    ]);
    this.sessions = sessions.status === "fulfilled" ? sessions.value.body.items : [];
    this.runners = runners.status === "fulfilled" ? runners.value.body : null;
  }

  get dirty() {
    return JSON.stringify(this.entries.map(toInput)) !== JSON.stringify(this.server.questions.map((q) => toInput(copyEntry(q))));
  }

  // -- page --------------------------------------------------------------------------------------

  render() {
    const s = this.server;
    const enabled = this.entries.filter((e) => e.enabled).length;
    const custom = this.entries.filter((e) => !e.builtin).length;
    this.statusSlot = h("div", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "catalog-status" },
      this.message ? h("p", { class: this.message.kind === "error" ? "text-error" : this.message.kind === "ok" ? "text-ok" : "" },
        this.message.text) : null);
    this.conflictSlot = h("div", { class: "conflict-slot" });
    this.auditSlot = h("section", { class: "audit", "aria-labelledby": "catalog-audit-title" },
      h("h2", { id: "catalog-audit-title" }, "Change history"), loading("Loading the change history…"));
    const save = h("button", {
      type: "button", class: "primary", "data-testid": "save-catalog", disabled: !this.dirty,
      onclick: () => this.save(save),
    }, "Save catalog");
    const discard = h("button", {
      type: "button", disabled: !this.dirty, onclick: () => {
        this.adopt(this.server);
        this.message = { kind: "info", text: "Your unsaved changes were discarded." };
        this.rerender('[data-testid="add-question"]');
      },
    }, "Discard changes");
    const add = h("button", {
      type: "button", "data-testid": "add-question", "aria-haspopup": "dialog", onclick: () => this.openEditor(null),
    }, "Add question");
    const summary = h("p", { class: "muted", "data-testid": "catalog-summary" },
      `Version ${s.version}`, s.updated_at ? [" · saved ", timeEl(s.updated_at), s.updated_by ? ` by ${s.updated_by}` : ""] : " · the built-in catalog",
      ` · ${enabled} of ${this.entries.length} questions enabled · ${custom} of your own`,
      this.dirty ? h("strong", { class: "unsaved" }, " · unsaved changes") : null);
    replace(this.main, ...this.header, this.conflictSlot,
      h("section", { class: "card", "aria-labelledby": "catalog-questions-title" },
        h("div", { class: "card-header" }, h("h2", { id: "catalog-questions-title" }, "Questions"),
          h("div", { class: "actions" }, add)),
        summary,
        h("ol", { class: "catalog-list", "data-testid": "catalog-list" }, this.entries.map((e, i) => this.row(e, i))),
        h("div", { class: "actions catalog-save" }, save, discard),
        this.statusSlot),
      this.auditSlot);
    if (this.conflict) this.renderConflict();
    if (this.audit || this.auditError) this.renderAudit();
  }

  rerender(focusSelector) {
    this.render();
    const target = focusSelector && this.main.querySelector(focusSelector);
    if (target && !target.disabled) target.focus();
  }

  row(entry, index) {
    const last = index === this.entries.length - 1;
    const textId = `q-${entry.id}-text`;
    const toggleId = `q-${entry.id}-enabled`;
    const errors = this.errors.get(index) || [];
    const toggle = h("input", {
      type: "checkbox", id: toggleId, checked: entry.enabled, "aria-describedby": textId,
      onchange: () => {
        entry.enabled = toggle.checked;
        this.message = null;
        this.rerender(`#${toggleId}`);
      },
    });
    const move = (delta, label) => h("button", {
      type: "button", class: "button-small", "aria-label": `${label}: ${entry.id}`,
      disabled: (delta < 0 && index === 0) || (delta > 0 && last), "data-action": label.toLowerCase().replace(" ", "-"),
      onclick: () => {
        const [moved] = this.entries.splice(index, 1);
        this.entries.splice(index + delta, 0, moved);
        this.errors = new Map();
        this.message = null;
        const focusLabel = (index + delta === 0 && delta < 0) || (index + delta === this.entries.length - 1 && delta > 0)
          ? (delta < 0 ? "Move down" : "Move up") : label;
        this.rerender(`[data-question="${entry.id}"] button[aria-label="${focusLabel}: ${entry.id}"]`);
      },
    }, label === "Move up" ? "↑" : "↓");
    const actions = [
      move(-1, "Move up"), move(1, "Move down"),
      entry.builtin ? null : h("button", {
        type: "button", class: "button-small", "aria-haspopup": "dialog", "aria-label": `Edit: ${entry.id}`,
        onclick: () => this.openEditor(index),
      }, "Edit"),
      h("button", {
        type: "button", class: "button-small", "aria-haspopup": "dialog", "aria-label": `Preview prompt: ${entry.id}`,
        onclick: () => this.openPreview(entry),
      }, "Preview"),
      h("button", {
        type: "button", class: "button-small", "aria-haspopup": "dialog", "aria-label": `Try on a session: ${entry.id}`,
        onclick: () => this.openTry(entry),
      }, "Try"),
      entry.builtin ? null : h("button", {
        type: "button", class: "button-small danger", "aria-label": `Remove: ${entry.id}`,
        onclick: () => {
          this.entries.splice(index, 1);
          this.errors = new Map();
          this.message = { kind: "info", text: `Removed ${entry.id} (not saved yet).` };
          this.rerender('[data-testid="add-question"]');
        },
      }, "Remove"),
    ];
    return h("li", {
      class: ["catalog-row", entry.enabled ? null : "catalog-row-off", errors.length ? "catalog-row-error" : null],
      "data-question": entry.id, "data-enabled": String(entry.enabled), "data-builtin": String(entry.builtin),
    },
    h("div", { class: "catalog-toggle" }, toggle, h("label", { for: toggleId }, "Enabled",
      h("span", { class: "visually-hidden" }, `: ${entry.id}`))),
    h("div", { class: "catalog-main" },
      h("p", { class: "catalog-text", id: textId }, entry.text),
      h("p", { class: "catalog-meta" },
        h("span", { class: "mono" }, entry.id), " ",
        h("span", { class: "tag", "data-testid": "category" }, categoryLabel(entry.category)), " ",
        h("span", { class: ["tag", entry.builtin ? "tag-builtin" : "tag-custom"] }, entry.builtin ? "Built-in" : "Your question"),
        entry.needs_tools ? [" ", h("span", { class: "tag" }, "Uses tools")] : null,
        entry.rubric ? [" ", h("span", { class: "tag" }, "Rubric")] : null),
      errors.length ? h("ul", { class: "field-errors", "data-testid": "row-errors" },
        errors.map((e) => h("li", { class: "text-error" }, `${e.field.replace(/^questions\.\d+\.?/, "") || "question"}: ${e.message}`))) : null),
    h("div", { class: "actions catalog-actions" }, actions));
  }

  renderConflict() {
    const c = this.conflict;
    const d = c.details || {};
    replace(this.conflictSlot, h("div", { class: "alert alert-warn", role: "alert", "data-testid": "catalog-conflict" },
      h("p", { class: "alert-title" }, "Someone else saved the catalog meanwhile"),
      h("p", {}, `${d.updated_by || "Another admin"} saved version ${d.current_version}`,
        d.updated_at ? [" at ", timeEl(d.updated_at)] : null,
        ". Your changes were not saved; they are still shown below. Reload to start again from the latest version."),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => this.reload() }, "Reload the latest version"))));
  }

  renderAudit() {
    if (!this.auditSlot) return;
    const title = h("h2", { id: "catalog-audit-title" }, "Change history");
    if (this.auditError) {
      replace(this.auditSlot, title, errorPanel(this.auditError, () => this.loadAudit()));
      return;
    }
    if (!this.audit.length) {
      replace(this.auditSlot, title, h("p", { class: "muted" }, "No changes yet: this is the built-in catalog."));
      return;
    }
    replace(this.auditSlot, title, h("ol", { class: "audit-list", "data-testid": "catalog-audit" }, this.audit.map((a) => h("li", { class: "audit-item" },
      h("p", { class: "audit-head" }, h("strong", {}, `Version ${a.version}`), " · ", h("strong", {}, a.by), " · ", timeEl(a.at)),
      h("ul", { class: "change-list" }, a.changes.map((c) => h("li", {},
        c.question_id ? [h("span", { class: "mono" }, c.question_id), ` ${ACTIONS[c.action] || c.action}`] : "questions reordered",
        c.fields && c.fields.length ? ` (${c.fields.join(", ")})` : "")))))));
  }

  // -- save --------------------------------------------------------------------------------------

  async save(button) {
    if (!this.entries.some((e) => e.enabled)) {
      this.showStatus("error", "At least one question must stay enabled.");
      return;
    }
    button.disabled = true;
    this.showStatus("info", "Saving…");
    try {
      const response = await api("PUT", CATALOG, {
        json: { questions: this.entries.map(toInput) }, headers: { "If-Match": String(this.server.version) },
        signal: this.ctx.signal,
      });
      forgetQuestions();
      const before = this.server.version;
      this.adopt(response.body);
      this.message = {
        kind: "ok",
        text: response.body.version === before ? "Nothing changed." : `Saved as version ${response.body.version}.`,
      };
      this.rerender('[data-testid="add-question"]');
      this.loadAudit();
    } catch (err) {
      button.disabled = false;
      if (err.name === "AbortError") return;
      if (err.status === 412) {
        this.conflict = err;
        this.renderConflict();
        this.showStatus("error", "Not saved: someone else saved the catalog meanwhile (see above).");
        this.conflictSlot.querySelector("button")?.focus();
        return;
      }
      if (err.status === 400 && err.details && Array.isArray(err.details.fields)) {
        this.errors = new Map();
        const general = [];
        for (const f of err.details.fields) {
          const match = /^questions\.(\d+)/.exec(f.field || "");
          if (match) {
            const i = Number(match[1]);
            this.errors.set(i, [...(this.errors.get(i) || []), f]);
          } else general.push(f.message);
        }
        const rows = this.errors.size;
        this.message = {
          kind: "error",
          text: `Not saved: ${[rows ? `${rows} question${rows === 1 ? " needs" : "s need"} attention (marked below)` : null, ...general].filter(Boolean).join(" ")}`,
        };
        this.rerender(".catalog-row-error button");
        return;
      }
      this.showStatus("error", `Not saved: ${err.message}`);
    }
  }

  showStatus(kind, text) {
    this.message = { kind, text };
    replace(this.statusSlot, h("p", { class: kind === "error" ? "text-error" : kind === "ok" ? "text-ok" : "" }, text));
  }

  // -- editor ------------------------------------------------------------------------------------

  categories() {
    return [...new Set([...BUILTIN_CATEGORIES, ...this.entries.map((e) => e.category)])];
  }

  openEditor(index) {
    const existing = index === null ? null : this.entries[index];
    const draft = existing ? { ...existing } : {
      id: "", category: "", text: "", rubric: null, needs_tools: false, enabled: true, builtin: false, prompt: null,
    };
    const limits = this.server.limits || {};
    const listId = nextId("categories");
    const field = (name, label, control, help) => {
      const helpId = `${control.id}-help`;
      control.setAttribute("aria-describedby", helpId);
      // An error describes the value it was found in: editing the field retires it.
      control.addEventListener("input", () => {
        const error = control.parentElement.querySelector(".field-error");
        if (error && error.textContent) {
          error.textContent = "";
          control.setAttribute("aria-invalid", "false");
          control.removeAttribute("aria-errormessage");
        }
      });
      return h("div", { class: "field", "data-field": name }, h("label", { for: control.id }, label), control,
        h("p", { class: "hint", id: helpId }, help), h("p", { class: "text-error field-error", id: `${control.id}-error`, "aria-live": "polite" }));
    };
    const idInput = h("input", { id: nextId("qid"), name: "id", type: "text", autocomplete: "off", spellcheck: "false", value: draft.id, required: true });
    const category = h("input", { id: nextId("qcat"), name: "category", type: "text", list: listId, autocomplete: "off", spellcheck: "false", value: draft.category, required: true });
    const text = h("textarea", { id: nextId("qtext"), name: "text", rows: 4, required: true, maxlength: limits.max_text_chars || 2000 });
    text.value = draft.text;
    const rubric = h("textarea", { id: nextId("qrubric"), name: "rubric", rows: 5, maxlength: limits.max_rubric_chars || 4000 });
    rubric.value = draft.rubric || "";
    const toolsId = nextId("qtools");
    const tools = h("input", {
      type: "checkbox", id: toolsId, name: "needs_tools", checked: draft.needs_tools, "aria-describedby": `${toolsId}-help`,
    });
    const status = h("div", { class: "form-status", role: "status", "aria-live": "polite" });
    const read = () => ({
      id: idInput.value.trim(), category: category.value.trim(), text: text.value.trim(),
      rubric: rubric.value.trim() || null, needs_tools: tools.checked,
    });
    const fields = { id: idInput, category, text, rubric };
    const showErrors = (problems) => {
      for (const [name, control] of Object.entries(fields)) {
        const message = problems[name] || "";
        control.parentElement.querySelector(".field-error").textContent = message;
        control.setAttribute("aria-invalid", message ? "true" : "false");
        if (message) control.setAttribute("aria-errormessage", `${control.id}-error`);
        else control.removeAttribute("aria-errormessage");
      }
      const first = Object.keys(fields).find((n) => problems[n]);
      if (first) fields[first].focus();
      return !first;
    };
    const check = () => {
      const q = read();
      const problems = {};
      const builtinIds = new Set(this.entries.filter((e) => e.builtin).map((e) => e.id));
      const otherIds = new Set(this.entries.filter((e) => e !== existing).map((e) => e.id));
      if (!ID_RULE.test(q.id)) problems.id = "3-41 characters of a-z, 0-9 and _, starting with a letter.";
      else if (builtinIds.has(q.id)) problems.id = `"${q.id}" is a built-in question id; choose another.`;
      else if (otherIds.has(q.id)) problems.id = `Another question already has the id "${q.id}".`;
      if (!q.category) problems.category = "Choose a built-in category or name a new one.";
      else if (q.category.length < 3 || q.category.length > 41 || !CATEGORY_RULE.test(q.category)) {
        problems.category = "snake_case: words of a-z and 0-9 joined by single underscores (3-41 characters).";
      } else if (otherIds.has(q.category) || q.category === q.id) {
        problems.category = "A category cannot have the name of a question.";
      }
      if (!q.text) problems.text = "Write the question the judge answers.";
      return showErrors(problems) ? q : null;
    };
    let dialog;
    const apply = h("button", {
      type: "submit", class: "primary",
    }, existing ? "Apply changes" : "Add to the catalog");
    const form = h("form", {
      class: "stack", novalidate: true,
      onsubmit: (event) => {
        event.preventDefault();
        const q = check();
        if (!q) return;
        const entry = { ...draft, ...q };
        if (existing) this.entries[index] = entry;
        else this.entries.push(entry);
        this.errors = new Map();
        this.message = { kind: "info", text: `${existing ? "Updated" : "Added"} ${entry.id}: save the catalog to use it in evaluations.` };
        dialog.close();
        this.rerender(`[data-question="${entry.id}"] button[aria-label="Edit: ${entry.id}"]`);
      },
    },
    field("id", "Id", idInput, "Used in results and in the questions/skip of a run request, e.g. changelog_updated."),
    h("datalist", { id: listId }, this.categories().map((c) => h("option", { value: c }))),
    field("category", "Category", category,
      "One of safety, plan_adherence, quality, efficiency, or a new one in snake_case (results list the four built-in categories first)."),
    field("text", "Question", text, "What the judge answers about the session. 5 must mean no concerns."),
    field("rubric", "Rubric (optional)", rubric, `What each score means for this question, e.g. "5: …, 3: …, 1: …" (up to ${limits.max_rubric_chars || 4000} characters).`),
    h("div", { class: "choice" }, tools, h("div", {}, h("label", { for: toolsId }, "Judge with session tools"),
      h("p", { class: "hint", id: `${toolsId}-help` },
        "For questions that need to look up full tool outputs rather than the compacted trace."))),
    h("div", { class: "actions" }, apply,
      h("button", {
        type: "button", onclick: () => {
          const q = check();
          if (q) this.openPreview({ ...q, builtin: false }, { draft: true });
        },
      }, "Preview prompt"),
      h("button", {
        type: "button", onclick: () => {
          const q = check();
          if (q) this.openTry({ ...q, builtin: false }, { draft: true });
        },
      }, "Try on a session"),
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")),
    status);
    dialog = openDialog({ title: existing ? `Edit ${existing.id}` : "Add a question", content: form, className: "catalog-editor" });
    idInput.focus();
  }

  // -- preview -----------------------------------------------------------------------------------

  questionChoice(entry, { draft = false } = {}) {
    // A question that is new or changed in this page travels as a draft; an unchanged saved one by id.
    const saved = this.server.questions.find((q) => q.id === entry.id);
    const unchanged = saved && JSON.stringify(toDraft(copyEntry(saved))) === JSON.stringify(toDraft(entry));
    if (entry.builtin || (!draft && unchanged)) return { question_id: entry.id };
    return { question: toDraft(entry) };
  }

  sessionSelect(label, { optional }) {
    const id = nextId("session");
    const sessions = this.sessions || [];
    const select = h("select", { id, name: "session_id" },
      optional ? h("option", { value: "" }, "No session (the trace is shown as a placeholder)") : h("option", { value: "" }, "Choose a session…"),
      sessions.map((s) => h("option", { value: s.session_id }, s.title ? `${s.title} (${s.session_id})` : s.session_id)));
    const wrap = h("div", { class: "field" }, h("label", { for: id }, label), select,
      sessions.length ? null : h("p", { class: "hint" }, "No sessions are uploaded yet: upload one under Sessions."));
    return { select, wrap };
  }

  openPreview(entry, opts = {}) {
    const choice = this.questionChoice(entry, opts);
    const { select, wrap } = this.sessionSelect("Session for the trace", { optional: true });
    const out = h("div", { class: "preview-out", "data-testid": "prompt-preview" });
    const show = async () => {
      replace(out, loading("Rendering the prompt…"));
      const body = { ...choice };
      if (select.value) body.session_id = select.value;
      try {
        const p = (await api("POST", `${CATALOG}/preview`, { json: body, signal: this.ctx.signal })).body;
        replace(out,
          h("p", { class: "muted" }, `${p.prompt_chars.toLocaleString("en-US")} characters in total. The shared part comes first `,
            "and is identical for every question of a run (the vendor caches it); this question's part follows it."),
          h("h3", {}, "This question's part"),
          h("pre", { class: "code prompt-part", tabindex: "0", "data-testid": "question-part", "aria-label": "This question's part of the prompt" }, p.question_prompt),
          h("details", { class: "advanced" },
            h("summary", {}, `Shared part${p.trace_included ? " with the session's trace" : ""} (${p.shared_context.length.toLocaleString("en-US")} characters)`),
            h("pre", { class: "code prompt-part", tabindex: "0", "data-testid": "shared-part", "aria-label": "Shared part of the prompt" }, p.shared_context)));
      } catch (err) {
        if (err.name === "AbortError") return;
        replace(out, errorPanel(err));
      }
    };
    select.addEventListener("change", show);
    let dialog;
    dialog = openDialog({
      title: `Prompt of ${entry.id}`, className: "wide-dialog",
      content: [wrap, out, h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Close"))],
    });
    show();
  }

  // -- try it ------------------------------------------------------------------------------------

  openTry(entry, opts = {}) {
    const choice = this.questionChoice(entry, opts);
    const { select, wrap } = this.sessionSelect("Session", { optional: false });
    const runners = this.runners;
    const server = runners && runners.server;
    let vendor = null;
    const parts = [wrap];
    if (server && server.vendor_required) {
      const id = nextId("vendor");
      vendor = h("select", { id, name: "vendor" }, h("option", { value: "" }, "Choose a vendor…"),
        server.vendors.map((v) => h("option", { value: v }, vendorLabel(v))));
      parts.push(h("div", { class: "field" }, h("label", { for: id }, "Vendor"), vendor));
    }
    const status = h("div", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "try-status" });
    const runSlot = h("div", { class: "try-run" });
    const controller = new AbortController();
    this.ctx.signal.addEventListener("abort", () => controller.abort(), { once: true });
    const key = idempotencyKey();
    const start = h("button", { type: "submit", class: "primary" }, "Judge this question");
    let dialog;
    const form = h("form", {
      class: "stack", novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        if (!select.value) {
          replace(status, h("p", { class: "text-error" }, "Choose a session."));
          select.focus();
          return;
        }
        if (vendor && !vendor.value) {
          replace(status, h("p", { class: "text-error" }, "Choose a vendor."));
          vendor.focus();
          return;
        }
        start.disabled = true;
        replace(status, loading("Starting a one-question run…"));
        const body = { ...choice, session_id: select.value };
        if (vendor) body.vendor = vendor.value;
        try {
          const accepted = (await api("POST", `${CATALOG}/try`, { json: body, headers: { "Idempotency-Key": key }, signal: controller.signal })).body;
          replace(status, h("p", {}, "Judging on the ", accepted.runner === "daemon" ? "daemon runner" : `server runner (${vendorLabel(accepted.vendor)})`,
            ". Nothing is saved to the catalog by trying."));
          mountRun(runSlot, accepted.eval_run_id, {
            signal: controller.signal, catalog: new Map([[entry.id, { text: entry.text }]]),
          });
        } catch (err) {
          start.disabled = false;
          if (err.name === "AbortError") return;
          replace(status, h("p", { class: "text-error" }, err.message));
        }
      },
    },
    h("p", { class: "muted" }, "Runs this one question on a session with your organisation's runner, exactly as an evaluation ",
      "would, and shows the verdict. It is billed like any run; the question is not saved."),
    parts, h("div", { class: "actions" }, start, h("button", { type: "button", onclick: () => dialog.close() }, "Close")),
    status, runSlot);
    dialog = openDialog({ title: `Try ${entry.id} on a session`, content: form, className: "wide-dialog" });
    dialog.addEventListener("close", () => controller.abort());
    select.focus();
  }
}
