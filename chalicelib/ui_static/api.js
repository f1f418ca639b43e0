// The only way the console talks to the service: the public API in CONTRACT.md, with the bearer
// token held in memory by auth.js. Errors become ApiError with the contract's code and message.

let tokenProvider = () => null;
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details || null;
  }
}

/** The API's base URL: everything before "/ui/" (keeps an API Gateway stage prefix such as /api). */
export const API_BASE = (() => {
  const path = window.location.pathname;
  const at = path.lastIndexOf("/ui/");
  const prefix = at >= 0 ? path.slice(0, at) : path.replace(/\/ui$/, "");
  return window.location.origin + prefix;
})();

export function configureApi({ getToken, unauthorized }) {
  tokenProvider = getToken;
  onUnauthorized = unauthorized;
}

export function path(strings, ...values) {
  // Tagged template: path`/sessions/${id}/eval-runs` with every value URL-encoded.
  return strings.reduce((out, s, i) => out + s + (i < values.length ? encodeURIComponent(values[i]) : ""), "");
}

/**
 * api("GET", "/eval/runners") → {status, body, headers}.
 * options: json (object body), body + contentType (raw body), headers, query, signal, auth (default true).
 */
export async function api(method, route, options = {}) {
  const url = new URL(API_BASE + route);
  for (const [key, value] of Object.entries(options.query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.auth !== false) {
    const token = tokenProvider();
    if (token) headers.Authorization = `Bearer ${token}`;
  }
  let body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers["Content-Type"] = "application/json";
  } else if (options.body !== undefined) {
    body = options.body;
    headers["Content-Type"] = options.contentType || "application/octet-stream";
  }
  let response;
  try {
    response = await fetch(url, {
      method, headers, body, signal: options.signal, cache: "no-store", credentials: "omit",
      referrerPolicy: "no-referrer", redirect: "error",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "The service could not be reached; check your connection and try again.");
  }
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (response.status !== 204 && type.includes("json")) {
    try {
      data = await response.json();
    } catch (err) {
      // A navigation or cancel can abort the body read after the headers arrived: that is an abort,
      // not an empty answer (a view must never render a half-read response).
      if (err && err.name === "AbortError") throw err;
      data = null;
    }
  }
  if (response.ok && response.status !== 204 && data === null && type.includes("json")) {
    throw new ApiError(response.status, "unreadable_response", "The service's answer could not be read; try again.");
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    const error = new ApiError(response.status, err.code || `http_${response.status}`,
      err.message || `The service answered HTTP ${response.status}.`, err.details);
    if (response.status === 401 && options.auth !== false) onUnauthorized(error);
    throw error;
  }
  return { status: response.status, body: data, headers: response.headers };
}

/** A random Idempotency-Key so a retried dispatch never creates a second run. */
export function idempotencyKey() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
