// A session: its metadata, the eval dialog (driven exactly by GET /eval/runners), the selected
// run's live progress and result, and the session's past runs.

import { api, idempotencyKey } from "./api.js";
import {
  categoryLabel, empty, errorPanel, formatBytes, formatNumber, h, loading, nextId, openDialog, timeEl, vendorLabel, replace,
} from "./dom.js";
import { loadQuestions } from "./questions.js";
import { mountRun, runStatusBadge } from "./run-panel.js";
import { CostPanel, refusalWords } from "./spend-estimate.js";
import { confirmDeleteSession } from "./view-history.js";
import { KIND_LABELS, formatLabel } from "./view-sessions.js";

const DEFAULT_THRESHOLD = 2000;
const MAX_THRESHOLD = 200000;


export async function renderSession(main, ctx) {
  const { sessionId, runId, signal } = ctx;
  ctx.setTitle(runId ? `Evaluation of ${sessionId}` : `Session ${sessionId}`);
  const crumbs = h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" },
    h("ol", {}, h("li", {}, h("a", { href: "#/sessions" }, "Sessions")),
      h("li", {}, runId
        ? h("a", { href: `#/sessions/${encodeURIComponent(sessionId)}` }, sessionId)
        : h("span", { "aria-current": "page" }, sessionId))));
  replace(main, crumbs, h("h1", {}, sessionId), loading("Loading the session…"));

  const [sessionResult, runnersResult, catalogResult] = await Promise.allSettled([
    api("GET", `/sessions/${encodeURIComponent(sessionId)}`, { signal }),
    api("GET", "/eval/runners", { signal }),
    loadQuestions(),
  ]);
  if (signal.aborted) throw new DOMException("aborted", "AbortError");
  if (sessionResult.status === "rejected") {
    const err = sessionResult.reason;
    if (err.status === 404) {
      replace(main, crumbs, h("h1", {}, "Session not found"),
        empty(`There is no session "${sessionId}" in your organisation. It may have been uploaded under another id.`,
          h("a", { href: "#/sessions" }, "Back to sessions")));
      return;
    }
    replace(main, crumbs, h("h1", {}, sessionId), errorPanel(err, () => renderSession(main, ctx)));
    return;
  }
  const session = sessionResult.value.body;
  const catalog = catalogResult.status === "fulfilled" ? catalogResult.value : [];
  const catalogMap = new Map(catalog.map((q) => [q.id, q]));

  const runsSlot = h("section", { class: "past-runs", "aria-labelledby": "past-runs-title" });
  const runSlot = h("div", { class: "run-slot" });
  const refreshRuns = () => loadRuns(runsSlot, sessionId, runId, signal).catch(() => {});

  replace(main, crumbs,
    h("h1", {}, session.title || session.session_id),
    sessionSummary(session),
    evalActions(runnersResult, catalog, catalogResult, session),
    runSlot,
    runsSlot,
    deleteSection(session, ctx.user));
  if (runId) {
    mountRun(runSlot, runId, { signal, catalog: catalogMap, onChange: refreshRuns });
  }
  await refreshRuns();
}

function sessionSummary(s) {
  const kinds = Object.entries(s.entries_by_kind || {}).filter(([, n]) => n > 0);
  return h("section", { class: "card session-summary", "aria-label": "Session details" },
    h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "Session id"), h("dd", { class: "mono" }, s.session_id)),
      h("div", {}, h("dt", {}, "Format"), h("dd", {}, formatLabel(s.format))),
      h("div", {}, h("dt", {}, "Entries"), h("dd", { "data-testid": "session-entries" }, formatNumber(s.entries))),
      h("div", {}, h("dt", {}, "Size"), h("dd", {}, formatBytes(s.bytes))),
      s.repository ? h("div", {}, h("dt", {}, "Repository"), h("dd", { class: "mono" }, s.repository)) : null,
      s.parent_session_id ? h("div", {}, h("dt", {}, "Continues"),
        h("dd", {}, h("a", { href: `#/sessions/${encodeURIComponent(s.parent_session_id)}` }, s.parent_session_id))) : null,
      h("div", {}, h("dt", {}, "Uploaded"), h("dd", {}, timeEl(s.uploaded_at), s.uploaded_by ? ` by ${s.uploaded_by}` : ""))),
    kinds.length
      ? h("ul", { class: "kind-counts", "aria-label": "Entries by kind" },
        kinds.map(([kind, n]) => h("li", { "data-kind": kind }, h("strong", {}, formatNumber(n)), ` ${KIND_LABELS[kind] || kind}`)))
      : null);
}

function evalActions(runnersResult, catalog, catalogResult, session) {
  if (runnersResult.status === "rejected") {
    return h("section", { class: "eval-actions" }, errorPanel(runnersResult.reason));
  }
  const runners = runnersResult.value.body;
  if (!runners.run_button.visible) {
    return h("section", { class: "eval-actions", "data-testid": "no-runner" },
      h("p", { class: "muted" },
        "Evaluations are not available to you yet: no server vendor is configured and you have no daemon connected. ",
        "An admin can configure Anthropic or OpenAI under Settings → Eval runner, or you can start a daemon ",
        "(python -m daemon run)."));
  }
  const button = h("button", {
    type: "button", class: "primary", "aria-haspopup": "dialog",
    onclick: () => {
      if (catalogResult.status === "rejected") {
        button.after(errorPanel(catalogResult.reason));
        return;
      }
      openEvalDialog({ runners, catalog, session });
    },
  }, "Run evaluation");
  return h("section", { class: "eval-actions" }, button);
}

// ------------------------------------------------------------------------------------ dialog

function openEvalDialog({ runners, catalog, session }) {
  const routes = runners.run_button.routes;
  const server = runners.server;
  const daemons = runners.daemon.daemons || [];
  const showRunnerChoice = routes.includes("server") && routes.includes("daemon");
  const key = idempotencyKey();
  const status = h("div", { class: "form-status", role: "alert", "data-testid": "dialog-status" });
  const parts = [];

  // Runner: a choice only when both routes exist; otherwise the one route is implicit.
  let runnerRadios = [];
  const describeServer = () => (server.vendors.length === 1
    ? `${vendorLabel(server.vendors[0])}${server.models && server.models[server.vendors[0]] ? ` (${server.models[server.vendors[0]]})` : ""}`
    : "Anthropic or OpenAI");
  const daemonNames = daemons.map((d) => d.name).join(", ") || "your daemon";
  if (showRunnerChoice) {
    const name = nextId("runner");
    const option = (value, label, hint) => {
      const id = nextId("runner-opt");
      const input = h("input", { type: "radio", name, id, value, checked: value === "server" });
      runnerRadios.push(input);
      return h("div", { class: "choice" }, input, h("label", { for: id }, label, h("span", { class: "hint" }, hint)));
    };
    parts.push(h("fieldset", { class: "fieldset" }, h("legend", {}, "Runner"),
      option("server", "Server runner", ` Judges run on ${describeServer()} with your organisation's credentials.`),
      option("daemon", "My daemon", ` Judges run on ${daemonNames} with your own Claude or Codex install.`)));
  } else {
    const only = routes[0];
    parts.push(h("p", { class: "runner-note", "data-testid": "runner-note" }, only === "daemon"
      ? `Judges run on your daemon (${daemonNames}) with your own Claude or Codex install.`
      : server.vendor_required ? "Judges run on the server runner." : `Judges run on the server runner: ${describeServer()}.`));
  }
  const runner = () => (showRunnerChoice ? (runnerRadios.find((r) => r.checked) || {}).value : routes[0]);

  // Vendor: only when the API says the request must name one (both vendors enabled).
  let vendorSelect = null;
  let vendorField = null;
  if (server.vendor_required && routes.includes("server")) {
    const id = nextId("vendor");
    vendorSelect = h("select", { id, name: "vendor", required: true, "aria-describedby": `${id}-help` },
      h("option", { value: "" }, "Choose a vendor…"),
      server.vendors.map((v) => h("option", { value: v },
        `${vendorLabel(v)}${server.models && server.models[v] ? ` (${server.models[v]})` : ""}`)));
    vendorField = h("div", { class: "field" }, h("label", { for: id }, "Vendor (required)"), vendorSelect,
      h("p", { class: "hint", id: `${id}-help` }, "Both vendors are configured for your organisation: choose which judges this run."));
    parts.push(vendorField);
    const sync = () => {
      const onServer = runner() === "server";
      vendorField.hidden = !onServer;
      vendorSelect.required = onServer;
      vendorSelect.disabled = !onServer;
    };
    runnerRadios.forEach((r) => r.addEventListener("change", sync));
    sync();
  }

  // Questions: every category and question, all selected by default.
  const groups = [];
  const byCategory = new Map();
  for (const q of catalog) {
    if (!byCategory.has(q.category)) byCategory.set(q.category, []);
    byCategory.get(q.category).push(q);
  }
  const questionFieldset = h("fieldset", { class: "fieldset questions" },
    h("legend", {}, "Questions"),
    h("p", { class: "hint" }, `All ${catalog.length} questions of your organisation's judge catalog run by default. `,
      "Untick a category or single questions to skip them."),
    [...byCategory.entries()].map(([category, questions]) => {
      const catId = nextId("cat");
      const categoryBox = h("input", { type: "checkbox", id: catId, checked: true, "data-category": category });
      const boxes = questions.map((q) => {
        const id = nextId("q");
        const box = h("input", { type: "checkbox", id, checked: true, value: q.id, "data-question": q.id });
        box.addEventListener("change", () => syncCategory());
        return { box, row: h("li", { class: "choice" }, box, h("label", { for: id }, q.text, h("span", { class: "hint mono" }, ` ${q.id}`))) };
      });
      const syncCategory = () => {
        const checked = boxes.filter((b) => b.box.checked).length;
        categoryBox.checked = checked === boxes.length;
        categoryBox.indeterminate = checked > 0 && checked < boxes.length;
      };
      categoryBox.addEventListener("change", () => {
        boxes.forEach((b) => { b.box.checked = categoryBox.checked; });
        categoryBox.indeterminate = false;
      });
      groups.push({ category, categoryBox, boxes });
      return h("div", { class: "question-group" },
        h("div", { class: "choice category-choice" }, categoryBox,
          h("label", { for: catId }, h("strong", {}, categoryLabel(category)), ` (${questions.length})`)),
        h("ul", { class: "question-list", "aria-label": `${categoryLabel(category)} questions` }, boxes.map((b) => b.row)));
    }));
  parts.push(h("details", { class: "advanced" }, h("summary", {}, "Questions and options"),
    questionFieldset, thresholdField(), chainField(session)));

  const submit = h("button", { type: "submit", class: "primary" }, "Start evaluation");
  let dialog;
  let form;
  // The request as the form stands, and what is wrong with it (the cost panel estimates the same one).
  const buildRequest = () => {
    const request = {};
    const problems = [];
    const chosenRunner = runner();
    if (showRunnerChoice) request.runner = chosenRunner;
    if (vendorSelect && chosenRunner === "server") {
      if (!vendorSelect.value) problems.push("Choose a vendor.");
      else request.vendor = vendorSelect.value;
    }
    const selection = selectedQuestions(groups);
    if (selection === null) problems.push("Select at least one question.");
    else if (selection.length) request.questions = selection;
    const thresholdInput = form.querySelector("input[name=threshold]");
    const threshold = Number(thresholdInput.value);
    if (!Number.isInteger(threshold) || threshold < 1 || threshold > MAX_THRESHOLD) {
      problems.push(`The threshold must be a whole number of bytes from 1 to ${formatNumber(MAX_THRESHOLD)}.`);
    } else if (threshold !== DEFAULT_THRESHOLD) request.threshold = threshold;
    const chain = form.querySelector("input[name=chain]");
    if (chain && chain.checked) request.chain = true;
    return { request, problems };
  };
  const cost = new CostPanel({
    sessionId: session.session_id,
    currentRequest: () => {
      const { request, problems } = buildRequest();
      return problems.length ? null : request;
    },
  });
  form = h("form", {
    class: "stack", novalidate: true,
    onchange: () => cost.schedule(),
    oninput: () => cost.schedule(600),
    onsubmit: async (event) => {
      event.preventDefault();
      const { request, problems } = buildRequest();
      const chosenRunner = runner();
      if (problems.length) {
        replace(status, h("p", { class: "text-error" }, problems.join(" ")));
        if (vendorSelect && !vendorSelect.value && chosenRunner === "server") vendorSelect.focus();
        return;
      }
      if (cost.quote) request.quote = cost.quote;
      submit.disabled = true;
      replace(status, loading("Starting the evaluation…"));
      try {
        const accepted = (await api("POST", `/sessions/${encodeURIComponent(session.session_id)}/eval-runs`, {
          json: request, headers: { "Idempotency-Key": key },
        })).body;
        dialog.close();
        window.location.hash = `#/sessions/${encodeURIComponent(session.session_id)}/runs/${encodeURIComponent(accepted.eval_run_id)}`;
      } catch (err) {
        submit.disabled = false;
        if (err.code === "budget_exceeded" || err.code === "too_many_active_runs") {
          replace(status, h("div", { class: "alert alert-error", "data-testid": "dispatch-refused" },
            h("p", { class: "alert-title" }, err.code === "budget_exceeded" ? "Over budget" : "Too many runs at once"),
            h("p", {}, refusalWords(err.code, err.message, err.details))));
          cost.schedule(0);
        } else {
          replace(status, h("p", { class: "text-error" }, err.message));
        }
      }
    },
  },
  parts,
  cost.element,
  h("div", { class: "actions" }, submit, h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")),
  status);
  dialog = openDialog({ title: "Run evaluation", content: form, className: "eval-dialog" });
  dialog.querySelector("input, select, button")?.focus();
  cost.refresh();
}

function thresholdField() {
  const id = nextId("threshold");
  return h("div", { class: "field" },
    h("label", { for: id }, "Threshold (bytes)"),
    h("input", {
      id, name: "threshold", type: "number", inputmode: "numeric", min: 1, max: MAX_THRESHOLD, step: 1,
      value: String(DEFAULT_THRESHOLD), required: true, "aria-describedby": `${id}-help`,
    }),
    h("p", { class: "hint", id: `${id}-help` },
      `Tool outputs longer than this are truncated before judging (default ${formatNumber(DEFAULT_THRESHOLD)}). `,
      "A higher value shows judges more but makes runs longer; admins may need to raise the run timeout."));
}

function chainField(session) {
  if (!session.parent_session_id) return null;
  const id = nextId("chain");
  return h("div", { class: "choice" },
    h("input", { type: "checkbox", id, name: "chain" }),
    h("label", { for: id }, "Judge the whole session chain (earlier sessions first)"));
}

/** null → nothing selected; [] → everything (send no filter); else category names and question ids. */
function selectedQuestions(groups) {
  const tokens = [];
  let all = true;
  let any = false;
  for (const g of groups) {
    const checked = g.boxes.filter((b) => b.box.checked);
    if (checked.length) any = true;
    if (checked.length === g.boxes.length) tokens.push(g.category);
    else {
      all = false;
      tokens.push(...checked.map((b) => b.box.value));
    }
  }
  if (!any) return null;
  return all ? [] : tokens;
}

// ------------------------------------------------------------------------------------ past runs

async function loadRuns(slot, sessionId, currentRunId, signal) {
  const title = h("h2", { id: "past-runs-title" }, "Past evaluations");
  if (!slot.childElementCount) replace(slot, title, loading("Loading past evaluations…"));
  let items;
  try {
    items = (await api("GET", `/sessions/${encodeURIComponent(sessionId)}/eval-runs`, { signal })).body.items;
  } catch (err) {
    if (err.name === "AbortError") throw err;
    replace(slot, title, errorPanel(err, () => loadRuns(slot, sessionId, currentRunId, signal)));
    return;
  }
  if (!items.length) {
    replace(slot, title, empty("No evaluations of this session yet."));
    return;
  }
  replace(slot, title, h("ul", { class: "run-list", "data-testid": "run-list" }, items.map((run) => {
    const score = run.result ? run.result.overall_score : null;
    const href = `#/sessions/${encodeURIComponent(sessionId)}/runs/${encodeURIComponent(run.eval_run_id)}`;
    const where = run.runner === "daemon" ? "Daemon" : `${vendorLabel(run.vendor)}${run.model ? ` · ${run.model}` : ""}`;
    return h("li", { class: "run-row", "data-run-id": run.eval_run_id },
      h("a", { href, "aria-current": run.eval_run_id === currentRunId ? "true" : null }, timeEl(run.created_at)),
      runStatusBadge(run.status),
      h("span", { class: "run-score", "data-testid": "run-score" }, score === null ? "No score" : `Score ${score} / 5`),
      h("span", { class: "muted small" }, where),
      run.progress ? h("span", { class: "muted small" }, `${run.progress.completed}/${run.progress.total} scored`) : null);
  })));
}


// ------------------------------------------------------------------------------------ delete

function deleteSection(session, user) {
  if (!user || !(user.isAdmin || user.user === session.uploaded_by)) return null;
  return h("section", { class: "card danger-zone", "aria-labelledby": "delete-session-title" },
    h("h2", { id: "delete-session-title" }, "Delete this session"),
    h("p", { class: "hint" }, "Removes the transcript, its metadata, every evaluation of it and their scores in the "
      + "trends. The deletion is recorded (who and when), the content is not."),
    h("button", {
      type: "button", class: "danger", "aria-haspopup": "dialog",
      onclick: () => confirmDeleteSession(session, () => { window.location.hash = "#/sessions"; }),
    }, "Delete session"));
}
