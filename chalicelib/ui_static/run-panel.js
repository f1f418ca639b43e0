// One eval run: live progress (a chip per question moving queued → running → scored/failed,
// polled with backoff), cancel and "rerun failed", then the result: overall and category scores,
// every question's finding, evidence (linked to the trace positions it cites) and recommendation, the tools a
// judge called, the retrospective, usage and duration.

import { api } from "./api.js";
import { traceHref } from "./view-trace.js";
import {
  categoryLabel, errorPanel, formatDuration, formatNumber, h, sleep, timeEl, vendorLabel, verdictForScore, verdictLabel, replace,
} from "./dom.js";

const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled"]);
const RERUNNABLE = new Set(["failed", "timed_out", "cancelled"]);
const FAST_POLL_MS = 600;
const MAX_POLL_MS = 5000;
const MAX_ERROR_POLL_MS = 15000;

export const RUN_STATUS = {
  queued: { label: "Queued", cls: "badge-neutral" },
  running: { label: "Running", cls: "badge-info" },
  succeeded: { label: "Succeeded", cls: "badge-pass" },
  failed: { label: "Failed", cls: "badge-fail" },
  timed_out: { label: "Timed out", cls: "badge-fail" },
  cancelled: { label: "Cancelled", cls: "badge-neutral" },
};

const QUESTION_STATUS = {
  queued: "queued",
  running: "running",
  scored: "scored",
  failed: "failed",
  timed_out: "timed out",
  cancelled: "cancelled",
};

export function runStatusBadge(status) {
  const s = RUN_STATUS[status] || { label: String(status), cls: "badge-neutral" };
  return h("span", { class: ["badge", s.cls], "data-testid": "run-status", "data-status": status }, s.label);
}

export function humanizeId(id) {
  const text = String(id).replace(/[_-]+/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Mounts a run into `slot` and keeps it live until it ends or `signal` aborts (navigation). */
export function mountRun(slot, runId, { signal, catalog, onChange }) {
  const panel = new RunPanel(slot, runId, { signal, catalog: catalog || new Map(), onChange: onChange || (() => {}) });
  panel.start();
  return panel;
}

class RunPanel {
  constructor(slot, runId, { signal, catalog, onChange }) {
    this.slot = slot;
    this.runId = runId;
    this.signal = signal;
    this.catalog = catalog;
    this.onChange = onChange;
    this.run = null;
    this.generation = 0;
    this.resultKey = null;
    this.build();
  }

  build() {
    this.badgeSlot = h("span", {});
    this.meta = h("p", { class: "run-meta" });
    this.progressText = h("p", { class: "progress-text", role: "status", "aria-live": "polite", "data-testid": "run-progress-text" }, "Loading the evaluation…");
    this.progress = h("progress", { max: 13, value: 0, "aria-label": "Questions finished" });
    this.chips = h("ol", { class: "chips", "data-testid": "chips", "aria-label": "Questions" });
    this.notice = h("div", { class: "run-notice" });
    this.cancelButton = h("button", { type: "button", class: "danger", hidden: true, onclick: () => this.cancel() }, "Cancel evaluation");
    this.rerunButton = h("button", { type: "button", hidden: true, onclick: () => this.rerun() }, "Rerun failed questions");
    this.actionStatus = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
    this.resultSlot = h("div", { class: "result-slot" });
    replace(this.slot, h("section", {
      class: "card run-panel", "aria-labelledby": "run-title", "data-testid": "run-panel", "data-run-id": this.runId,
    },
    h("div", { class: "card-header" }, h("h2", { id: "run-title" }, "Evaluation"), this.badgeSlot),
    this.meta, this.progressText, this.progress, this.chips, this.notice,
    h("div", { class: "actions" }, this.cancelButton, this.rerunButton), this.actionStatus,
    this.resultSlot));
  }

  start() {
    this.generation += 1;
    this.loop(this.generation).catch(() => {});
  }

  async loop(generation) {
    let delay = FAST_POLL_MS;
    let errors = 0;
    let lastKey = null;
    while (!this.signal.aborted && generation === this.generation) {
      let run;
      try {
        run = (await api("GET", `/eval-runs/${encodeURIComponent(this.runId)}`, { signal: this.signal })).body;
        errors = 0;
      } catch (err) {
        if (err.name === "AbortError") return;
        if (err.status === 404 || err.status === 403) {
          replace(this.slot, errorPanel(err));
          return;
        }
        errors += 1;
        delay = Math.min(FAST_POLL_MS * 2 ** errors, MAX_ERROR_POLL_MS);
        replace(this.notice, h("p", { class: "alert alert-warn" },
          `Lost contact with the service (${err.message}); retrying in ${Math.round(delay / 1000)} s.`));
        await sleep(delay, this.signal);
        continue;
      }
      if (generation !== this.generation) return;
      replace(this.notice);
      this.update(run);
      if (TERMINAL.has(run.status)) return;
      const key = JSON.stringify([run.status, run.progress && run.progress.questions.map((q) => q.status)]);
      // Back off while nothing moves; poll quickly again as soon as something does.
      delay = key === lastKey ? Math.min(Math.round(delay * 1.5), MAX_POLL_MS) : FAST_POLL_MS;
      lastKey = key;
      await sleep(delay, this.signal);
    }
  }

  update(run) {
    const previous = this.run;
    this.run = run;
    replace(this.badgeSlot, runStatusBadge(run.status));
    const where = run.runner === "daemon"
      ? `Daemon runner${run.daemon_id ? ` (${run.daemon_id})` : ""}`
      : `Server runner · ${vendorLabel(run.vendor)}`;
    // Which judge catalog version the run asks (a try-it run carries its one question instead).
    const catalogNote = run.trial ? " · try-it run" : typeof run.catalog_version === "number" ? ` · catalog version ${run.catalog_version}` : "";
    replace(this.meta, `${where}${run.model ? ` · ${run.model}` : ""}${catalogNote} · ${run.started_at ? "started" : "queued"} `,
      timeEl(run.started_at || run.created_at),
      run.finished_at ? [" · finished ", timeEl(run.finished_at)] : null);

    const p = run.progress || { total: 0, completed: 0, failed: 0, questions: [] };
    const finished = p.completed + p.failed;
    const statusText = RUN_STATUS[run.status] ? RUN_STATUS[run.status].label : run.status;
    const text = `${statusText}: ${p.completed} of ${p.total} questions scored, ${p.failed} failed.`;
    if (this.progressText.textContent !== text) this.progressText.textContent = text;
    this.progress.max = Math.max(p.total, 1);
    this.progress.value = finished;
    replace(this.chips, ...p.questions.map((q) => this.chip(q)));

    this.cancelButton.hidden = TERMINAL.has(run.status);
    this.cancelButton.disabled = false;
    const hasUnscored = p.questions.some((q) => q.status !== "scored");
    this.rerunButton.hidden = !(RERUNNABLE.has(run.status) && hasUnscored);
    this.rerunButton.disabled = false;

    const resultKey = JSON.stringify([run.status, run.finished_at, Boolean(run.result)]);
    if (TERMINAL.has(run.status) && resultKey !== this.resultKey) {
      this.resultKey = resultKey;
      replace(this.resultSlot, ...this.resultView(run));
    } else if (!TERMINAL.has(run.status) && this.resultKey) {
      this.resultKey = null;
      replace(this.resultSlot);
    }
    if (!previous || previous.status !== run.status) this.onChange(run);
  }

  chip(q) {
    const entry = this.catalog.get(q.question_id);
    const label = humanizeId(q.question_id);
    // A run that ended leaves its unfinished questions unjudged, whatever their last state was.
    const unfinished = TERMINAL.has(this.run.status) && (q.status === "queued" || q.status === "running");
    const state = unfinished ? "not judged" : QUESTION_STATUS[q.status] || q.status;
    const verdict = q.status === "scored" ? (q.verdict || verdictForScore(q.score)) : null;
    return h("li", {
      class: ["chip", unfinished ? "chip-cancelled" : `chip-${q.status}`, verdict ? `verdict-${verdict}` : null],
      "data-question": q.question_id, "data-status": q.status, title: entry ? entry.text : null,
    },
    h("span", { class: "chip-icon", "aria-hidden": "true" }, chipIcon(unfinished ? "cancelled" : q.status)),
    h("span", { class: "chip-label" }, label),
    h("span", { class: "chip-state" }, q.status === "scored" ? `${q.score}/5` : state,
      q.status === "scored" ? h("span", { class: "visually-hidden" }, ` ${verdictLabel(verdict)}`) : null),
    q.failure_reason ? h("span", { class: "visually-hidden" }, `: ${q.failure_reason.message}`) : null);
  }

  async cancel() {
    this.cancelButton.disabled = true;
    this.actionStatus.textContent = "Cancelling…";
    try {
      const run = (await api("POST", `/eval-runs/${encodeURIComponent(this.runId)}/cancel`, { signal: this.signal })).body;
      this.actionStatus.textContent = "Cancellation requested.";
      this.update(run);
      if (!TERMINAL.has(run.status)) this.start();
    } catch (err) {
      if (err.name === "AbortError") return;
      this.cancelButton.disabled = false;
      this.actionStatus.textContent = `Could not cancel: ${err.message}`;
    }
  }

  async rerun() {
    this.rerunButton.disabled = true;
    this.actionStatus.textContent = "Starting a rerun of the failed questions…";
    try {
      const run = (await api("POST", `/eval-runs/${encodeURIComponent(this.runId)}/rerun`, { signal: this.signal })).body;
      this.actionStatus.textContent = "Rerunning the failed questions.";
      this.update(run);
      this.start();
    } catch (err) {
      if (err.name === "AbortError") return;
      this.rerunButton.disabled = false;
      this.actionStatus.textContent = `Could not rerun: ${err.message}`;
    }
  }

  // -- result ----------------------------------------------------------------------------------

  resultView(run) {
    const parts = [];
    if (run.error) {
      parts.push(h("div", { class: ["alert", run.status === "cancelled" ? "alert-warn" : "alert-error"], "data-testid": "run-error" },
        h("p", { class: "alert-title" }, RUN_STATUS[run.status] ? `Evaluation ${RUN_STATUS[run.status].label.toLowerCase()}` : "Evaluation failed"),
        h("p", {}, run.error.message || run.error.code)));
    }
    const failedQuestions = (run.progress ? run.progress.questions : []).filter((q) => q.status !== "scored" && q.failure_reason);
    if (failedQuestions.length) {
      parts.push(h("div", { class: "failed-questions" },
        h("h3", {}, "Questions without a verdict"),
        h("ul", {}, failedQuestions.map((q) => h("li", {}, h("strong", {}, humanizeId(q.question_id)), `: ${q.failure_reason.message}`)))));
    }
    const result = run.result;
    if (result) parts.push(this.scores(result));
    parts.push(this.usage(run));
    if (result) {
      parts.push(this.findings(result));
      parts.push(this.retrospective(result.retrospective));
    }
    return parts;
  }

  scores(result) {
    const overallVerdict = verdictForScore(result.overall_score) || "fail";
    return h("section", { class: "result", "aria-labelledby": "result-title", "data-testid": "result" },
      h("h3", { id: "result-title" }, "Result"),
      h("div", { class: "overall" },
        h("div", {
          class: ["score-big", `verdict-${overallVerdict}`], "data-testid": "overall-score", "data-score": result.overall_score,
        },
        h("span", { class: "score-num" }, String(result.overall_score)), h("span", { class: "score-of" }, "/ 5")),
        h("div", { class: "overall-text" },
          h("p", { class: "label" }, "Overall score ", h("span", { class: ["badge", `badge-${overallVerdict}`] }, verdictLabel(overallVerdict))),
          result.summary ? h("p", { class: "summary" }, result.summary) : null,
          h("p", { class: "muted small" }, `Judge model: ${result.judge_model}`))),
      h("ul", { class: "category-scores", "aria-label": "Category scores" }, result.categories.map((c) => h("li", {
        class: ["category-score", `verdict-${c.verdict}`], "data-category": c.name, "data-score": c.score, "data-verdict": c.verdict,
      },
      h("span", { class: "category-name" }, categoryLabel(c.name)),
      h("span", { class: "category-value" }, h("span", { class: "score-num" }, String(c.score)), " / 5"),
      h("span", { class: ["badge", `badge-${c.verdict}`] }, verdictLabel(c.verdict))))));
  }

  findings(result) {
    return h("section", { class: "findings", "aria-labelledby": "findings-title" },
      h("h3", { id: "findings-title" }, "Findings"),
      result.categories.map((c) => h("section", { class: "finding-group", "aria-label": categoryLabel(c.name) },
        h("h4", {}, `${categoryLabel(c.name)} · ${c.score} / 5`),
        c.questions.map((q) => {
          const entry = this.catalog.get(q.question_id);
          return h("article", { class: ["finding", `verdict-${q.verdict}`], "data-question": q.question_id, "data-score": q.score },
            h("div", { class: "finding-head" },
              h("h5", {}, entry ? entry.text : humanizeId(q.question_id)),
              h("span", { class: ["badge", `badge-${q.verdict}`] }, `${q.score} / 5 · ${verdictLabel(q.verdict)}`)),
            h("dl", { class: "finding-body" },
              h("dt", {}, "Finding"), h("dd", { "data-field": "finding" }, q.finding || "—"),
              h("dt", {}, "Evidence"), h("dd", { "data-field": "evidence" }, q.evidence || "—"),
              h("dt", {}, "Recommendation"), h("dd", { "data-field": "recommendation" }, q.recommendation || "—"),
              this.evidenceLinks(q), this.toolsUsed(q)));
        }))));
  }

  evidenceLinks(q) {
    const entries = q.evidence_entries || [];
    if (!entries.length || !this.run) return null;
    const chain = Boolean(this.run.context && (this.run.context.session_chain || []).length > 1);
    return [h("dt", {}, "In the trace"), h("dd", { "data-field": "evidence-entries" },
      h("ul", { class: "inline-list" }, entries.map((pos) => h("li", {},
        h("a", { href: traceHref(this.run.session_id, pos, chain), "data-pos": pos }, `pos ${pos}`)))))];
  }

  toolsUsed(q) {
    if (!Array.isArray(q.tools_used)) return null;
    const label = (u) => {
      const args = Object.entries(u.arguments || {}).filter(([, v]) => v !== null).map(([, v]) => String(v));
      return `${u.tool}(${args.join(", ")})${u.is_error ? " → error" : ""}`;
    };
    return [h("dt", {}, "Tools used"), h("dd", { "data-field": "tools-used" },
      q.tools_used.length ? h("ol", { class: "tool-calls" }, q.tools_used.map((u) => h("li", { class: "mono" }, label(u))))
        : "none")];
  }

  retrospective(retro) {
    const title = h("h3", { id: "retro-title" }, "Retrospective");
    if (!retro) {
      return h("section", { class: "retrospective", "aria-labelledby": "retro-title" }, title,
        h("p", { class: "muted" }, "No retrospective was produced for this run."));
    }
    const list = (heading, items) => (items && items.length
      ? [h("h4", {}, heading), h("ul", {}, items.map((item) => h("li", {}, item)))] : null);
    return h("section", { class: "retrospective", "aria-labelledby": "retro-title", "data-testid": "retrospective" }, title,
      h("p", {}, retro.overall),
      list("Strengths", retro.strengths), list("Issues", retro.issues), list("Suggestions", retro.suggestions));
  }

  usage(run) {
    const u = run.usage || {};
    const row = (label, value, field) => [h("dt", {}, label), h("dd", { "data-usage": field }, value)];
    return h("section", { class: "usage", "aria-labelledby": "usage-title", "data-testid": "usage" },
      h("h3", { id: "usage-title" }, "Usage"),
      h("dl", { class: "usage-grid" },
        row("Input tokens", formatNumber(u.input_tokens), "input_tokens"),
        row("Output tokens", formatNumber(u.output_tokens), "output_tokens"),
        row("Cache read tokens", formatNumber(u.cache_read_input_tokens), "cache_read_input_tokens"),
        row("Cache write tokens", formatNumber(u.cache_creation_input_tokens), "cache_creation_input_tokens"),
        row("Duration", formatDuration(run.duration_ms), "duration")));
  }
}

function chipIcon(status) {
  return { queued: "○", running: "◔", scored: "●", failed: "✕", timed_out: "✕", cancelled: "–" }[status] || "○";
}
