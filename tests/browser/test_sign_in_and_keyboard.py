"""Signing in with a pasted token (kept in memory only) and keyboard-only use of the console."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import anthropic_block, configure_vendors, token, upload_session
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser


def _focused(page: Any) -> str:
    return str(page.evaluate("() => (document.activeElement && document.activeElement.textContent || '').trim()"))


def _focused_href(page: Any) -> str:
    return str(page.evaluate("() => (document.activeElement && document.activeElement.getAttribute('href')) || ''"))


def test_sign_in_with_a_pasted_token_kept_in_memory(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    console = open_console()
    console.allowed_statuses.add(401)
    page = console.page
    console.open("#/settings")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("main")).to_contain_text("make token TENANT=acme USER=alice ROLE=admin")
    console.assert_accessible("sign in")
    console.screenshot("sign-in")

    field = page.get_by_label("Bearer token")
    field.fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("main [role=alert]")).to_contain_text("not a JWT bearer token")
    expect(field).to_have_value("")

    forged = jwt.encode({"sub": "eve", "tenant": tenant, "roles": ["admin"], "exp": int(time.time()) + 600},
                        "not-the-stack-secret-0123456789abcdef", algorithm="HS256")
    field.fill(forged)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("main [role=alert]")).to_contain_text("The service rejected this token")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)

    # Keyboard only: type the token and press Enter.
    secret = register_secret(token(tenant, "alice", "admin"))
    field.focus()
    page.keyboard.type(secret)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_role("heading", name="Eval runner")).to_be_visible()  # the route asked for before sign-in
    expect(page.locator("#account")).to_contain_text("alice")
    expect(page.locator("#account")).to_contain_text("admin")
    storage = page.evaluate(
        "() => JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage), document.cookie])")
    assert json.loads(storage) == [[], [], ""]
    assert secret not in page.url and secret not in page.content()
    assert not console.context.cookies()

    # The token lived in memory only: a reload signs out.
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    console.sign_in(secret, "#/sessions")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("main")).to_contain_text("You are signed out")


def test_keyboard_only_eval_dialog_and_visible_focus(open_console: Any, local_stack: LocalStack,
                                                     tenant: str) -> None:
    key = register_secret("sk-ant-ui-keyboard-0123456789KB01")
    configure_vendors(local_stack, token(tenant, "alice", "admin"), anthropic=anthropic_block(local_stack, key))
    member = token(tenant, "bob", "member")
    upload_session(local_stack, member, "keyboard-session")
    console = open_console()
    page = console.page
    console.sign_in(member, "#/sessions")
    console.settled()

    # Tab from the top of the page to the session link, open it with Enter.
    page.locator("body").focus()
    for _ in range(30):
        page.keyboard.press("Tab")
        if _focused_href(page).endswith("#/sessions/keyboard-session"):
            break
    assert _focused_href(page).endswith("#/sessions/keyboard-session"), "the session link is not reachable with Tab"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", "keyboard focus is not visible"
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Run evaluation")).to_be_visible()
    console.settled()

    for _ in range(30):
        page.keyboard.press("Tab")
        if _focused(page) == "Run evaluation":
            break
    assert _focused(page) == "Run evaluation"
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Run evaluation")
    expect(dialog).to_be_visible()
    assert page.evaluate("() => document.querySelector('dialog').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    assert _focused(page) == "Run evaluation", "focus did not return to the button that opened the dialog"

    # Start a run with the keyboard alone.
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Start evaluation").focus()
    page.keyboard.press("Enter")
    assert console.finished_run_status() == "succeeded"
    console.assert_no_secret(key)
