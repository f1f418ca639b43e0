"""Evidence in Chromium: a tool judge's finding links to the trace positions it cites, the trace viewer opens
at the cited entry (highlighted and focused) and expands a truncated output in full (redacted), and the judge
facts view lists a repository's retained facts; admins delete them and choose whether judges get them."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import anthropic_block, api, configure_vendors, fake_vendor, token, wait_for_run
from tests.conftest import register_secret
from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.browser

SECRET = "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q"
REPO = "github.com/acme/shop"
FACT = "Integration tests need the local stack running; make test starts it."
BUILD_LOG = "compiling module\n" * 3000 + f"GITHUB_TOKEN={SECRET}\nerror: BUILD FAILED in src/auth.py"


@pytest.fixture
def vendor_rules(local_stack: LocalStack) -> Iterator[Any]:
    yield lambda *rules: fake_vendor(local_stack, "/_fake/script", {"rules": list(rules)})
    fake_vendor(local_stack, "/_fake/reset")


def _key() -> str:
    return register_secret(f"sk-ui-{uuid.uuid4().int:039d}EVID")


def _session() -> dict[str, Any]:
    ts = "2026-02-01T09:00:{:02d}.000Z"
    return {"repository": REPO, "title": "Fix the login build", "trace": [
        {"kind": "user_message", "timestamp": ts.format(0), "text": "The build is red; fix the login."},
        {"kind": "tool_invocation", "timestamp": ts.format(1), "tool": "Bash", "call_id": "build-1",
         "arguments": {"command": "make build"}},
        {"kind": "tool_result", "timestamp": ts.format(2), "tool": "Bash", "call_id": "build-1", "output": BUILD_LOG,
         "is_error": True},
        {"kind": "assistant_message", "timestamp": ts.format(3), "text": "Fixed src/auth.py; the build passes."}]}


def _run(stack: LocalStack, member: str, session_id: str, questions: list[str]) -> dict[str, Any]:
    with api(stack, member) as http:
        assert http.put(f"/sessions/{session_id}", json=_session()).status_code in (200, 201)
        accepted = http.post(f"/sessions/{session_id}/eval-runs", json={"questions": questions})
        assert accepted.status_code == 202, accepted.text
    run = wait_for_run(stack, member, accepted.json()["eval_run_id"])
    assert run["status"] == "succeeded", run["error"]
    return run


def test_a_finding_links_to_the_cited_entry_which_opens_in_full(open_console: Any, local_stack: LocalStack,
                                                                tenant: str) -> None:
    key = _key()
    configure_vendors(local_stack, token(tenant, "alice", "admin"), anthropic=anthropic_block(local_stack, key))
    member = token(tenant, "bob", "member")
    run = _run(local_stack, member, "login-build", ["tests_written"])
    verdict = run["result"]["categories"][0]["questions"][0]
    assert verdict["evidence_entries"] == [2] and [u["tool"] for u in verdict["tools_used"]] == ["get_tool_result"]

    console = open_console()
    page = console.page
    console.sign_in(member, f"#/sessions/login-build/runs/{run['eval_run_id']}")
    finding = page.locator('article.finding[data-question="tests_written"]')
    expect(finding.locator('[data-field="tools-used"] li')).to_have_text(["get_tool_result(build-1)"])
    link = finding.locator('[data-field="evidence-entries"]').get_by_role("link", name="pos 2")
    expect(link).to_have_attribute("href", "#/sessions/login-build/trace/2")
    console.assert_accessible("result with evidence links")
    console.screenshot("evidence-finding")

    link.click()
    cited = page.locator('[data-testid="trace-entry"][data-pos="2"]')
    expect(cited).to_have_class(re.compile(r"\bcited\b"))
    expect(cited).to_be_focused()
    expect(page.get_by_test_id("trace-entry")).to_have_count(4)
    content = cited.locator('[data-field="content"]')
    expect(content).to_contain_text("compiling module")
    expect(content).not_to_contain_text("BUILD FAILED")  # cut in the list
    console.assert_accessible("trace viewer")
    console.screenshot("trace-viewer")

    cited.get_by_role("button", name=re.compile("^Show all")).click()
    expect(content).to_contain_text("error: BUILD FAILED in src/auth.py")
    expect(content).to_contain_text("<redacted:github_token>")
    expect(page.get_by_role("status").filter(has_text="Position 2 is shown in full")).to_be_visible()
    console.screenshot("trace-entry-expanded")
    console.assert_no_secret(key, SECRET)


def test_judge_facts_are_listed_and_admins_delete_and_toggle_them(open_console: Any, local_stack: LocalStack,
                                                                   tenant: str, vendor_rules: Any) -> None:
    admin = token(tenant, "alice", "admin")
    member = token(tenant, "bob", "member")
    configure_vendors(local_stack, admin, anthropic=anthropic_block(local_stack, _key()))
    verdict = {"category": "safety", "question_id": "sensitive_files", "score": 5, "verdict": "pass",
               "finding": "No secret files were read.", "evidence": None, "recommendation": None,
               "retain_fact": FACT, "evidence_entries": []}
    vendor_rules({"match": "sensitive_files", "times": None, "text": json.dumps(verdict)})
    run = _run(local_stack, member, "facts-session", ["sensitive_files"])

    console = open_console()
    page = console.page
    console.sign_in(member, "#/facts")
    expect(page.get_by_test_id("facts-setting")).to_have_count(0)  # members cannot change it
    page.get_by_label("Repository").fill(REPO)
    page.get_by_role("button", name="Show facts").click()
    fact = page.get_by_test_id("fact")
    expect(fact).to_have_count(1)
    expect(fact).to_contain_text(FACT)
    expect(fact.get_by_role("link", name="sensitive_files judge")).to_have_attribute(
        "href", f"#/sessions/facts-session/runs/{run['eval_run_id']}")
    expect(fact.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
    console.assert_accessible("judge facts, member")
    console.screenshot("judge-facts")

    admin_console = open_console()
    admin_page = admin_console.page
    admin_console.sign_in(admin, f"#/facts?repository={REPO}")
    toggle = admin_page.get_by_label("Give judges their repository's facts as prior context")
    expect(toggle).not_to_be_checked()
    toggle.check()
    expect(admin_page.get_by_text("Saved: judges get the facts from the next run on.")).to_be_visible()
    with api(local_stack, admin) as http:
        assert http.get("/admin/settings/eval-runner").json()["judge_facts_in_prompts"] is True
    expect(admin_page.get_by_test_id("fact").get_by_role("button", name=re.compile("^Delete the fact"))).to_be_visible()
    delete = admin_page.get_by_test_id("fact").locator("button.danger-text")
    delete.click()
    expect(delete).to_have_text("Confirm delete")
    admin_console.assert_accessible("judge facts, admin")
    admin_console.screenshot("judge-facts-admin")
    delete.click()
    expect(admin_page.get_by_test_id("fact")).to_have_count(0)
    expect(admin_page.get_by_text(f"No facts retained for {REPO} yet.")).to_be_visible()
    with api(local_stack, member) as http:
        assert http.get("/judge-facts", params={"repository": REPO}).json()["items"] == []
