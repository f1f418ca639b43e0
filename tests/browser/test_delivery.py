"""Console delivery: assets under /ui/ with strict security headers and caching, the contract's 404,
the public config.json per auth mode, and source rules (no inline script or style, no HTML sinks,
no token or key storage)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import LocalStack

STATIC = Path(__file__).resolve().parents[2] / "chalicelib" / "ui_static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")


@pytest.mark.browser
def test_assets_are_served_with_strict_headers(local_stack: LocalStack) -> None:
    with httpx.Client(base_url=local_stack.api_url, timeout=10) as http:
        index = http.get("/ui/")
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert index.headers["content-security-policy"] == CSP
        assert index.headers["x-content-type-options"] == "nosniff"
        assert index.headers["referrer-policy"] == "no-referrer"
        assert index.headers["cache-control"] == "no-cache"
        assert '<script type="module" src="./main.js"></script>' in index.text

        bare = http.get("/ui", follow_redirects=False)
        assert bare.status_code == 301 and bare.headers["location"] == "ui/"

        script = http.get("/ui/main.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert script.headers["content-security-policy"] == CSP
        again = http.get("/ui/main.js", headers={"If-None-Match": script.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert http.get("/ui/app.css").headers["content-type"].startswith("text/css")
        assert http.get("/ui/favicon.svg").headers["content-type"] == "image/svg+xml"

        vendor = http.get("/ui/vendor/oidc-client-ts.js")
        assert vendor.status_code == 200 and "max-age=" in vendor.headers["cache-control"]

        for missing in ("/ui/missing.js", "/ui/vendor/oidc-client-ts.LICENSE.txt", "/ui/VENDOR.md",
                        "/ui/..%2F..%2Fapp.py", "/ui/.hidden.js"):
            resp = http.get(missing)
            assert resp.status_code == 404, missing
            assert resp.json()["error"]["code"] == "asset_not_found"

        config = http.get("/ui/config.json")
        assert config.status_code == 200 and config.headers["cache-control"] == "no-store"
        assert config.json() == {"stage": "dev", "auth": {"mode": "dev", "issuer": None, "client_id": None,
                                                          "scope": None, "api_token": "access_token"}}
        # Console routes are public; the API behind them is not.
        assert http.get("/eval/runners").status_code == 401


def _code(source: str) -> str:
    """JavaScript without its comments (which may name the sinks they promise not to use)."""
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("//"))


def test_sources_have_no_inline_code_html_sinks_or_storage() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script> in index.html"
    assert "<style" not in html and " style=" not in html, "inline style in index.html"
    own_js = {p.name: _code(p.read_text()) for p in STATIC.glob("*.js")}
    assert own_js, "no console sources found"
    for name, source in own_js.items():
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "localStorage", "document.cookie", ".style."):
            assert sink not in source, f"{name} uses {sink}"
        if name != "auth.js":
            assert "sessionStorage" not in source, f"{name} uses sessionStorage"
    # The only sessionStorage use is oidc-client-ts' PKCE state store; tokens use InMemoryWebStorage.
    auth = own_js["auth.js"]
    assert auth.count("sessionStorage") == 1
    assert "userStore: new oidc.WebStorageStateStore({ store: new oidc.InMemoryWebStorage() })" in auth


@pytest.fixture
def jwks_container(aws: Any, runtime_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from chalicelib.config import runtime_config_from_env
    from chalicelib.wiring import Container, reset_container, use_container

    env = {**runtime_env, "AUTH_MODE": "jwks", "JWT_ISSUER": "https://idp.example.com/tenant-pool",
           "JWKS_URL": "https://idp.example.com/tenant-pool/jwks", "JWT_AUDIENCE": "eval-runner"}
    session, _ = aws
    use_container(Container(runtime_config_from_env(env), session=session))
    yield
    reset_container()


def test_config_and_csp_in_oidc_mode(jwks_container: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalice.test import Client

    from app import app
    from chalicelib.api.ui_routes import console_config, content_security_policy

    # jwks without a console client id: token pasting only, nothing extra allowed to connect.
    assert console_config().auth.mode == "token"
    monkeypatch.setenv("OIDC_CLIENT_ID", "console-client")
    monkeypatch.setenv("OIDC_CONNECT_ORIGINS", "https://auth.example.com, not a url")
    config = console_config()
    assert config.auth.model_dump() == {"mode": "oidc", "issuer": "https://idp.example.com/tenant-pool",
                                        "client_id": "console-client", "scope": "openid profile email",
                                        "api_token": "access_token"}
    csp = content_security_policy(config)
    assert "connect-src 'self' https://idp.example.com https://auth.example.com;" in csp
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp

    with Client(app, stage_name="dev") as client:
        resp = client.http.get("/ui/config.json")
        assert resp.status_code == 200
        assert b'"mode":"oidc"' in resp.body
        page = client.http.get("/ui/index.html")
        assert "https://idp.example.com" in page.headers["Content-Security-Policy"]
