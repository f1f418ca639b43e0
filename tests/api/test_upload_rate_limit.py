"""The upload rate limit per user through the API: a 429 with Retry-After and the contract error body."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import mint

LIMIT = 3


@pytest.fixture
def runtime_env(runtime_env: dict[str, str]) -> dict[str, str]:
    return {**runtime_env, "UPLOAD_RATE_LIMIT": str(LIMIT), "UPLOAD_RATE_WINDOW_SECONDS": "3600"}


def native(session: str) -> dict[str, Any]:
    return {"trace": [{"kind": "user_message", "timestamp": "2025-06-01T10:00:00Z", "text": f"hi {session}"}]}


def test_uploads_over_the_limit_are_429_with_retry_after_and_store_nothing(client: Any) -> None:
    bob, alice = mint("acme", "bob", []), mint("acme", "alice", [])
    for i in range(LIMIT):
        assert client.put(f"/sessions/s{i}", token=bob, json_body=native(f"s{i}")).status_code == 201

    refused = [client.put("/sessions/s9", token=bob, json_body=native("s9")),
               client.post("/sessions/s9/uploads", token=bob, json_body={"format": "codex", "content_length": 10})]

    for resp in refused:
        assert resp.status_code == 429, resp.json
        assert resp.json["error"]["code"] == "upload_rate_limited"
        assert resp.json["error"]["details"]["limit"] == LIMIT
        assert 1 <= int(resp.headers["Retry-After"]) <= 3600
    assert client.get("/sessions/s9", token=bob).status_code == 404
    # The limit is per user: another member of the tenant uploads as usual.
    assert client.put("/sessions/a1", token=alice, json_body=native("a1")).status_code == 201
