// Settings → Eval runner (admins): one card per vendor, the run timeout, and the change history.
// API keys are write-only: typed into a password field, cleared from it the moment Save reads it,
// sent once in the PUT body and never rendered back (only the API's "…ZQ7x" hint is shown).

import { api } from "./api.js";
import {
  adminsOnly, empty, errorPanel, formatDate, h, loading, nextId, openDialog, timeEl, vendorLabel, replace,
} from "./dom.js";

const SETTINGS = "/admin/settings/eval-runner";
const VENDORS = ["anthropic", "openai"];
const DEFAULT_TIMEOUT = 300;
const MIN_TIMEOUT = 30;

const VENDOR_INFO = {
  anthropic: {
    models: ["claude-sonnet-4-6", "claude-opus-4-7"],
    use: "Claude judges (sonnet or opus). Recommended default.",
    defaultBase: "https://api.anthropic.com",
  },
  openai: {
    models: ["gpt-4o"],
    use: "GPT judges, or when your team standardises on OpenAI for billing or governance.",
    defaultBase: "https://api.openai.com/v1",
  },
};

const STATUS = {
  unconfigured: { label: "Not configured", cls: "badge-neutral" },
  ok: { label: "Enabled", cls: "badge-pass" },
  suspended: { label: "Suspended", cls: "badge-fail" },
};

const TEST_ERRORS = {
  auth: "The vendor rejected the API key (authentication failed). Replace the key with a valid one.",
  model_not_found: "The vendor does not know this model, or this key may not use it. Check the model name.",
  rate_limited: "The vendor is rate limiting this key right now. Wait a minute and test again.",
  network: "The vendor could not be reached. Check the base URL under Advanced, or try again later.",
  invalid_output: "The vendor answered, but not with a usable judge response. Try another model.",
};

export async function renderSettings(main, ctx) {
  ctx.setTitle("Eval runner settings");
  const header = [
    h("h1", {}, "Settings"),
    h("h2", { class: "section-title", tabindex: "-1" }, "Eval runner"),
    h("p", { class: "lead" },
      "The server-side eval runner lets dashboard users run evaluations without a local daemon, using the ",
      "LLM credentials configured here. Configure either vendor or both; each keeps its own key, so they can ",
      "sit on separate billing accounts. Without a vendor, evaluations fall back to users' daemons."),
  ];
  replace(main, ...header, loading("Loading the Eval runner settings…"));
  const view = new SettingsView(main, header, ctx);
  await view.load();
}

class SettingsView {
  constructor(main, header, ctx) {
    this.main = main;
    this.header = header;
    this.ctx = ctx;
    this.settings = null;
    this.audit = null;
    this.drafts = {};
    this.messages = {};
    this.conflict = null;
  }

  async load() {
    let settings;
    try {
      settings = (await api("GET", SETTINGS, { signal: this.ctx.signal })).body;
    } catch (err) {
      if (err.name === "AbortError") throw err;
      if (err.status === 403) {
        adminsOnly(this.main, this.ctx, ["The Eval runner settings can only be viewed and changed by an admin of ",
          "your organisation. Ask an admin to configure a vendor if evaluations are not available to you."],
        h("a", { href: "#/sessions" }, "Back to sessions"));
        return;
      }
      replace(this.main, ...this.header, errorPanel(err, () => this.reload()));
      return;
    }
    this.settings = settings;
    this.conflict = null;
    this.render();
    this.loadAudit();
  }

  async reload() {
    this.drafts = {};
    this.messages = {};
    replace(this.main, ...this.header, loading("Loading the Eval runner settings…"));
    try {
      await this.load();
    } catch (err) {
      if (err.name !== "AbortError") throw err;
      return;
    }
    this.main.querySelector("h2.section-title")?.focus();
  }

  async loadAudit() {
    try {
      this.audit = (await api("GET", `${SETTINGS}/audit`, { signal: this.ctx.signal })).body.items;
      this.auditError = null;
    } catch (err) {
      if (err.name === "AbortError") return;
      this.auditError = err;
    }
    this.renderAudit();
  }

  render() {
    const s = this.settings;
    this.conflictSlot = h("div", { class: "conflict-slot" });
    this.auditSlot = h("section", { class: "audit", "aria-labelledby": "audit-title" },
      h("h2", { id: "audit-title" }, "Change history"), loading("Loading the change history…"));
    const cards = VENDORS.map((vendor) => this.vendorCard(vendor, s[vendor]));
    replace(this.main, ...this.header, this.conflictSlot,
      h("div", { class: "grid" }, cards), this.timeoutCard(s), this.auditSlot);
    if (this.conflict) this.renderConflict();
    if (this.audit) this.renderAudit();
  }

  // -- vendor cards ----------------------------------------------------------------------------

  vendorCard(vendor, block) {
    const info = VENDOR_INFO[vendor];
    const label = vendorLabel(vendor);
    const status = STATUS[block.status] || STATUS.unconfigured;
    const configured = block.status !== "unconfigured" || Boolean(block.api_key_hint);
    const draft = this.drafts[vendor] || {};
    const titleId = `vendor-${vendor}-title`;
    const modelId = `vendor-${vendor}-model`;
    const listId = `vendor-${vendor}-models`;
    const keyId = `vendor-${vendor}-key`;
    const baseId = `vendor-${vendor}-base-url`;
    const keyHelpId = nextId("key-help");

    const model = h("input", {
      id: modelId, name: "model", type: "text", list: listId, autocomplete: "off", spellcheck: "false",
      required: true, value: draft.model ?? block.model ?? "", "aria-describedby": `${modelId}-help`,
      oninput: () => this.draft(vendor, { model: model.value }),
    });
    const keyInput = h("input", {
      id: keyId, name: "api_key", type: "password", autocomplete: "new-password", spellcheck: "false",
      autocapitalize: "off", "aria-describedby": keyHelpId,
    });
    const baseUrl = h("input", {
      id: baseId, name: "base_url", type: "url", inputmode: "url", autocomplete: "off", spellcheck: "false",
      placeholder: info.defaultBase, value: draft.base_url ?? block.base_url ?? "",
      "aria-describedby": `${baseId}-help`, oninput: () => this.draft(vendor, { base_url: baseUrl.value }),
    });

    const keyField = h("div", { class: "field" });
    const showKeyInput = (replacing) => {
      replace(keyField, 
        h("label", { for: keyId }, replacing ? `New ${label} API key` : `${label} API key`),
        keyInput,
        h("p", { class: "hint", id: keyHelpId },
          "Write-only: stored encrypted and never shown again; only its last four characters are kept visible."),
        replacing ? h("button", {
          type: "button", class: "button-quiet",
          onclick: () => {
            keyInput.value = "";
            showHint();
            keyField.querySelector("button")?.focus();
          },
        }, "Keep the current key") : null);
    };
    const showHint = () => {
      replace(keyField, 
        h("p", { class: "field-label", id: `${keyId}-label` }, `${label} API key`),
        h("p", { class: "key-hint", "data-testid": "key-hint" },
          h("span", { class: "visually-hidden" }, "Stored key ending in "),
          h("span", { class: "mono" }, block.api_key_hint)),
        h("button", {
          type: "button", "aria-describedby": `${keyId}-label`,
          onclick: () => {
            showKeyInput(true);
            keyInput.focus();
          },
        }, "Replace key"));
    };
    if (block.api_key_hint) showHint();
    else showKeyInput(false);

    const message = this.messages[vendor];
    const statusLine = h("div", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "vendor-status" },
      message ? h("p", { class: message.kind === "error" ? "text-error" : message.kind === "ok" ? "text-ok" : "" }, message.text) : null);

    const save = h("button", { type: "submit", class: "primary" }, "Save");
    const test = h("button", {
      type: "button", disabled: !configured,
      onclick: () => this.testConnection(vendor, test, statusLine),
    }, "Test connection");
    const remove = h("button", {
      type: "button", class: "danger", disabled: !configured,
      onclick: () => this.confirmRemove(vendor),
    }, "Remove");

    const form = h("form", {
      class: "stack", novalidate: true, "aria-labelledby": titleId,
      onsubmit: (event) => {
        event.preventDefault();
        this.saveVendor(vendor, { model, keyInput, baseUrl, statusLine, save });
      },
    },
    h("div", { class: "field" },
      h("label", { for: modelId }, "Judge model"),
      model,
      h("datalist", { id: listId }, info.models.map((m) => h("option", { value: m }))),
      h("p", { class: "hint", id: `${modelId}-help` }, `For example ${info.models.join(" or ")}.`)),
    keyField,
    h("details", { class: "advanced", open: Boolean(draft.base_url ?? block.base_url) },
      h("summary", {}, "Advanced"),
      h("div", { class: "field" },
        h("label", { for: baseId }, "Base URL"),
        baseUrl,
        h("p", { class: "hint", id: `${baseId}-help` },
          `Only for a gateway or proxy in front of ${label}. Leave empty for ${info.defaultBase}. `,
          "Changing it requires entering the API key again."))),
    h("div", { class: "actions" }, save, test, remove),
    statusLine);

    return h("section", {
      class: "card vendor-card", "aria-labelledby": titleId, "data-vendor": vendor, "data-testid": `vendor-${vendor}`,
    },
    h("div", { class: "card-header" },
      h("h3", { id: titleId }, label),
      h("span", { class: ["badge", status.cls], "data-testid": "vendor-badge" }, status.label)),
    h("p", { class: "muted" }, info.use),
    block.status === "suspended"
      ? h("p", { class: "alert alert-warn" },
        `Suspended${block.status_reason ? `: ${block.status_reason}` : ""}. Evaluations will not use ${label} `,
        "until the key is replaced or a connection test succeeds.")
      : null,
    form,
    this.learnedLimits(vendor, block),
    block.updated_at
      ? h("p", { class: "meta" }, "Last changed by ", h("strong", {}, block.updated_by || "unknown"), " on ",
        timeEl(block.updated_at))
      : null);
  }

  // Context limits the vendor stated when it refused a prompt as too long (a gateway or deployment
  // whose real limit is lower than the model's): evaluations on that model fit to them.
  learnedLimits(vendor, block) {
    const limits = block.learned_context_limits || [];
    if (!limits.length) return null;
    const titleId = `learned-${vendor}`;
    return h("section", { class: "learned-limits", "aria-labelledby": titleId, "data-testid": "learned-limits" },
      h("h4", { id: titleId }, "Learned context limits"),
      h("p", { class: "hint" },
        "The vendor refused a prompt as too long and stated its real limit; evaluations on that model are fitted ",
        "to it before their first call. Forget it when the limit has been raised: the next evaluation uses the ",
        "model's published window and learns again if it must."),
      h("ul", { class: "limit-list" }, limits.map((limit) => h("li", { class: "limit-row", "data-testid": "learned-limit" },
        h("span", { class: "mono" }, limit.model),
        h("span", {}, `${limit.limit_tokens.toLocaleString("en")} tokens`),
        h("span", { class: "muted" }, limit.base_url ? `via ${limit.base_url}` : `${vendorLabel(vendor)} API`),
        h("span", { class: "muted" }, "learned ", timeEl(limit.learned_at)),
        h("button", {
          type: "button", class: "button-quiet", "aria-label": `Forget the learned limit of ${limit.model}`,
          onclick: (event) => this.forgetLimit(vendor, limit.model, event.currentTarget),
        }, "Forget")))));
  }

  async forgetLimit(vendor, model, button) {
    button.disabled = true;
    try {
      await api("DELETE", `${SETTINGS}/vendors/${encodeURIComponent(vendor)}/context-limits`, {
        query: { model }, signal: this.ctx.signal,
      });
      this.setMessage(vendor, "ok", `Forgot the learned context limit of ${model}.`);
    } catch (err) {
      if (err.name === "AbortError") return;
      this.setMessage(vendor, "error", fieldMessage(err));
    }
    await this.refreshSettings(`[data-vendor="${vendor}"] button[type="submit"]`);
  }

  draft(vendor, values) {
    this.drafts[vendor] = { ...(this.drafts[vendor] || {}), ...values };
  }

  setMessage(vendor, kind, text) {
    this.messages[vendor] = { kind, text };
  }

  async saveVendor(vendor, { model, keyInput, baseUrl, statusLine, save }) {
    const block = this.settings[vendor];
    const label = vendorLabel(vendor);
    // Read the key and clear the field at once: from here on it exists only in this request body.
    const key = keyInput.value.trim();
    keyInput.value = "";
    const update = {};
    const modelName = model.value.trim();
    const base = baseUrl.value.trim() || null;
    const problems = [];
    if (!modelName) problems.push("Enter the judge model.");
    if (!block.api_key_hint && !key) problems.push(`Enter the ${label} API key.`);
    if (base !== (block.base_url || null) && !key) {
      problems.push("Changing the base URL requires the API key: choose Replace key and enter it again.");
    }
    if (problems.length) {
      this.showStatus(statusLine, "error", problems.join(" "));
      if (!modelName) model.focus();
      else if (keyInput.isConnected) keyInput.focus();
      else statusLine.closest("form")?.querySelector(".field button")?.focus();
      return;
    }
    if (modelName !== block.model) update.model = modelName;
    if (key) update.api_key = key;
    if (base !== (block.base_url || null)) update.base_url = base;
    if (!Object.keys(update).length) {
      this.showStatus(statusLine, "info", "Nothing changed.");
      return;
    }
    save.disabled = true;
    this.showStatus(statusLine, "info", "Saving…");
    try {
      const response = await api("PUT", SETTINGS, {
        json: { [vendor]: update }, headers: { "If-Match": String(this.settings.version) }, signal: this.ctx.signal,
      });
      delete this.drafts[vendor];
      this.settings = response.body;
      this.setMessage(vendor, "ok", key ? `Saved. The new key ends in ${response.body[vendor].api_key_hint || "…"}.` : "Saved.");
      this.rerender(`[data-vendor="${vendor}"] button[type="submit"]`);
      this.loadAudit();
    } catch (err) {
      save.disabled = false;
      if (err.name === "AbortError") return;
      if (err.status === 412) {
        this.showStatus(statusLine, "error", "Not saved: someone else changed the settings meanwhile (see above).");
        return this.onConflict(err);
      }
      this.showStatus(statusLine, "error", fieldMessage(err));
    }
  }

  async testConnection(vendor, button, statusLine) {
    button.disabled = true;
    this.showStatus(statusLine, "info", "Testing the connection…");
    let result;
    try {
      result = (await api("POST", `${SETTINGS}/vendors/${encodeURIComponent(vendor)}/test`, {
        signal: this.ctx.signal,
      })).body;
    } catch (err) {
      button.disabled = false;
      if (err.name === "AbortError") return;
      this.showStatus(statusLine, "error", fieldMessage(err));
      return;
    }
    if (result.ok) {
      this.setMessage(vendor, "ok", `Connection OK: the judge model answered in ${result.latency_ms} ms.`);
    } else {
      const err = result.error || {};
      const plain = TEST_ERRORS[err.kind] || "The connection test failed.";
      this.setMessage(vendor, "error", `Connection failed: ${plain}${err.message ? ` (${err.message})` : ""}`);
    }
    // A rejected key suspends the vendor; show the status the service now reports.
    await this.refreshSettings(`[data-vendor="${vendor}"] .actions button:nth-child(2)`);
  }

  confirmRemove(vendor) {
    const label = vendorLabel(vendor);
    const descId = nextId("remove-desc");
    let dialog;
    const cancel = h("button", { type: "button", autofocus: true, onclick: () => dialog.close() }, "Cancel");
    const confirm = h("button", {
      type: "button", class: "danger",
      onclick: async () => {
        confirm.disabled = true;
        dialog.close();
        await this.removeVendor(vendor);
      },
    }, `Remove ${label}`);
    dialog = openDialog({
      title: `Remove ${label}?`, describedBy: descId,
      content: [
        h("p", { id: descId }, `This deletes the stored ${label} API key, model and base URL. Evaluations can no `,
          `longer run on ${label} until an admin configures it again; runs already in progress are not affected.`),
        h("div", { class: "actions" }, cancel, confirm)],
    });
  }

  async removeVendor(vendor) {
    try {
      const response = await api("DELETE", `${SETTINGS}/vendors/${encodeURIComponent(vendor)}`, {
        headers: { "If-Match": String(this.settings.version) }, signal: this.ctx.signal,
      });
      this.settings = response.body;
      delete this.drafts[vendor];
      this.setMessage(vendor, "ok", `${vendorLabel(vendor)} was removed.`);
      this.rerender(`[data-vendor="${vendor}"] input[name="model"]`);
      this.loadAudit();
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err.status === 412) return this.onConflict(err);
      this.setMessage(vendor, "error", fieldMessage(err));
      this.rerender(`[data-vendor="${vendor}"] .danger`);
    }
  }

  async refreshSettings(focusSelector) {
    try {
      const fresh = (await api("GET", SETTINGS, { signal: this.ctx.signal })).body;
      if (fresh.version !== this.settings.version && this.hasOtherChanges(fresh)) {
        // Someone else saved meanwhile: keep our version so the next save reports the conflict.
        fresh.version = this.settings.version;
      }
      this.settings = fresh;
    } catch (err) {
      if (err.name === "AbortError") return;
    }
    this.rerender(focusSelector);
    this.loadAudit();
  }

  hasOtherChanges(fresh) {
    // Only status fields may move on their own (a test suspends or reinstates a vendor).
    const strip = (s) => JSON.stringify(VENDORS.map((v) => [s[v].model, s[v].api_key_hint, s[v].base_url])
      .concat([s.run_timeout_seconds]));
    return strip(fresh) !== strip(this.settings);
  }

  rerender(focusSelector) {
    this.render();
    const target = focusSelector && this.main.querySelector(focusSelector);
    if (target && !target.disabled) target.focus();
    else if (focusSelector) {
      const card = this.main.querySelector(focusSelector.split(" ")[0]);
      card?.querySelector("input, button:not([disabled])")?.focus();
    }
  }

  showStatus(statusLine, kind, text) {
    replace(statusLine, h("p", { class: kind === "error" ? "text-error" : kind === "ok" ? "text-ok" : "" }, text));
  }

  // -- run timeout -----------------------------------------------------------------------------

  timeoutCard(s) {
    const max = s.max_run_timeout_seconds;
    const inputId = "run-timeout";
    const helpId = "run-timeout-help";
    const input = h("input", {
      id: inputId, name: "run_timeout_seconds", type: "number", inputmode: "numeric", min: MIN_TIMEOUT, max, step: 1,
      required: true, value: this.drafts.timeout ?? String(s.run_timeout_seconds), "aria-describedby": helpId,
      oninput: () => { this.drafts.timeout = input.value; },
    });
    const message = this.messages.timeout;
    const statusLine = h("div", { class: "form-status", role: "status", "aria-live": "polite" },
      message ? h("p", { class: message.kind === "error" ? "text-error" : "text-ok" }, message.text) : null);
    const save = h("button", { type: "submit", class: "primary" }, "Save timeout");
    const form = h("form", {
      class: "stack", novalidate: true, "aria-labelledby": "timeout-title",
      onsubmit: async (event) => {
        event.preventDefault();
        const value = Number(input.value);
        if (!Number.isInteger(value) || value < MIN_TIMEOUT || value > max) {
          this.showStatus(statusLine, "error", `Enter a whole number of seconds from ${MIN_TIMEOUT} to ${max}.`);
          input.focus();
          return;
        }
        if (value === this.settings.run_timeout_seconds) {
          this.showStatus(statusLine, "info", "Nothing changed.");
          return;
        }
        save.disabled = true;
        this.showStatus(statusLine, "info", "Saving…");
        try {
          const response = await api("PUT", SETTINGS, {
            json: { run_timeout_seconds: value }, headers: { "If-Match": String(this.settings.version) },
            signal: this.ctx.signal,
          });
          this.settings = response.body;
          delete this.drafts.timeout;
          this.messages.timeout = { kind: "ok", text: `Saved: evaluations now time out after ${value} seconds.` };
          this.rerender("#run-timeout");
          this.loadAudit();
        } catch (err) {
          save.disabled = false;
          if (err.name === "AbortError") return;
          if (err.status === 412) {
            this.showStatus(statusLine, "error", "Not saved: someone else changed the settings meanwhile (see above).");
            return this.onConflict(err);
          }
          this.showStatus(statusLine, "error", fieldMessage(err));
        }
      },
    },
    h("div", { class: "field" },
      h("label", { for: inputId }, "Run timeout (seconds)"),
      input,
      h("p", { class: "hint", id: helpId },
        `Per-evaluation timeout. Default ${DEFAULT_TIMEOUT} seconds; allowed ${MIN_TIMEOUT} to ${max}. `,
        "Long sessions with a raised threshold may need a higher value.")),
    h("div", { class: "actions" }, save,
      h("button", {
        type: "button", class: "button-quiet",
        onclick: () => {
          input.value = String(DEFAULT_TIMEOUT);
          this.drafts.timeout = input.value;
          input.focus();
        },
      }, `Use the default (${DEFAULT_TIMEOUT})`)),
    statusLine);
    return h("section", { class: "card", "aria-labelledby": "timeout-title", "data-testid": "run-timeout-card" },
      h("h3", { id: "timeout-title" }, "Run timeout"), form);
  }

  // -- concurrent edits (412) ------------------------------------------------------------------

  async onConflict(err) {
    const details = err.details || {};
    this.conflict = { details, since: this.settings.version, items: null };
    this.renderConflict();
    try {
      const items = (await api("GET", `${SETTINGS}/audit`, { signal: this.ctx.signal })).body.items;
      this.audit = items;
      this.conflict.items = items.filter((item) => item.version > this.conflict.since);
      this.renderAudit();
    } catch {
      this.conflict.items = [];
    }
    this.renderConflict();
    this.conflictSlot.querySelector("h2")?.focus();
  }

  renderConflict() {
    const c = this.conflict;
    if (!c) {
      replace(this.conflictSlot);
      return;
    }
    const d = c.details;
    const who = d.updated_by ? `${d.updated_by}` : "Another admin";
    const changes = c.items === null
      ? loading("Finding out what changed…")
      : c.items.length
        ? h("ul", { class: "change-list" }, c.items.map((item) => h("li", {},
          h("strong", {}, item.by), " on ", timeEl(item.at), ": ", describeChanges(item))))
        : h("p", {}, (d.changed_fields || []).length ? `Changed: ${d.changed_fields.join(", ")}.` : "");
    replace(this.conflictSlot, h("div", { class: "alert alert-error", role: "alert", "data-testid": "conflict" },
      h("h2", { class: "alert-title", tabindex: "-1" }, "These settings were changed by someone else"),
      h("p", {}, `${who} saved version ${d.current_version ?? "?"}${d.updated_at ? ` on ${formatDate(d.updated_at)}` : ""} `,
        `after you loaded version ${c.since}. Your change was not saved.`),
      changes,
      h("p", {}, "Reload to see the current values, then apply your change again."),
      h("button", { type: "button", class: "primary", onclick: () => this.reload() }, "Reload settings")));
  }

  // -- audit -----------------------------------------------------------------------------------

  renderAudit() {
    if (!this.auditSlot) return;
    const title = h("h2", { id: "audit-title" }, "Change history");
    if (this.auditError) {
      replace(this.auditSlot, title, errorPanel(this.auditError, () => this.loadAudit()));
      return;
    }
    if (!this.audit) return;
    if (!this.audit.length) {
      replace(this.auditSlot, title, empty("No changes yet. Saved changes appear here with who made them."));
      return;
    }
    replace(this.auditSlot, title, h("ol", { class: "audit-list", "data-testid": "audit-list" },
      this.audit.map((item) => h("li", { class: "audit-item" },
        h("p", { class: "audit-head" }, h("strong", {}, item.by), " · ", timeEl(item.at), " · ",
          actionLabel(item.action), h("span", { class: "muted" }, ` · version ${item.version}`)),
        h("ul", { class: "change-list" }, Object.entries(item.changes || {}).map(([field, change]) =>
          h("li", {}, `${fieldLabel(field)}: `, h("span", { class: "mono" }, valueLabel(change.from)), " → ",
            h("span", { class: "mono" }, valueLabel(change.to)))))))));
  }
}

function fieldMessage(err) {
  const fields = err.details && Array.isArray(err.details.fields) ? err.details.fields : [];
  if (fields.length) return fields.map((f) => `${fieldLabel(f.field)}: ${f.message}`).join(" ");
  return err.message;
}

function fieldLabel(field) {
  const [vendor, name] = String(field).split(".");
  const names = { api_key: "API key", model: "model", base_url: "base URL", status: "status" };
  if (name && (vendor === "anthropic" || vendor === "openai")) return `${vendorLabel(vendor)} ${names[name] || name}`;
  if (field === "run_timeout_seconds") return "Run timeout";
  return String(field);
}

function valueLabel(value) {
  if (value === null || value === undefined || value === "") return "(none)";
  return String(value);
}

function actionLabel(action) {
  return {
    update: "updated", remove_vendor: "removed a vendor", suspend: "suspended (key rejected)",
    reinstate: "reinstated", import: "imported", limits: "changed the limits",
  }[action] || String(action || "updated");
}

function describeChanges(item) {
  const entries = Object.entries(item.changes || {});
  if (!entries.length) return actionLabel(item.action);
  return entries.map(([field, change]) => `${fieldLabel(field)} ${valueLabel(change.from)} → ${valueLabel(change.to)}`)
    .join("; ");
}
