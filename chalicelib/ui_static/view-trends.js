// Trends: mean score over time from the daily aggregates (GET /analytics/scores), one chart per
// category (or per question, repository or user), drawn with the vendored uPlot; every chart has
// a text summary and its numbers in a table, so nothing is only in the canvas.

import { api } from "./api.js";
import { categoryLabel, empty, errorPanel, h, loading, nextId, replace } from "./dom.js";
import uPlot from "./vendor/uplot.js";

const DIMENSIONS = [["category", "Category"], ["question", "Question"], ["repository", "Repository"], ["user", "User"]];
const RANGES = [["30", "Last 30 days"], ["90", "Last 90 days"], ["180", "Last 180 days"], ["365", "Last year"]];
const MAX_CHARTS = 12;
const COLOURS = { line: "#0b5cad", fill: "rgba(11, 92, 173, 0.10)", pass: "#116329", fail: "#a40e26" };

function ensureChartStyles() {
  if (document.querySelector("link[data-uplot]")) return;
  document.head.append(h("link", { rel: "stylesheet", href: "./vendor/uplot.css", "data-uplot": "" }));
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function keyLabel(by, key) {
  if (by === "category") return categoryLabel(key);
  if (by === "question") return key.replace(/_/g, " ");
  return key;
}

export async function renderTrends(main, ctx) {
  ctx.setTitle("Trends");
  ensureChartStyles();
  const query = ctx.query || new URLSearchParams();
  const by = DIMENSIONS.some(([v]) => v === query.get("by")) ? query.get("by") : "category";
  const interval = query.get("interval") === "week" ? "week" : "day";
  const days = RANGES.some(([v]) => v === query.get("days")) ? query.get("days") : "90";
  const slot = h("section", { class: "trends", "aria-labelledby": "trends-title", "aria-busy": "true" });
  replace(main,
    h("h1", {}, "Trends"),
    h("p", { class: "lead" }, "How evaluations score over time: the mean score (1-5) per period and how many "
      + "verdicts passed, warned or failed."),
    controls({ by, interval, days }),
    slot);
  const today = new Date();
  const from = new Date(today.getTime() - (Number(days) - 1) * 86400000);
  const title = h("h2", { id: "trends-title" }, `By ${DIMENSIONS.find(([v]) => v === by)[1].toLowerCase()}, `
    + `${interval === "week" ? "weekly" : "daily"}`);
  replace(slot, title, loading("Loading trends…"));
  let body;
  try {
    body = (await api("GET", "/analytics/scores", {
      query: { from: isoDay(from), to: isoDay(today), interval, by }, signal: ctx.signal,
    })).body;
  } catch (err) {
    if (err.name === "AbortError") throw err;
    replace(slot, title, errorPanel(err, () => renderTrends(main, ctx)));
    return;
  }
  slot.setAttribute("aria-busy", "false");
  if (!body.series.length) {
    replace(slot, title, empty("No scored evaluations in this period yet.", h("a", { href: "#/history" }, "Open the history")));
    return;
  }
  const series = [...body.series]
    .sort((a, b) => total(b, "runs") - total(a, "runs"))
    .slice(0, MAX_CHARTS)
    .sort((a, b) => (by === "category" ? 0 : keyLabel(by, a.key).localeCompare(keyLabel(by, b.key))));
  const cards = series.map((s) => chartCard(by, s, body));
  replace(slot, title,
    body.series.length > MAX_CHARTS
      ? h("p", { class: "hint" }, `The ${MAX_CHARTS} with the most runs of ${body.series.length}.`) : null,
    h("div", { class: "trend-grid" }, cards.map((c) => c.card)));
  // Charts are drawn once their cards are in the page (uPlot measures the container).
  const charts = cards.map((c) => c.draw());
  const observer = new ResizeObserver(() => charts.forEach((chart) => chart && chart.fit()));
  cards.forEach((c) => observer.observe(c.plot));
  ctx.signal.addEventListener("abort", () => {
    observer.disconnect();
    charts.forEach((chart) => chart && chart.destroy());
  }, { once: true });
}

function controls({ by, interval, days }) {
  const select = (name, label, options, value) => {
    const id = nextId(name);
    return h("div", { class: "field" }, h("label", { for: id }, label),
      h("select", { id, name }, options.map(([v, l]) => h("option", { value: v, selected: v === value }, l))));
  };
  const form = h("form", { class: "card filters", "aria-label": "Trend options" },
    h("div", { class: "filter-grid" },
      select("by", "Group by", DIMENSIONS, by),
      select("interval", "Interval", [["day", "Day"], ["week", "Week"]], interval),
      select("days", "Period", RANGES, days)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form).entries()) params.set(name, String(value));
    window.location.hash = `#/trends?${params}`;
  });
  return form;
}

function total(series, field) {
  return series.points.reduce((sum, p) => sum + (p[field] || 0), 0);
}

function chartCard(by, series, body) {
  const label = keyLabel(by, series.key);
  const runs = total(series, "runs");
  const scored = series.points.filter((p) => p.mean_score !== null);
  const mean = scored.length
    ? scored.reduce((sum, p) => sum + p.mean_score * p.runs, 0) / scored.reduce((sum, p) => sum + p.runs, 0) : null;
  const verdicts = total(series, "pass") + total(series, "warn") + total(series, "fail");
  const share = (field) => (verdicts ? Math.round((100 * total(series, field)) / verdicts) : 0);
  const headingId = nextId("trend");
  const summary = `Mean ${mean === null ? "—" : mean.toFixed(2)} over ${runs.toLocaleString("en-US")} `
    + `run${runs === 1 ? "" : "s"}: pass ${share("pass")}%, warn ${share("warn")}%, fail ${share("fail")}%.`;
  const plot = h("div", { class: "trend-plot", role: "img", "aria-label": `${label}: mean score per ${body.interval}. ${summary}` });
  const card = h("section", { class: "card trend-card", "aria-labelledby": headingId, "data-series": series.key },
    h("h3", { id: headingId }, label),
    h("p", { class: "trend-summary" }, summary),
    plot,
    h("details", { class: "advanced" }, h("summary", {}, "Show the numbers"),
      h("div", { class: "table-scroll" },
        h("table", { class: "data-table" },
          h("caption", { class: "visually-hidden" }, `${label} per ${body.interval}`),
          h("thead", {}, h("tr", {}, ["Period", "Runs", "Mean", "Pass", "Warn", "Fail"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, series.points.map((p) => h("tr", {},
            h("th", { scope: "row" }, p.t), h("td", {}, String(p.runs)),
            h("td", {}, p.mean_score === null ? "—" : p.mean_score.toFixed(2)),
            h("td", {}, String(p.pass)), h("td", {}, String(p.warn)), h("td", {}, String(p.fail)))))))));
  const draw = () => {
    const day = (iso) => Date.parse(`${iso}T00:00:00Z`) / 1000;
    const xs = series.points.map((p) => day(p.t));
    const ys = series.points.map((p) => p.mean_score);
    // The whole requested period, whatever days have data (one point would otherwise span years).
    const start = Math.min(day(body.from), ...xs);
    const end = Math.max(day(body.to), ...xs);
    const width = Math.max(240, plot.clientWidth || 320);
    const chart = new uPlot({
      width, height: 180, legend: { show: false }, cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: () => [start, end] }, y: { range: [1, 5] } },
      axes: [{ stroke: "#57606a", grid: { stroke: "#eaeef2" } },
        { stroke: "#57606a", grid: { stroke: "#eaeef2" }, size: 36, splits: () => [1, 2, 3, 4, 5] }],
      series: [{}, { label: "Mean score", stroke: COLOURS.line, fill: COLOURS.fill, width: 2, spanGaps: false,
        points: { show: xs.length < 40, size: 5 } }],
    }, [xs, ys], plot);
    chart.fit = () => chart.setSize({ width: Math.max(240, plot.clientWidth || width), height: 180 });
    return chart;
  };
  return { card, plot, draw };
}
