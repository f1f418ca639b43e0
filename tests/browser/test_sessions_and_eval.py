"""Sessions and the eval dialog in Chromium: upload by file picker and by drag and drop (format
detected from content), the Run evaluation button following GET /eval/runners exactly (hidden,
implicit vendor, required vendor selector), live progress to the end with scores that match the
API's result, cancel, and rerun of the failed questions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    FIXTURES,
    anthropic_block,
    api,
    configure_vendors,
    fake_vendor,
    openai_block,
    token,
    upload_session,
    wait_for_run,
)
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser

TERMINAL = ("succeeded", "failed", "timed_out", "cancelled")


@pytest.fixture
def vendor_rules(local_stack: LocalStack) -> Iterator[Any]:
    """Scripts the fake vendor for one test; everything is reset afterwards."""
    yield lambda *rules: fake_vendor(local_stack, "/_fake/script", {"rules": list(rules)})
    fake_vendor(local_stack, "/_fake/reset")


def _key(tail: str) -> str:
    # Decimal digits only: the fake vendor refuses any key containing "bad" (hex can spell it).
    return register_secret(f"sk-ui-{uuid.uuid4().int:039d}{tail}")


def _watch_chips(page: Any) -> None:
    # Records every status any chip has shown, so the test can prove progress moved live.
    page.evaluate("""() => {
        window.__chipStates = [];
        const record = () => document.querySelectorAll('.chip').forEach(c =>
            window.__chipStates.push(c.dataset.question + ':' + c.dataset.status));
        new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true});
    }""")


def _watch_estimates(page: Any) -> list[Any]:
    # The eval dialog's estimate responses, in order: a dispatch may carry the latest one's quote.
    seen: list[Any] = []
    page.on("response", lambda r: seen.append(r)
            if r.request.method == "POST" and r.url.endswith("/eval-runs/estimate") else None)
    return seen


def _assert_dispatch_body(body: dict[str, Any], estimates: list[Any], expected: dict[str, Any]) -> None:
    """The dispatch sends exactly `expected` plus, at most, the quote of the estimate the dialog showed."""
    body = dict(body)
    quote = body.pop("quote", None)
    assert body == expected, body
    if quote is not None:
        assert estimates, "a quote was sent but no estimate was made"
        assert quote == estimates[-1].json()["quote"], "the quote is not the one the dialog's estimate returned"


def _chip_states(page: Any) -> set[str]:
    return {s.split(":", 1)[1] for s in page.evaluate("() => window.__chipStates || []")}


def _assert_result_matches_api(page: Any, run: dict[str, Any]) -> None:
    result = run["result"]
    assert result is not None, run.get("error")
    expect(page.get_by_test_id("overall-score")).to_have_attribute("data-score", str(result["overall_score"]))
    for category in result["categories"]:
        tile = page.locator(f'.category-score[data-category="{category["name"]}"]')
        expect(tile).to_have_attribute("data-score", str(category["score"]))
        expect(tile).to_have_attribute("data-verdict", category["verdict"])
        for verdict in category["questions"]:
            finding = page.locator(f'article.finding[data-question="{verdict["question_id"]}"]')
            expect(finding).to_have_attribute("data-score", str(verdict["score"]))
            expect(finding.locator('[data-field="finding"]')).to_have_text(verdict["finding"] or "—")
            expect(finding.locator('[data-field="evidence"]')).to_have_text(verdict["evidence"] or "—")
            expect(finding.locator('[data-field="recommendation"]')).to_have_text(verdict["recommendation"] or "—")
    usage = run["usage"]
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        expect(page.locator(f'[data-usage="{field}"]')).to_have_text(f"{usage[field]:,}")
    if result["retrospective"]:
        expect(page.get_by_test_id("retrospective")).to_contain_text(result["retrospective"]["overall"])
    expect(page.locator('[data-usage="duration"]')).not_to_have_text("—")


def _dispatched_run_id(page: Any) -> str:
    page.wait_for_url("**/runs/*")
    return str(page.url.rsplit("/runs/", 1)[1])


def test_upload_by_file_picker_and_drag_and_drop(open_console: Any, local_stack: LocalStack, tenant: str) -> None:
    member = token(tenant, "bob", "member")
    console = open_console()
    page = console.page
    console.sign_in(member, "#/sessions")
    expect(page.get_by_test_id("session-list")).to_have_count(0)
    expect(page.locator(".sessions .empty")).to_contain_text("No sessions yet")
    console.assert_accessible("sessions, empty")
    console.screenshot("sessions-empty")

    # File picker, Codex rollout: format and session id come from the file's content.
    page.get_by_label("Transcript file").set_input_files(str(FIXTURES / "codex-full.jsonl"))
    fmt = page.get_by_label("Format")
    expect(fmt).to_have_value("codex")
    expect(page.locator(".upload-card")).to_contain_text("Detected from the file's content: Codex")
    expect(page.get_by_label("Session id")).to_have_value("0199a213-81c0-7800-8aa1-bbab2a035a53")
    console.assert_accessible("upload form")
    page.get_by_role("button", name="Upload").click()
    result = page.get_by_test_id("upload-result")
    expect(result).to_contain_text("Uploaded")
    with api(local_stack, member) as http:
        codex = http.get("/sessions/0199a213-81c0-7800-8aa1-bbab2a035a53").json()
    expect(result).to_contain_text(f"{codex['entries']:,} entries")

    # Drag and drop, Claude Code transcript; the detected format can be overridden before upload.
    text = (FIXTURES / "claude-code-full.jsonl").read_text()
    page.evaluate("""([name, text]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], name, {type: 'application/x-ndjson'}));
        const zone = document.querySelector('[data-testid=dropzone]');
        for (const type of ['dragenter', 'dragover', 'drop'])
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", ["claude-session.jsonl", text])
    expect(fmt).to_have_value("claude-code")
    expect(page.get_by_label("Session id")).to_have_value("7f3c2a10-5b6e-4d8a-9c1f-2e4b6a8d0c13")
    fmt.select_option("codex")
    expect(fmt).to_have_value("codex")
    fmt.select_option("claude-code")
    page.get_by_label("Title (optional)").fill("PDF export for invoices")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_test_id("upload-result")).to_contain_text("PDF export for invoices")

    with api(local_stack, member) as http:
        listed = http.get("/sessions").json()["items"]
    assert {s["session_id"] for s in listed} == {"0199a213-81c0-7800-8aa1-bbab2a035a53",
                                                 "7f3c2a10-5b6e-4d8a-9c1f-2e4b6a8d0c13"}
    rows = page.get_by_test_id("session-list").locator("li")
    expect(rows).to_have_count(2)
    for s in listed:
        row = page.locator(f'li[data-session-id="{s["session_id"]}"]')
        expect(row.get_by_test_id("entry-count")).to_have_text(f"{s['entries']:,} entries")
    console.assert_accessible("sessions list")
    console.screenshot("sessions")

    # The legacy Codex layout is recognised too.
    page.get_by_label("Transcript file").set_input_files(str(FIXTURES / "codex-legacy.jsonl"))
    expect(fmt).to_have_value("codex")


def test_run_button_hidden_without_vendor_or_daemon(open_console: Any, local_stack: LocalStack,
                                                    tenant: str) -> None:
    member = token(tenant, "bob", "member")
    # Session content is untrusted: markup in it must come out as text.
    hostile = '<img src=x onerror="window.__xss=1">Lonely <b>session</b>'
    upload_session(local_stack, member, "lonely-session", title=hostile)
    with api(local_stack, member) as http:
        runners = http.get("/eval/runners").json()
    assert runners["run_button"]["visible"] is False
    console = open_console()
    console.sign_in(member, "#/sessions/lonely-session")
    page = console.page
    expect(page.get_by_test_id("no-runner")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text(hostile)
    expect(page.locator("main img, main b")).to_have_count(0)
    assert page.evaluate("() => window.__xss") is None
    expect(page.get_by_role("button", name="Run evaluation")).to_have_count(0)
    expect(page.get_by_test_id("session-entries")).not_to_have_text("")
    expect(page.locator(".past-runs .empty")).to_contain_text("No evaluations")
    console.assert_accessible("session without a runner")
    console.screenshot("session-no-runner")

    # Error states: an unknown session, an unknown run, an unknown page.
    console.allowed_statuses.add(404)
    console.go("#/sessions/no-such-session")
    expect(page.get_by_role("heading", name="Session not found")).to_be_visible()
    console.go("#/sessions/lonely-session/runs/evr_does_not_exist")
    expect(page.locator(".run-slot [role=alert]")).to_contain_text("No eval run")
    console.go("#/nowhere")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    console.assert_accessible("page not found")


def test_one_vendor_is_implicit_and_progress_runs_to_a_matching_result(
        open_console: Any, local_stack: LocalStack, tenant: str, vendor_rules: Any) -> None:
    key = _key("ONE1")
    admin = token(tenant, "alice", "admin")
    member = token(tenant, "bob", "member")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, key))
    upload_session(local_stack, member, "pdf-export")
    # Slow judges a little so the chips are seen moving.
    vendor_rules({"match": "*", "times": None, "vendor": "anthropic", "latency": 0.5})

    console = open_console()
    page = console.page
    estimates = _watch_estimates(page)
    console.sign_in(member, "#/sessions/pdf-export")
    page.get_by_role("button", name="Run evaluation").click()
    dialog = page.get_by_role("dialog", name="Run evaluation")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Vendor (required)")).to_have_count(0)
    expect(dialog.get_by_role("radio")).to_have_count(0)
    expect(dialog.get_by_test_id("runner-note")).to_contain_text("Anthropic (claude-sonnet-4-6)")
    dialog.get_by_text("Questions and options").click()
    expect(dialog.get_by_label("Threshold (bytes)")).to_have_value("2000")
    expect(dialog.locator("input[data-question]")).to_have_count(13)
    console.assert_accessible("eval dialog, one vendor")
    console.screenshot("eval-dialog")

    # The shown estimate is what the run reserves: its quote goes with the dispatch.
    expect(dialog.get_by_test_id("cost-high")).to_be_visible()
    _watch_chips(page)
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/eval-runs")) as sent:
        dialog.get_by_role("button", name="Start evaluation").click()
    body = sent.value.post_data_json
    # One vendor: the request names no vendor and no filter.
    _assert_dispatch_body(body, estimates, {})
    assert body.get("quote"), "the dialog showed a priced estimate, so the dispatch carries its quote"
    run_id = _dispatched_run_id(page)
    expect(page.get_by_test_id("chips").locator("li")).to_have_count(13)
    expect(page.get_by_role("button", name="Cancel evaluation")).to_be_visible()
    console.screenshot("eval-progress")
    assert console.finished_run_status() == "succeeded"
    seen = _chip_states(page)
    assert "scored" in seen and seen & {"queued", "running"}, f"chips never moved: {seen}"
    expect(page.locator(".chip[data-status=scored]")).to_have_count(13)
    expect(page.get_by_role("button", name="Cancel evaluation")).to_be_hidden()

    run = wait_for_run(local_stack, member, run_id)
    assert run["status"] == "succeeded" and run["vendor"] == "anthropic"
    _assert_result_matches_api(page, run)
    expect(page.locator(f'.run-row[data-run-id="{run_id}"]')).to_contain_text(
        f"Score {run['result']['overall_score']} / 5")
    console.assert_accessible("eval result")
    console.screenshot("eval-result")
    console.assert_no_secret(key)


def test_two_vendors_require_a_choice_and_filters_are_sent(open_console: Any, local_stack: LocalStack,
                                                           tenant: str) -> None:
    keys = (_key("TWO1"), _key("TWO2"))
    admin = token(tenant, "alice", "admin")
    member = token(tenant, "bob", "member")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, keys[0]),
                      openai=openai_block(local_stack, keys[1]))
    upload_session(local_stack, member, "two-vendors")

    console = open_console()
    page = console.page
    console.sign_in(member, "#/sessions/two-vendors")
    page.get_by_role("button", name="Run evaluation").click()
    dialog = page.get_by_role("dialog", name="Run evaluation")
    vendor = dialog.get_by_label("Vendor (required)")
    expect(vendor).to_be_visible()
    expect(vendor).to_have_value("")
    console.assert_accessible("eval dialog, vendor required")
    console.screenshot("eval-dialog-vendor-required")

    dialog.get_by_role("button", name="Start evaluation").click()
    expect(dialog.get_by_test_id("dialog-status")).to_contain_text("Choose a vendor")
    expect(vendor).to_be_focused()

    vendor.select_option("openai")
    dialog.get_by_text("Questions and options").click()
    dialog.get_by_label("Efficiency (3)").uncheck()
    dialog.locator('input[data-question="destructive_commands"]').uncheck()
    expect(dialog.locator('input[data-category="safety"]')).to_have_js_property("indeterminate", True)
    dialog.get_by_label("Threshold (bytes)").fill("4000")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/eval-runs")) as sent:
        dialog.get_by_role("button", name="Start evaluation").click()
    body = sent.value.post_data_json
    assert body["vendor"] == "openai" and body["threshold"] == 4000
    assert set(body["questions"]) == {"sensitive_files", "security_vulnerabilities", "permission_bypass",
                                      "plan_adherence", "quality"}
    run_id = _dispatched_run_id(page)
    expect(page.get_by_test_id("chips").locator("li")).to_have_count(9)
    assert console.finished_run_status() == "succeeded"
    expect(page.get_by_test_id("run-panel")).to_contain_text("OpenAI · gpt-4o")
    run = wait_for_run(local_stack, member, run_id)
    assert run["vendor"] == "openai" and run["progress"]["total"] == 9
    _assert_result_matches_api(page, run)
    console.assert_no_secret(*keys)


def test_cancel_then_rerun_failed(open_console: Any, local_stack: LocalStack, tenant: str,
                                  vendor_rules: Any) -> None:
    key = _key("CAN1")
    admin = token(tenant, "alice", "admin")
    member = token(tenant, "bob", "member")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, key, model="claude-opus-4-7"))
    upload_session(local_stack, member, "to-cancel")
    vendor_rules({"match": "*", "times": None, "model": "claude-opus-4-7", "latency": 3})

    console = open_console()
    page = console.page
    console.sign_in(member, "#/sessions/to-cancel")
    page.get_by_role("button", name="Run evaluation").click()
    page.get_by_role("dialog").get_by_role("button", name="Start evaluation").click()
    run_id = _dispatched_run_id(page)
    cancel = page.get_by_role("button", name="Cancel evaluation")
    expect(cancel).to_be_visible()
    cancel.click()
    status = page.get_by_test_id("run-panel").get_by_test_id("run-status")
    expect(status).to_have_text("Cancelled", timeout=30_000)
    run = wait_for_run(local_stack, member, run_id)
    assert run["status"] == "cancelled"
    rerun = page.get_by_role("button", name="Rerun failed questions")
    expect(rerun).to_be_visible()
    console.assert_accessible("cancelled run")
    console.screenshot("eval-cancelled")

    fake_vendor(local_stack, "/_fake/reset")
    rerun.click()
    expect(status).to_have_text("Succeeded", timeout=60_000)
    run = wait_for_run(local_stack, member, run_id)
    assert run["status"] == "succeeded"
    _assert_result_matches_api(page, run)
    assert json.dumps(run).count(key) == 0
