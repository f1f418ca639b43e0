// DOM helpers. Every string from the API or a session is untrusted: it only ever becomes a text
// node or an attribute value here, never markup (there is no innerHTML anywhere in the console).

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "required", "selected", "open", "indeterminate"]);

/** h("button", {class: "primary", onclick: fn}, "Save") → an element; children may be nested arrays. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) el[key] = value;
    else if (value === true) el.setAttribute(key, "");
    else if (value !== false) el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Replaces an element's children (null/false children are skipped, strings become text). */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

let uid = 0;
/** A unique id for label/aria wiring. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), text);
}

export function empty(text, ...extra) {
  return h("div", { class: "empty" }, h("p", {}, text), extra);
}

/** What a member sees on an admin-only page: what the page is for, and where to go instead. */
export function adminsOnly(main, ctx, explanation, back) {
  ctx.setTitle("Admins only");
  replace(main, h("h1", {}, "Admins only"),
    h("div", { class: "card narrow", "data-testid": "admins-only" }, h("p", {}, ...explanation), h("p", {}, back)));
}

/** An error panel with the API's message and an optional retry. */
export function errorPanel(error, retry) {
  const titles = { 0: "The service could not be reached", 403: "Not allowed", 404: "Not found" };
  const title = (error && titles[error.status]) || "Something went wrong";
  return h("div", { class: "alert alert-error", role: "alert" },
    h("p", { class: "alert-title" }, title),
    h("p", {}, describeError(error)),
    retry ? h("button", { type: "button", onclick: () => ignoreAbort(retry()) }, "Try again") : null);
}

/** Leaving a page aborts its requests; that is not an error worth reporting. */
export function ignoreAbort(result) {
  return Promise.resolve(result).catch((err) => {
    if (!err || err.name !== "AbortError") throw err;
  });
}

export function describeError(error) {
  if (!error) return "Unknown error.";
  const message = error.message || "Unknown error.";
  return error.code && error.status ? `${message} (${error.code}, HTTP ${error.status})` : message;
}

export function formatDate(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function timeEl(iso) {
  return h("time", { datetime: iso || "" }, formatDate(iso));
}

export function formatNumber(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "—";
}

export function formatDuration(ms) {
  if (typeof ms !== "number" || ms < 0) return "—";
  if (ms < 1000) return `${ms} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

export function formatBytes(n) {
  if (typeof n !== "number") return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

/** Resolves after ms, or rejects with an AbortError as soon as the signal aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(new DOMException("aborted", "AbortError"));
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    }, { once: true });
  });
}

/** A modal <dialog>: focus is trapped by the browser, Escape closes it, focus returns to opener. */
export function openDialog({ title, describedBy, content, className }) {
  const opener = document.activeElement;
  const titleId = nextId("dialog-title");
  const dialog = h("dialog", { class: ["dialog", className], "aria-labelledby": titleId,
    "aria-describedby": describedBy || null },
  h("h2", { id: titleId, class: "dialog-title" }, title), content);
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

export function verdictLabel(verdict) {
  return { pass: "Pass", warn: "Warn", fail: "Fail" }[verdict] || "—";
}

export function verdictForScore(score) {
  if (typeof score !== "number") return null;
  if (score >= 4) return "pass";
  if (score >= 2) return "warn";
  return "fail";
}

export const CATEGORY_LABELS = {
  safety: "Safety",
  plan_adherence: "Plan adherence",
  quality: "Quality",
  efficiency: "Efficiency",
};

export function categoryLabel(name) {
  return CATEGORY_LABELS[name] || String(name).replace(/_/g, " ");
}

export const VENDOR_LABELS = { anthropic: "Anthropic", openai: "OpenAI" };

export function vendorLabel(name) {
  return VENDOR_LABELS[name] || String(name);
}
