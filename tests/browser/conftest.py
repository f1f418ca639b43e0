"""Browser tests: one real local stack and one Debian Chromium (driven by Playwright) per session.

Chromium comes from Debian (`make browsers` installs /usr/bin/chromium); Playwright never
downloads a browser. Each test opens a fresh browser context (no shared storage) through
`Console`, which records console errors, page errors and every response body the page received,
so tests can prove that no API key ever reaches the page.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import ROOT, LocalStack, mint_token

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
SCREENSHOTS = ROOT / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 375, "height": 812}
FIXTURES = ROOT / "tests" / "fixtures" / "sessions"
# Chromium logs every 4xx/5xx fetch as a console error; tests list the statuses they provoke on purpose.
_NETWORK_ERROR = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


@pytest.fixture(scope="session", autouse=True)
def _expect_timeout() -> None:
    from playwright.sync_api import expect

    # The first vendor call of a fresh stack imports the vendor SDK (seconds on a cold machine).
    expect.set_options(timeout=20_000)


# Package scope: sync_playwright runs an asyncio loop in the main thread until it stops, and every
# later test that calls asyncio.run() (the worker's judge runner) would fail while it runs.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run `make browsers` (installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    return AXE_JS.read_text()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test: no vendor, no daemon, no sessions."""
    return f"ui-{uuid.uuid4().hex[:10]}"


@dataclass
class Console:
    """One browser context + page on the console, with what the page saw recorded."""

    stack: LocalStack
    context: Any
    page: Any
    axe: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    bodies: list[tuple[str, str]] = field(default_factory=list)
    request_urls: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{self.stack.api_url}/ui/"

    def open(self, route: str = "#/sessions") -> None:
        self.page.goto(self.url + route)
        self.page.get_by_label("Bearer token").wait_for()

    def sign_in(self, token: str, route: str = "#/sessions") -> None:
        self.open(route)
        self.page.get_by_label("Bearer token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("button", name="Sign out").wait_for()

    def go(self, route: str) -> None:
        self.page.evaluate("route => { window.location.hash = route; }", route)

    def settled(self) -> None:
        """Waits until no loading indicator is left in the main region."""
        from playwright.sync_api import expect

        expect(self.page.locator("main .loading")).to_have_count(0)

    def finished_run_status(self, timeout: float = 90_000) -> str:
        """Waits until the run panel shows a terminal status and returns it (fails fast on 'failed')."""
        from playwright.sync_api import expect

        badge = self.page.get_by_test_id("run-panel").get_by_test_id("run-status")
        expect(badge).to_have_attribute("data-status", re.compile("^(succeeded|failed|timed_out|cancelled)$"),
                                        timeout=timeout)
        return str(badge.get_attribute("data-status"))

    def assert_accessible(self, label: str) -> None:
        if not self.page.evaluate("() => typeof window.axe === 'object'"):
            self.page.evaluate(self.axe)  # CDP evaluation: the page's CSP stays fully in force
        results = self.page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }""")
        bad = [v for v in results if v["impact"] in ("serious", "critical")]
        assert not bad, f"axe found serious/critical violations on {label}: {json.dumps(bad, indent=1)}"

    def screenshot(self, name: str) -> None:
        """Saves the current screen at desktop and 375 px widths, then restores the desktop size."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for suffix, size in (("desktop", DESKTOP), ("mobile", MOBILE)):
            self.page.set_viewport_size(size)
            self.page.wait_for_timeout(150)
            if suffix == "mobile":
                overflow = self.page.evaluate(
                    "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 1, f"{name}: the page scrolls sideways by {overflow}px at 375 px wide"
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{suffix}.png"), full_page=True)
        self.page.set_viewport_size(DESKTOP)

    def assert_no_secret(self, *secrets: str) -> None:
        """No secret in the DOM, any input's value, storage, cookies, URLs or any response body."""
        dom = self.page.content()
        values = self.page.evaluate(
            "() => Array.from(document.querySelectorAll('input, textarea, select')).map(e => e.value).join('\\n')")
        storage = self.page.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])")
        cookies = json.dumps(self.context.cookies())
        api_bodies = [url for url, _ in self.bodies if "/ui/" not in url]
        assert api_bodies, "no API response body was recorded: the leak check would prove nothing"
        for secret in secrets:
            assert secret not in dom, "an API key is in the DOM"
            assert secret not in values, "an API key is still in an input"
            assert secret not in storage and secret not in cookies, "an API key reached browser storage"
            assert secret not in self.page.url, "an API key is in the URL"
            for url in self.request_urls:
                assert secret not in url, f"an API key is in a request URL: {url}"
            for url, body in self.bodies:
                assert secret not in body, f"an API key is in the response to {url}"

    def assert_clean_console(self) -> None:
        unexpected = []
        for text in self.console_errors:
            match = _NETWORK_ERROR.search(text)
            if match and int(match.group(1)) in self.allowed_statuses:
                continue
            unexpected.append(text)
        assert not self.page_errors, f"uncaught page errors: {self.page_errors}"
        assert not unexpected, f"console errors: {unexpected}"
        assert not [t for t in self.console_errors if "Content Security Policy" in t], "CSP violations"


@pytest.fixture
def open_console(local_stack: LocalStack, browser: Any, axe_source: str) -> Iterator[Any]:
    """open_console() → a signed-out Console in a fresh context; checks the console on teardown."""
    consoles: list[Console] = []

    def make(viewport: dict[str, int] | None = None) -> Console:
        context = browser.new_context(viewport=viewport or DESKTOP, locale="en-GB", timezone_id="UTC")
        context.set_default_timeout(20_000)
        page = context.new_page()
        console = Console(stack=local_stack, context=context, page=page, axe=axe_source)

        def on_response(response: Any) -> None:
            if response.request.resource_type in ("fetch", "xhr", "document", "script"):
                # Redirects and aborted requests have no body to read.
                with contextlib.suppress(Exception):
                    console.bodies.append((response.url, response.text()))

        page.on("console", lambda msg: console.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda err: console.page_errors.append(str(err)))
        page.on("request", lambda request: console.request_urls.append(request.url))
        page.on("response", on_response)
        consoles.append(console)
        return console

    yield make
    try:
        for console in consoles:
            console.assert_clean_console()
    finally:
        for console in consoles:
            console.context.close()


# -- API helpers (test setup and cross-checks go through the same public API) --------------------


def token(tenant: str, user: str, role: str = "member") -> str:
    return mint_token(tenant, user, role)


def api(stack: LocalStack, tok: str) -> httpx.Client:
    return stack.http(tok)


def configure_vendors(stack: LocalStack, admin_token: str, **blocks: dict[str, Any]) -> dict[str, Any]:
    with api(stack, admin_token) as http:
        resp = http.put("/admin/settings/eval-runner", json=blocks)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


def anthropic_block(stack: LocalStack, key: str, model: str = "claude-sonnet-4-6") -> dict[str, Any]:
    return {"api_key": key, "model": model, "base_url": stack.fake_vendor_url}


def openai_block(stack: LocalStack, key: str, model: str = "gpt-4o") -> dict[str, Any]:
    return {"api_key": key, "model": model, "base_url": f"{stack.fake_vendor_url}/v1"}


def upload_session(stack: LocalStack, tok: str, session_id: str, fixture: str = "claude-code-full.jsonl",
                   fmt: str = "claude-code", title: str | None = None) -> dict[str, Any]:
    params = {"format": fmt, **({"title": title} if title else {})}
    with api(stack, tok) as http:
        resp = http.put(f"/sessions/{session_id}", params=params,
                        content=(FIXTURES / fixture).read_bytes(), headers={"Content-Type": "application/x-ndjson"})
        assert resp.status_code in (200, 201), resp.text
        body: dict[str, Any] = resp.json()
        return body


def fake_vendor(stack: LocalStack, path: str, body: Any = None) -> Any:
    resp = httpx.post(f"{stack.fake_vendor_url}{path}", json=body if body is not None else {}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_for_run(stack: LocalStack, tok: str, run_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with api(stack, tok) as http:
        while time.monotonic() < deadline:
            body: dict[str, Any] = http.get(f"/eval-runs/{run_id}").json()
            if body["status"] in ("succeeded", "failed", "timed_out", "cancelled"):
                return body
            time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")
