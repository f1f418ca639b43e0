"""What the eval-rule tests share: rules created through the admin API, uploads for them to match, the
queued messages delivered to the worker handler like SQS does, and a session's runs."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.worker.eval_worker import handle_sqs_batch
from tests.api.dispatch_kit import drain_queue
from tests.conftest import mint

ADMIN = mint("acme", "alice", ["admin"])
MEMBER = mint("acme", "bob", [])


def rule_body(**kw: Any) -> dict[str, Any]:
    return {"name": "acme repos", "sample_rate": 1.0, **kw}


def create_rule(client: Any, **kw: Any) -> dict[str, Any]:
    resp = client.post("/admin/eval-rules", token=ADMIN, json_body=rule_body(**kw))
    assert resp.status_code == 201, resp.json
    return dict(resp.json)


def trace(text: str = "Fix the login test in src/auth.py") -> list[dict[str, Any]]:
    return [{"kind": "user_message", "timestamp": "2026-01-01T10:00:00.000Z", "text": text},
            {"kind": "assistant_message", "timestamp": "2026-01-01T10:00:05.000Z", "text": "Done."}]


def upload(client: Any, session_id: str, *, repository: str | None = "github.com/acme/web", text: str = "fix it",
           user: str = "bob") -> None:
    body: dict[str, Any] = {"trace": trace(text)}
    if repository is not None:
        body["repository"] = repository
    resp = client.put(f"/sessions/{session_id}", token=mint("acme", user, []), json_body=body)
    assert resp.status_code in (200, 201), resp.json


def deliver(bodies: list[dict[str, Any]]) -> None:
    """Hand queued messages to the deployed worker handler, like the SQS event source does."""
    records = [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": json.dumps(b, separators=(",", ":")),
                "attributes": {}, "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:jobs", "awsRegion": "us-east-1"}
               for i, b in enumerate(bodies)]
    if records:
        result = handle_sqs_batch({"Records": records}, None)
        assert result == {"batchItemFailures": []}


def notices(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in bodies if b.get("job") == "session_stored"]


def jobs(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in bodies if "eval_run_id" in b]


def process_uploads(container: Any) -> list[dict[str, Any]]:
    """Deliver the pending notices; return the eval job messages the rules queued."""
    bodies = drain_queue(container)
    deliver(notices(bodies))
    return jobs(drain_queue(container)) + jobs(bodies)


def runs_of(client: Any, session_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/sessions/{session_id}/eval-runs", token=MEMBER)
    assert resp.status_code == 200, resp.json
    return list(resp.json["items"])
