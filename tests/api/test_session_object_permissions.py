"""The S3 calls the service really makes on the session bucket are allowed by the roles it deploys with.

Neither moto nor the local stack enforces IAM (devstack/rehearsal.py NOT_COVERED), and moto would not
catch this case anyway: S3 authorises a PUT that carries `x-amz-tagging` only if the caller also holds
`s3:PutObjectTagging`, which moto does not check. So the calls are recorded from the S3 client while the
API does what writes tagged objects (an upload and a presigned upload completed under a tenant retention,
an export handed out as a link, an aborted export, deleting the session), each call is translated into
the IAM actions AWS requires for it, and those are evaluated against the least-privilege statements
`devstack/access.py` gives every function that writes session objects (both deploy paths are built from
them, `tests/unit/test_deploy_paths.py`) and against `.chalice/policy.json` (the policy `chalice deploy`
uses before `make infra` writes per-function ones).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import requests

from chalicelib.adapters.export_store import S3ExportObjects
from devstack.access import FUNCTION_ACCESS, SESSIONS_WRITE, Targets, role_statements
from tests.conftest import mint

ROOT = Path(__file__).resolve().parents[2]
MEMBER = mint("acme", "bob", [])
ADMIN = mint("acme", "alice", ["admin"])

# The IAM actions S3 requires for each API operation (the S3 API reference, "Permissions"); an
# operation missing here fails the test so a new call gets its permission checked too.
_OBJECT_ACTIONS = {
    "PutObject": "s3:PutObject", "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
    "DeleteObject": "s3:DeleteObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
}
_TAGGING_OPERATIONS = {"PutObject", "CreateMultipartUpload", "CopyObject"}


def _required(operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(action, resource ARN) pairs one call needs."""
    assert operation in _OBJECT_ACTIONS, f"the service calls s3:{operation}: add the IAM action it needs here"
    resource = f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"
    needed = [(_OBJECT_ACTIONS[operation], resource)]
    if operation in _TAGGING_OPERATIONS and params.get("Tagging"):
        needed.append(("s3:PutObjectTagging", resource))
    return needed


def _allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    def listed(value: Any) -> list[str]:
        return value if isinstance(value, list) else [value]

    return any(s["Effect"] == "Allow" and "Condition" not in s
               and any(fnmatch.fnmatchcase(action, a) for a in listed(s["Action"]))
               and any(fnmatch.fnmatchcase(resource, r) for r in listed(s["Resource"]))
               for s in statements)


def _role(function: str, bucket: str) -> list[dict[str, Any]]:
    arn = "arn:aws:{}:us-east-1:111122223333:{}"
    targets = Targets(table=arn.format("dynamodb", "table/t"), table_indexes=arn.format("dynamodb", "table/t/index/*"),
                      bucket=f"arn:aws:s3:::{bucket}", bucket_objects=f"arn:aws:s3:::{bucket}/*",
                      key=arn.format("kms", "key/k"), queue=arn.format("sqs", "q"),
                      secrets=arn.format("secretsmanager", "secret:s*"),
                      event_bus=arn.format("events", "event-bus/default"),
                      connections=None, log_group=arn.format("logs", "log-group:/aws/lambda/f"),
                      via={"dynamodb": "dynamodb", "s3": "s3", "secretsmanager": "secretsmanager"})
    return role_statements(FUNCTION_ACCESS[function], targets)


def test_every_session_bucket_call_is_allowed_to_the_functions_that_write_session_objects(
        client: Any, container: Any) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    container.s3.meta.events.register("provide-client-params.s3", record)
    bucket = container.config.bucket_name

    resp = client.put("/admin/settings/eval-runner/limits", token=ADMIN, json_body={"retention_days": 30})
    assert resp.status_code == 200, resp.json
    # A direct upload and a presigned one (completed here; in a deployment the worker completes large ones).
    resp = client.put("/sessions/sess-tagged", token=MEMBER, json_body={
        "trace": [{"kind": "user_message", "timestamp": "2026-11-01T09:00:00Z", "text": "Add a README"}]})
    assert resp.status_code in (200, 201), resp.json
    body = (ROOT / "tests" / "fixtures" / "sessions" / "claude-code-full.jsonl").read_bytes()
    ticket = client.post("/sessions/sess-big/uploads", token=MEMBER,
                         json_body={"format": "claude-code", "content_length": len(body)}).json
    assert requests.put(ticket["url"], data=body, headers=ticket["headers"], timeout=10).status_code == 200
    done = client.post(f"/sessions/sess-big/uploads/{ticket['upload_id']}/complete", token=MEMBER)
    assert done.status_code == 201, done.json
    # An export written to S3 and handed out as a link, and one abandoned half way.
    assert client.get("/eval-runs/export?delivery=link", token=MEMBER).status_code == 200
    exports = S3ExportObjects(container.s3, bucket=bucket, kms_key_id=container.config.kms_key_id)
    upload_id = exports.start(exports.export_key("acme", "aborted", "csv"), "text/csv")
    exports.abort(exports.export_key("acme", "aborted", "csv"), upload_id)
    assert client.delete("/sessions/sess-tagged", token=MEMBER).status_code == 204

    tagged = [p for op, p in calls if op == "PutObject" and p.get("Tagging")]
    assert len(tagged) == 2 and all(p["Tagging"] == "retention-days=30" for p in tagged), calls
    needed = {pair for op, params in calls for pair in _required(op, params)}
    assert ("s3:PutObjectTagging", f"arn:aws:s3:::{bucket}/sessions/acme/sess-big/trace.jsonl.gz") in needed
    writers = [f for f, grants in FUNCTION_ACCESS.items() if SESSIONS_WRITE in grants]
    assert {"APIHandler", "EvalWorker"} <= set(writers)
    for function in writers:
        statements = _role(function, bucket)
        refused = sorted(pair for pair in needed if not _allowed(statements, *pair))
        assert not refused, f"{function}'s role would be refused {refused}"
    fallback = json.loads((ROOT / ".chalice" / "policy.json").read_text())["Statement"]
    # The fallback policy names buckets by the stack's prefix; the test bucket is named after its stack.
    assert bucket.startswith("eval-runner-")
    refused = sorted(pair for pair in needed if not _allowed(fallback, *pair))
    assert not refused, f".chalice/policy.json would be refused {refused}"


def test_a_role_without_the_tagging_permission_is_refused_the_tagged_write() -> None:
    """The evaluator above can fail: the grant set before s3:PutObjectTagging was added is refused."""
    statements = [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                   "Resource": "arn:aws:s3:::b/*"}]
    needed = _required("PutObject", {"Bucket": "b", "Key": "sessions/acme/s/trace.jsonl.gz",
                                     "Tagging": "retention-days=30"})
    assert [pair for pair in needed if not _allowed(statements, *pair)] == [
        ("s3:PutObjectTagging", "arn:aws:s3:::b/sessions/acme/s/trace.jsonl.gz")]
