// Entry point: loads the stage's sign-in config, then routes on the URL hash.
//   #/sessions                          sessions list + upload
//   #/sessions/<id>                     a session, its eval dialog and past runs
//   #/sessions/<id>/runs/<eval_run_id>  ... with one run's live progress and result
//   #/settings                          admin settings → Eval runner
//   #/catalog                           admin judge catalog (questions, rubrics, preview, try it)
//   #/sessions/<id>/trace/<pos>[?chain=1]  the trace viewer at a cited position
//   #/facts[?repository=<repo>]         judge facts of a repository (admins delete, and choose whether judges get them)
//   #/automation                        admin online evaluation rules (matches, skips) and recent eval batches
//   #/limits                            admin settings → Limits and prices
//   #/usage                             spend per day, per user (admins) and per model
//   #/history?status=…&user=…           every run of the organisation, filtered; export; pick two
//   #/compare/<a>/<b>                   two runs side by side
//   #/trends?by=…&interval=…&days=…     score trends (a chart per category)

import { configureApi } from "./api.js";
import {
  authConfig, completeOidcRedirect, currentUser, getToken, loadConfig, onAuthChange, signOut,
} from "./auth.js";
import { h, errorPanel, replace } from "./dom.js";
import { renderAutomation } from "./view-automation.js";
import { renderCatalog } from "./view-catalog.js";
import { renderFacts } from "./view-facts.js";
import { renderCompare } from "./view-compare.js";
import { renderHistory } from "./view-history.js";
import { renderSession } from "./view-session.js";
import { renderSessions } from "./view-sessions.js";
import { renderLimits } from "./view-limits.js";
import { renderSettings } from "./view-settings.js";
import { renderSignIn } from "./view-signin.js";
import { renderTrace } from "./view-trace.js";
import { renderUsage } from "./view-usage.js";
import { renderTrends } from "./view-trends.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
let routeController = null;
let signInNotice = null;

function parseRoute() {
  const [route, search] = (window.location.hash || "#/sessions").replace(/^#\/?/, "").split("?");
  const query = new URLSearchParams(search || "");
  const parts = route.split("/").map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts[0] === "settings") return { name: "settings" };
  if (parts[0] === "catalog") return { name: "catalog" };
  if (parts[0] === "automation") return { name: "automation" };
  if (parts[0] === "facts") return { name: "facts", repository: query.get("repository") || "" };
  if (parts[0] === "sessions" && parts[1] && parts[2] === "trace") {
    const pos = /^[0-9]{1,8}$/.test(parts[3] || "") ? Number(parts[3]) : null;
    return { name: "trace", sessionId: parts[1], pos, chain: query.get("chain") === "1" };
  }
  if (parts[0] === "limits") return { name: "limits" };
  if (parts[0] === "usage") return { name: "usage" };
  if (parts[0] === "history") return { name: "history", query };
  if (parts[0] === "trends") return { name: "trends", query };
  if (parts[0] === "compare" && parts[1] && parts[2]) return { name: "compare", a: parts[1], b: parts[2] };
  if (parts[0] === "sessions" && parts[1]) {
    return { name: "session", sessionId: parts[1], runId: parts[2] === "runs" ? parts[3] || null : null };
  }
  if (parts[0] === "" || parts[0] === "sessions") return { name: "sessions" };
  return { name: "not-found" };
}

function renderAccount() {
  const user = currentUser();
  nav.hidden = !user;
  account.hidden = !user;
  // Admin-only views are not offered to members (the API answers them 403 anyway).
  for (const item of nav.querySelectorAll("[data-admin-only]")) item.hidden = !(user && user.isAdmin);
  if (!user) {
    replace(account);
    return;
  }
  replace(account, 
    h("span", { class: "account-who" },
      h("span", { class: "account-user" }, user.user),
      h("span", { class: "muted" }, ` · ${user.tenant} · ${user.isAdmin ? "admin" : "member"}`)),
    h("button", { type: "button", class: "button-quiet", onclick: () => signOut("signout") }, "Sign out"));
}

function markNav(route) {
  for (const link of nav.querySelectorAll("a[data-nav]")) {
    const active = (link.dataset.nav === "settings" && route.name === "settings")
      || (link.dataset.nav === "catalog" && route.name === "catalog")
      || (link.dataset.nav === "automation" && route.name === "automation")
      || (link.dataset.nav === "facts" && route.name === "facts")
      || (link.dataset.nav === "limits" && route.name === "limits")
      || (link.dataset.nav === "usage" && route.name === "usage")
      || (link.dataset.nav === "history" && (route.name === "history" || route.name === "compare"))
      || (link.dataset.nav === "trends" && route.name === "trends")
      || (link.dataset.nav === "sessions" && ["sessions", "session", "trace"].includes(route.name));
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

export function setTitle(text) {
  document.title = text ? `${text} · Eval runner` : "Eval runner";
}

async function render({ focus = true } = {}) {
  if (routeController) routeController.abort();
  routeController = new AbortController();
  const signal = routeController.signal;
  renderAccount();
  const route = parseRoute();
  markNav(route);
  if (!getToken()) {
    setTitle("Sign in");
    renderSignIn(main, { config: authConfig(), notice: signInNotice });
    signInNotice = null;
    return;
  }
  const ctx = { signal, user: currentUser(), setTitle };
  try {
    if (route.name === "settings") await renderSettings(main, ctx);
    else if (route.name === "catalog") await renderCatalog(main, ctx);
    else if (route.name === "automation") await renderAutomation(main, ctx);
    else if (route.name === "facts") await renderFacts(main, { ...ctx, repository: route.repository });
    else if (route.name === "trace") {
      await renderTrace(main, { ...ctx, sessionId: route.sessionId, pos: route.pos, chain: route.chain });
      return; // the trace viewer focuses the cited entry itself
    }
    else if (route.name === "limits") await renderLimits(main, ctx);
    else if (route.name === "usage") await renderUsage(main, ctx);
    else if (route.name === "history") await renderHistory(main, { ...ctx, query: route.query });
    else if (route.name === "trends") await renderTrends(main, { ...ctx, query: route.query });
    else if (route.name === "compare") await renderCompare(main, { ...ctx, a: route.a, b: route.b });
    else if (route.name === "session") await renderSession(main, { ...ctx, sessionId: route.sessionId, runId: route.runId });
    else if (route.name === "sessions") await renderSessions(main, ctx);
    else {
      setTitle("Not found");
      replace(main, h("h1", {}, "Page not found"),
        h("p", {}, "There is nothing at this address. ", h("a", { href: "#/sessions" }, "Go to sessions"), "."));
    }
  } catch (err) {
    if (err && err.name === "AbortError") return;
    replace(main, h("h1", {}, "Something went wrong"), errorPanel(err, () => render()));
  }
  if (focus && !signal.aborted && document.activeElement === document.body) main.focus({ preventScroll: true });
}

async function start() {
  configureApi({
    getToken,
    unauthorized: () => {
      if (getToken()) signOut("expired");
    },
  });
  onAuthChange((reason) => {
    if (reason === "expired") signInNotice = "Your session has expired or the token was rejected; sign in again.";
    if (reason === "signout") signInNotice = "You are signed out. The token was only kept in this tab's memory.";
    render();
    if (reason !== "expired") main.focus({ preventScroll: true });
  });
  window.addEventListener("hashchange", () => {
    // Move focus to the new page at once (not after its data loads, when the user may be tabbing).
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
    render();
  });
  try {
    await loadConfig();
    const hash = await completeOidcRedirect();
    if (hash) window.location.hash = hash;
  } catch (err) {
    replace(main, h("h1", {}, "The console could not start"), errorPanel(err, () => window.location.reload()));
    return;
  }
  render({ focus: false });
}

start();
