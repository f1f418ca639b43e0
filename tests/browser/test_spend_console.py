"""Spend in the console (Chromium, axe, screenshots): the eval dialog's estimate and budget left, a
refusal explained in words, the admin Limits page (budgets, quotas, prices; bad input marked, nothing
stored) and the Usage page (spend-per-day chart, per-user table; members see only their own)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import anthropic_block, api, configure_vendors, token, upload_session, wait_for_run
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser


def _key() -> str:
    return register_secret(f"sk-ui-{uuid.uuid4().int:039d}SPND")


def _setup(stack: LocalStack, tenant: str) -> tuple[str, str]:
    admin = token(tenant, "ada", "admin")
    member = token(tenant, "bob", "member")
    configure_vendors(stack, admin, anthropic=anthropic_block(stack, _key()))
    upload_session(stack, member, "spend-1", title="Spend demo")
    return admin, member


def _set_limits(stack: LocalStack, admin: str, **limits: Any) -> None:
    with api(stack, admin) as http:
        resp = http.put("/admin/settings/eval-runner/limits", json=limits)
        assert resp.status_code == 200, resp.text


def test_the_eval_dialog_shows_the_estimate_and_what_the_budget_leaves(open_console: Any, local_stack: LocalStack,
                                                                      tenant: str) -> None:
    _, member = _setup(local_stack, tenant)
    with api(local_stack, member) as http:
        estimate = http.post("/sessions/spend-1/eval-runs/estimate", json={}).json()
    console = open_console()
    console.sign_in(member, "#/sessions/spend-1")
    page = console.page
    page.get_by_role("button", name="Run evaluation").click()
    dialog = page.get_by_role("dialog", name="Run evaluation")
    panel = dialog.get_by_test_id("cost-panel")
    expect(panel.get_by_test_id("cost-high")).to_be_visible()
    high = f"${estimate['usd_high']:,.2f}"
    expect(panel.get_by_test_id("cost-high")).to_have_text(high)
    expect(panel.locator('[data-budget="user_daily"]')).to_contain_text("left")
    console.assert_accessible("eval dialog with its cost")
    console.screenshot("eval-dialog-cost")
    # Fewer questions: the estimate follows the form.
    dialog.get_by_text("Questions and options").click()
    dialog.locator('input[data-category="quality"]').uncheck()
    expect(panel.get_by_test_id("cost-high")).not_to_have_text(high)
    dialog.get_by_role("button", name="Start evaluation").click()
    expect(page.get_by_test_id("run-panel")).to_be_visible()
    run_id = page.url.rsplit("/", 1)[-1]
    run = wait_for_run(local_stack, member, run_id)
    assert run["cost"]["usd"] is not None and run["cost"]["reserved_usd"] is not None


def test_a_refusal_is_explained_in_words(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    admin, member = _setup(local_stack, tenant)
    _set_limits(local_stack, admin, user_daily_usd=0.01)
    console = open_console()
    console.allowed_statuses.add(402)
    console.sign_in(member, "#/sessions/spend-1")
    page = console.page
    page.get_by_role("button", name="Run evaluation").click()
    dialog = page.get_by_role("dialog", name="Run evaluation")
    blocked = dialog.get_by_test_id("cost-blocked")
    expect(blocked).to_contain_text("Over budget")
    expect(blocked).to_contain_text("left of $0.01")
    console.assert_accessible("eval dialog over budget")
    console.screenshot("eval-dialog-over-budget")
    dialog.get_by_role("button", name="Start evaluation").click()
    expect(dialog.get_by_test_id("dispatch-refused")).to_contain_text("daily eval budget")
    with api(local_stack, member) as http:
        assert http.get("/sessions/spend-1/eval-runs").json()["items"] == []


def test_admins_edit_limits_and_prices_and_bad_input_is_marked(open_console: Any, local_stack: LocalStack,
                                                               tenant: str) -> None:
    admin, _ = _setup(local_stack, tenant)
    console = open_console()
    console.allowed_statuses.add(400)
    console.sign_in(admin, "#/limits")
    page = console.page
    console.settled()
    limits = page.get_by_test_id("limits-card")
    limits.get_by_label("Budget per user per day").fill("-3")
    limits.get_by_role("button", name="Save limits").click()
    expect(limits.locator('[data-error-for="user_daily_usd"]')).not_to_be_empty()
    with api(local_stack, admin) as http:
        assert http.get("/admin/settings/eval-runner/limits").json()["version"] == 0  # nothing stored
    limits.get_by_label("Budget per user per day").fill("25")
    # An alert webhook on a private address is refused by the outbound policy, next to its input.
    webhook = limits.get_by_label("Alert webhook")
    webhook.fill("https://10.0.0.7/hook")
    limits.get_by_role("button", name="Save limits").click()
    expect(limits.locator('[data-error-for="alert_webhook_url"]')).to_contain_text("private")
    expect(webhook).to_have_attribute("aria-invalid", "true")
    with api(local_stack, admin) as http:
        assert http.get("/admin/settings/eval-runner/limits").json()["version"] == 0  # nothing stored
    webhook.fill("https://hooks.example.com/budget/alerts")
    limits.get_by_label("Evaluations at once per user").fill("5")
    limits.get_by_role("button", name="Save limits").click()
    expect(page.get_by_test_id("limits-status")).to_contain_text("Limits saved")
    expect(limits.get_by_test_id("webhook-last-delivery")).to_have_text("No alert has been sent to it yet.")
    console.assert_accessible("limits")
    prices = page.get_by_test_id("prices-card")
    prices.locator('tr[data-model="claude-sonnet-4-6"]').get_by_role("button", name="Override").click()
    prices.get_by_label("Input price of claude-sonnet-4-6").fill("2.5")
    prices.get_by_role("button", name="Save prices").click()
    expect(page.get_by_test_id("prices-status")).to_contain_text("Prices saved")
    console.screenshot("limits")
    with api(local_stack, admin) as http:
        body = http.get("/admin/settings/eval-runner/limits").json()
        assert (body["user_daily_usd"], body["max_active_runs_per_user"]) == (25, 5)
        assert body["alert_webhook_url"] == "https://hooks.example.com/budget/alerts"
        rows = {r["model"]: r for r in http.get("/admin/settings/eval-runner/prices").json()["models"]}
        assert rows["claude-sonnet-4-6"]["input_usd_per_mtok"] == 2.5 and rows["claude-sonnet-4-6"]["source"] == "admin"


def test_members_see_no_limits_link_and_only_their_own_usage(open_console: Any, local_stack: LocalStack,
                                                             tenant: str) -> None:
    admin, member = _setup(local_stack, tenant)
    carol = token(tenant, "carol", "member")
    run_ids = []
    for tok in (member, carol):
        with api(local_stack, tok) as http:
            resp = http.post("/sessions/spend-1/eval-runs", json={"questions": ["safety"]})
            assert resp.status_code == 202, resp.text
            run_ids.append((tok, resp.json()["eval_run_id"]))
    for tok, run_id in run_ids:
        wait_for_run(local_stack, tok, run_id)

    console = open_console()
    console.allowed_statuses.add(403)
    console.sign_in(admin, "#/usage")
    page = console.page
    console.settled()
    expect(page.get_by_test_id("spend-chart").locator("canvas")).to_have_count(1)
    expect(page.get_by_test_id("per-user").locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("usage-total")).to_contain_text("2 evaluations")
    console.assert_accessible("usage (admin)")
    console.screenshot("usage")

    member_console = open_console()
    member_console.allowed_statuses.add(403)
    member_console.sign_in(member, "#/usage")
    mpage = member_console.page
    member_console.settled()
    expect(mpage.get_by_role("link", name="Limits")).to_be_hidden()
    expect(mpage.get_by_test_id("usage-total")).to_contain_text("1 evaluation")
    expect(mpage.get_by_test_id("per-user")).to_have_count(0)
    member_console.assert_accessible("usage (member)")
    member_console.screenshot("usage-member")
    member_console.go("#/limits")
    expect(mpage.get_by_test_id("admins-only")).to_be_visible()
