// Sign-in. The bearer token lives in this module's memory only: never in localStorage,
// sessionStorage, cookies or a URL, so a reload signs the user out (by design).
//   dev   (AUTH_MODE=hs256): paste a token printed by `make token ...`
//   oidc  (AUTH_MODE=jwks + OIDC_CLIENT_ID): authorization code + PKCE through oidc-client-ts,
//         loaded only in this mode; its user store is in memory too.
//   token (AUTH_MODE=jwks without a console client id): paste a token from the identity provider

import { api } from "./api.js";

let token = null;
let claims = null;
let config = null;
let userManager = null;
const listeners = new Set();

export function onAuthChange(listener) {
  listeners.add(listener);
}

function notify(reason) {
  for (const listener of listeners) listener(reason);
}

export function getToken() {
  return token;
}

export function currentUser() {
  if (!token || !claims) return null;
  const roles = Array.isArray(claims.roles) ? claims.roles.map(String) : [];
  return {
    user: String(claims.sub || "unknown"),
    tenant: String(claims.tenant || "unknown"),
    roles,
    isAdmin: roles.includes("admin"),
  };
}

export function authConfig() {
  return config;
}

/** The token's claims, for display only (the API verifies the token; the console never trusts this). */
export function decodeClaims(jwt) {
  const parts = String(jwt).split(".");
  if (parts.length !== 3) throw new Error("A bearer token has three dot-separated parts.");
  const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(parts[1].length / 4) * 4, "=");
  const json = decodeURIComponent(Array.from(atob(b64), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
  const payload = JSON.parse(json);
  if (!payload || typeof payload !== "object") throw new Error("The token has no claims.");
  return payload;
}

function setToken(value, reason) {
  token = value;
  claims = value ? decodeClaims(value) : null;
  notify(reason);
}

export async function loadConfig() {
  const response = await fetch(new URL("config.json", document.baseURI), { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`The console configuration could not be loaded (HTTP ${response.status}).`);
  config = await response.json();
  return config;
}

/** Validates a pasted token against the API before keeping it. Throws an Error with a plain message. */
export async function signInWithToken(value) {
  const candidate = String(value || "").trim().replace(/^Bearer\s+/i, "");
  if (!candidate) throw new Error("Paste a bearer token first.");
  try {
    decodeClaims(candidate);
  } catch {
    throw new Error("That is not a JWT bearer token (three base64url parts separated by dots).");
  }
  try {
    await api("GET", "/eval/runners", { auth: false, headers: { Authorization: `Bearer ${candidate}` } });
  } catch (err) {
    if (err.status === 401) throw new Error(`The service rejected this token: ${err.message}`);
    throw err;
  }
  setToken(candidate, "signin");
}

export function signOut(reason = "signout") {
  if (userManager) userManager.removeUser().catch(() => {});
  setToken(null, reason);
}

// ---------------------------------------------------------------------------------------- OIDC

function redirectUri() {
  return window.location.origin + window.location.pathname;
}

async function oidcManager() {
  if (userManager) return userManager;
  const oidc = await import("./vendor/oidc-client-ts.js");
  const auth = config.auth;
  userManager = new oidc.UserManager({
    authority: auth.issuer,
    client_id: auth.client_id,
    redirect_uri: redirectUri(),
    post_logout_redirect_uri: redirectUri(),
    response_type: "code",
    scope: auth.scope || "openid profile email",
    // Tokens stay in memory. Only the short-lived PKCE verifier and state have to survive the
    // redirect to the identity provider, so they (and nothing else) use sessionStorage.
    userStore: new oidc.WebStorageStateStore({ store: new oidc.InMemoryWebStorage() }),
    stateStore: new oidc.WebStorageStateStore({ store: window.sessionStorage }),
    automaticSilentRenew: false, // the iframe renewal needs framing, which the CSP forbids
    monitorSession: false,
    loadUserInfo: false,
  });
  userManager.events.addAccessTokenExpiring(async () => {
    const user = await userManager.getUser();
    if (user && user.refresh_token) {
      try {
        useOidcUser(await userManager.signinSilent());
      } catch {
        /* the next API call's 401 asks the user to sign in again */
      }
    }
  });
  userManager.events.addAccessTokenExpired(() => signOut("expired"));
  return userManager;
}

function useOidcUser(user) {
  const value = config.auth.api_token === "id_token" ? user.id_token : user.access_token;
  setToken(value, "signin");
}

/** On page load: finishes an OIDC redirect if the URL carries its code; returns the route to show. */
export async function completeOidcRedirect() {
  if (!config || config.auth.mode !== "oidc") return null;
  const params = new URLSearchParams(window.location.search);
  if (!params.has("state") || !(params.has("code") || params.has("error"))) return null;
  const manager = await oidcManager();
  try {
    const user = await manager.signinRedirectCallback();
    useOidcUser(user);
    return (user.state && user.state.hash) || "#/sessions";
  } finally {
    // The authorization code must not linger in the address bar or history.
    window.history.replaceState(null, "", window.location.pathname);
  }
}

export async function signInWithOidc() {
  const manager = await oidcManager();
  await manager.signinRedirect({ state: { hash: window.location.hash || "#/sessions" } });
}
