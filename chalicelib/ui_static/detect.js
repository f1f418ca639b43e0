// Transcript format detection from content (the first lines of a JSONL file), so users need not
// know which agent wrote a file. The upload form shows the guess and lets the user override it.
//   Codex rollout:   {"timestamp", "type": "session_meta"|"response_item"|"event_msg"|…, "payload": {…}}
//   Codex (legacy):  a first line {"id", "timestamp", "instructions"|"git"}, then bare response items
//   Claude Code:     {"type": "user"|"assistant"|"summary"|…, "message"|"uuid"|"sessionId"|"leafUuid": …}

const CODEX_TYPES = new Set(["session_meta", "response_item", "event_msg", "turn_context", "compacted"]);
const CLAUDE_TYPES = new Set(["user", "assistant", "summary", "system", "file-history-snapshot"]);
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._~-]{0,199}$/;
const SAMPLE_LINES = 60;

export const FORMAT_LABELS = { "claude-code": "Claude Code", codex: "Codex" };

function records(text) {
  const out = [];
  for (const line of text.split(/\r?\n/)) {
    if (out.length >= SAMPLE_LINES) break;
    const trimmed = line.trim();
    if (!trimmed) continue;
    try {
      const value = JSON.parse(trimmed);
      if (value && typeof value === "object" && !Array.isArray(value)) out.push(value);
    } catch {
      /* a partial last line of the sample, or a corrupt line: the server reports those */
    }
  }
  return out;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** → {format: "claude-code"|"codex"|null, sessionId: string|null, title: string|null, records: n} */
export function detectTranscript(text) {
  const rows = records(text);
  let codex = 0;
  let claude = 0;
  let sessionId = null;
  let title = null;
  rows.forEach((row, index) => {
    if (typeof row.type === "string" && CODEX_TYPES.has(row.type) && isObject(row.payload) && "timestamp" in row) {
      codex += 2;
      if (row.type === "session_meta" && !sessionId && typeof row.payload.id === "string") sessionId = row.payload.id;
    } else if (index === 0 && typeof row.id === "string" && "timestamp" in row && ("instructions" in row || "git" in row)) {
      codex += 2;
      sessionId = sessionId || row.id;
    } else if ("record_type" in row || (row.type === "message" && Array.isArray(row.content) && !("message" in row))) {
      codex += 1;
    } else if (row.type === "reasoning" || row.type === "function_call" || row.type === "function_call_output") {
      codex += 1;
    } else if (typeof row.type === "string" && CLAUDE_TYPES.has(row.type)
      && ("message" in row || "uuid" in row || "sessionId" in row || "leafUuid" in row || "summary" in row)) {
      claude += 2;
      if (!sessionId && typeof row.sessionId === "string") sessionId = row.sessionId;
      if (!title && row.type === "summary" && typeof row.summary === "string") title = row.summary;
    }
  });
  let format = null;
  if (codex > claude) format = "codex";
  else if (claude > codex) format = "claude-code";
  return { format, sessionId: sessionId && SESSION_ID.test(sessionId) ? sessionId : null, title, records: rows.length };
}

/** A valid session id from a file name: "My run (2).jsonl" → "My-run-2". */
export function sessionIdFromFileName(name) {
  const base = String(name || "").replace(/\.(jsonl|ndjson|json|txt)$/i, "");
  const cleaned = base.replace(/[^A-Za-z0-9._~-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 200).replace(/-+$/, "");
  return cleaned || `session-${Date.now()}`;
}

export function isValidSessionId(value) {
  return SESSION_ID.test(value);
}
