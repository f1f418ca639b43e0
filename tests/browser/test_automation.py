"""Online and bulk evaluation in Chromium on the local stack: an admin creates a rule in the Automation
view (a bad glob is the API's 400, shown at the field), an upload that matches it gets a run that the
rule's card then shows under its last matches; members are not offered the view; on the sessions list
a user ticks sessions, sees what the batch would create before confirming, starts it in batch mode
(the vendor batch API of the fake vendor, polled by the local automation poller) and follows it to
the end. axe on every screen, screenshots at both widths."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import anthropic_block, api, configure_vendors, token, upload_session
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser


def _key(tail: str) -> str:
    # Decimal digits only: the fake vendor refuses any key containing "bad" (hex can spell it).
    return register_secret(f"sk-ui-{uuid.uuid4().int:039d}{tail}")


def _rule_runs(stack: LocalStack, admin: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with api(stack, admin) as http:
        while time.monotonic() < deadline:
            rule: dict[str, Any] = http.get("/admin/eval-rules").json()["items"][0]
            if rule["stats"]["runs"]:
                return rule
            time.sleep(0.3)
    raise AssertionError("the upload never produced a rule run")


def test_admin_creates_a_rule_and_sees_what_it_matched(open_console: Any, local_stack: LocalStack,
                                                       tenant: str) -> None:
    admin = token(tenant, "alice", "admin")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, _key("AUT1")))
    console = open_console()
    page = console.page
    console.sign_in(admin, "#/automation")
    expect(page.get_by_role("link", name="Automation")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("rules")).to_contain_text("No rules yet")
    console.assert_accessible("automation, empty")

    page.get_by_test_id("new-rule").click()
    editor = page.get_by_role("dialog", name="New rule")
    editor.get_by_label("Name", exact=True).fill("Claude Code sessions")
    editor.get_by_label("Repository (glob, optional)").fill("acme/[web")
    editor.get_by_label("Claude Code").check()
    editor.get_by_label("Sample rate (%)").fill("100")
    editor.get_by_label("Safety").check()
    console.allowed_statuses.add(400)
    editor.get_by_role("button", name="Create rule").click()
    repository_error = editor.locator('[data-field="filter.repository"] .field-error')
    expect(repository_error).to_contain_text("never closed")
    expect(editor.get_by_label("Repository (glob, optional)")).to_be_focused()
    console.assert_accessible("rule editor with a field error")
    console.screenshot("automation-rule-editor")
    editor.get_by_label("Repository (glob, optional)").fill("")
    editor.get_by_role("button", name="Create rule").click()
    expect(page.get_by_test_id("automation-status")).to_contain_text("created")
    card = page.get_by_test_id("rule-list").locator("li.rule-card")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("100% of Claude Code")
    expect(card.get_by_test_id("rule-stats")).to_contain_text("0 runs")

    # An upload that matches: the worker matches it against the rule and creates one run.
    upload_session(local_stack, token(tenant, "bob"), "rule-hit", title="Rule hit")
    rule = _rule_runs(local_stack, admin)
    console.go("#/sessions")  # the token lives in the tab's memory: navigate, never reload
    console.settled()
    console.go("#/automation")
    card = page.get_by_test_id("rule-list").locator("li.rule-card")
    expect(card.get_by_test_id("rule-stats")).to_contain_text("1 run")
    card.get_by_text("Last match").click()
    match = card.get_by_role("link", name="rule-hit")
    run_id = rule["stats"]["last_matches"][0]["eval_run_id"]
    expect(match).to_have_attribute("href", f"#/sessions/rule-hit/runs/{run_id}")
    console.assert_accessible("automation with a rule")
    console.screenshot("automation")

    # Turning it off is one click, and says so.
    page.get_by_role("button", name="Turn off rule Claude Code sessions").click()
    expect(page.get_by_test_id("automation-status")).to_contain_text("is off")
    expect(page.get_by_test_id("rule-list").locator("li.rule-card .badge").first).to_have_text("Off")


def test_members_are_not_offered_automation(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    console = open_console()
    page = console.page
    console.sign_in(token(tenant, "bob"), "#/sessions")
    expect(page.get_by_role("link", name="Automation")).to_be_hidden()
    console.allowed_statuses.add(403)
    console.go("#/automation")
    expect(page.get_by_role("alert").first).to_contain_text("Not allowed")


def test_bulk_evaluate_shows_the_batch_before_it_starts_and_follows_it(open_console: Any, local_stack: LocalStack,
                                                                       tenant: str) -> None:
    admin = token(tenant, "alice", "admin")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, _key("AUT2")))
    member = token(tenant, "bob")
    for session_id in ("bulk-a", "bulk-b", "bulk-c"):
        upload_session(local_stack, member, session_id, title=f"Bulk {session_id[-1].upper()}")

    console = open_console()
    page = console.page
    console.sign_in(member, "#/sessions")
    evaluate = page.get_by_test_id("bulk-evaluate")
    expect(evaluate).to_be_disabled()
    page.get_by_label("Select Bulk A").check()
    page.get_by_label("Select Bulk C").check()
    expect(page.get_by_test_id("selected-count")).to_have_text("2 selected")
    evaluate.click()

    dialog = page.get_by_role("dialog", name="Evaluate 2 sessions")
    expect(dialog.get_by_test_id("bulk-estimate")).to_contain_text("2 runs")
    dialog.get_by_label("Batch").check()
    dialog.get_by_label("Efficiency").uncheck()
    expect(dialog.get_by_test_id("bulk-estimate")).to_contain_text(re.compile(r"2 runs of \d+ questions"))
    start = dialog.get_by_test_id("bulk-start")
    expect(start).to_have_text("Start 2 evaluations")
    console.assert_accessible("bulk evaluate dialog")
    console.screenshot("bulk-evaluate")
    start.click()

    progress = dialog.get_by_test_id("bulk-progress")
    expect(progress.get_by_test_id("batch-status")).to_have_attribute("data-status", "finished", timeout=90_000)
    expect(progress.get_by_test_id("batch-counts")).to_have_text("2 succeeded")
    console.assert_accessible("bulk evaluate, finished")
    with api(local_stack, member) as http:
        (batch,) = http.get("/eval-batches").json()["items"]
        assert batch["mode"] == "batch" and sorted(batch["session_ids"]) == ["bulk-a", "bulk-c"]
        runs = [http.get(f"/eval-runs/{r}").json() for r in batch["run_ids"]]
    assert all(r["mode"] == "batch" and r["trigger"]["kind"] == "batch" for r in runs)
