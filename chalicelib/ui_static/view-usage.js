// Usage: evaluation spend per day (a uPlot chart, with the same numbers as a table for screen readers)
// and, for admins, spend per user and per model. Members see only their own usage (the API scopes it).

import { api } from "./api.js";
import { empty, errorPanel, formatNumber, h, loading, replace, vendorLabel } from "./dom.js";
import { formatUsd } from "./spend-estimate.js";
import uPlot from "./vendor/uplot.js";

const RANGES = [
  ["month", "This month"], ["30", "Last 30 days"], ["90", "Last 90 days"],
];

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function rangeDates(choice) {
  const today = new Date();
  const to = isoDay(today);
  if (choice === "month") return { from: `${to.slice(0, 8)}01`, to };
  const start = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()));
  start.setUTCDate(start.getUTCDate() - (Number(choice) - 1));
  return { from: isoDay(start), to };
}

function ensureChartStyles() {
  if (document.querySelector("link[data-uplot]")) return;
  document.head.append(h("link", { rel: "stylesheet", href: "./vendor/uplot.css", "data-uplot": "" }));
}

export async function renderUsage(main, ctx) {
  ctx.setTitle("Usage");
  const admin = Boolean(ctx.user && ctx.user.isAdmin);
  const select = h("select", { id: "usage-range", name: "range" }, RANGES.map(([v, l]) => h("option", { value: v }, l)));
  const body = h("div", { class: "usage-body" });
  const header = [
    h("h1", { tabindex: "-1" }, "Usage"),
    h("p", { class: "lead" }, admin
      ? "What evaluations cost your organisation on its shared vendor keys, from the usage the vendors reported."
      : "What your evaluations cost on your organisation's shared vendor keys, from the usage the vendors reported."),
    h("div", { class: "field range-field" }, h("label", { for: "usage-range" }, "Period"), select),
  ];
  replace(main, ...header, body);
  const load = async () => {
    replace(body, loading("Loading usage…"));
    const { from, to } = rangeDates(select.value);
    const get = (group) => api("GET", "/usage", { query: { from, to, group_by: group }, signal: ctx.signal })
      .then((r) => r.body);
    let byDay;
    let byUser;
    let byModel;
    try {
      [byDay, byUser, byModel] = await Promise.all([get("day"), admin ? get("user") : null, get("model")]);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      replace(body, errorPanel(err, load));
      return;
    }
    renderBody(body, { from, to, byDay, byUser, byModel, admin });
  };
  select.addEventListener("change", () => { load().catch(() => {}); });
  await load();
}

function renderBody(body, { from, to, byDay, byUser, byModel, admin }) {
  const total = byDay.total_usd;
  const runs = byDay.rows.reduce((n, r) => n + r.runs, 0);
  const summary = h("div", { class: "card usage-summary", "data-testid": "usage-total" },
    h("p", { class: "usage-total" }, h("strong", {}, formatUsd(total)), ` for ${formatNumber(runs)} evaluation${runs === 1 ? "" : "s"} `
      + `from ${from} to ${to}${admin ? "" : " (yours)"}.`),
    byModel.rows.some((r) => r.unpriced_runs)
      ? h("p", { class: "hint" }, "Some runs used a model without a price: their tokens are counted, their cost is not.")
      : null);
  if (!runs) {
    replace(body, summary, empty("No evaluations finished in this period."));
    return;
  }
  const chartSlot = h("div", { class: "chart", "data-testid": "spend-chart", role: "img",
    "aria-label": `Spend per day from ${from} to ${to}; the same figures are in the table below.` });
  replace(body, summary,
    h("section", { class: "card", "aria-labelledby": "spend-day-title" },
      h("h2", { id: "spend-day-title" }, "Spend per day"), chartSlot,
      h("details", {}, h("summary", {}, "Spend per day as a table"), dayTable(byDay.rows))),
    admin && byUser ? h("section", { class: "card", "aria-labelledby": "per-user-title" },
      h("h2", { id: "per-user-title" }, "Per user"), groupTable(byUser.rows, "User", "per-user")) : null,
    h("section", { class: "card", "aria-labelledby": "per-model-title" },
      h("h2", { id: "per-model-title" }, "Per model"), groupTable(byModel.rows, "Model", "per-model")));
  drawChart(chartSlot, from, to, byDay.rows);
}

function dayTable(rows) {
  return h("table", { class: "data-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), h("th", { scope: "col" }, "Evaluations"),
      h("th", { scope: "col" }, "USD"))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("th", { scope: "row" }, r.key), h("td", {}, formatNumber(r.runs)),
      h("td", {}, formatUsd(r.usd))))));
}

function groupTable(rows, label, testid) {
  return h("div", { class: "table-scroll" }, h("table", { class: "data-table", "data-testid": testid },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, label), h("th", { scope: "col" }, "Evaluations"),
      h("th", { scope: "col" }, "Input tokens"), h("th", { scope: "col" }, "Output tokens"),
      h("th", { scope: "col" }, "USD"))),
    h("tbody", {}, rows.map((r) => h("tr", { "data-key": r.key },
      h("th", { scope: "row" }, label === "Vendor" ? vendorLabel(r.key) : r.key), h("td", {}, formatNumber(r.runs)),
      h("td", {}, formatNumber(r.input_tokens + r.cache_read_input_tokens + r.cache_creation_input_tokens)),
      h("td", {}, formatNumber(r.output_tokens)),
      h("td", {}, r.unpriced_runs && !r.usd ? "not priced" : formatUsd(r.usd)))))));
}

function drawChart(slot, from, to, rows) {
  ensureChartStyles();
  const byDay = new Map(rows.map((r) => [r.key, r.usd]));
  const xs = [];
  const ys = [];
  for (let d = new Date(`${from}T00:00:00Z`); isoDay(d) <= to; d.setUTCDate(d.getUTCDate() + 1)) {
    xs.push(d.getTime() / 1000);
    ys.push(byDay.get(isoDay(d)) || 0);
  }
  const width = Math.max(280, Math.min(slot.parentElement.clientWidth - 40, 1000));
  const chart = new uPlot({
    width, height: 240, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    legend: { show: false }, cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.15, 0.01)] } },
    axes: [{}, { values: (u, vals) => vals.map((v) => `$${v.toFixed(v < 1 ? 2 : 0)}`), size: 60 }],
    series: [{}, { label: "USD", stroke: "#0b5cad", width: 2, fill: "rgba(11, 92, 173, 0.12)",
      paths: uPlot.paths.bars({ size: [0.7, 40] }), points: { show: false } }],
  }, [xs, ys], slot);
  // The canvas is decoration for sighted users; the table carries the figures.
  chart.root.setAttribute("aria-hidden", "true");
}
