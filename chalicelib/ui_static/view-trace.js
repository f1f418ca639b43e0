// Trace viewer: a session's stored (redacted) entries by the positions judges cite. A finding's evidence links
// here (#/sessions/<id>/trace/<pos>, "?chain=1" for a run that judged the continuation chain): the cited entry
// is highlighted and focused among its neighbours; cut entries open in full on demand.

import { api, path } from "./api.js";
import { empty, errorPanel, formatDate, h, ignoreAbort, loading, replace } from "./dom.js";

const PAGE = 100;
const BEFORE = 10; // entries shown before the cited one
const KIND_LABELS = {
  user_message: "User", assistant_message: "Assistant", assistant_thinking: "Thinking", plan: "Plan",
  tool_invocation: "Tool call", tool_result: "Tool result",
};

export async function renderTrace(main, ctx) {
  const { sessionId, pos, chain, signal } = ctx;
  const viewer = new TraceViewer(main, ctx);
  ctx.setTitle(`Trace of ${sessionId}`);
  replace(main,
    h("p", { class: "breadcrumb" }, h("a", { href: `#/sessions/${encodeURIComponent(sessionId)}` }, `Session ${sessionId}`)),
    h("h1", { class: "section-title", tabindex: "-1" }, "Trace"),
    h("p", { class: "lead" }, "The session's entries as the judges saw them, by position (",
      h("code", {}, "pos"), "). Secrets were redacted when the session was uploaded; long entries are cut and open in full on demand."),
    viewer.slot);
  const start = pos === null ? 0 : Math.max(0, pos - BEFORE);
  await viewer.load(start, { chain, signal, target: pos });
}

class TraceViewer {
  constructor(main, ctx) {
    this.ctx = ctx;
    this.slot = h("div", { class: "trace", "data-testid": "trace" }, loading("Loading the trace…"));
    this.list = h("ol", { class: "trace-entries", "aria-label": "Trace entries" });
    this.earlier = h("div", { class: "actions" });
    this.later = h("div", { class: "actions" });
    this.status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  }

  async load(offset, { chain, signal, target }) {
    let page;
    try {
      page = (await api("GET", path`/sessions/${this.ctx.sessionId}/entries`, {
        query: { offset, limit: PAGE, chain: chain ? "true" : null }, signal,
      })).body;
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(this.slot, errorPanel(err, () => this.load(offset, { chain, signal, target })));
      return;
    }
    if (!page.items.length) {
      replace(this.slot, empty(target === null ? "This session has no entries." : `There is no entry at position ${target}.`));
      return;
    }
    this.first = page.items[0].pos;
    this.chain = chain;
    replace(this.slot,
      page.session_chain.length > 1
        ? h("p", { class: "muted" }, `Positions count across the continuation chain: ${page.session_chain.join(" → ")}.`) : null,
      this.earlier, this.list, this.later, this.status);
    this.append(page.items, target);
    this.paging(page.next_offset);
    if (target !== null) {
      const cited = this.list.querySelector(`[data-pos="${target}"]`);
      if (cited) {
        cited.scrollIntoView({ block: "center" });
        cited.focus({ preventScroll: true });
      } else {
        this.status.textContent = `There is no entry at position ${target}; the trace has ${this.first + page.items.length} or fewer.`;
      }
    }
  }

  paging(nextOffset) {
    replace(this.earlier, this.first > 0 ? h("button", {
      type: "button", class: "button-quiet", onclick: () => ignoreAbort(this.loadEarlier()),
    }, "Show earlier entries") : null);
    replace(this.later, nextOffset !== null ? h("button", {
      type: "button", class: "button-quiet", onclick: () => ignoreAbort(this.loadLater(nextOffset)),
    }, "Show later entries") : null);
  }

  async loadEarlier() {
    const offset = Math.max(0, this.first - PAGE);
    const page = (await api("GET", path`/sessions/${this.ctx.sessionId}/entries`, {
      query: { offset, limit: this.first - offset, chain: this.chain ? "true" : null }, signal: this.ctx.signal,
    })).body;
    const anchor = this.list.firstElementChild;
    this.list.prepend(...page.items.map((entry) => this.entry(entry, false)));
    this.first = offset;
    replace(this.earlier, this.first > 0 ? this.earlier.firstElementChild : null);
    this.status.textContent = `Showing ${page.items.length} earlier entries.`;
    if (anchor) anchor.focus();
  }

  async loadLater(offset) {
    const page = (await api("GET", path`/sessions/${this.ctx.sessionId}/entries`, {
      query: { offset, limit: PAGE, chain: this.chain ? "true" : null }, signal: this.ctx.signal,
    })).body;
    this.append(page.items, null);
    replace(this.later, page.next_offset !== null ? h("button", {
      type: "button", class: "button-quiet", onclick: () => ignoreAbort(this.loadLater(page.next_offset)),
    }, "Show later entries") : null);
    this.status.textContent = `Showing ${page.items.length} later entries.`;
  }

  append(items, target) {
    this.list.append(...items.map((entry) => this.entry(entry, entry.pos === target)));
  }

  entry(e, cited) {
    // Focusable: a long content scrolls within the entry, and keyboard users must be able to scroll it.
    const content = h("pre", {
      class: "trace-content", "data-field": "content", tabindex: "0", "aria-label": `Content of position ${e.pos}`,
    }, e.content || "—");
    const more = e.truncated ? h("button", {
      type: "button", class: "button-quiet",
      onclick: (event) => ignoreAbort(this.expand(e, content, event.currentTarget)),
    }, `Show all ${formatBytes(e.content_bytes)}`) : null;
    const label = KIND_LABELS[e.kind] || e.kind;
    return h("li", {
      class: ["trace-entry", `kind-${e.kind}`, cited ? "cited" : null, e.is_error ? "is-error" : null],
      id: `entry-${e.pos}`, "data-pos": e.pos, "data-testid": "trace-entry", tabindex: "-1",
      "aria-label": `Position ${e.pos}: ${label}${cited ? " (cited by the finding)" : ""}`,
    },
    h("div", { class: "trace-head" },
      h("span", { class: "badge badge-neutral mono" }, `pos ${e.pos}`),
      h("strong", {}, label),
      e.tool ? h("span", { class: "mono" }, e.tool) : null,
      e.call_id ? h("span", { class: "muted mono small" }, e.call_id) : null,
      e.is_error ? h("span", { class: "badge badge-fail" }, "error") : null,
      cited ? h("span", { class: "badge badge-info" }, "cited") : null,
      h("span", { class: "muted small" }, formatDate(e.timestamp))),
    content, more);
  }

  async expand(e, content, button) {
    button.disabled = true;
    this.status.textContent = `Loading position ${e.pos} in full…`;
    try {
      const full = (await api("GET", path`/sessions/${this.ctx.sessionId}/entries/${String(e.pos)}`, {
        query: { chain: this.chain ? "true" : null }, signal: this.ctx.signal,
      })).body;
      content.textContent = full.content;
      button.remove();
      this.status.textContent = full.truncated
        ? `Position ${e.pos}: its beginning and end (${formatBytes(full.omitted_bytes)} in the middle are not shown).`
        : `Position ${e.pos} is shown in full.`;
    } catch (err) {
      button.disabled = false;
      if (err.name === "AbortError") return;
      this.status.textContent = `Could not load position ${e.pos}: ${err.message}`;
    }
  }
}

function formatBytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${n} bytes`;
}

/** The trace viewer's address for a cited position of a run's session. */
export function traceHref(sessionId, pos, chain) {
  return `#/sessions/${encodeURIComponent(sessionId)}/trace/${pos}${chain ? "?chain=1" : ""}`;
}
