// Sessions: upload a Claude Code or Codex transcript (file picker or drag and drop) and list the
// tenant's sessions with their entry counts; ticked sessions can be evaluated together (bulk-eval.js).

import { api } from "./api.js";
import { openBulkEvaluate } from "./bulk-eval.js";
import { FORMAT_LABELS, detectTranscript, isValidSessionId, sessionIdFromFileName } from "./detect.js";
import {
  empty, errorPanel, formatBytes, formatNumber, h, ignoreAbort, loading, nextId, replace, timeEl,
} from "./dom.js";

const MAX_PUT_BYTES = 4 * 1024 * 1024;
const GZIP_ABOVE_BYTES = 256 * 1024;
const SNIFF_BYTES = 256 * 1024;

export const KIND_LABELS = {
  user_message: "user messages",
  assistant_message: "assistant messages",
  assistant_thinking: "thinking blocks",
  tool_invocation: "tool calls",
  tool_result: "tool results",
  plan: "plans",
};

export function formatLabel(format) {
  return FORMAT_LABELS[format] || (format === "native" ? "Native trace" : String(format || "—"));
}

export function kindSummary(byKind) {
  return Object.entries(byKind || {}).filter(([, n]) => n > 0)
    .map(([kind, n]) => `${formatNumber(n)} ${KIND_LABELS[kind] || kind.replace(/_/g, " ")}`).join(", ");
}

export async function renderSessions(main, ctx) {
  ctx.setTitle("Sessions");
  const listSlot = h("section", { class: "sessions", "aria-labelledby": "sessions-list-title" });
  replace(main, 
    h("h1", {}, "Sessions"),
    h("p", { class: "lead" }, "Upload a recorded Claude Code or Codex session, then open it to run an evaluation."),
    uploadCard(() => loadList(listSlot, ctx).catch(() => {})),
    listSlot);
  await loadList(listSlot, ctx);
}

async function loadList(slot, ctx, { cursor = null, items = [] } = {}) {
  const title = h("h2", { id: "sessions-list-title" }, "Your organisation's sessions");
  if (!cursor) replace(slot, title, loading("Loading sessions…"));
  let page;
  try {
    page = (await api("GET", "/sessions", { query: { limit: 50, cursor }, signal: ctx.signal })).body;
  } catch (err) {
    if (err.name === "AbortError") throw err;
    replace(slot, title, errorPanel(err, () => loadList(slot, ctx)));
    return;
  }
  const all = items.concat((page && page.items) || []);
  if (!all.length) {
    replace(slot, title, empty("No sessions yet. Upload a transcript above to get started."));
    return;
  }
  const more = page.next_cursor
    ? h("button", {
      type: "button",
      onclick: async () => {
        more.disabled = true;
        more.textContent = "Loading…";
        await ignoreAbort(loadList(slot, ctx, { cursor: page.next_cursor, items: all }));
        // Continue where the user was: the first of the newly loaded sessions.
        slot.querySelector(`.session-list li:nth-child(${all.length + 1}) a`)?.focus();
      },
    }, "Load more sessions")
    : null;
  const selected = new Set();
  const count = h("span", { class: "muted", "aria-live": "polite", "data-testid": "selected-count" }, "No session selected");
  const evaluate = h("button", {
    type: "button", disabled: true, "data-testid": "bulk-evaluate",
    onclick: () => ignoreAbort(openBulkEvaluate([...selected], ctx)),
  }, "Evaluate selected…");
  const onSelect = (sessionId, checked) => {
    if (checked) selected.add(sessionId);
    else selected.delete(sessionId);
    count.textContent = selected.size ? `${selected.size} selected` : "No session selected";
    evaluate.disabled = !selected.size;
  };
  replace(slot, title,
    h("div", { class: "actions bulk-bar", role: "group", "aria-label": "Selected sessions" }, evaluate, count),
    h("ul", { class: "session-list", "data-testid": "session-list" }, all.map((s) => sessionRow(s, onSelect))),
    more);
}

function sessionRow(s, onSelect) {
  const name = s.title || s.session_id;
  return h("li", { class: "session-row", "data-session-id": s.session_id },
    h("input", { type: "checkbox", class: "session-select", "aria-label": `Select ${name}`,
      onchange: (event) => onSelect(s.session_id, event.currentTarget.checked) }),
    h("a", { class: "session-link", href: `#/sessions/${encodeURIComponent(s.session_id)}` }, name),
    s.title ? h("span", { class: "mono muted small" }, s.session_id) : null,
    h("p", { class: "session-meta" },
      h("span", { class: "tag" }, formatLabel(s.format)), " ",
      h("span", { "data-testid": "entry-count" }, `${formatNumber(s.entries)} entries`),
      " · uploaded ", timeEl(s.uploaded_at), s.uploaded_by ? ` by ${s.uploaded_by}` : "",
      s.repository ? h("span", { class: "muted" }, ` · ${s.repository}`) : null));
}

function uploadCard(onUploaded) {
  const fileId = nextId("file");
  const fileInput = h("input", {
    id: fileId, type: "file", accept: ".jsonl,.ndjson,.json,.txt,application/x-ndjson,application/json",
    "aria-describedby": `${fileId}-help`,
  });
  const details = h("div", { class: "upload-details" });
  const zone = h("div", { class: "dropzone", "data-testid": "dropzone" },
    h("p", { class: "dropzone-text" }, "Drag and drop a transcript file here, or choose one:"),
    h("div", { class: "field" },
      h("label", { for: fileId }, "Transcript file"),
      fileInput,
      h("p", { class: "hint", id: `${fileId}-help` },
        "A Claude Code session (~/.claude/projects/…/<id>.jsonl) or a Codex rollout (~/.codex/sessions/…/rollout-….jsonl).")));

  const choose = async (file) => {
    if (!file) return;
    replace(details, loading(`Reading ${file.name}…`));
    let text;
    try {
      text = await file.slice(0, SNIFF_BYTES).text();
    } catch {
      replace(details, h("p", { class: "text-error", role: "alert" }, "The file could not be read."));
      return;
    }
    replace(details, uploadForm(file, detectTranscript(text), onUploaded, () => {
      replace(details);
      fileInput.value = "";
      fileInput.focus();
    }));
    details.querySelector("select, input")?.focus();
  };
  fileInput.addEventListener("change", () => choose(fileInput.files && fileInput.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dropzone-active");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dropzone-active"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dropzone-active");
    const file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
    if (file) fileInput.value = ""; // the dropped file replaces any picked one
    choose(file);
  });
  return h("section", { class: "card upload-card", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload a transcript"), zone, details);
}

function uploadForm(file, detected, onUploaded, reset) {
  const formatId = nextId("format");
  const idId = nextId("session-id");
  const titleId = nextId("title");
  const format = h("select", { id: formatId, name: "format", required: true, "aria-describedby": `${formatId}-help` },
    h("option", { value: "", selected: !detected.format }, "Choose the format…"),
    Object.entries(FORMAT_LABELS).map(([value, label]) => h("option", { value, selected: detected.format === value }, label)));
  const sessionId = h("input", {
    id: idId, name: "session_id", type: "text", required: true, spellcheck: "false", autocomplete: "off",
    value: detected.sessionId || sessionIdFromFileName(file.name), "aria-describedby": `${idId}-help`,
    pattern: "[A-Za-z0-9][A-Za-z0-9._~\\-]{0,199}",
  });
  const title = h("input", { id: titleId, name: "title", type: "text", maxlength: 1024, value: detected.title || "" });
  const status = h("div", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "upload-status" });
  const submit = h("button", { type: "submit", class: "primary" }, "Upload");
  const detectedText = detected.format
    ? `Detected from the file's content: ${FORMAT_LABELS[detected.format]}. Change it if that is wrong.`
    : "The format could not be detected from the first lines; choose it.";

  const form = h("form", {
    class: "stack", novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      const problems = [];
      if (!format.value) problems.push("Choose the transcript format.");
      if (!isValidSessionId(sessionId.value)) {
        problems.push("The session id must start with a letter or digit and use only letters, digits and . _ ~ - (up to 200).");
      }
      if (problems.length) {
        replace(status, h("p", { class: "text-error", role: "alert" }, problems.join(" ")));
        (!format.value ? format : sessionId).focus();
        return;
      }
      submit.disabled = true;
      replace(status, loading(`Uploading ${file.name}…`));
      try {
        let body = file;
        if (file.size > GZIP_ABOVE_BYTES && typeof CompressionStream === "function") {
          // The API inflates gzip bodies (detected by magic bytes): big transcripts fit the 4 MiB PUT.
          body = await new Response(file.stream().pipeThrough(new CompressionStream("gzip"))).blob();
        }
        if (body.size > MAX_PUT_BYTES) {
          throw new Error(`This file is ${formatBytes(file.size)} (${formatBytes(body.size)} compressed), over the `
            + "4 MiB the console can upload. Use the API's presigned upload (POST /sessions/{id}/uploads) instead.");
        }
        const response = await api("PUT", `/sessions/${encodeURIComponent(sessionId.value)}`, {
          query: { format: format.value, title: title.value.trim() || undefined },
          body, contentType: "application/x-ndjson",
        });
        const s = response.body;
        const summary = kindSummary(s.entries_by_kind);
        replace(status, h("div", { class: "alert alert-ok", "data-testid": "upload-result" },
          h("p", {}, `${response.status === 201 ? "Uploaded" : "Replaced"} `, h("strong", {}, s.title || s.session_id),
            `: ${formatNumber(s.entries)} entries${summary ? ` (${summary})` : ""}.`),
          h("p", {}, h("a", { href: `#/sessions/${encodeURIComponent(s.session_id)}` }, "Open the session to evaluate it"))));
        submit.disabled = false;
        status.querySelector("a")?.focus();
        onUploaded();
      } catch (err) {
        submit.disabled = false;
        replace(status, h("p", { class: "text-error", role: "alert" }, err.message));
      }
    },
  },
  h("p", { class: "file-name" }, "Selected: ", h("strong", {}, file.name), ` (${formatBytes(file.size)})`),
  h("div", { class: "field" },
    h("label", { for: formatId }, "Format"),
    format,
    h("p", { class: "hint", id: `${formatId}-help` }, detectedText)),
  h("div", { class: "field" },
    h("label", { for: idId }, "Session id"),
    sessionId,
    h("p", { class: "hint", id: `${idId}-help` }, "Uploading again with the same id replaces the stored session.")),
  h("div", { class: "field" },
    h("label", { for: titleId }, "Title (optional)"),
    title),
  h("div", { class: "actions" }, submit, h("button", { type: "button", class: "button-quiet", onclick: reset }, "Choose another file")),
  status);
  return form;
}
