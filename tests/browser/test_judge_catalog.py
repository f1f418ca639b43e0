"""The judge catalog editor in Chromium: an admin disables and moves built-ins, adds a question with
a rubric, previews its exact prompt, tries it on a session before saving (a one-question run through
the worker, followed live), saves a version, and members then see the catalog in the eval dialog;
server-side field errors land on the right row; a concurrent save is a 412 naming who saved;
members are not offered the view. axe on every screen, screenshots at both widths."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import anthropic_block, api, configure_vendors, fake_vendor, token, upload_session
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser

RUBRIC = "5: every user-visible change has a CHANGELOG entry\n3: some are missing\n1: none at all (CATALOG-UI)"


@pytest.fixture
def vendor_rules(local_stack: LocalStack) -> Iterator[Any]:
    yield lambda *rules: fake_vendor(local_stack, "/_fake/script", {"rules": list(rules)})
    fake_vendor(local_stack, "/_fake/reset")


def _key(tail: str) -> str:
    # Decimal digits only: the fake vendor refuses any key containing "bad" (hex can spell it).
    return register_secret(f"sk-ui-{uuid.uuid4().int:039d}{tail}")


def test_admin_adds_previews_tries_and_saves_a_question(open_console: Any, local_stack: LocalStack, tenant: str,
                                                        vendor_rules: Any) -> None:
    key = _key("CAT1")
    admin = token(tenant, "alice", "admin")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, key))
    upload_session(local_stack, admin, "pdf-export", title="PDF export")
    # The fake vendor scores any prompt carrying this rubric 2: proof the draft reached the judge.
    vendor_rules({"match": "CATALOG-UI", "score": 2, "times": None})

    console = open_console()
    page = console.page
    console.sign_in(admin, "#/catalog")
    expect(page.get_by_role("link", name="Judge catalog")).to_have_attribute("aria-current", "page")
    rows = page.get_by_test_id("catalog-list").locator("li.catalog-row")
    expect(rows).to_have_count(13)
    expect(page.get_by_test_id("catalog-summary")).to_contain_text("Version 0")
    expect(page.get_by_test_id("save-catalog")).to_be_disabled()
    console.assert_accessible("judge catalog")
    console.screenshot("catalog")

    # Disable a built-in and move another down: only "Enabled" and the order can change for built-ins.
    page.get_by_label("Enabled: redundant_calls").uncheck()
    expect(page.locator('[data-question="redundant_calls"]')).to_have_attribute("data-enabled", "false")
    page.get_by_role("button", name="Move down: sensitive_files").click()
    expect(rows.first).to_have_attribute("data-question", "destructive_commands")
    expect(page.get_by_role("button", name="Move down: sensitive_files")).to_be_focused()
    expect(page.locator('[data-question="sensitive_files"]').get_by_role("button", name="Edit: sensitive_files")) \
        .to_have_count(0)
    expect(page.get_by_test_id("catalog-summary")).to_contain_text("unsaved changes")

    # Add a question; the editor checks the syntax before anything is sent.
    page.get_by_test_id("add-question").click()
    editor = page.get_by_role("dialog", name="Add a question")
    editor.get_by_label("Id", exact=True).fill("Changelog!")
    editor.get_by_role("button", name="Add to the catalog").click()
    expect(editor.locator('[data-field="id"] .field-error')).to_contain_text("3-41 characters")
    expect(editor.get_by_label("Id", exact=True)).to_be_focused()
    editor.get_by_label("Id", exact=True).fill("changelog_updated")
    expect(editor.locator('[data-field="id"] .field-error')).to_be_empty()
    editor.get_by_label("Category", exact=True).fill("docs")
    editor.get_by_label("Question", exact=True).fill(
        "Did the agent add a CHANGELOG.md entry for every user-visible change?")
    editor.get_by_label("Rubric (optional)").fill(RUBRIC)
    console.assert_accessible("catalog editor")
    console.screenshot("catalog-editor")

    # Preview: the exact question part, the shared part folded away (with the session's trace on request).
    editor.get_by_role("button", name="Preview prompt").click()
    preview = page.get_by_role("dialog", name="Prompt of changelog_updated")
    question_part = preview.get_by_test_id("question-part")
    expect(question_part).to_contain_text("ID: changelog_updated")
    expect(question_part).to_contain_text("CATALOG-UI")
    expect(preview.get_by_test_id("shared-part")).to_be_hidden()
    preview.get_by_label("Session for the trace").select_option("pdf-export")
    preview.get_by_text("with the session's trace").click()
    expect(preview.get_by_test_id("shared-part")).to_contain_text("## Session trace")
    console.assert_accessible("prompt preview")
    console.screenshot("catalog-preview")
    preview.get_by_role("button", name="Close").click()

    # Try it on the session before saving: a one-question run the dialog follows to its verdict.
    editor.get_by_role("button", name="Try on a session").click()
    trial = page.get_by_role("dialog", name="Try changelog_updated on a session")
    trial.get_by_role("button", name="Judge this question").click()
    expect(trial.get_by_test_id("try-status")).to_contain_text("Choose a session")
    trial.get_by_label("Session", exact=True).select_option("pdf-export")
    trial.get_by_role("button", name="Judge this question").click()
    badge = trial.get_by_test_id("run-panel").get_by_test_id("run-status")
    expect(badge).to_have_attribute("data-status", "succeeded", timeout=90_000)
    finding = trial.locator('article.finding[data-question="changelog_updated"]')
    expect(finding).to_have_attribute("data-score", "2")
    expect(trial.get_by_test_id("run-panel")).to_contain_text("try-it run")
    console.assert_accessible("try it on a session")
    console.screenshot("catalog-try")
    trial.get_by_role("button", name="Close").first.click()
    with api(local_stack, admin) as http:
        assert http.get("/admin/eval-questions").json()["version"] == 0  # trying saved nothing

    editor.get_by_role("button", name="Add to the catalog").click()
    expect(page.locator('[data-question="changelog_updated"]')).to_contain_text("Your question")
    page.get_by_test_id("save-catalog").click()
    expect(page.get_by_test_id("catalog-status")).to_contain_text("Saved as version 1")
    expect(page.get_by_test_id("catalog-audit")).to_contain_text("alice")
    expect(page.get_by_test_id("catalog-audit")).to_contain_text("changelog_updated added")
    expect(page.get_by_test_id("catalog-audit")).to_contain_text("redundant_calls disabled")
    with api(local_stack, admin) as http:
        saved = http.get("/admin/eval-questions").json()
    assert saved["version"] == 1
    assert [q["id"] for q in saved["questions"]][:2] == ["destructive_commands", "sensitive_files"]
    custom = next(q for q in saved["questions"] if q["id"] == "changelog_updated")
    assert (custom["category"], custom["rubric"], custom["builtin"]) == ("docs", RUBRIC, False)
    assert not next(q for q in saved["questions"] if q["id"] == "redundant_calls")["enabled"]
    console.assert_accessible("judge catalog, saved")

    # The eval dialog now offers the organisation's catalog.
    console.go("#/sessions/pdf-export")
    page.get_by_role("button", name="Run evaluation").click()
    dialog = page.get_by_role("dialog", name="Run evaluation")
    dialog.get_by_text("Questions and options").click()
    expect(dialog.locator('input[data-question="changelog_updated"]')).to_be_checked()
    expect(dialog.locator('input[data-question="redundant_calls"]')).to_have_count(0)
    expect(dialog.locator('input[data-category="docs"]')).to_have_count(1)
    expect(dialog).to_contain_text("All 13 questions of your organisation's judge catalog run by default")
    console.assert_no_secret(key)


def test_field_errors_conflicts_and_members(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    admin = token(tenant, "alice", "admin")
    console = open_console()
    page = console.page
    console.sign_in(admin, "#/catalog")
    expect(page.get_by_test_id("catalog-list").locator("li.catalog-row")).to_have_count(13)

    # Two questions the editor accepts one at a time but the service refuses together: a category
    # named like a question. The 400's field details land on the row they name.
    for qid, category in (("changelog_check", "release_notes"), ("release_notes", "docs")):
        page.get_by_test_id("add-question").click()
        editor = page.get_by_role("dialog", name="Add a question")
        editor.get_by_label("Id", exact=True).fill(qid)
        editor.get_by_label("Category", exact=True).fill(category)
        editor.get_by_label("Question", exact=True).fill(f"Is {qid} in order?")
        editor.get_by_role("button", name="Add to the catalog").click()
        expect(editor).to_have_count(0)
    console.allowed_statuses.update({400, 412, 403})
    page.get_by_test_id("save-catalog").click()
    expect(page.get_by_test_id("catalog-status")).to_contain_text("Not saved: 1 question needs attention")
    bad_row = page.locator('[data-question="changelog_check"]')
    expect(bad_row.get_by_test_id("row-errors")).to_contain_text("has the name of a question")
    console.assert_accessible("catalog with a field error")
    console.screenshot("catalog-field-error")
    page.get_by_role("button", name="Remove: release_notes").click()

    # Someone else saves meanwhile: our save is a 412 that names them, and nothing of ours is stored.
    carol = token(tenant, "carol", "admin")
    with api(local_stack, carol) as http:
        body = http.get("/admin/eval-questions").json()
        questions = [{"id": q["id"], "enabled": q["id"] != "direct_approach"} for q in body["questions"]]
        assert http.put("/admin/eval-questions", json={"questions": questions},
                        headers={"If-Match": "0"}).status_code == 200
    page.get_by_test_id("save-catalog").click()
    conflict = page.get_by_test_id("catalog-conflict")
    expect(conflict).to_contain_text("carol saved version 1")
    expect(conflict.get_by_role("button", name="Reload the latest version")).to_be_focused()
    console.assert_accessible("catalog conflict")
    console.screenshot("catalog-conflict")
    with api(local_stack, admin) as http:
        assert "changelog_check" not in [q["id"] for q in http.get("/admin/eval-questions").json()["questions"]]
    conflict.get_by_role("button", name="Reload the latest version").click()
    expect(page.locator('[data-question="direct_approach"]')).to_have_attribute("data-enabled", "false")
    expect(page.locator('[data-question="changelog_check"]')).to_have_count(0)

    # Members are not offered the view, and the API refuses them anyway.
    member_console = open_console()
    member_console.allowed_statuses.add(403)
    member_console.sign_in(token(tenant, "bob", "member"), "#/catalog")
    expect(member_console.page.get_by_role("link", name="Judge catalog")).to_be_hidden()
    expect(member_console.page.get_by_test_id("admins-only")).to_be_visible()
    member_console.assert_accessible("catalog, members")
    member_console.screenshot("catalog-admins-only")
