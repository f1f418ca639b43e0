"""The console's security headers on every answer it serves: HSTS next to the strict CSP."""

from __future__ import annotations

from typing import Any

import pytest

HSTS = "max-age=31536000; includeSubDomains"


def test_the_redirect_to_the_console_carries_hsts(client: Any) -> None:
    resp = client.get("/ui")
    assert resp.status_code == 301
    assert resp.headers["Strict-Transport-Security"] == HSTS


@pytest.mark.parametrize("path", ["/ui/", "/ui/app.css", "/ui/main.js", "/ui/config.json"])
def test_every_console_answer_carries_hsts_and_the_csp(client: Any, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 200, path
    assert resp.headers["Strict-Transport-Security"] == HSTS
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    etag = resp.headers.get("ETag")
    if etag:
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.headers["Strict-Transport-Security"] == HSTS
