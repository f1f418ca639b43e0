"""What the worker tests share: a tenant configured for the fake vendor, a session, a dispatch through
the API, the queued job as a Lambda-shaped SQS event handled by the deployed handler, and readers of the
stored result and of what the fake vendor saw."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.runs import EvalJobMessage
from chalicelib.services.judge_runner import RunnerTuning
from chalicelib.worker.eval_worker import handle_sqs_batch
from devstack.fake_vendor import FakeVendor
from devstack.lambda_context import LocalLambdaContext
from devstack.sample_sessions import sample_trace
from tests.conftest import mint, register_secret

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1"}
KEYS = {"anthropic": "sk-ant-worker-test-0123456789abcd", "openai": "sk-proj-worker-test-0123456789abcd"}
VENDORS = ["anthropic", "openai"]
SESSION = "sess-worker-1"
ALL_QUESTIONS = 13
TEST_TUNING = RunnerTuning(cancel_poll_seconds=0.1, progress_flush_seconds=0.2, retrospective_min_seconds=0.2)


def trace(n_tools: int = 6, output: str = "ok") -> list[dict[str, Any]]:
    return sample_trace(n_tools, output)


def configure(client: Any, fake: FakeVendor, vendor: str, *, key: str | None = None, timeout: int = 300,
              tenant: str = "acme") -> None:
    api_key = register_secret(key or KEYS[vendor])
    base_url = fake.anthropic_base_url if vendor == "anthropic" else fake.openai_base_url
    resp = client.put("/admin/settings/eval-runner", token=mint(tenant, "root", ["admin"]), json_body={
        vendor: {"api_key": api_key, "model": MODELS[vendor], "base_url": base_url},
        "run_timeout_seconds": timeout})
    assert resp.status_code == 200, resp.json


def upload(client: Any, entries: list[dict[str, Any]], session_id: str = SESSION) -> None:
    resp = client.put(f"/sessions/{session_id}", token=mint("acme", "bob", []), json_body={"trace": entries})
    assert resp.status_code in (200, 201), resp.json


def dispatch(client: Any, session_id: str = SESSION, **body: Any) -> str:
    resp = client.post(f"/sessions/{session_id}/eval-runs", token=mint("acme", "bob", []), json_body=body)
    assert resp.status_code == 202, resp.json
    return str(resp.json["eval_run_id"])


def queued_event(container: Any) -> dict[str, Any]:
    """Drain the job queue into one Lambda-shaped SQS event (what the event source mapping sends)."""
    sqs = container.sqs
    records = []
    while True:
        msgs = sqs.receive_message(QueueUrl=container.config.queue_url, MaxNumberOfMessages=10,
                                   WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            break
        for m in msgs:
            records.append(sqs_record(m["Body"], message_id=m["MessageId"]))
            sqs.delete_message(QueueUrl=container.config.queue_url, ReceiptHandle=m["ReceiptHandle"])
    assert records, "nothing was queued"
    return {"Records": records}


def sqs_record(body: str, *, message_id: str = "msg-1") -> dict[str, Any]:
    return {"messageId": message_id, "receiptHandle": f"rh-{message_id}", "body": body, "attributes": {},
            "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:eval-runner-jobs", "awsRegion": "us-east-1"}


def job_event(run_id: str, kind: str = "run") -> dict[str, Any]:
    body = EvalJobMessage(tenant="acme", eval_run_id=run_id, kind=kind, dispatched_at="2026-01-01T00:00:00.000Z")
    return {"Records": [sqs_record(body.model_dump_json())]}


def work(event: dict[str, Any], remaining_ms: int = 60_000) -> dict[str, Any]:
    return handle_sqs_batch(event, LocalLambdaContext("eval_worker", remaining_ms / 1000))


def view(client: Any, run_id: str) -> dict[str, Any]:
    resp = client.get(f"/eval-runs/{run_id}", token=mint("acme", "bob", []))
    assert resp.status_code == 200, resp.json
    return dict(resp.json)


def by_question(v: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["question_id"]: q for q in v["progress"]["questions"]}


def generate_requests(fake: FakeVendor) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["endpoint"] == "generate"]


def judge_requests(fake: FakeVendor, question_id: str | None = None, *, tool_rounds: bool = False
                   ) -> list[dict[str, Any]]:
    """Each judge's asks (and repair re-asks); with `tool_rounds`, also the requests that answer its tool calls."""
    return [r for r in generate_requests(fake)
            if r.get("question_id") and (question_id is None or r["question_id"] == question_id)
            and (tool_rounds or not r.get("tool_results_seen"))]


def stored_run(container: Any, run_id: str) -> Any:
    return container.run_store.require("acme", run_id)
