"""Hostile nesting: JSON thousands of levels deep is a 400 with the contract body on every route, in
cursors, on the WebSocket, and in a judge's answer, never a RecursionError (500)."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest

from chalicelib.api.route_table import ROUTE_TABLE
from chalicelib.domain.json_depth import MAX_JSON_DEPTH
from tests.conftest import mint

DEPTHS = [MAX_JSON_DEPTH + 1, 3_000, 100_000]


def nested(depth: int, *, objects: bool = False) -> bytes:
    if objects:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


def _path(template: str) -> str:
    return template.replace("{vendor}", "anthropic").replace("{asset}", "app.css").replace("{", "").replace("}", "")


ROUTE_CASES = [(r.method, r.path) for r in ROUTE_TABLE]
assert len(ROUTE_CASES) > 20, "the route table is empty"


@pytest.mark.parametrize(("method", "path"), ROUTE_CASES, ids=[f"{m} {p}" for m, p in ROUTE_CASES])
def test_every_route_answers_deep_json_with_400_json_too_deep(client: Any, admin_token: str, method: str,
                                                              path: str) -> None:
    # One request per depth and shape; every route, so a route added later is covered too.
    for depth in DEPTHS:
        for objects in (False, True):
            resp = client.request(method, _path(path), token=admin_token, body=nested(depth, objects=objects),
                                  headers={"Content-Type": "application/json"})
            assert resp.status_code == 400, (depth, objects, resp.json)
            assert resp.json["error"]["code"] == "json_too_deep"
            assert resp.json["error"]["details"] == {"max_depth": MAX_JSON_DEPTH}


def test_nesting_at_the_cap_is_parsed_normally(client: Any, admin_token: str) -> None:
    # 128 levels is allowed: the body then fails the route's own validation, not the depth check.
    resp = client.put("/admin/settings/eval-runner", token=admin_token,
                      body=b'{"anthropic": ' + nested(MAX_JSON_DEPTH - 1) + b"}",
                      headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "validation_failed"


def test_brackets_inside_strings_do_not_count(client: Any, member_token: str) -> None:
    trace = [{"kind": "user_message", "timestamp": "2025-06-01T12:00:00Z", "text": "[[[{{{" * 5_000 + '\\"['}]
    resp = client.put("/sessions/brackets", token=member_token, json_body={"trace": trace})
    assert resp.status_code == 201, resp.json


def test_an_unauthenticated_deep_body_is_still_401(client: Any) -> None:
    resp = client.put("/admin/settings/eval-runner", body=nested(100_000), headers={"Content-Type": "application/json"})
    assert resp.status_code == 401


@pytest.mark.parametrize("depth", [900, 5_000, 100_000])
def test_a_deep_transcript_line_is_a_4xx_not_a_crash(client: Any, member_token: str, depth: int) -> None:
    # Transcript lines go through the ingest parser (direct and presigned uploads alike), which turns
    # a line the JSON parser cannot take into invalid_jsonl; a shallower one parses and is judged on
    # its content.
    line = b'{"type": "user", "message": {"content": ' + nested(depth) + b"}}\n"
    for body in (line, gzip.compress(line)):
        resp = client.put("/sessions/deep-line?format=claude-code", token=member_token, body=body,
                          headers={"Content-Type": "application/x-ndjson"})
        assert 400 <= resp.status_code < 500, resp.json
        assert resp.json["error"]["code"] in ("invalid_jsonl", "empty_session")


@pytest.mark.parametrize(("path", "depth"), [("/sessions?cursor={}", 380), ("/sessions/s1/eval-runs?cursor={}", 760)])
def test_a_deep_cursor_is_an_invalid_cursor(client: Any, member_token: str, path: str, depth: int) -> None:
    # As deep as each cursor's length cap (1024 / 2048 characters) lets it be.
    cursor = base64.urlsafe_b64encode(nested(depth)).decode().rstrip("=")
    client.put("/sessions/s1", token=member_token, json_body={"trace": [
        {"kind": "user_message", "timestamp": "2025-06-01T12:00:00Z", "text": "hi"}]})
    resp = client.get(path.format(cursor), token=member_token)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"]["code"] == "invalid_cursor"


def test_a_deep_websocket_message_is_answered_json_too_deep(client: Any, container: Any) -> None:
    from chalicelib.api.ws_handlers import daemon_ws_connect, daemon_ws_message
    from tests.api.daemon_kit import register
    from tests.api.ws_kit import pushed, ws_event

    token = mint("acme", "alice", [])
    daemon_id = register(client, token)
    connected = daemon_ws_connect(ws_event("$connect", "deep-1", headers={"Authorization": f"Bearer {token}"},
                                           query={"daemon_id": daemon_id}), None)
    assert connected["statusCode"] == 200
    for depth in (3_000, 20_000):  # messages are capped at 128 KiB
        for body in (nested(depth).decode(), json.dumps({"action": "event", "event": {"x": None}})[:-2]
                     + ": " + nested(depth, objects=True).decode() + "}}"):
            assert daemon_ws_message(ws_event("$default", "deep-1", body=body), None) == {"statusCode": 200}
            reply = pushed("deep-1")[-1]
            assert reply["type"] == "error"
            assert reply["error"]["code"] == "json_too_deep"


def test_a_deeply_nested_judge_answer_is_an_unusable_verdict_not_a_crash() -> None:
    from chalicelib.judges.catalog import QUESTIONS
    from chalicelib.judges.verdicts import VerdictFailure, parse_verdict

    outcome = parse_verdict(nested(100_000, objects=True).decode(), QUESTIONS[0])
    assert isinstance(outcome, VerdictFailure)
