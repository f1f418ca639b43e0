"""The trace viewer's API: a stored session by position (pages, one entry in full) and the whole outputs of
its truncated tool results, always redacted, bounded, and only within the caller's tenant."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import mint

SECRET = "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q"
BIG = "line of build output\n" * 20_000 + f"token={SECRET}\nBUILD FAILED"  # ~420 KB


def upload(client: Any, token: str, session_id: str, entries: list[dict[str, Any]], parent: str | None = None
           ) -> None:
    body: dict[str, Any] = {"trace": entries}
    if parent:
        body["parent_session_id"] = parent
    resp = client.put(f"/sessions/{session_id}", token=token, json_body=body)
    assert resp.status_code in (200, 201), resp.json


def trace(n: int = 3) -> list[dict[str, Any]]:
    ts = "2026-01-01T00:00:{:02d}.000Z"
    entries: list[dict[str, Any]] = [{"kind": "user_message", "timestamp": ts.format(0), "text": "Build it"}]
    for i in range(n):
        entries += [{"kind": "tool_invocation", "timestamp": ts.format(1 + 2 * i), "tool": "Bash", "call_id": f"c{i}",
                     "arguments": {"command": f"make {i}"}},
                    {"kind": "tool_result", "timestamp": ts.format(2 + 2 * i), "tool": "Bash", "call_id": f"c{i}",
                     "output": BIG if i == 1 else f"ok {i}", "is_error": i == 1}]
    return entries


def test_pages_show_entries_by_position_cut_and_redacted(client: Any, alice: str) -> None:
    upload(client, alice, "s1", trace())
    page = client.get("/sessions/s1/entries?limit=5", token=alice)
    assert page.status_code == 200, page.json
    body = page.json
    assert [e["pos"] for e in body["items"]] == [0, 1, 2, 3, 4] and body["next_offset"] == 5
    assert body["session_chain"] == ["s1"]
    big = body["items"][4]
    assert big["kind"] == "tool_result" and big["call_id"] == "c1" and big["is_error"] is True
    assert big["truncated"] and len(big["content"].encode()) <= 2000 and big["content_bytes"] > 400_000
    assert body["items"][1]["content"] == '{\n "command": "make 0"\n}'
    rest = client.get("/sessions/s1/entries?offset=5", token=alice).json
    assert [e["pos"] for e in rest["items"]] == [5, 6] and rest["next_offset"] is None


def test_one_entry_in_full_is_capped_keeps_its_end_and_holds_no_secret(client: Any, alice: str) -> None:
    upload(client, alice, "s1", trace())
    entry = client.get("/sessions/s1/entries/4", token=alice)
    assert entry.status_code == 200, entry.json
    content = entry.json["content"]
    assert content.startswith("line of build output") and content.endswith("BUILD FAILED")
    assert SECRET not in content and "<redacted:github_token>" in content
    assert entry.json["truncated"] and entry.json["omitted_bytes"] > 0
    assert len(content.encode()) <= 256 * 1024 + 200
    small = client.get("/sessions/s1/entries/2", token=alice).json
    assert small["content"] == "ok 0" and small["truncated"] is False and small["omitted_bytes"] == 0


def test_positions_run_across_a_chain(client: Any, alice: str) -> None:
    upload(client, alice, "first", trace(1))
    upload(client, alice, "second", trace(1), parent="first")
    alone = client.get("/sessions/second/entries", token=alice).json
    chained = client.get("/sessions/second/entries?chain=true", token=alice).json
    assert [e["pos"] for e in alone["items"]] == [0, 1, 2] and chained["session_chain"] == ["first", "second"]
    assert [e["pos"] for e in chained["items"]] == list(range(6))
    assert client.get("/sessions/second/entries/5?chain=true", token=alice).json["content"] == "ok 0"


def test_tool_outputs_are_those_over_the_threshold_capped(client: Any, alice: str) -> None:
    upload(client, alice, "s1", trace())
    page = client.get("/sessions/s1/tool-outputs?threshold=2000", token=alice)
    assert page.status_code == 200, page.json
    (item,) = page.json["items"]
    assert item["pos"] == 4 and item["call_id"] == "c1" and item["output"].endswith("BUILD FAILED")
    assert SECRET not in item["output"] and "<omitted:" in item["output"] and page.json["next_offset"] is None
    assert len(client.get("/sessions/s1/tool-outputs?threshold=0", token=alice).json["items"]) == 3


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/sessions/s1/entries/99", 404, "entry_not_found"),
    ("/sessions/s1/entries/-1", 404, "entry_not_found"),
    ("/sessions/s1/entries/x", 404, "entry_not_found"),
    ("/sessions/nope/entries", 404, "session_not_found"),
    ("/sessions/s1/entries?limit=0", 400, "invalid_query"),
    ("/sessions/s1/entries?limit=201", 400, "invalid_query"),
    ("/sessions/s1/entries?offset=-3", 400, "invalid_query"),
    ("/sessions/s1/entries?chain=maybe", 400, "invalid_query"),
    ("/sessions/s1/entries?page=2", 400, "invalid_query"),
    ("/sessions/s1/tool-outputs?threshold=200001", 400, "invalid_query"),
])
def test_bad_reads_are_clear_4xx(client: Any, alice: str, path: str, status: int, code: str) -> None:
    upload(client, alice, "s1", trace())
    resp = client.get(path, token=alice)
    assert resp.status_code == status and resp.json["error"]["code"] == code, resp.json


def test_another_tenant_sees_nothing(client: Any, alice: str) -> None:
    upload(client, alice, "s1", trace())
    eve = mint("globex", "eve", [])
    for path in ("/sessions/s1/entries", "/sessions/s1/entries/0", "/sessions/s1/tool-outputs"):
        assert client.get(path, token=eve).status_code == 404
