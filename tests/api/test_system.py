"""Health, OpenAPI availability, error shapes for unknown methods and auth basics."""

from __future__ import annotations

from typing import Any

from tests.conftest import mint


def test_health_is_public(client: Any) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json["status"] == "ok"


def test_openapi_is_public_and_lists_health(client: Any) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.json["openapi"].startswith("3.1")
    assert "/health" in resp.json["paths"]


def test_wrong_method_uses_contract_error_shape(client: Any) -> None:
    resp = client.request("DELETE", "/health")
    assert resp.status_code == 405
    assert resp.json["error"]["code"] == "method_not_allowed"


def test_expired_token_is_401(client: Any) -> None:
    token = mint(ttl_seconds=-10)
    resp = client.get("/admin/settings/eval-runner", token=token)
    assert resp.status_code == 401
    assert resp.json["error"]["code"] == "invalid_token"
