"""Hostile requests over HTTP against the real local stack: unknown routes answer the contract's 404
and echo nothing (chalice local used to echo the whole bearer token), deep JSON is a 400, the
console sends HSTS."""

from __future__ import annotations

import pytest

from tests.e2e.stack import LocalStack, mint_token

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("method", "path"), [("GET", "/no-such-route"), ("POST", "/admin/nothing/here"),
                                              ("DELETE", "/sessions/a/b/c/d"), ("GET", "/%2e%2e/etc/passwd")])
def test_an_unknown_route_is_the_contract_404_and_echoes_nothing(local_stack: LocalStack, method: str,
                                                                 path: str) -> None:
    token = mint_token("e2e-hostile", "mallory", "member")
    for headers in ({"Authorization": f"Bearer {token}"}, {"Authorization": "AWS4-HMAC-SHA256 Credential=x"}, {}):
        with local_stack.http() as http:
            resp = http.request(method, path, headers=headers)
        assert resp.status_code == 404, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        error = resp.json()["error"]
        assert error["code"] == "not_found"
        assert set(error) == {"code", "message", "details"}
        assert token not in resp.text and "Credential" not in resp.text and "Authorization" not in resp.text


def test_deep_json_is_a_400_over_http(local_stack: LocalStack) -> None:
    with local_stack.http(mint_token("e2e-hostile", "alice", "admin")) as http:
        resp = http.put("/admin/settings/eval-runner", content=b"[" * 50_000 + b"]" * 50_000,
                        headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "json_too_deep"


def test_the_console_sends_hsts(local_stack: LocalStack) -> None:
    with local_stack.http() as http:
        resp = http.get("/ui/")
    assert resp.status_code == 200
    assert resp.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
