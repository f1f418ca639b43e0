"""Session routes through chalice.test.Client under moto: the three upload kinds, storage (S3 SSE-KMS +
DynamoDB record), replace, tenant isolation, listing, eval-context compaction/redaction/chains, the
presigned upload flow end to end, and bad inputs that must each be a clear 4xx with nothing stored."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from chalicelib.services.sessions import MAX_DIRECT_INFLATED_BYTES, MAX_DIRECT_LINES
from tests.conftest import mint, register_secret

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sessions"
NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}
FAKE_ANTHROPIC_KEY = "sk-ant-api03-Qw7Er9Ty2Ui4Op6As8Df0Gh1Jk3Lz5Xc7Vb9Nm2Qw4Er6Ty8Ui0Op"


# -- builders ------------------------------------------------------------------------------------

def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def claude_session(session: str, *, output: str = "3 passed", command: str = "pytest -q",
                   text: str = "Fix the failing test") -> bytes:
    base = {"sessionId": session, "cwd": "/repo", "gitBranch": "main", "version": "2.0.0", "isSidechain": False}
    ts = "2025-06-01T10:00:0{}.000Z"
    return jsonl([
        {**base, "type": "user", "uuid": f"{session}-u1", "parentUuid": None, "timestamp": ts.format(0),
         "message": {"role": "user", "content": text}},
        {**base, "type": "assistant", "uuid": f"{session}-a1", "parentUuid": f"{session}-u1", "timestamp": ts.format(1),
         "message": {"id": f"msg_{session}_1", "role": "assistant", "model": "claude-sonnet-4-5",
                     "content": [{"type": "tool_use", "id": f"toolu_{session}", "name": "Bash",
                                  "input": {"command": command}}]}},
        {**base, "type": "user", "uuid": f"{session}-u2", "parentUuid": f"{session}-a1", "timestamp": ts.format(2),
         "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{session}",
                                                  "content": output, "is_error": False}]}},
        {**base, "type": "assistant", "uuid": f"{session}-a2", "parentUuid": f"{session}-u2", "timestamp": ts.format(3),
         "message": {"id": f"msg_{session}_2", "role": "assistant", "model": "claude-sonnet-4-5",
                     "content": [{"type": "text", "text": "Done."}]}},
        {"type": "file-history-snapshot", "messageId": "m", "snapshot": {}, "isSnapshotUpdate": False},
        {"type": "brand-new-line-type", "x": 1},
    ])


def codex_session() -> bytes:
    ts = "2025-06-01T11:00:0{}.000Z"
    return jsonl([
        {"timestamp": ts.format(0), "type": "session_meta",
         "payload": {"id": "rollout-1", "timestamp": ts.format(0), "cwd": "/repo", "cli_version": "0.40.0"}},
        {"timestamp": ts.format(1), "type": "response_item",
         "payload": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Run tests"}]}},
        {"timestamp": ts.format(2), "type": "response_item",
         "payload": {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"pytest\"]}",
                     "call_id": "call_1"}},
        {"timestamp": ts.format(3), "type": "response_item",
         "payload": {"type": "function_call_output", "call_id": "call_1",
                     "output": "{\"output\":\"1 passed\",\"metadata\":{\"exit_code\":0}}"}},
        {"timestamp": ts.format(4), "type": "response_item",
         "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Green"}]}},
    ])


def native_body(**extra: Any) -> dict[str, Any]:
    return {"trace": [
        {"kind": "user_message", "timestamp": "2025-06-01T12:00:00Z", "text": "Add a README"},
        {"kind": "tool_invocation", "timestamp": "2025-06-01T12:00:01Z", "tool": "Write", "call_id": "c1",
         "arguments": {"file_path": "README.md"}},
        {"kind": "tool_result", "timestamp": "2025-06-01T12:00:02Z", "tool": "Write", "call_id": "c1",
         "output": "written"},
        {"kind": "assistant_message", "timestamp": "2025-06-01T12:00:03+00:00", "text": "Added."},
    ], **extra}


def put_ndjson(client: Any, token: str, session: str, body: bytes, fmt: str | None = "claude-code",
               **params: str) -> Any:
    query = urlencode(({"format": fmt} if fmt else {}) | params)
    return client.put(f"/sessions/{session}" + (f"?{query}" if query else ""), token=token, body=body,
                      headers=NDJSON)


# -- state probes --------------------------------------------------------------------------------

def s3_keys(aws: Any, prefix: str = "") -> list[str]:
    session, resources = aws
    s3 = session.client("s3")
    listed = s3.list_objects_v2(Bucket=resources.bucket_name, Prefix=prefix)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def session_item(aws: Any, tenant: str, session: str) -> dict[str, Any] | None:
    from chalicelib.adapters.dynamo import from_item

    sess, resources = aws
    item = sess.client("dynamodb").get_item(TableName=resources.table_name,
                                            Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"SESSION#{session}"}})
    return from_item(item["Item"]) if "Item" in item else None


def stored_trace(aws: Any, key: str) -> list[dict[str, Any]]:
    sess, resources = aws
    raw = sess.client("s3").get_object(Bucket=resources.bucket_name, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(raw).splitlines()]


def assert_nothing_stored(aws: Any, tenant: str = "acme", session: str = "s1") -> None:
    assert s3_keys(aws, "sessions/") == []
    assert session_item(aws, tenant, session) is None


class SteppingClock:
    """Advances one second per reading so upload order is unambiguous."""

    def __init__(self) -> None:
        self._now = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self._now += timedelta(seconds=1)
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()


# -- the three input kinds -----------------------------------------------------------------------

def test_claude_code_upload_is_normalised_encrypted_and_recorded(client: Any, aws: Any, container: Any,
                                                                  member_token: str) -> None:
    body = (FIXTURES / "claude-code-full.jsonl").read_bytes()
    expected = json.loads((FIXTURES / "claude-code-full.expected.json").read_text())["entries"]

    resp = put_ndjson(client, member_token, "cc-full", body, repository="github.com/acme/invoices",
                      title="PDF export")

    assert resp.status_code == 201, resp.json
    assert resp.json["session_id"] == "cc-full"
    assert resp.json["entries"] == len(expected)
    assert resp.json["bytes"] == len(body)
    key = "sessions/acme/cc-full/trace.jsonl.gz"
    assert s3_keys(aws) == [key]
    assert stored_trace(aws, key) == expected

    session, resources = aws
    head = session.client("s3").head_object(Bucket=resources.bucket_name, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(container.config.kms_key_id)

    item = session_item(aws, "acme", "cc-full")
    assert item is not None
    assert item["gsi1pk"] == "SESSIONS#acme"
    assert item["format"] == "claude-code"
    assert item["repository"] == "github.com/acme/invoices"
    assert item["title"] == "PDF export"
    assert item["entries"] == len(expected)
    assert sum(item["entries_by_kind"].values()) == len(expected)
    assert item["bytes"] == len(body)
    assert item["storage"]["key"] == key
    assert item["storage"]["bytes"] == head["ContentLength"]
    assert item["storage"]["etag"] == head["ETag"].strip('"')
    assert item["uploaded_by"] == "bob"
    assert item["uploaded_at"].endswith("Z")
    assert item["revision"] == 1

    meta = client.get("/sessions/cc-full", token=member_token)
    assert meta.status_code == 200
    assert meta.json["entries_by_kind"] == item["entries_by_kind"]
    assert meta.json["source"]["cwd"]


def test_skipped_lines_are_counted_not_fatal(client: Any, member_token: str) -> None:
    resp = put_ndjson(client, member_token, "s1", claude_session("s1"))

    assert resp.status_code == 201
    assert resp.json["entries_by_kind"] == {"assistant_message": 1, "tool_invocation": 1, "tool_result": 1,
                                            "user_message": 1}
    assert resp.json["skipped"]["unknown"] == {"brand-new-line-type": 1}
    assert resp.json["skipped"]["metadata"] == 1
    assert resp.json["lines"] == 6


def test_codex_rollout_upload(client: Any, aws: Any, member_token: str) -> None:
    body = (FIXTURES / "codex-full.jsonl").read_bytes()
    expected = json.loads((FIXTURES / "codex-full.expected.json").read_text())["entries"]

    resp = put_ndjson(client, member_token, "rollout-1", body, fmt="codex")

    assert resp.status_code == 201, resp.json
    assert resp.json["format"] == "codex"
    assert resp.json["entries"] == len(expected)
    assert stored_trace(aws, "sessions/acme/rollout-1/trace.jsonl.gz") == expected


def test_native_json_upload(client: Any, aws: Any, member_token: str) -> None:
    resp = client.put("/sessions/native-1", token=member_token,
                      json_body=native_body(repository="acme/web", title="Docs", parent_session_id="earlier"))

    assert resp.status_code == 201, resp.json
    assert resp.json["entries"] == 4
    assert resp.json["format"] == "native"
    assert resp.json["parent_session_id"] == "earlier"
    trace = stored_trace(aws, "sessions/acme/native-1/trace.jsonl.gz")
    assert trace[2] == {"kind": "tool_result", "timestamp": "2025-06-01T12:00:02.000Z", "tool": "Write",
                        "call_id": "c1", "output": "written", "is_error": False, "truncated": False,
                        "output_bytes": 7}
    assert trace[3]["timestamp"] == "2025-06-01T12:00:03.000Z"


def test_gzipped_ndjson_body_is_inflated(client: Any, member_token: str) -> None:
    raw = claude_session("gz")
    packed = gzip.compress(raw)

    resp = put_ndjson(client, member_token, "gz", packed)

    assert resp.status_code == 201, resp.json
    assert resp.json["bytes"] == len(raw)
    assert resp.json["received_bytes"] == len(packed)
    assert resp.json["entries"] == 4


# -- replace and isolation -----------------------------------------------------------------------

def test_reupload_replaces_with_200(client: Any, aws: Any, member_token: str) -> None:
    first = put_ndjson(client, member_token, "s1", claude_session("s1", output="first run"))
    second = put_ndjson(client, member_token, "s1", claude_session("s1", output="second run"), title="again")

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json["created"] is False
    assert second.json["revision"] == 2
    assert second.json["created_at"] == first.json["created_at"]
    assert s3_keys(aws) == ["sessions/acme/s1/trace.jsonl.gz"]
    ctx = client.get("/sessions/s1/eval-context", token=member_token).json
    outputs = [e["output"] for e in ctx["trace"] if e["kind"] == "tool_result"]
    assert outputs == ["second run"]
    assert client.get("/sessions/s1", token=member_token).json["title"] == "again"


def test_another_tenants_session_is_invisible(client: Any, member_token: str, other_tenant_admin: str) -> None:
    assert put_ndjson(client, member_token, "s1", claude_session("s1")).status_code == 201

    for path in ("/sessions/s1", "/sessions/s1/eval-context", "/sessions/s1/eval-context?chain=true"):
        resp = client.get(path, token=other_tenant_admin)
        assert resp.status_code == 404, path
        assert resp.json["error"]["code"] == "session_not_found"
    assert client.get("/sessions", token=other_tenant_admin).json["items"] == []


def test_tenants_reuse_session_ids_independently(client: Any, aws: Any, member_token: str,
                                                 other_tenant_admin: str) -> None:
    a = put_ndjson(client, member_token, "shared", claude_session("shared", output="acme output"))
    b = put_ndjson(client, other_tenant_admin, "shared", claude_session("shared", output="globex output"))

    assert (a.status_code, b.status_code) == (201, 201)
    assert s3_keys(aws) == ["sessions/acme/shared/trace.jsonl.gz", "sessions/globex/shared/trace.jsonl.gz"]
    for token, expected in ((member_token, "acme output"), (other_tenant_admin, "globex output")):
        trace = client.get("/sessions/shared/eval-context", token=token).json["trace"]
        assert [e["output"] for e in trace if e["kind"] == "tool_result"] == [expected]


def test_sessions_require_a_token(client: Any) -> None:
    assert client.get("/sessions").status_code == 401
    assert client.put("/sessions/s1?format=claude-code", body=claude_session("s1"), headers=NDJSON).status_code == 401


# -- listing -------------------------------------------------------------------------------------

def test_list_is_newest_first_and_paginates(client: Any, container: Any, member_token: str) -> None:
    container.clock = SteppingClock()
    for session in ("old", "mid", "new"):
        assert put_ndjson(client, member_token, session, claude_session(session)).status_code == 201
    # Re-uploading moves a session to the top.
    assert put_ndjson(client, member_token, "old", claude_session("old")).status_code == 200

    everything = client.get("/sessions", token=member_token).json
    assert [i["session_id"] for i in everything["items"]] == ["old", "new", "mid"]
    assert everything["next_cursor"] is None

    page1 = client.get("/sessions?limit=2", token=member_token).json
    page2 = client.get(f"/sessions?limit=2&cursor={page1['next_cursor']}", token=member_token).json
    assert [i["session_id"] for i in page1["items"] + page2["items"]] == ["old", "new", "mid"]

    bad = client.get("/sessions?limit=0", token=member_token)
    assert bad.status_code == 400
    assert client.get("/sessions?cursor=nonsense", token=member_token).json["error"]["code"] == "invalid_cursor"


# -- eval context --------------------------------------------------------------------------------

THRESHOLD_CASES = [
    (None, [False, True, True]),   # default 2000
    ("0", [True, True, True]),
    ("5000", [False, False, True]),
    ("200000", [False, False, False]),
]


def test_eval_context_compacts_at_the_threshold(client: Any, member_token: str) -> None:
    outputs = ["x" * 100, "y" * 3000, "z" * 9000]
    trace = []
    for i, out in enumerate(outputs):
        trace += [{"kind": "tool_invocation", "timestamp": f"2025-06-01T12:00:0{i}Z", "tool": "Read",
                   "call_id": f"c{i}", "arguments": {}},
                  {"kind": "tool_result", "timestamp": f"2025-06-01T12:00:0{i}Z", "tool": "Read",
                   "call_id": f"c{i}", "output": out}]
    assert client.put("/sessions/big", token=member_token, json_body={"trace": trace}).status_code == 201

    for threshold, truncated in THRESHOLD_CASES:
        query = f"?threshold={threshold}" if threshold is not None else ""
        resp = client.get(f"/sessions/big/eval-context{query}", token=member_token)

        assert resp.status_code == 200, (threshold, resp.json)
        results = [e for e in resp.json["trace"] if e["kind"] == "tool_result"]
        assert [r["truncated"] for r in results] == truncated, threshold
        for result, original in zip(results, outputs, strict=True):
            assert result["output_bytes"] == len(original)
            if result["truncated"]:
                assert result["output"] == f"<truncated: {len(original)} bytes, kind=Read>"
        stats = resp.json["compaction"]
        assert stats["threshold_bytes"] == int(threshold or 2000)
        assert stats["entries"] == 6
        assert stats["tool_results_total"] == 3
        assert stats["tool_results_truncated"] == sum(truncated)
        assert stats["bytes_saved"] == sum(len(o) - len(r["output"])
                                           for o, r in zip(outputs, results, strict=True))
        assert resp.json["session_chain"] == ["big"]
        assert resp.json["chain_incomplete"] is False


def test_eval_context_rejects_bad_parameters(client: Any, member_token: str) -> None:
    assert put_ndjson(client, member_token, "s1", claude_session("s1")).status_code == 201

    for query, code in [("threshold=200001", "threshold_out_of_range"), ("threshold=-1", "threshold_out_of_range"),
                        ("threshold=abc", "invalid_threshold"), ("threshold=1.5", "invalid_threshold"),
                        ("chain=maybe", "invalid_query"), ("colour=red", "invalid_query")]:
        resp = client.get(f"/sessions/s1/eval-context?{query}", token=member_token)
        assert (resp.status_code, resp.json["error"]["code"]) == (400, code), query
    assert client.get("/sessions/s1/eval-context?threshold=200000", token=member_token).status_code == 200


def test_chain_of_three_is_walked_oldest_first(client: Any, member_token: str) -> None:
    for session, parent in (("part-1", None), ("part-2", "part-1"), ("part-3", "part-2")):
        params = {"parent_session_id": parent} if parent else {}
        resp = put_ndjson(client, member_token, session, claude_session(session, text=f"task {session}"), **params)
        assert resp.status_code == 201

    chained = client.get("/sessions/part-3/eval-context?chain=true", token=member_token).json
    single = client.get("/sessions/part-3/eval-context?chain=false", token=member_token).json

    assert chained["session_id"] == "part-3"
    assert chained["session_chain"] == ["part-1", "part-2", "part-3"]
    assert [e["text"] for e in chained["trace"] if e["kind"] == "user_message"] == [
        "task part-1", "task part-2", "task part-3"]
    assert chained["compaction"]["entries"] == 12
    assert chained["chain_incomplete"] is False
    assert single["session_chain"] == ["part-3"]
    assert len(single["trace"]) == 4


def test_claude_code_continuations_link_themselves(client: Any, member_token: str) -> None:
    ids = ("chain-a", "chain-b", "chain-c")
    for n, session in enumerate(ids, start=1):
        body = (FIXTURES / f"claude-code-chain-{n}.jsonl").read_bytes()
        assert put_ndjson(client, member_token, session, body).status_code == 201

    meta = client.get("/sessions/chain-c", token=member_token).json
    ctx = client.get("/sessions/chain-c/eval-context?chain=true", token=member_token).json

    assert (meta["parent_session_id"], meta["parent_source"]) == ("chain-b", "continuation")
    assert ctx["session_chain"] == list(ids)
    timestamps = [e["timestamp"] for e in ctx["trace"]]
    assert timestamps == sorted(timestamps)


def test_a_missing_parent_ends_the_chain_and_is_reported(client: Any, member_token: str) -> None:
    put_ndjson(client, member_token, "child", claude_session("child"), parent_session_id="never-uploaded")

    ctx = client.get("/sessions/child/eval-context?chain=true", token=member_token).json

    assert ctx["session_chain"] == ["child"]
    assert ctx["chain_incomplete"] is True
    assert ctx["chain_stop_reason"] == "missing_parent"
    assert ctx["missing_parent_session_id"] == "never-uploaded"


def test_a_parent_that_would_close_a_cycle_is_rejected(client: Any, member_token: str) -> None:
    put_ndjson(client, member_token, "a", claude_session("a"), parent_session_id="b")
    put_ndjson(client, member_token, "b", claude_session("b"), parent_session_id="c")

    resp = put_ndjson(client, member_token, "c", claude_session("c"), parent_session_id="a")
    self_parent = put_ndjson(client, member_token, "d", claude_session("d"), parent_session_id="d")

    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "session_chain_cycle"
    assert self_parent.json["error"]["code"] == "session_chain_cycle"


def test_secrets_never_leave_in_the_eval_context(client: Any, member_token: str) -> None:
    register_secret(FAKE_ANTHROPIC_KEY)  # the suite guard fails the test if it appears in any response or log
    body = claude_session("leaky", command=f"curl -H 'x-api-key: {FAKE_ANTHROPIC_KEY}' https://api.anthropic.com",
                          output=f"ANTHROPIC_API_KEY={FAKE_ANTHROPIC_KEY}\nDEBUG=true")
    assert put_ndjson(client, member_token, "leaky", body).status_code == 201

    resp = client.get("/sessions/leaky/eval-context?threshold=200000", token=member_token)

    assert resp.status_code == 200
    raw = json.dumps(resp.json)
    assert FAKE_ANTHROPIC_KEY not in raw
    assert "sk-ant-" not in raw
    assert "DEBUG=true" in raw  # non-secrets are untouched
    assert resp.json["compaction"]["redactions"].get("anthropic_api_key", 0) >= 2
    invocation, result = (e for e in resp.json["trace"] if e["kind"] in ("tool_invocation", "tool_result"))
    assert invocation["call_id"] == result["call_id"]


def test_secrets_fixture_is_fully_redacted(client: Any, member_token: str) -> None:
    body = (FIXTURES / "claude-code-secrets.jsonl").read_bytes()
    for key in set(re.findall(rb"sk-ant-[A-Za-z0-9_-]{20,}", body)):
        register_secret(key.decode())
    assert put_ndjson(client, member_token, "secrets", body).status_code == 201

    resp = client.get("/sessions/secrets/eval-context?threshold=200000", token=member_token)

    assert resp.status_code == 200
    assert "sk-ant-api03-" not in json.dumps(resp.json)
    assert sum(resp.json["compaction"]["redactions"].values()) > 0


# -- presigned upload ----------------------------------------------------------------------------

def _start_upload(client: Any, token: str, session: str, **body: Any) -> Any:
    body.setdefault("content_length", len(claude_session(session)))
    return client.post(f"/sessions/{session}/uploads", token=token, json_body={"format": "claude-code", **body})


def test_presigned_upload_end_to_end(client: Any, aws: Any, container: Any, member_token: str) -> None:
    body = (FIXTURES / "claude-code-full.jsonl").read_bytes()
    ticket = _start_upload(client, member_token, "big-1", content_length=len(body), title="Large one")
    assert ticket.status_code == 201, ticket.json
    t = ticket.json
    assert t["method"] == "PUT"
    assert t["headers"]["x-amz-server-side-encryption"] == "aws:kms"
    assert t["headers"]["x-amz-server-side-encryption-aws-kms-key-id"] == container.config.kms_key_id
    assert t["expires_at"].endswith("Z")

    # A real HTTP PUT to the presigned URL: moto's mock intercepts `requests`, as S3 would answer it.
    put = requests.put(t["url"], data=body, headers=t["headers"], timeout=10)
    assert put.status_code == 200
    upload_key = f"uploads/acme/{t['upload_id']}"
    session, resources = aws
    head = session.client("s3").head_object(Bucket=resources.bucket_name, Key=upload_key)
    assert head["ServerSideEncryption"] == "aws:kms"

    done = client.post(f"/sessions/big-1/uploads/{t['upload_id']}/complete", token=member_token)

    assert done.status_code == 201, done.json
    assert done.json["bytes"] == len(body)
    assert done.json["title"] == "Large one"
    assert s3_keys(aws) == ["sessions/acme/big-1/trace.jsonl.gz"]  # the upload object is gone
    ctx = client.get("/sessions/big-1/eval-context", token=member_token)
    assert ctx.status_code == 200
    assert ctx.json["compaction"]["entries"] == done.json["entries"]
    again = client.post(f"/sessions/big-1/uploads/{t['upload_id']}/complete", token=member_token)
    assert again.status_code == 404


def test_completing_before_the_put_is_409(client: Any, member_token: str) -> None:
    t = _start_upload(client, member_token, "s1").json

    resp = client.post(f"/sessions/s1/uploads/{t['upload_id']}/complete", token=member_token)

    assert resp.status_code == 409
    assert resp.json["error"]["code"] == "upload_not_received"


def test_the_upload_url_signs_the_announced_size(client: Any, member_token: str) -> None:
    t = _start_upload(client, member_token, "s1", content_length=1234).json

    assert t["headers"]["Content-Length"] == "1234"
    assert "content-length" in t["url"].lower()  # in X-Amz-SignedHeaders: S3 refuses any other size


def test_another_member_cannot_replace_a_session(client: Any, aws: Any, member_token: str) -> None:
    assert put_ndjson(client, member_token, "s1", claude_session("s1")).status_code == 201
    alice = mint("acme", "alice", [])

    replaced = put_ndjson(client, alice, "s1", claude_session("s1", output="alice's"))
    started = _start_upload(client, alice, "s1")

    for resp in (replaced, started):
        assert resp.status_code == 403, resp.json
        assert resp.json["error"]["code"] == "not_session_owner"
    assert session_item(aws, "acme", "s1")["uploaded_by"] == "bob"
    admin = put_ndjson(client, mint("acme", "root", ["admin"]), "s1", claude_session("s1"))
    assert admin.status_code == 200


def test_an_upload_belongs_to_its_tenant_and_session(client: Any, aws: Any, member_token: str,
                                                     other_tenant_admin: str) -> None:
    t = _start_upload(client, member_token, "s1").json
    session, resources = aws
    session.client("s3").put_object(Bucket=resources.bucket_name, Key=f"uploads/acme/{t['upload_id']}",
                                    Body=claude_session("s1"))

    for token, path in ((other_tenant_admin, "s1"), (member_token, "s2")):
        resp = client.post(f"/sessions/{path}/uploads/{t['upload_id']}/complete", token=token)
        assert resp.status_code == 404
        assert resp.json["error"]["code"] == "upload_not_found"
    assert client.post("/sessions/s1/uploads/not-an-id/complete", token=member_token).status_code == 404


def test_a_bad_uploaded_file_stores_nothing_and_is_discarded(client: Any, aws: Any, member_token: str) -> None:
    t = _start_upload(client, member_token, "s1", content_length=len(b'{"type":"user"}\n{not json}\n')).json
    session, resources = aws
    # Under the in-process mock a boto3 put_object to the same key stands in for the client's PUT.
    session.client("s3").put_object(Bucket=resources.bucket_name, Key=f"uploads/acme/{t['upload_id']}",
                                    Body=b'{"type":"user"}\n{not json}\n')

    resp = client.post(f"/sessions/s1/uploads/{t['upload_id']}/complete", token=member_token)

    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "invalid_jsonl"
    assert resp.json["error"]["details"]["line"] == 2
    assert s3_keys(aws) == []
    assert_nothing_stored(aws)


def test_ten_megabyte_line_via_upload_is_line_too_long(client: Any, aws: Any, container: Any,
                                                        member_token: str) -> None:
    from chalicelib.worker.eval_worker import handle_sqs_batch

    session, resources = aws
    line = b'{"type":"user","message":{"content":"' + b"a" * (10 * 1024 * 1024) + b'"}}\n'
    t = _start_upload(client, member_token, "s1", content_length=len(line)).json
    session.client("s3").put_object(Bucket=resources.bucket_name, Key=f"uploads/acme/{t['upload_id']}", Body=line)

    resp = client.post(f"/sessions/s1/uploads/{t['upload_id']}/complete", token=member_token)
    assert resp.status_code == 202  # over 8 MiB: parsed by the worker
    handle_sqs_batch(_drain_jobs(container), None)

    status = client.get(resp.json["status_path"], token=member_token).json
    assert status["status"] == "failed" and status["error"]["code"] == "line_too_long"
    assert s3_keys(aws) == []
    assert_nothing_stored(aws)


def test_bad_upload_requests(client: Any, member_token: str) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"format": "native", "content_length": 10}, 400, "validation_failed"),
        ({"format": "claude-code"}, 400, "validation_failed"),  # no size: an unbounded URL
        ({"format": "claude-code", "content_length": 0}, 400, "validation_failed"),
        ({"format": "claude-code", "content_length": 600 * 1024 * 1024}, 413, "session_too_large"),
        ({"format": "claude-code", "content_length": 10, "surprise": 1}, 400, "validation_failed"),
        ({"format": "codex", "content_length": 10, "parent_session_id": "bad id"}, 400, "invalid_session_id"),
    ]
    for body, status, code in cases:
        resp = client.post("/sessions/s1/uploads", token=member_token, json_body=body)
        assert (resp.status_code, resp.json["error"]["code"]) == (status, code), body


# -- bad inputs: each a clear 4xx, nothing stored --------------------------------------------------

ONE_LINE_10MB = b'{"type":"user","message":{"content":"' + b"a" * (10 * 1024 * 1024) + b'"}}\n'


BAD_INPUTS: list[tuple[str, str, bytes, int, str]] = [
    ("application/x-ndjson", "?format=claude-code", b"", 400, "empty_body"),
    ("application/x-ndjson", "?format=claude-code", b"\n\n  \n", 400, "empty_body"),
    ("application/json", "", b"", 400, "empty_body"),
    ("text/plain", "?format=claude-code", b"{}", 415, "unsupported_media_type"),
    ("application/x-www-form-urlencoded", "?format=claude-code", b"a=b", 415, "unsupported_media_type"),
    ("application/json", "?format=claude-code", b"{}", 415, "unsupported_media_type"),
    ("application/x-ndjson", "", b'{"type":"user"}\n', 400, "unsupported_format"),
    ("application/x-ndjson", "?format=cursor", b'{"type":"user"}\n', 400, "unsupported_format"),
    ("application/x-ndjson", "?format=claude-code", codex_session(), 400, "format_mismatch"),
    ("application/x-ndjson", "?format=codex", claude_session("x"), 400, "format_mismatch"),
    ("application/x-ndjson", "?format=claude-code", claude_session("x") + b'{"type":"user","mess', 400,
     "invalid_jsonl"),
    ("application/x-ndjson", "?format=claude-code", b'{"type":"user"}\n[1, 2]\n', 400, "invalid_jsonl"),
    ("application/x-ndjson", "?format=claude-code", b'{"type":"user","x":"caf\xe9"}\n', 400, "invalid_encoding"),
    ("application/x-ndjson", "?format=claude-code", ONE_LINE_10MB, 413, "payload_too_large"),
    ("application/x-ndjson", "?format=claude-code", gzip.compress(ONE_LINE_10MB), 400, "line_too_long"),
    ("application/x-ndjson", "?format=claude-code", b"\x1f\x8bnot really gzip", 400, "invalid_gzip"),
    ("application/x-ndjson", "?format=claude-code",
     b'{"type":"summary","summary":"t","leafUuid":"u"}\n', 400, "empty_session"),
    ("application/json", "", b'{"trace": [', 400, "malformed_json"),
    ("application/json", "", b"[]", 400, "malformed_json"),
    ("application/json", "", b'{"trace": [], "title": "t"}', 400, "empty_session"),
    ("application/json", "", b'{"trace": [], "colour": "red"}', 400, "validation_failed"),
    ("application/json", "", json.dumps({"trace": [{"kind": "user_message", "timestamp": "2025-01-01T00:00:00Z",
                                                    "text": "hi", "mood": "happy"}]}).encode(), 400,
     "validation_failed"),
    ("application/json", "", json.dumps({"trace": [{"kind": "telepathy", "timestamp": "2025-01-01T00:00:00Z"}]}
                                        ).encode(), 400, "validation_failed"),
    ("application/json", "", b'{"trace": [], "pad": "' + b"p" * (4 * 1024 * 1024) + b'"}', 413,
     "payload_too_large"),
]


def test_bad_input_is_a_clear_4xx_and_stores_nothing(client: Any, aws: Any, member_token: str) -> None:
    # One table-driven test (not parametrized) so the moto stack is provisioned once for all cases.
    for n, (content_type, query, body, status, code) in enumerate(BAD_INPUTS):
        case = f"case {n}: {content_type} {query} {body[:40]!r}"
        resp = client.put(f"/sessions/s1{query}", token=member_token, body=body,
                          headers={"Content-Type": content_type})

        assert resp.status_code == status, (case, resp.json)
        assert resp.json["error"]["code"] == code, case
        assert resp.json["error"]["message"], case
        assert_nothing_stored(aws)


def test_line_errors_name_the_line(client: Any, member_token: str) -> None:
    body = claude_session("x") + b"not json at all\n" + claude_session("x")

    resp = put_ndjson(client, member_token, "s1", body)

    assert resp.json["error"]["details"]["line"] == 7
    assert "7" in resp.json["error"]["message"]


def test_oversize_put_points_at_the_presigned_flow(client: Any, member_token: str) -> None:
    resp = put_ndjson(client, member_token, "s1", ONE_LINE_10MB)

    assert resp.status_code == 413
    assert resp.json["error"]["details"]["upload_path"] == "/sessions/s1/uploads"
    assert "/sessions/s1/uploads" in resp.json["error"]["message"]


def test_invalid_session_ids_are_rejected(client: Any, aws: Any, member_token: str) -> None:
    for session in ["has%20space", "a" * 201, ".hidden", "colon:inside", "plus+sign", "per%25cent"]:
        resp = put_ndjson(client, member_token, session, claude_session("x"))

        assert resp.status_code == 400, session
        assert resp.json["error"]["code"] == "invalid_session_id"
    assert s3_keys(aws) == []


def test_a_failed_reupload_keeps_the_previous_session(client: Any, aws: Any, member_token: str) -> None:
    assert put_ndjson(client, member_token, "s1", claude_session("s1")).status_code == 201

    bad = put_ndjson(client, member_token, "s1", b'{"type":"user"}\n{oops\n')

    assert bad.status_code == 400
    meta = client.get("/sessions/s1", token=member_token).json
    assert meta["revision"] == 1
    assert client.get("/sessions/s1/eval-context", token=member_token).json["compaction"]["entries"] == 4


def test_admin_tokens_work_too_and_openapi_lists_the_routes(client: Any) -> None:
    token = mint("acme", "alice", ["admin"])
    assert put_ndjson(client, token, "s1", claude_session("s1")).status_code == 201
    paths = client.get("/openapi.json").json["paths"]
    for path in ("/sessions", "/sessions/{session_id}", "/sessions/{session_id}/eval-context",
                 "/sessions/{session_id}/uploads", "/sessions/{session_id}/uploads/{upload_id}/complete"):
        assert path in paths


# -- direct upload caps (issue #12 item 5) ---------------------------------------------------------

def _gzip_stream(piece: bytes, total: int) -> bytes:
    """gzip of `total` bytes of `piece` repeated, compressed chunk by chunk (never held inflated)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = piece * (1024 * 1024 // len(piece))
    out = [packer.compress(chunk) for _ in range(total // len(chunk))]
    return b"".join(out) + packer.flush()


@pytest.mark.timeout(60)  # hang guard: this body kept the API busy for 160 s before the caps
def test_a_gzip_of_300_mb_of_blank_lines_is_refused_and_stores_nothing(client: Any, aws: Any,
                                                                       member_token: str) -> None:
    body = _gzip_stream(b"\n", 300 * 1024 * 1024)
    assert len(body) < 400 * 1024

    resp = put_ndjson(client, member_token, "s1", body)

    assert resp.status_code == 413, resp.json
    assert resp.json["error"]["code"] == "direct_upload_too_large"
    assert resp.json["error"]["details"] == {"limit_kind": "inflated_bytes", "limit": MAX_DIRECT_INFLATED_BYTES,
                                             "upload_path": "/sessions/s1/uploads"}
    assert_nothing_stored(aws)


@pytest.mark.timeout(60)
def test_blank_line_bombs_under_the_size_cap_stop_at_the_line_cap(client: Any, aws: Any,
                                                                   member_token: str) -> None:
    # 30 MB of blank lines (under the size cap) are stopped after MAX_DIRECT_LINES lines.
    resp = put_ndjson(client, member_token, "s1", _gzip_stream(b"\n", 30 * 1024 * 1024))

    assert resp.status_code == 413, resp.json
    assert resp.json["error"]["code"] == "direct_upload_too_large"
    assert resp.json["error"]["details"]["limit_kind"] == "lines"
    assert resp.json["error"]["details"]["limit"] == MAX_DIRECT_LINES
    assert_nothing_stored(aws)


@pytest.mark.timeout(60)
def test_a_gzip_inflating_past_the_direct_cap_points_at_the_presigned_upload(client: Any, aws: Any,
                                                                            member_token: str) -> None:
    line = json.dumps({"type": "user", "message": {"role": "user", "content": "x" * 1_000_000}}).encode() + b"\n"
    body = _gzip_stream(line, 40 * 1024 * 1024)

    resp = put_ndjson(client, member_token, "s1", body)

    assert resp.status_code == 413, resp.json
    assert resp.json["error"]["code"] == "direct_upload_too_large"
    assert resp.json["error"]["details"]["limit_kind"] == "inflated_bytes"
    assert "POST /sessions/s1/uploads" in resp.json["error"]["message"]
    assert_nothing_stored(aws)


# -- large presigned uploads complete in the background (issue #19) ----------------------------------

def _drain_jobs(container: Any) -> dict[str, Any]:
    records = []
    while msgs := container.sqs.receive_message(QueueUrl=container.config.queue_url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=0).get("Messages", []):
        for m in msgs:
            records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                            "attributes": {}, "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
                            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:eval-runner-jobs",
                            "awsRegion": "us-east-1"})
            container.sqs.delete_message(QueueUrl=container.config.queue_url, ReceiptHandle=m["ReceiptHandle"])
    return {"Records": records}


def test_a_large_presigned_upload_is_202_then_stored_by_the_worker(client: Any, aws: Any, container: Any,
                                                                  member_token: str) -> None:
    from chalicelib.services.sessions import SYNC_COMPLETE_MAX_BYTES
    from chalicelib.worker.eval_worker import handle_sqs_batch

    body = claude_session("big-2", output="x" * (SYNC_COMPLETE_MAX_BYTES + 1024))
    t = _start_upload(client, member_token, "big-2", content_length=len(body)).json
    session, resources = aws
    session.client("s3").put_object(Bucket=resources.bucket_name, Key=f"uploads/acme/{t['upload_id']}", Body=body)

    accepted = client.post(f"/sessions/big-2/uploads/{t['upload_id']}/complete", token=member_token)

    assert accepted.status_code == 202, accepted.json
    assert accepted.json["status"] == "processing"
    status_path = accepted.json["status_path"]
    assert client.get(status_path, token=member_token).json["status"] == "processing"
    assert client.get("/sessions/big-2", token=member_token).status_code == 404

    result = handle_sqs_batch(_drain_jobs(container), None)

    assert result == {"batchItemFailures": []}
    status = client.get(status_path, token=member_token)
    assert status.status_code == 200 and status.json["status"] == "succeeded", status.json
    assert status.json["session"]["bytes"] == len(body) and status.json["error"] is None
    assert client.get("/sessions/big-2", token=member_token).json["entries"] == status.json["session"]["entries"]
    assert s3_keys(aws) == ["sessions/acme/big-2/trace.jsonl.gz"]
    assert client.get(status_path, token=mint("acme", "alice", [])).status_code == 404
