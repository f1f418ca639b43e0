// Compare two runs (picked on the History page): overall, per-category and per-question score
// deltas (b − a), and for every question whose verdict or text changed, both judges' findings.

import { api } from "./api.js";
import { categoryLabel, empty, errorPanel, h, loading, replace, timeEl, verdictForScore, verdictLabel } from "./dom.js";
import { humanizeId } from "./run-panel.js";

function delta(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  const cls = value > 0 ? "delta-up" : value < 0 ? "delta-down" : "delta-same";
  const text = value > 0 ? `+${value}` : value < 0 ? `−${Math.abs(value)}` : "±0";
  const words = value > 0 ? "higher" : value < 0 ? "lower" : "unchanged";
  return h("span", { class: ["delta", cls] }, text, h("span", { class: "visually-hidden" }, ` (${words})`));
}

function scoreBadge(score) {
  if (score === null || score === undefined) return h("span", { class: "muted" }, "—");
  const verdict = verdictForScore(score);
  return h("span", { class: ["badge", `badge-${verdict}`] }, `${score} · ${verdictLabel(verdict)}`);
}

function side(run, label) {
  const href = `#/sessions/${encodeURIComponent(run.session_id)}/runs/${encodeURIComponent(run.eval_run_id)}`;
  return h("div", { class: "card compare-side" },
    h("h2", {}, label),
    h("p", {}, h("a", { href }, run.session_id)),
    h("p", { class: "muted small" }, timeEl(run.created_at), run.model ? ` · ${run.model}` : ""),
    h("p", {}, "Overall ", scoreBadge(run.overall_score)));
}

export async function renderCompare(main, ctx) {
  const { a, b, signal } = ctx;
  ctx.setTitle("Compare runs");
  const crumbs = h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" },
    h("ol", {}, h("li", {}, h("a", { href: "#/history" }, "History")),
      h("li", {}, h("span", { "aria-current": "page" }, "Compare"))));
  replace(main, crumbs, h("h1", {}, "Compare runs"), loading("Comparing…"));
  let body;
  try {
    body = (await api("GET", "/eval-runs/compare", { query: { a, b }, signal })).body;
  } catch (err) {
    if (err.name === "AbortError") throw err;
    if (err.status === 404) {
      replace(main, crumbs, h("h1", {}, "Run not found"),
        empty("One of these runs is not in your organisation (or was deleted).", h("a", { href: "#/history" }, "Back to the history")));
      return;
    }
    replace(main, crumbs, h("h1", {}, "Compare runs"), errorPanel(err, () => renderCompare(main, ctx)));
    return;
  }
  const changed = new Set(body.changed_questions);
  replace(main, crumbs,
    h("h1", {}, "Compare runs"),
    h("p", { class: "lead" }, body.same_session ? "Two evaluations of the same session. " : "Evaluations of two sessions. ",
      "Differences are B − A; ", `${changed.size} of ${body.questions.length} questions changed verdict or explanation.`),
    h("div", { class: "grid compare-sides" }, side(body.a, "A"), side(body.b, "B")),
    h("p", { class: "compare-overall" }, "Overall difference: ", delta(body.overall_delta)),
    h("section", { "aria-labelledby": "compare-categories" },
      h("h2", { id: "compare-categories" }, "Categories"),
      h("div", { class: "table-scroll" },
        h("table", { class: "data-table", "data-testid": "compare-categories" },
          h("thead", {}, h("tr", {}, ["Category", "A", "B", "Difference"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, body.categories.map((c) => h("tr", { "data-category": c.name },
            h("th", { scope: "row" }, categoryLabel(c.name)), h("td", {}, scoreBadge(c.a_score)),
            h("td", {}, scoreBadge(c.b_score)), h("td", {}, delta(c.delta)))))))),
    h("section", { "aria-labelledby": "compare-questions" },
      h("h2", { id: "compare-questions" }, "Questions"),
      h("div", { class: "table-scroll" },
        h("table", { class: "data-table", "data-testid": "compare-questions" },
          h("thead", {}, h("tr", {}, ["Question", "Category", "A", "B", "Difference", "Changed"]
            .map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, body.questions.map((q) => h("tr", { "data-question": q.question_id },
            h("th", { scope: "row" }, humanizeId(q.question_id)), h("td", {}, categoryLabel(q.category)),
            h("td", {}, scoreBadge(q.a && q.a.score)), h("td", {}, scoreBadge(q.b && q.b.score)),
            h("td", {}, delta(q.delta)),
            h("td", {}, [q.verdict_changed ? "verdict" : null, q.text_changed ? "text" : null].filter(Boolean).join(", ")
              || h("span", { class: "muted" }, "no")))))))),
    changed.size
      ? h("section", { "aria-labelledby": "compare-changes" },
        h("h2", { id: "compare-changes" }, "What the judges said differently"),
        body.questions.filter((q) => changed.has(q.question_id)).map((q) => h("details", { class: "card compare-change" },
          h("summary", {}, humanizeId(q.question_id), " ", delta(q.delta)),
          h("div", { class: "grid" },
            finding("A", q.a), finding("B", q.b)))))
      : null);
}

function finding(label, verdict) {
  if (!verdict) return h("div", {}, h("h3", {}, label), h("p", { class: "muted" }, "Not judged in this run."));
  return h("div", {}, h("h3", {}, label, " ", scoreBadge(verdict.score)),
    h("dl", { class: "finding-body" },
      h("dt", {}, "Finding"), h("dd", {}, verdict.finding),
      verdict.evidence ? [h("dt", {}, "Evidence"), h("dd", {}, verdict.evidence)] : null,
      verdict.recommendation ? [h("dt", {}, "Recommendation"), h("dd", {}, verdict.recommendation)] : null));
}
