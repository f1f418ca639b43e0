// The sign-in screen: paste a token (dev and token modes) or OpenID Connect (oidc mode).

import { signInWithOidc, signInWithToken } from "./auth.js";
import { h, nextId, replace } from "./dom.js";

export function renderSignIn(main, { config, notice }) {
  const mode = (config && config.auth && config.auth.mode) || "dev";
  const parts = [h("h1", {}, "Sign in")];
  if (notice) parts.push(h("p", { class: "alert alert-info", role: "status" }, notice));
  if (mode === "oidc") parts.push(oidcCard());
  else parts.push(tokenCard(mode));
  replace(main, ...parts);
}

function oidcCard() {
  const status = h("p", { class: "form-status", role: "status" });
  const button = h("button", {
    type: "button", class: "primary",
    onclick: async () => {
      button.disabled = true;
      status.textContent = "Redirecting to your identity provider…";
      try {
        await signInWithOidc();
      } catch (err) {
        button.disabled = false;
        status.textContent = `Sign-in could not start: ${err.message}`;
      }
    },
  }, "Sign in with your organisation");
  return h("section", { class: "card narrow" },
    h("p", {}, "You will be sent to your organisation's sign-in page and brought back here."),
    button, status,
    h("p", { class: "hint" }, "Your tokens are kept in this tab's memory only; reloading the page signs you out."));
}

function tokenCard(mode) {
  const inputId = nextId("token");
  const hintId = nextId("token-hint");
  const input = h("input", {
    id: inputId, name: "token", type: "password", autocomplete: "off", spellcheck: "false",
    autocapitalize: "off", required: true, "aria-describedby": hintId,
  });
  const status = h("p", { class: "form-status", role: "alert" });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", {
    class: "stack",
    onsubmit: async (event) => {
      event.preventDefault();
      const value = input.value;
      input.value = "";
      status.textContent = "";
      button.disabled = true;
      try {
        await signInWithToken(value);
      } catch (err) {
        status.textContent = err.message;
        button.disabled = false;
        input.focus();
      }
    },
  },
  h("div", { class: "field" },
    h("label", { for: inputId }, "Bearer token"),
    input,
    h("p", { class: "hint", id: hintId },
      "Kept in this tab's memory only: it is never stored, and reloading the page signs you out.")),
  h("div", { class: "actions" }, button),
  status);

  const help = mode === "dev"
    ? h("div", { class: "help" },
      h("p", {}, "This local stack signs tokens with a development secret. In the repository, run:"),
      h("pre", { class: "code" }, h("code", {}, "make token TENANT=acme USER=alice ROLE=admin")),
      h("p", {}, "and paste the printed token. Use ", h("code", {}, "ROLE=member"),
        " for a dashboard user who can upload sessions and run evaluations but not change settings."))
    : h("p", { class: "help" }, "Paste an access token issued for this service by your identity provider.");
  return h("section", { class: "card narrow" }, help, form);
}
