"""Settings → Eval runner in Chromium: configure both vendors against the fake vendor, test the
connection (ok and a rejected key), rotate keys, remove with confirmation, the run timeout, the
412 concurrent-edit flow, a context limit the vendor stated (shown, then forgotten), and the
members' "Admins only" page. API keys never reach the page."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    anthropic_block,
    api,
    configure_vendors,
    fake_vendor,
    openai_block,
    token,
    wait_for_run,
)
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser


def _key(prefix: str, tail: str) -> str:
    # Unique per test so a leak can only come from this test's own actions. Decimal digits only: the
    # fake vendor refuses any key containing "bad", which a hex uuid spells about once in 140 keys.
    return register_secret(f"{prefix}-{uuid.uuid4().int:039d}{tail}")


def test_admin_configures_tests_and_rotates_both_vendors(open_console: Any, local_stack: LocalStack,
                                                         tenant: str) -> None:
    anthropic_key = _key("sk-ant-ui", "ZQ7x")
    openai_key = _key("sk-proj-ui", "OA11")
    bad_key = _key("sk-proj-bad", "BAD9")
    rotated_key = _key("sk-proj-ui2", "RT22")
    console = open_console()
    page = console.page
    console.sign_in(token(tenant, "alice", "admin"), "#/settings")

    anthropic = page.get_by_test_id("vendor-anthropic")
    openai = page.get_by_test_id("vendor-openai")
    expect(anthropic.get_by_test_id("vendor-badge")).to_have_text("Not configured")
    expect(openai.get_by_test_id("vendor-badge")).to_have_text("Not configured")
    expect(anthropic.get_by_role("button", name="Test connection")).to_be_disabled()
    # The seed's models are offered as suggestions.
    options = page.eval_on_selector_all("#vendor-anthropic-models option", "os => os.map(o => o.value)")
    assert options == ["claude-sonnet-4-6", "claude-opus-4-7"]
    assert page.eval_on_selector_all("#vendor-openai-models option", "os => os.map(o => o.value)") == ["gpt-4o"]
    expect(page.get_by_test_id("run-timeout-card")).to_contain_text(
        "Long sessions with a raised threshold may need a higher value")
    console.assert_accessible("settings, nothing configured")

    # A new vendor needs its key: the form says so without calling the API.
    anthropic.get_by_label("Judge model").fill("claude-sonnet-4-6")
    anthropic.get_by_role("button", name="Save").click()
    expect(anthropic.get_by_test_id("vendor-status")).to_contain_text("Enter the Anthropic API key")

    anthropic.get_by_label("Anthropic API key").fill(anthropic_key)
    anthropic.get_by_text("Advanced").click()
    anthropic.get_by_label("Base URL").fill(local_stack.fake_vendor_url)
    anthropic.get_by_role("button", name="Save").click()
    expect(anthropic.get_by_test_id("vendor-status")).to_contain_text("Saved")
    expect(anthropic.get_by_test_id("vendor-badge")).to_have_text("Enabled")
    expect(anthropic.get_by_test_id("key-hint")).to_contain_text("…ZQ7x")
    # Write-only: no input holds the key any more, and only the hint is shown.
    expect(anthropic.get_by_role("button", name="Replace key")).to_be_visible()

    openai.get_by_label("Judge model").fill("gpt-4o")
    openai.get_by_label("OpenAI API key").fill(openai_key)
    openai.get_by_text("Advanced").click()
    openai.get_by_label("Base URL").fill(f"{local_stack.fake_vendor_url}/v1")
    openai.get_by_role("button", name="Save").click()
    expect(openai.get_by_test_id("vendor-badge")).to_have_text("Enabled")
    expect(openai.get_by_test_id("key-hint")).to_contain_text("…OA11")

    anthropic.get_by_role("button", name="Test connection").click()
    expect(anthropic.get_by_test_id("vendor-status")).to_contain_text("Connection OK")
    expect(anthropic.get_by_test_id("vendor-status")).to_contain_text(" ms")
    openai.get_by_role("button", name="Test connection").click()
    expect(openai.get_by_test_id("vendor-status")).to_contain_text("Connection OK")

    # Rotate the OpenAI key to one the vendor rejects: the test explains it and the vendor is suspended.
    openai.get_by_role("button", name="Replace key").click()
    openai.get_by_label("New OpenAI API key").fill(bad_key)
    openai.get_by_role("button", name="Save").click()
    expect(openai.get_by_test_id("key-hint")).to_contain_text("…BAD9")
    openai.get_by_role("button", name="Test connection").click()
    expect(openai.get_by_test_id("vendor-status")).to_contain_text("Connection failed")
    expect(openai.get_by_test_id("vendor-status")).to_contain_text("rejected the API key")
    expect(openai.get_by_test_id("vendor-badge")).to_have_text("Suspended")
    console.screenshot("settings-suspended")

    # Rotating to a good key brings it back.
    openai.get_by_role("button", name="Replace key").click()
    openai.get_by_label("New OpenAI API key").fill(rotated_key)
    openai.get_by_role("button", name="Save").click()
    expect(openai.get_by_test_id("key-hint")).to_contain_text("…RT22")
    openai.get_by_role("button", name="Test connection").click()
    expect(openai.get_by_test_id("vendor-status")).to_contain_text("Connection OK")
    expect(openai.get_by_test_id("vendor-badge")).to_have_text("Enabled")

    audit = page.get_by_test_id("audit-list")
    expect(audit).to_contain_text("alice")
    expect(audit).to_contain_text("…RT22")
    expect(audit).to_contain_text("OpenAI model")

    with api(local_stack, token(tenant, "alice", "admin")) as http:
        settings = http.get("/admin/settings/eval-runner").json()
    assert settings["anthropic"]["api_key_hint"] == "…ZQ7x" and settings["openai"]["api_key_hint"] == "…RT22"
    assert settings["openai"]["base_url"] == f"{local_stack.fake_vendor_url}/v1"

    console.assert_accessible("settings, both vendors configured")
    console.screenshot("settings")
    console.assert_no_secret(anthropic_key, openai_key, bad_key, rotated_key)


def test_remove_vendor_asks_for_confirmation(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    key = _key("sk-ant-ui", "RM01")
    admin = token(tenant, "alice", "admin")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, key))
    console = open_console()
    page = console.page
    console.sign_in(admin, "#/settings")
    anthropic = page.get_by_test_id("vendor-anthropic")
    expect(anthropic.get_by_test_id("vendor-badge")).to_have_text("Enabled")

    anthropic.get_by_role("button", name="Remove").click()
    dialog = page.get_by_role("dialog", name="Remove Anthropic?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    console.assert_accessible("remove confirmation")
    console.screenshot("settings-remove-dialog")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(anthropic.get_by_test_id("vendor-badge")).to_have_text("Enabled")

    anthropic.get_by_role("button", name="Remove").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove Anthropic").click()
    expect(anthropic.get_by_test_id("vendor-badge")).to_have_text("Not configured")
    expect(anthropic.get_by_test_id("vendor-status")).to_contain_text("removed")
    with api(local_stack, admin) as http:
        assert http.get("/admin/settings/eval-runner").json()["anthropic"]["status"] == "unconfigured"
    console.assert_no_secret(key)


def test_run_timeout_bounds_and_default(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    console = open_console()
    page = console.page
    console.sign_in(token(tenant, "alice", "admin"), "#/settings")
    card = page.get_by_test_id("run-timeout-card")
    field = card.get_by_label("Run timeout (seconds)")
    expect(field).to_have_value("300")
    expect(field).to_have_attribute("min", "30")
    expect(field).to_have_attribute("max", "840")
    expect(card).to_contain_text("Default 300 seconds; allowed 30 to 840")

    field.fill("10")
    card.get_by_role("button", name="Save timeout").click()
    expect(card).to_contain_text("from 30 to 840")
    field.fill("600")
    card.get_by_role("button", name="Save timeout").click()
    expect(card).to_contain_text("Saved")
    with api(local_stack, token(tenant, "alice", "admin")) as http:
        assert http.get("/admin/settings/eval-runner").json()["run_timeout_seconds"] == 600
    card.get_by_role("button", name="Use the default (300)").click()
    expect(field).to_have_value("300")


def test_concurrent_edit_shows_who_changed_what_and_reloads(open_console: Any, local_stack: LocalStack,
                                                            tenant: str) -> None:
    key = _key("sk-ant-ui", "CC01")
    alice_token = token(tenant, "alice", "admin")
    configure_vendors(local_stack, alice_token, anthropic=anthropic_block(local_stack, key))

    alice = open_console()
    alice.allowed_statuses.add(412)
    alice.sign_in(alice_token, "#/settings")
    bob = open_console()
    bob.sign_in(token(tenant, "bob", "admin"), "#/settings")

    # Bob saves first, from his own browser.
    bob_card = bob.page.get_by_test_id("vendor-anthropic")
    bob_card.get_by_label("Judge model").fill("claude-opus-4-7")
    bob_card.get_by_role("button", name="Save").click()
    expect(bob_card.get_by_test_id("vendor-status")).to_contain_text("Saved")

    # Alice still holds the old version: her save is refused and she is told who changed what.
    card = alice.page.get_by_test_id("run-timeout-card")
    card.get_by_label("Run timeout (seconds)").fill("600")
    card.get_by_role("button", name="Save timeout").click()
    conflict = alice.page.get_by_test_id("conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("bob")
    expect(conflict).to_contain_text("Anthropic model")
    expect(conflict).to_contain_text("claude-opus-4-7")
    expect(conflict).to_contain_text("Your change was not saved")
    alice.assert_accessible("settings conflict")
    alice.screenshot("settings-conflict")

    conflict.get_by_role("button", name="Reload settings").click()
    expect(alice.page.get_by_test_id("conflict")).to_have_count(0)
    anthropic = alice.page.get_by_test_id("vendor-anthropic")
    expect(anthropic.get_by_label("Judge model")).to_have_value("claude-opus-4-7")
    card = alice.page.get_by_test_id("run-timeout-card")
    card.get_by_label("Run timeout (seconds)").fill("600")
    card.get_by_role("button", name="Save timeout").click()
    expect(card).to_contain_text("Saved")

    with api(local_stack, alice_token) as http:
        settings = http.get("/admin/settings/eval-runner").json()
    assert settings["run_timeout_seconds"] == 600 and settings["anthropic"]["model"] == "claude-opus-4-7"
    alice.assert_no_secret(key)
    bob.assert_no_secret(key)


def test_member_gets_admins_only_page(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    console = open_console()
    console.allowed_statuses.add(403)
    console.sign_in(token(tenant, "bob", "member"), "#/settings")
    expect(console.page.get_by_role("heading", name="Admins only")).to_be_visible()
    expect(console.page.get_by_test_id("admins-only")).to_contain_text("can only be viewed and changed by an admin")
    expect(console.page.get_by_label("Judge model")).to_have_count(0)
    console.assert_accessible("admins only")
    console.screenshot("settings-admins-only")


def _long_trace() -> list[dict[str, Any]]:
    """~40K tokens of session: tool outputs under the 2000-byte threshold and a long conversation."""
    ts = "2025-06-01T10:{:02d}:{:02d}.000Z"
    entries: list[dict[str, Any]] = [
        {"kind": "user_message", "timestamp": ts.format(0, 0), "text": "Fix the failing login test in src/auth.py"}]
    for i in range(60):
        entries += [
            {"kind": "tool_invocation", "timestamp": ts.format(1 + i // 30, (2 * i) % 60), "tool": "Bash",
             "call_id": f"c{i}", "arguments": {"command": f"pytest tests/test_auth_{i}.py"}},
            {"kind": "tool_result", "timestamp": ts.format(1 + i // 30, (2 * i + 1) % 60), "tool": "Bash",
             "call_id": f"c{i}", "output": "x" * 1500}]
    entries += [{"kind": "assistant_message", "timestamp": ts.format(59, 59), "text": "y" * 400} for _ in range(200)]
    return entries


def test_admin_sees_and_forgets_a_context_limit_the_vendor_stated(open_console: Any, local_stack: LocalStack,
                                                                  tenant: str) -> None:
    # A gateway serves this model with a 12K window; the runner assumes the model's 128K.
    model, limit = "gpt-4o-gateway", 12_000
    admin, member = token(tenant, "root", "admin"), token(tenant, "bob")
    configure_vendors(local_stack, admin, openai=openai_block(local_stack, _key("sk-proj-ui", "CL12"), model=model))
    fake_vendor(local_stack, "/_fake/options", {"context_windows": {model: limit}})
    try:
        with api(local_stack, member) as http:
            assert http.put("/sessions/long-one", json={"trace": _long_trace()}).status_code in (200, 201)
            resp = http.post("/sessions/long-one/eval-runs", json={"runner": "server", "vendor": "openai"})
            assert resp.status_code == 202, resp.text
        run = wait_for_run(local_stack, member, resp.json()["eval_run_id"])
    finally:
        fake_vendor(local_stack, "/_fake/options", {"context_windows": {}})
    assert run["status"] == "succeeded", run.get("error")
    assert run["context"]["vendor_limit"]["limit_tokens"] == limit

    console = open_console()
    page = console.page
    console.sign_in(admin, "#/settings")
    openai = page.get_by_test_id("vendor-openai")
    learned = openai.get_by_test_id("learned-limits")
    expect(learned.get_by_test_id("learned-limit")).to_have_count(1)
    expect(learned).to_contain_text(model)
    expect(learned).to_contain_text("12,000 tokens")
    expect(learned).to_contain_text(f"via {local_stack.fake_vendor_url}/v1")
    console.assert_accessible("settings, a learned context limit")
    console.screenshot("settings-learned-context-limit")

    learned.get_by_role("button", name=f"Forget the learned limit of {model}").click()
    expect(openai.get_by_test_id("vendor-status")).to_contain_text(f"Forgot the learned context limit of {model}")
    expect(openai.get_by_test_id("learned-limits")).to_have_count(0)
    with api(local_stack, admin) as http:
        assert http.get("/admin/settings/eval-runner").json()["openai"]["learned_context_limits"] == []
    console.assert_clean_console()
