"""The daemon route in Chromium: a user with no server vendor but a running reference daemon
(`python -m daemon run` with the fake claude CLI on PATH) sees the Run evaluation button, runs an
evaluation on the daemon and reads the same result view; with a vendor as well, the dialog offers
the runner choice, `runner: daemon` is sent and the daemon's run can be cancelled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import anthropic_block, api, configure_vendors, token, upload_session, wait_for_run
from tests.conftest import register_secret
from tests.e2e.stack import ROOT, LocalStack

pytestmark = pytest.mark.browser

DAEMON_MAIN = ROOT / "daemon" / "__main__.py"
FAKE_CLI = ROOT / "daemon" / "fake_cli"


def judge_script(tmp: Path) -> Path:
    """The fake claude CLI's behaviour file (read on every call, so a test can change it mid-way)."""
    return tmp / "judge-script.json"


@pytest.fixture
def start_daemon(local_stack: LocalStack, tmp_path: Path) -> Iterator[Any]:
    if not DAEMON_MAIN.exists() or not (FAKE_CLI / "claude").exists():
        pytest.skip("the reference daemon (daemon/__main__.py, daemon/fake_cli/claude) is not in this checkout")
    procs: list[subprocess.Popen[bytes]] = []

    def start(tok: str, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{FAKE_CLI}{os.pathsep}{os.environ.get('PATH', '')}",
               "FAKE_JUDGE_SCRIPT": str(judge_script(tmp_path))}
        judge_script(tmp_path).write_text("{}")
        env.pop("EVAL_RUNNER_TOKEN", None)
        log = open(tmp_path / f"daemon-{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--api-url", local_stack.api_url,
                                 "--token", tok, "--name", name, "--judges", "claude", "--poll-wait", "2",
                                 "--concurrency", "8", "--sandbox-share", str(tmp_path)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 30
        with api(local_stack, tok) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError(f"daemon exited: {(tmp_path / f'daemon-{name}.log').read_text()[-2000:]}")
                if http.get("/eval/runners").json()["daemon"]["available"]:
                    return proc
                time.sleep(0.3)
        raise AssertionError("the daemon never showed up in GET /eval/runners")

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_daemon_route_served_by_the_reference_daemon(open_console: Any, local_stack: LocalStack, tenant: str,
                                                     start_daemon: Any, tmp_path: Path) -> None:
    member = token(tenant, "dana", "member")
    upload_session(local_stack, member, "daemon-session")
    start_daemon(member, "dana-laptop")

    console = open_console()
    page = console.page
    console.sign_in(member, "#/sessions/daemon-session")
    page.get_by_role("button", name="Run evaluation").click()
    dialog = page.get_by_role("dialog", name="Run evaluation")
    expect(dialog.get_by_test_id("runner-note")).to_contain_text("your daemon (dana-laptop)")
    expect(dialog.get_by_label("Vendor (required)")).to_have_count(0)
    expect(dialog.get_by_role("radio")).to_have_count(0)
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/eval-runs")) as sent:
        dialog.get_by_role("button", name="Start evaluation").click()
    assert sent.value.post_data_json == {}
    page.wait_for_url("**/runs/*")
    run_id = page.url.rsplit("/runs/", 1)[1]
    panel = page.get_by_test_id("run-panel")
    assert console.finished_run_status() == "succeeded"
    expect(panel).to_contain_text("Daemon runner")
    run = wait_for_run(local_stack, member, run_id)
    assert run["runner"] == "daemon" and run["status"] == "succeeded"
    expect(page.get_by_test_id("overall-score")).to_have_attribute("data-score", str(run["result"]["overall_score"]))
    for category in run["result"]["categories"]:
        expect(page.locator(f'.category-score[data-category="{category["name"]}"]')).to_have_attribute(
            "data-score", str(category["score"]))
    expect(page.locator("article.finding")).to_have_count(13)
    console.screenshot("eval-result-daemon")

    # With a server vendor too, the dialog offers both runners and sends the user's choice.
    key = register_secret("sk-ant-ui-daemon-0123456789DM01")
    configure_vendors(local_stack, token(tenant, "alice", "admin"), anthropic=anthropic_block(local_stack, key))
    console.go("#/sessions/daemon-session")
    page.get_by_role("button", name="Run evaluation").click()
    dialog = page.get_by_role("dialog", name="Run evaluation")
    expect(dialog.get_by_role("radio", name="Server runner")).to_be_checked()
    dialog.get_by_role("radio", name="My daemon").check()
    # This run's judges never answer, so it is still running when the user cancels it.
    judge_script(tmp_path).write_text('{"questions": {"sensitive_files": {"mode": "hang"}}}')
    console.assert_accessible("eval dialog, runner choice")
    console.screenshot("eval-dialog-runner-choice")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/eval-runs")) as sent:
        dialog.get_by_role("button", name="Start evaluation").click()
    assert sent.value.post_data_json == {"runner": "daemon"}
    panel = page.get_by_test_id("run-panel")
    expect(panel).to_contain_text("Daemon runner")
    # Cancelling reaches the daemon's job too.
    panel.get_by_role("button", name="Cancel evaluation").click()
    assert console.finished_run_status() == "cancelled"
    console.assert_no_secret(key)
