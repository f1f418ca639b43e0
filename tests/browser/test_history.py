"""History, compare, trends and deletion in Chromium against the real local stack: runs judged by the
fake vendor, listed and filtered through the address, picked two at a time for a comparison whose
numbers match the API, a chart per category, a CSV export downloaded through the presigned link, and
deleting a run and a session behind a confirmation dialog."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import anthropic_block, api, configure_vendors, token, upload_session, wait_for_run
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser


def _key() -> str:
    # Decimal digits only: the fake vendor refuses any key containing "bad".
    return register_secret(f"sk-ui-{uuid.uuid4().int:039d}hist")


def _judged_runs(stack: LocalStack, tenant: str, member: str) -> tuple[str, str, list[str]]:
    """Two sessions of the member, three finished runs (two of the first session)."""
    key = _key()
    configure_vendors(stack, token(tenant, "root", "admin"), anthropic=anthropic_block(stack, key))
    upload_session(stack, member, "sess-web", title="Fix the login form")
    upload_session(stack, member, "sess-api")
    run_ids = []
    with api(stack, member) as http:
        for session_id in ("sess-web", "sess-web", "sess-api"):
            resp = http.post(f"/sessions/{session_id}/eval-runs", json={})
            assert resp.status_code == 202, resp.text
            run_ids.append(resp.json()["eval_run_id"])
    for run_id in run_ids:
        assert wait_for_run(stack, member, run_id)["status"] == "succeeded"
    return key, "sess-web", run_ids


def test_history_filters_compare_trends_and_export(local_stack: LocalStack, open_console: Any, tenant: str,
                                                   tmp_path: Path) -> None:
    member = token(tenant, "bob")
    key, _, run_ids = _judged_runs(local_stack, tenant, member)
    console = open_console()
    page = console.page
    console.sign_in(member, "#/history")
    console.settled()
    rows = page.get_by_test_id("history-list").locator(":scope > li")
    expect(rows).to_have_count(3)
    # Newest first, as the API lists them.
    with api(local_stack, member) as http:
        listed = http.get("/eval-runs").json()["items"]
    assert [r.get_attribute("data-run-id") for r in rows.all()] == [r["eval_run_id"] for r in listed]
    console.assert_accessible("history")
    console.screenshot("history")

    # Filters go into the address and come back from it.
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_label("Repository").fill("nothing/matches")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(f"{console.url}#/history?status=succeeded&repository=nothing%2Fmatches")
    expect(page.get_by_text("No runs match these filters.")).to_be_visible()
    console.assert_accessible("history, nothing found")
    page.get_by_role("link", name="Clear the filters").click()
    expect(rows).to_have_count(3)

    # Pick two runs of the same session and compare them.
    first, second = run_ids[0], run_ids[1]
    compare = page.get_by_test_id("compare-selected")
    expect(compare).to_be_disabled()
    page.locator(f'input[data-run-id="{first}"]').check()
    page.locator(f'input[data-run-id="{second}"]').check()
    expect(compare).to_be_enabled()
    compare.click()
    expect(page.get_by_role("heading", name="Compare runs", level=1)).to_be_visible()
    console.settled()
    with api(local_stack, member) as http:
        comparison = http.get("/eval-runs/compare", params={"a": first, "b": second}).json()
    table = page.get_by_test_id("compare-questions")
    expect(table.locator("tbody tr")).to_have_count(len(comparison["questions"]))
    for category in comparison["categories"]:
        row = page.get_by_test_id("compare-categories").locator(f'tr[data-category="{category["name"]}"]')
        expect(row).to_contain_text(str(category["b_score"]))
    console.assert_accessible("compare")
    console.screenshot("history-compare")

    # Trends: one chart per category, drawn by uPlot, with its numbers in a table.
    console.go("#/trends")
    console.settled()
    cards = page.locator(".trend-card")
    expect(cards).to_have_count(4)
    expect(cards.first.locator("canvas")).to_have_count(1)
    expect(page.locator('.trend-card[data-series="safety"] table tbody tr')).to_have_count(1)
    console.assert_accessible("trends")
    console.screenshot("trends")

    # Export: the CSV of the selection, downloaded through the presigned link.
    console.go("#/history?status=succeeded")
    console.settled()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    saved = tmp_path / "export.csv"
    download_info.value.save_as(saved)
    rows_csv = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert {r["eval_run_id"] for r in rows_csv} == set(run_ids)
    assert len(rows_csv) == sum(len(c["questions"]) for r in listed for c in
                                wait_for_run(local_stack, member, r["eval_run_id"])["result"]["categories"])
    expect(page.get_by_test_id("export-status")).to_contain_text("Exported")
    console.assert_no_secret(key)


def test_deleting_a_run_and_a_session_behind_a_confirmation(local_stack: LocalStack, open_console: Any,
                                                            tenant: str) -> None:
    member = token(tenant, "bob")
    _, session_id, run_ids = _judged_runs(local_stack, tenant, member)
    console = open_console()
    page = console.page
    console.sign_in(member, "#/history")
    console.settled()
    row = page.locator(f'li[data-run-id="{run_ids[2]}"]')
    row.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete this evaluation?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    console.assert_accessible("delete run dialog")
    console.screenshot("history-delete-dialog")
    dialog.get_by_role("button", name="Cancel").click()
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete run").click()
    expect(row).to_have_count(0)
    with api(local_stack, member) as http:
        assert http.get(f"/eval-runs/{run_ids[2]}").status_code == 404

    # Another member sees the runs but no delete button on them.
    other = open_console()
    other.sign_in(token(tenant, "carol"), "#/history")
    other.settled()
    expect(other.page.get_by_test_id("history-list").locator(":scope > li")).to_have_count(2)
    expect(other.page.get_by_role("button", name="Delete")).to_have_count(0)

    # The session page: delete the session with its remaining runs.
    console.go(f"#/sessions/{session_id}")
    console.settled()
    page.get_by_role("button", name="Delete session").click()
    dialog = page.get_by_role("dialog", name="Delete this session?")
    console.assert_accessible("delete session dialog")
    dialog.get_by_role("button", name="Delete session").click()
    expect(page).to_have_url(f"{console.url}#/sessions")
    with api(local_stack, member) as http:
        assert http.get(f"/sessions/{session_id}").status_code == 404
        assert http.get("/eval-runs").json()["items"] == []  # the api session's run was deleted first
    with api(local_stack, token(tenant, "root", "admin")) as http:
        audit = http.get("/admin/audit/deletions").json()["items"]
    assert [(a["kind"], a["by"]) for a in audit] == [("session", "bob"), ("eval_run", "bob")]
