"""Observability: every structured log line of an API request and of a worker record carries tenant,
user, eval_run_id (when the work concerns a run) and cold_start, and never an API key or transcript
text; the EMF metrics name runs by status, judge latency, tokens by kind and vendor errors by kind.

Log lines and EMF blobs are what Powertools prints to stdout (CloudWatch Logs in Lambda, the local
stack's console), so the tests read captured stdout, exactly what an operator would see.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.domain.runs import EvalJobMessage
from chalicelib.services.judge_runner import RunnerTuning
from chalicelib.worker.eval_worker import eval_worker
from devstack.fake_vendor import FakeVendor
from tests.conftest import mint, register_secret
from tests.fakevendor import running_fake_vendor

KEY = "sk-ant-observability-0123456789abcdef"
CANARY = "TRANSCRIPT-CANARY-do-not-log-7f3a"
SESSION = "obs-session"
CORRELATION_KEYS = ("tenant", "user", "eval_run_id", "cold_start")
METRICS = {"EvalRuns", "JudgeLatency", "InputTokens", "OutputTokens", "CacheReadInputTokens",
           "CacheCreationInputTokens", "VendorErrors"}


class _Context:
    function_name = "eval_worker"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:eval_worker"
    aws_request_id = "req-observability"

    def __init__(self, remaining_ms: int = 60_000) -> None:
        self._until = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._until - time.monotonic()) * 1000))


@pytest.fixture
def fake() -> Iterator[FakeVendor]:
    with running_fake_vendor() as vendor:
        yield vendor


def _records(stdout: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(log lines, EMF blobs) among the JSON lines of captured stdout. The one "cold start" line of an
    execution environment belongs to no request or record (no tenant yet), so it is left out."""
    logs, emf = [], []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("message") == "cold start":
            assert record["function_name"] and record["cold_start"] is True
            continue
        (emf if "_aws" in record else logs).append(record)
    return logs, emf


def _metric_names(emf: list[dict[str, Any]]) -> set[str]:
    return {m["Name"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def _setup_run(client: Any, fake: FakeVendor) -> str:
    admin, member = mint("obs", "ada", ["admin"]), mint("obs", "bob", [])
    resp = client.put("/admin/settings/eval-runner", token=admin, json_body={
        "anthropic": {"api_key": register_secret(KEY), "model": "claude-sonnet-4-6",
                      "base_url": fake.anthropic_base_url}})
    assert resp.status_code == 200, resp.json
    trace = [
        {"kind": "user_message", "timestamp": "2026-01-01T10:00:00.000Z", "text": f"Fix the login bug {CANARY}"},
        {"kind": "tool_invocation", "timestamp": "2026-01-01T10:00:01.000Z", "tool": "Bash", "call_id": "c1",
         "arguments": {"command": f"grep {CANARY} src/auth.py"}},
        {"kind": "tool_result", "timestamp": "2026-01-01T10:00:02.000Z", "tool": "Bash", "call_id": "c1",
         "output": f"src/auth.py:3: {CANARY}"},
        {"kind": "assistant_message", "timestamp": "2026-01-01T10:00:03.000Z", "text": f"Fixed {CANARY}."},
    ]
    resp = client.put(f"/sessions/{SESSION}", token=member, json_body={"trace": trace})
    assert resp.status_code in (200, 201), resp.json
    resp = client.post(f"/sessions/{SESSION}/eval-runs", token=member, json_body={"vendor": "anthropic"})
    assert resp.status_code == 202, resp.json
    run_id = str(resp.json["eval_run_id"])
    assert client.get(f"/eval-runs/{run_id}", token=member).status_code == 200
    return run_id


def _queued_event(container: Any) -> dict[str, Any]:
    sqs, url = container.sqs, container.config.queue_url
    records = []
    for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
        EvalJobMessage.model_validate_json(m["Body"])
        records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                        "attributes": {}, "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:eval-runner-jobs",
                        "awsRegion": "us-east-1"})
    assert records, "nothing was queued"
    return {"Records": records}


def _assert_clean(stdout: str) -> None:
    assert KEY not in stdout, "an API key was logged"
    assert CANARY not in stdout, "transcript text was logged"


def test_api_request_lines_carry_tenant_user_run_and_cold_start(client: Any, fake: FakeVendor,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    run_id = _setup_run(client, fake)
    out = capsys.readouterr().out

    logs, emf = _records(out)
    assert logs, "the requests logged nothing"
    for line in logs:
        for key in ("tenant", "user", "cold_start"):
            assert key in line, (key, line["message"])
        assert line["tenant"] == "obs"
        assert line["service"] == "eval-runner" and line["function_name"]
    dispatched = [line for line in logs if line["message"] == "eval run dispatched"]
    assert dispatched and dispatched[0]["eval_run_id"] == run_id and dispatched[0]["user"] == "bob"
    # Keys bound for one request never leak into the next: the admin's request came first.
    assert {line["user"] for line in logs if line["message"] == "session stored"} == {"bob"}
    assert {line["user"] for line in logs if line["message"] == "eval-runner settings changed"} == {"ada"}
    _assert_clean(out)
    queued = [blob for blob in emf if "EvalRuns" in _metric_names([blob])]
    assert [(b["status"], b["runner"], b["vendor"]) for b in queued] == [("queued", "server", "anthropic")]


def test_worker_record_lines_and_metrics(client: Any, container: Any, fake: FakeVendor,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    container.judge_tuning = RunnerTuning(cancel_poll_seconds=0.1, progress_flush_seconds=0.2,
                                          retrospective_min_seconds=0.2)
    run_id = _setup_run(client, fake)
    # One judge keeps failing with a non-retryable vendor error: a VendorErrors{kind} datapoint.
    fake.script("followed_plan", status=400, times=None)
    capsys.readouterr()

    # The deployed handler path (chalicelib.worker.eval_worker.eval_worker), which the local stack's
    # worker loop calls too: no app.py, so its logging and metrics are its own.
    result = eval_worker(_queued_event(container), _Context())
    out = capsys.readouterr().out
    assert result == {"batchItemFailures": []}
    status = client.get(f"/eval-runs/{run_id}", token=mint("obs", "bob", [])).json["status"]
    assert status == "succeeded"

    logs, emf = _records(out)
    assert logs, "the worker logged nothing"
    for line in logs:
        for key in CORRELATION_KEYS:
            assert key in line, (key, line["message"])
        assert (line["tenant"], line["user"], line["eval_run_id"]) == ("obs", "bob", run_id)
        assert line["function_name"] == "eval_worker"
    # One progress line per judge: 12 scored, 1 failed.
    judge_lines = [line for line in logs if line["message"].startswith("judge ")]
    assert len(judge_lines) == 13
    assert sum(line["status"] == "failed" for line in judge_lines) == 1
    _assert_clean(out)

    names = _metric_names(emf)
    assert names >= METRICS, sorted(METRICS - names)
    runs = [b for b in emf if "EvalRuns" in _metric_names([b])]
    assert [(b["status"], b["runner"], b["vendor"]) for b in runs] == [("succeeded", "server", "anthropic")]
    errors = [b for b in emf if "VendorErrors" in _metric_names([b])]
    assert {b["kind"] for b in errors} == {"bad_request"}
    latency = next(b for b in emf if "JudgeLatency" in _metric_names([b]))
    assert latency["vendor"] == "anthropic" and len(latency["JudgeLatency"]) >= 12


def test_keys_of_one_record_do_not_leak_into_the_next(capsys: pytest.CaptureFixture[str]) -> None:
    from chalicelib.observability import bind_log_keys, logger, worker_record_log_keys

    capsys.readouterr()
    with worker_record_log_keys(tenant="t1", eval_run_id="evr_1"):
        bind_log_keys(user="u1")
        logger.info("inside")
    logger.info("after")
    logs, _ = _records(capsys.readouterr().out)
    inside, after = logs[-2], logs[-1]
    assert (inside["tenant"], inside["user"], inside["eval_run_id"]) == ("t1", "u1", "evr_1")
    assert not {"tenant", "user", "eval_run_id"} & set(after)
