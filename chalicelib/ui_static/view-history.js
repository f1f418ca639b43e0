// History: every run of the organisation, newest first, with the list filters of GET /eval-runs
// (kept in the address, so a filtered view can be bookmarked), the verdict export of the same
// selection, "compare" for two picked runs, and delete with a confirmation dialog.

import { api } from "./api.js";
import {
  categoryLabel, describeError, empty, errorPanel, formatBytes, h, ignoreAbort, loading, nextId, openDialog, replace,
  timeEl, vendorLabel, verdictForScore, verdictLabel,
} from "./dom.js";
import { runStatusBadge } from "./run-panel.js";

const STATUSES = [["queued", "Queued"], ["running", "Running"], ["succeeded", "Succeeded"], ["failed", "Failed"],
  ["timed_out", "Timed out"], ["cancelled", "Cancelled"]];
const TRIGGERS = [["manual", "Manual"], ["rule", "Rule"], ["batch", "Batch"]];
const FILTERS = ["status", "runner", "vendor", "user", "repository", "trigger", "batch_id", "from", "to", "min_score",
  "max_score"];
const PAGE = 50;

/** The filters in the address (#/history?status=failed&user=bob), only those the API knows. */
export function filtersFrom(query) {
  const out = {};
  for (const name of FILTERS) {
    const value = query && query.get(name);
    if (value) out[name] = value;
  }
  return out;
}

function historyHref(filters) {
  const params = new URLSearchParams(filters);
  const text = params.toString();
  return text ? `#/history?${text}` : "#/history";
}

export async function renderHistory(main, ctx) {
  ctx.setTitle("History");
  const filters = filtersFrom(ctx.query);
  const listSlot = h("section", { class: "history-list", "aria-labelledby": "history-list-title" });
  const selection = new Set();
  const compareStatus = h("p", { class: "muted small", role: "status", "aria-live": "polite" });
  const compareButton = h("button", {
    type: "button", class: "primary", disabled: true, "data-testid": "compare-selected",
    onclick: () => {
      const [a, b] = [...selection];
      window.location.hash = `#/compare/${encodeURIComponent(a)}/${encodeURIComponent(b)}`;
    },
  }, "Compare selected");
  const onSelect = () => {
    compareButton.disabled = selection.size !== 2;
    compareStatus.textContent = selection.size === 2 ? "Two runs selected: compare them."
      : `${selection.size} of 2 runs selected for comparison.`;
  };
  replace(main,
    h("h1", {}, "History"),
    h("p", { class: "lead" }, "Every evaluation in your organisation, newest first. Filter, export the verdicts, "
      + "or pick two runs to compare."),
    filterForm(filters),
    exportCard(filters, ctx),
    h("div", { class: "actions compare-bar" }, compareButton, compareStatus),
    listSlot);
  onSelect();
  await loadPage(listSlot, ctx, filters, { selection, onSelect });
}

function filterForm(filters) {
  const field = (label, control, hint) => {
    const id = control.id;
    return h("div", { class: "field" }, h("label", { for: id }, label), control,
      hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null);
  };
  const select = (name, options, anyLabel) => h("select", { id: nextId(name), name },
    h("option", { value: "" }, anyLabel),
    options.map(([value, label]) => h("option", { value, selected: filters[name] === value }, label)));
  const text = (name, attrs = {}) => h("input", {
    id: nextId(name), name, type: "text", value: filters[name] || "", spellcheck: "false", autocomplete: "off", ...attrs,
  });
  const date = (name) => h("input", { id: nextId(name), name, type: "date", value: (filters[name] || "").slice(0, 10) });
  const score = (name, anyLabel) => select(name, [1, 2, 3, 4, 5].map((n) => [String(n), String(n)]), anyLabel);
  const form = h("form", { class: "card filters", "aria-labelledby": "filters-title", novalidate: true },
    h("h2", { id: "filters-title" }, "Filters"),
    h("div", { class: "filter-grid" },
      field("Status", select("status", STATUSES, "Any status")),
      field("Runner", select("runner", [["server", "Server"], ["daemon", "Daemon"]], "Any runner")),
      field("Vendor", select("vendor", [["anthropic", "Anthropic"], ["openai", "OpenAI"]], "Any vendor")),
      field("Trigger", select("trigger", TRIGGERS, "Any trigger")),
      field("User", text("user", { maxlength: 128 })),
      field("Repository", text("repository", { maxlength: 2048 }), "Exactly as uploaded, e.g. github.com/acme/web"),
      field("From", date("from")),
      field("To (included)", date("to")),
      field("Lowest score", score("min_score", "Any")),
      field("Highest score", score("max_score", "Any"))),
    filters.batch_id ? h("input", { type: "hidden", name: "batch_id", value: filters.batch_id }) : null,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("a", { class: "button", href: "#/history" }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = {};
    for (const [name, value] of new FormData(form).entries()) {
      if (String(value).trim()) next[name] = String(value).trim();
    }
    window.location.hash = historyHref(next);
  });
  return form;
}

function exportCard(filters, ctx) {
  const status = h("div", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "export-status" });
  const run = async (format, button) => {
    button.disabled = true;
    replace(status, loading("Preparing the export…"));
    try {
      const link = (await api("GET", "/eval-runs/export", {
        query: { ...filters, format, delivery: "link" }, signal: ctx.signal,
      })).body;
      const anchor = h("a", { href: link.download_url, "data-testid": "export-link", rel: "noreferrer" },
        `Download ${link.filename}`);
      replace(status, h("p", { class: "text-ok" },
        `Exported ${link.rows.toLocaleString("en-US")} verdicts (${formatBytes(link.bytes)}). `), anchor,
      h("p", { class: "hint" }, "The link works for 15 minutes."));
      anchor.click();
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(status, h("p", { class: "text-error", role: "alert" }, describeError(err)));
    } finally {
      button.disabled = false;
    }
  };
  const csv = h("button", { type: "button", onclick: () => ignoreAbort(run("csv", csv)) }, "Export CSV");
  const jsonl = h("button", { type: "button", onclick: () => ignoreAbort(run("jsonl", jsonl)) }, "Export JSON Lines");
  return h("section", { class: "card", "aria-labelledby": "export-title" },
    h("h2", { id: "export-title" }, "Export verdicts"),
    h("p", { class: "hint" }, "One row per scored question of the runs these filters select, for a spreadsheet."),
    h("div", { class: "actions" }, csv, jsonl), status);
}

async function loadPage(slot, ctx, filters, { cursor = null, items = [], selection, onSelect }) {
  const title = h("h2", { id: "history-list-title" }, "Runs");
  if (!cursor) replace(slot, title, loading("Loading runs…"));
  let page;
  try {
    page = (await api("GET", "/eval-runs", { query: { ...filters, limit: PAGE, cursor }, signal: ctx.signal })).body;
  } catch (err) {
    if (err.name === "AbortError") throw err;
    replace(slot, title, errorPanel(err, () => loadPage(slot, ctx, filters, { selection, onSelect })));
    return;
  }
  const all = items.concat(page.items || []);
  if (!all.length && !page.next_cursor) {
    replace(slot, title, empty(Object.keys(filters).length ? "No runs match these filters."
      : "No evaluations yet. Open a session and run one.", Object.keys(filters).length
      ? h("a", { href: "#/history" }, "Clear the filters") : h("a", { href: "#/sessions" }, "Go to sessions")));
    return;
  }
  const announce = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
  const list = h("ul", { class: "history-runs", "data-testid": "history-list" });
  const rows = all.map((run) => historyRow(run, ctx, { selection, onSelect, announce, list }));
  list.append(...rows);
  const more = page.next_cursor
    ? h("button", {
      type: "button",
      onclick: async () => {
        more.disabled = true;
        more.textContent = "Loading…";
        await ignoreAbort(loadPage(slot, ctx, filters, { cursor: page.next_cursor, items: all, selection, onSelect }));
        slot.querySelector(`.history-runs > li:nth-child(${all.length + 1}) a`)?.focus();
      },
    }, all.length ? "Load more runs" : "Keep searching older runs")
    : null;
  replace(slot, title, list, more, announce);
}

function mayDelete(run, user) {
  return Boolean(user && (user.isAdmin || user.user === run.created_by));
}

function historyRow(run, ctx, { selection, onSelect, announce, list }) {
  const href = `#/sessions/${encodeURIComponent(run.session_id)}/runs/${encodeURIComponent(run.eval_run_id)}`;
  const pickId = nextId("pick");
  const pick = h("input", {
    id: pickId, type: "checkbox", checked: selection.has(run.eval_run_id), "data-run-id": run.eval_run_id,
    onchange: () => {
      if (pick.checked) {
        if (selection.size >= 2) {
          pick.checked = false;
          announce.textContent = "Two runs are already selected; clear one first.";
          return;
        }
        selection.add(run.eval_run_id);
      } else {
        selection.delete(run.eval_run_id);
      }
      onSelect();
    },
  });
  const score = run.overall_score;
  const verdict = verdictForScore(score);
  const where = run.runner === "daemon" ? "Daemon" : `${vendorLabel(run.vendor || "")}${run.model ? ` · ${run.model}` : ""}`;
  const trigger = run.trigger && run.trigger.kind && run.trigger.kind !== "manual" ? run.trigger.kind : null;
  const row = h("li", { class: "history-row", "data-run-id": run.eval_run_id },
    h("div", { class: "history-pick" }, pick,
      h("label", { for: pickId, class: "visually-hidden" }, `Select the run of ${run.session_id} for comparison`)),
    h("div", { class: "history-main" },
      h("p", { class: "history-head" },
        h("a", { href, class: "history-link" }, run.session_id), " ",
        runStatusBadge(run.status), " ",
        score === null || score === undefined
          ? h("span", { class: "badge badge-neutral", "data-testid": "history-score" }, "No score")
          : h("span", { class: ["badge", `badge-${verdict}`], "data-testid": "history-score" },
            `${score} / 5 · ${verdictLabel(verdict)}`)),
      h("p", { class: "history-meta" },
        timeEl(run.created_at), ` · ${run.created_by} · ${where}`,
        run.repository ? h("span", { class: "mono" }, ` · ${run.repository}`) : null,
        trigger ? h("span", { class: "tag" }, trigger) : null,
        run.trial ? h("span", { class: "tag" }, "try-it") : null),
      Object.keys(run.category_scores || {}).length
        ? h("ul", { class: "history-categories", "aria-label": "Category scores" },
          Object.entries(run.category_scores).map(([name, s]) => h("li", { class: `verdict-${verdictForScore(s)}` },
            `${categoryLabel(name)} ${s}`)))
        : null),
    h("div", { class: "history-actions" },
      mayDelete(run, ctx.user)
        ? h("button", {
          type: "button", class: "danger button-small", "aria-haspopup": "dialog",
          "aria-label": `Delete the run of ${run.session_id} from ${new Date(run.created_at).toLocaleString()}`,
          onclick: () => confirmDeleteRun(run, () => {
            selection.delete(run.eval_run_id);
            row.remove();
            announce.textContent = "The run was deleted.";
            if (!list.childElementCount) list.replaceWith(empty("No runs left on this page."));
            onSelect();
            list.querySelector("a")?.focus();
          }),
        }, "Delete")
        : null));
  return row;
}

/** A delete confirmation: what goes, that it cannot be undone, and the API's answer on failure. */
function confirmDelete({ title, text, action, route, onDeleted }) {
  const descId = nextId("delete-desc");
  const status = h("div", { class: "form-status", role: "alert" });
  const confirm = h("button", { type: "button", class: "danger" }, action);
  const cancel = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
  const dialog = openDialog({
    title,
    describedBy: descId,
    content: [h("p", { id: descId }, text), status, h("div", { class: "actions" }, confirm, cancel)],
  });
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    try {
      await api("DELETE", route);
      dialog.close();
      onDeleted();
    } catch (err) {
      replace(status, h("p", { class: "text-error" }, describeError(err)));
      confirm.disabled = false;
    }
  });
  cancel.focus();
  return dialog;
}

export function confirmDeleteRun(run, onDeleted) {
  return confirmDelete({
    title: "Delete this evaluation?",
    text: `The run of ${run.session_id} started ${new Date(run.created_at).toLocaleString()} and its verdicts are `
      + "deleted, and its scores are taken out of the trends. This cannot be undone. The session itself stays.",
    action: "Delete run", route: `/eval-runs/${encodeURIComponent(run.eval_run_id)}`, onDeleted,
  });
}

export function confirmDeleteSession(session, onDeleted) {
  return confirmDelete({
    title: "Delete this session?",
    text: `The session ${session.session_id}, its transcript and every evaluation of it are deleted, and their `
      + "scores are taken out of the trends. This cannot be undone. Running evaluations must be cancelled first.",
    action: "Delete session", route: `/sessions/${encodeURIComponent(session.session_id)}`, onDeleted,
  });
}
