// Judge facts: what judges retained about a repository (one fact per meaning, with the run and question that
// first retained it). Admins delete facts and choose whether later judges get them as prior context.

import { api, path } from "./api.js";
import { categoryLabel, empty, errorPanel, formatDate, h, ignoreAbort, loading, nextId, replace } from "./dom.js";

const SETTINGS = "/admin/settings/eval-runner";

export async function renderFacts(main, ctx) {
  ctx.setTitle("Judge facts");
  const view = new FactsView(main, ctx);
  view.render();
  await Promise.all([view.user.isAdmin ? view.loadSetting() : null, ctx.repository ? view.load() : null]);
}

class FactsView {
  constructor(main, ctx) {
    this.main = main;
    this.ctx = ctx;
    this.user = ctx.user || {};
    this.repository = ctx.repository || "";
    this.listSlot = h("div", { "data-testid": "facts" });
    this.settingSlot = h("div", {});
    this.status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  }

  render() {
    const inputId = nextId("repository");
    const input = h("input", {
      id: inputId, name: "repository", type: "text", required: true, value: this.repository, autocomplete: "off",
      placeholder: "github.com/acme/shop", "aria-describedby": `${inputId}-help`,
    });
    const form = h("form", {
      class: "inline-form", role: "search", "aria-label": "Find facts",
      onsubmit: (event) => {
        event.preventDefault();
        const repository = input.value.trim();
        if (!repository) {
          this.status.textContent = "Enter a repository as sessions name it.";
          input.focus();
          return;
        }
        window.location.hash = `#/facts?repository=${encodeURIComponent(repository)}`;
      },
    },
    h("div", { class: "field" }, h("label", { for: inputId }, "Repository"), input,
      h("p", { class: "hint", id: `${inputId}-help` }, "As the sessions name it when they are uploaded (their ",
        h("code", {}, "repository"), ").")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show facts")));
    replace(this.main,
      h("h1", { class: "section-title", tabindex: "-1" }, "Judge facts"),
      h("p", { class: "lead" }, "Durable facts about a repository that judges noted while evaluating its sessions "
        + "(their retain_fact), kept once per meaning with the run and question that first retained them. "
        + "They go when the sessions that retained them are deleted."),
      this.settingSlot, h("div", { class: "card" }, form, this.status), this.listSlot);
    if (!this.repository) replace(this.listSlot, empty("Choose a repository to see its facts."));
  }

  async load() {
    replace(this.listSlot, loading("Loading the facts…"));
    let page;
    try {
      page = (await api("GET", "/judge-facts", { query: { repository: this.repository }, signal: this.ctx.signal })).body;
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(this.listSlot, errorPanel(err, () => this.load()));
      return;
    }
    this.facts = page.items;
    this.renderList();
  }

  renderList() {
    if (!this.facts.length) {
      replace(this.listSlot, empty(`No facts retained for ${this.repository} yet.`));
      return;
    }
    replace(this.listSlot, h("section", { "aria-labelledby": "facts-title" },
      h("h2", { id: "facts-title" }, `${this.facts.length} fact${this.facts.length === 1 ? "" : "s"} for ${this.repository}`),
      h("ul", { class: "fact-list" }, this.facts.map((fact) => this.factItem(fact)))));
  }

  factItem(fact) {
    const run = `#/sessions/${encodeURIComponent(fact.session_id)}/runs/${encodeURIComponent(fact.eval_run_id)}`;
    const actions = this.user.isAdmin ? h("div", { class: "actions" }, this.deleteButton(fact)) : null;
    return h("li", { class: "card fact", "data-fact-id": fact.fact_id, "data-testid": "fact" },
      h("p", { class: "fact-text" }, fact.text),
      h("p", { class: "muted small" },
        h("span", { class: "badge badge-neutral" }, categoryLabel(fact.category)), " ",
        "First retained by the ", h("a", { href: run }, `${fact.question_id} judge`), ` on ${formatDate(fact.created_at)}`,
        fact.times_retained > 1 ? ` · retained by ${fact.times_retained} runs, last on ${formatDate(fact.last_retained_at)}` : ""),
      actions);
  }

  deleteButton(fact) {
    let armed = false;
    const button = h("button", {
      type: "button", class: "button-quiet danger-text", "aria-label": `Delete the fact: ${fact.text.slice(0, 80)}`,
      onclick: () => ignoreAbort((async () => {
        if (!armed) {
          armed = true;
          button.textContent = "Confirm delete";
          button.setAttribute("aria-label", `Confirm delete of the fact: ${fact.text.slice(0, 80)}`);
          this.status.textContent = "Press Confirm delete to remove the fact; judges will no longer get it.";
          return;
        }
        button.disabled = true;
        try {
          await api("DELETE", path`/judge-facts/${fact.fact_id}`, { signal: this.ctx.signal });
          this.facts = this.facts.filter((f) => f.fact_id !== fact.fact_id);
          this.renderList();
          this.status.textContent = "Fact deleted.";
          this.main.querySelector("h1").focus();
        } catch (err) {
          button.disabled = false;
          if (err.name === "AbortError") return;
          this.status.textContent = `Could not delete the fact: ${err.message}`;
        }
      })()),
    }, "Delete");
    return button;
  }

  // -- admins: whether later judges get the facts ------------------------------------------------

  async loadSetting() {
    replace(this.settingSlot, loading("Loading the setting…"));
    try {
      this.settings = (await api("GET", SETTINGS, { signal: this.ctx.signal })).body;
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(this.settingSlot, errorPanel(err, () => this.loadSetting()));
      return;
    }
    this.renderSetting();
  }

  renderSetting(message) {
    const id = "facts-in-prompts";
    const box = h("input", {
      id, type: "checkbox", name: "judge_facts_in_prompts", checked: Boolean(this.settings.judge_facts_in_prompts),
      "aria-describedby": `${id}-help`,
    });
    const line = h("p", { class: "form-status", role: "status", "aria-live": "polite" }, message || "");
    box.addEventListener("change", () => ignoreAbort(this.saveSetting(box, line)));
    replace(this.settingSlot, h("section", { class: "card", "aria-labelledby": `${id}-title`, "data-testid": "facts-setting" },
      h("h2", { id: `${id}-title` }, "Judges and retained facts"),
      h("div", { class: "checkbox-field" }, box, h("label", { for: id }, "Give judges their repository's facts as prior context")),
      h("p", { class: "hint", id: `${id}-help` }, "Off by default: facts fed back can bias judges towards what was "
        + "seen before. When on, a run's judges get up to 25 of the newest facts, the same for every question of the run."),
      line));
  }

  async saveSetting(box, line) {
    box.disabled = true;
    line.textContent = "Saving…";
    try {
      this.settings = (await api("PUT", SETTINGS, {
        json: { judge_facts_in_prompts: box.checked }, headers: { "If-Match": String(this.settings.version) },
        signal: this.ctx.signal,
      })).body;
      this.renderSetting(this.settings.judge_facts_in_prompts ? "Saved: judges get the facts from the next run on."
        : "Saved: judges no longer get the facts.");
      this.settingSlot.querySelector("input").focus();
    } catch (err) {
      box.disabled = false;
      box.checked = !box.checked;
      if (err.name === "AbortError") return;
      line.textContent = err.status === 412 ? "Not saved: the settings changed meanwhile; reload the page."
        : `Not saved: ${err.message}`;
    }
  }
}
