"""CORS: exactly the stage's dashboard origins get CORS headers, on preflights, answers and errors alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.config import runtime_config_from_env
from tests.conftest import GuardedClient

DASH = "https://dash.example.com"
STAGING = "https://staging.dash.example.com:8443"
EVIL = "https://evil.example.net"


@pytest.fixture
def cors_client(aws: Any, runtime_env: dict[str, str]) -> Iterator[GuardedClient]:
    from chalice.test import Client

    from app import app
    from chalicelib.wiring import Container, reset_container, use_container

    session, _ = aws
    env = dict(runtime_env, CORS_ALLOWED_ORIGINS=f"{DASH}, {STAGING}")
    use_container(Container(runtime_config_from_env(env), session=session))
    try:
        with Client(app, stage_name="dev") as c:
            yield GuardedClient(c)
    finally:
        reset_container()


def _cors(resp: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}


def _preflight(client: GuardedClient, path: str, origin: str, method: str = "PUT") -> Any:
    return client.request("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, if-match"})


@pytest.mark.parametrize("origin", [DASH, STAGING])
def test_preflight_from_a_listed_origin_allows_the_paths_methods_and_headers(cors_client: GuardedClient,
                                                                             origin: str) -> None:
    resp = _preflight(cors_client, "/admin/settings/eval-runner", origin)
    assert resp.status_code == 204
    headers = _cors(resp)
    assert headers["access-control-allow-origin"] == origin
    assert set(headers["access-control-allow-methods"].split(", ")) == {"GET", "PUT", "OPTIONS"}
    assert headers["access-control-allow-headers"] == "Authorization, Content-Type, If-Match, Idempotency-Key"
    assert headers["access-control-expose-headers"] == "ETag, Retry-After"
    assert "access-control-allow-credentials" not in headers
    assert resp.headers["Vary"] == "Origin"


def test_preflight_needs_no_token_and_works_on_parameterised_paths(cors_client: GuardedClient) -> None:
    resp = _preflight(cors_client, "/sessions/demo-1/eval-runs", DASH, "POST")
    assert resp.status_code == 204
    assert "POST" in _cors(resp)["access-control-allow-methods"]


@pytest.mark.parametrize("origin", [EVIL, "https://dash.example.com.evil.net", "http://dash.example.com", "null"])
def test_other_origins_get_no_cors_headers(cors_client: GuardedClient, admin_token: str, origin: str) -> None:
    pre = _preflight(cors_client, "/admin/settings/eval-runner", origin)
    assert pre.status_code == 403 and pre.json["error"]["code"] == "cors_origin_not_allowed"
    assert _cors(pre) == {}
    resp = cors_client.get("/admin/settings/eval-runner", token=admin_token, headers={"Origin": origin})
    assert resp.status_code == 200
    assert _cors(resp) == {}
    assert resp.headers["Vary"] == "Origin"


def test_answers_and_errors_carry_the_headers_for_a_listed_origin(cors_client: GuardedClient,
                                                                 admin_token: str, member_token: str) -> None:
    ok = cors_client.get("/admin/settings/eval-runner", token=admin_token, headers={"Origin": DASH})
    forbidden = cors_client.get("/admin/settings/eval-runner", token=member_token, headers={"Origin": DASH})
    unauthenticated = cors_client.get("/sessions", headers={"Origin": DASH})
    wrong_method = cors_client.request("PATCH", "/health", headers={"Origin": DASH})
    not_found = cors_client.get("/eval-runs/run-does-not-exist", token=member_token, headers={"Origin": DASH})
    for resp, status in ((ok, 200), (forbidden, 403), (unauthenticated, 401), (wrong_method, 405),
                         (not_found, 404)):
        assert resp.status_code == status
        assert _cors(resp)["access-control-allow-origin"] == DASH, status
        assert _cors(resp)["access-control-expose-headers"] == "ETag, Retry-After", status
        assert resp.headers["Vary"] == "Origin", status
        if status >= 400:
            assert set(resp.json["error"]) >= {"code", "message"}


def test_no_origin_configured_means_no_cors_at_all(client: GuardedClient, admin_token: str) -> None:
    pre = _preflight(client, "/admin/settings/eval-runner", DASH)
    assert pre.status_code == 403 and _cors(pre) == {}
    resp = client.get("/health", headers={"Origin": DASH})
    assert resp.status_code == 200 and _cors(resp) == {} and "Vary" not in resp.headers


def test_a_plain_options_request_lists_the_methods(cors_client: GuardedClient) -> None:
    resp = cors_client.request("OPTIONS", "/health")
    assert resp.status_code == 204
    assert resp.headers["Allow"] == "GET, OPTIONS"


@pytest.mark.parametrize("raw", ["*", "https://dash.example.com/", "dash.example.com", "https://Dash.example.com",
                                 "ftp://dash.example.com", "https://dash.example.com/app"])
def test_a_malformed_origin_setting_fails_fast(runtime_env: dict[str, str], raw: str) -> None:
    with pytest.raises(RuntimeError, match="CORS_ALLOWED_ORIGINS"):
        runtime_config_from_env(dict(runtime_env, CORS_ALLOWED_ORIGINS=raw))


def test_origins_parse_trimmed_and_deduplicated(runtime_env: dict[str, str]) -> None:
    config = runtime_config_from_env(dict(runtime_env, CORS_ALLOWED_ORIGINS=f" {DASH},,{STAGING},{DASH} "))
    assert config.cors_allowed_origins == (DASH, STAGING)
