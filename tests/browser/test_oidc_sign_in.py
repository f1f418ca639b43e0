"""Production sign-in in Chromium: OpenID Connect authorization code + PKCE (oidc-client-ts) against
a local fake identity provider, with the API in `jwks` mode verifying the RS256 access token.
Tokens stay in memory: nothing in storage, cookies or the URL once the redirect is complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from devstack.common import chalice_stage_env, stack_env
from tests.browser.fake_idp import FakeIdp
from tests.e2e.stack import ROOT, LocalStack, free_port

pytestmark = pytest.mark.browser

CLIENT_ID = "eval-console"
AUDIENCE = "eval-runner-api"


@pytest.fixture
def oidc_api(local_stack: LocalStack, tenant: str, tmp_path: Path) -> Iterator[tuple[str, FakeIdp]]:
    """A second API server on the same local AWS, in `jwks` mode (the prod stage's auth) + a fake IdP."""
    idp = FakeIdp(client_id=CLIENT_ID, audience=AUDIENCE, user="olivia", tenant=tenant, roles=["admin"]).start()
    port = free_port()
    env = {**os.environ, **stack_env(local_stack.info), **chalice_stage_env("prod"), "PYTHONPATH": str(ROOT),
           "JWKS_URL": f"{idp.issuer}/jwks",
           "JWT_ISSUER": idp.issuer, "JWT_AUDIENCE": AUDIENCE, "OIDC_CLIENT_ID": CLIENT_ID}
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - closed with the process
    # The prod stage's variables (AUTH_MODE=jwks, ...) as Lambda would get them.
    proc = subprocess.Popen([sys.executable, "-m", "devstack.api_server", "--port", str(port), "--stage", "prod"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the jwks-mode API did not start:\n{(tmp_path / 'api.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{api_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield api_url, idp
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        log.close()
        idp.stop()


def test_oidc_authorization_code_with_pkce(open_console: Any, oidc_api: tuple[str, FakeIdp], tenant: str) -> None:
    api_url, idp = oidc_api
    index = httpx.get(f"{api_url}/ui/")
    assert f"connect-src 'self' {idp.issuer};" in index.headers["content-security-policy"]
    config = httpx.get(f"{api_url}/ui/config.json").json()
    assert config["auth"] == {"mode": "oidc", "issuer": idp.issuer, "client_id": CLIENT_ID,
                              "scope": "openid profile email", "api_token": "access_token"}

    console = open_console()
    page = console.page
    page.goto(f"{api_url}/ui/#/settings")
    button = page.get_by_role("button", name="Sign in with your organisation")
    expect(button).to_be_visible()
    console.assert_accessible("OIDC sign in")
    button.click()

    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.locator("#account")).to_contain_text("olivia")
    expect(page.locator("#account")).to_contain_text(tenant)
    # Back on the page asked for, with the admin's settings loaded through the RS256 token.
    expect(page.get_by_test_id("vendor-anthropic")).to_be_visible()
    assert page.url == f"{api_url}/ui/#/settings", "the authorization code must not stay in the URL"

    [grant] = idp.token_requests
    assert grant["grant_type"] == "authorization_code" and len(grant["code_verifier"]) >= 43
    storage = json.loads(page.evaluate(
        "() => JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage), document.cookie])"))
    assert storage == [[], [], ""], f"sign-in left state behind: {storage}"
    assert not console.context.cookies()
    dom = page.content()
    for issued in idp.issued:
        assert issued not in dom and issued not in page.url

    page.get_by_role("button", name="Sign out").click()
    expect(button).to_be_visible()
