"""The SQS worker end to end: dispatch through the API, then `handle_sqs_batch` with a Lambda-shaped event
and a fake context whose remaining time the test controls; judges are the real anthropic/openai SDKs
talking to the in-process FakeVendor; AWS is moto.

Assertions are on stored state (GET /eval-runs/{id}, the settings view, what the fake vendor saw),
never on elapsed seconds.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from chalicelib.services.judge_runner import RunnerTuning
from chalicelib.services.sessions import ContextLoadStopped
from chalicelib.worker.eval_worker import handle_sqs_batch
from devstack.fake_vendor import FakeVendor
from devstack.lambda_context import LocalLambdaContext
from tests.api.worker_kit import (
    ALL_QUESTIONS,
    KEYS,
    MODELS,
    SESSION,
    VENDORS,
    by_question,
    configure,
    dispatch,
    generate_requests,
    job_event,
    judge_requests,
    queued_event,
    sqs_record,
    stored_run,
    trace,
    upload,
    view,
    work,
)
from tests.conftest import mint

# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("vendor", VENDORS)
def test_both_vendors_judge_all_13_questions_with_cached_usage(client: Any, worker: Any, fake: FakeVendor,
                                                               vendor: str) -> None:
    configure(client, fake, vendor)
    upload(client, trace())
    run_id = dispatch(client)

    assert work(queued_event(worker)) == {"batchItemFailures": []}

    v = view(client, run_id)
    assert v["status"] == "succeeded", v["error"]
    assert v["progress"]["total"] == v["progress"]["completed"] == ALL_QUESTIONS
    result = v["result"]
    verdicts = [q for c in result["categories"] for q in c["questions"]]
    assert len(verdicts) == ALL_QUESTIONS
    assert result["judge_model"] == MODELS[vendor]
    assert [c["name"] for c in result["categories"]] == ["safety", "plan_adherence", "quality", "efficiency"]
    for category in result["categories"]:
        scores = [q["score"] for q in category["questions"]]
        assert category["score"] == round(sum(scores) / len(scores))
    assert result["overall_score"] == round(sum(c["score"] for c in result["categories"]) / 4)
    assert result["summary"].startswith(f"Evaluated {ALL_QUESTIONS}/{ALL_QUESTIONS} questions")
    assert result["retrospective"] is not None and v["retrospective_status"] == "succeeded"

    # Per-question usage and latency; the run total is their sum plus the retrospective.
    questions = v["progress"]["questions"]
    assert all(q["usage"]["output_tokens"] > 0 and q["latency_ms"] is not None for q in questions)
    summed = {k: sum(q["usage"][k] for q in questions) for k in v["usage"]}
    assert all(v["usage"][k] >= summed[k] for k in summed)
    assert v["usage"]["output_tokens"] > summed["output_tokens"]  # + the retrospective
    # The trace prefix was cached once and read by every other judge, tool rounds included: the four
    # needs_tools questions each made one tool call (the fake's default: get_session_summary).
    judges = judge_requests(fake, tool_rounds=True)
    assert len([r for r in judges if not r["tool_results_seen"]]) == ALL_QUESTIONS
    assert len([r for r in judges if r["tool_results_seen"]]) == 4
    assert sum(r["cache"] == "read" for r in judges) == len(judges) - 1
    assert v["usage"]["cache_read_input_tokens"] > 0
    if vendor == "anthropic":
        assert sum(r["cache"] == "write" for r in judges) == 1
        assert v["usage"]["cache_creation_input_tokens"] > 0
    assert v["context"]["threshold_used"] == 2000 and v["context"]["elided_entries"] == 0


def test_event_is_published_without_transcript_text(client: Any, worker: Any, fake: FakeVendor) -> None:
    events = worker.events
    sqs = worker.sqs
    queue_url = sqs.create_queue(QueueName="event-sink")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="evals", EventPattern=json.dumps({"source": ["eval-runner"]}),
                    EventBusName=worker.config.event_bus_name)
    events.put_targets(Rule="evals", EventBusName=worker.config.event_bus_name, Targets=[{"Id": "q", "Arn": arn}])
    configure(client, fake, "anthropic")
    upload(client, trace(output="SECRET-LOOKING TRANSCRIPT TEXT"))
    run_id = dispatch(client)
    work(queued_event(worker))

    msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(msgs) == 1
    event = json.loads(msgs[0]["Body"])
    assert event["source"] == "eval-runner" and event["detail-type"] == "SessionEvalCompleted"
    detail = event["detail"]
    assert detail["eval_run_id"] == run_id and detail["tenant"] == "acme" and detail["session_id"] == SESSION
    assert detail["status"] == "succeeded" and detail["overall_score"] == view(client, run_id)["result"][
        "overall_score"]
    assert detail["usage"]["output_tokens"] > 0
    body = msgs[0]["Body"]
    assert "TRANSCRIPT TEXT" not in body and "finding" not in body and "src/auth.py" not in body


def test_transient_vendor_errors_are_retried_by_the_sdk(client: Any, worker: Any, fake: FakeVendor) -> None:
    vendor = "openai"  # the adapters' retry mapping per vendor is covered in tests/adapters
    configure(client, fake, vendor)
    upload(client, trace())
    fake.script("sensitive_files", status=429, retry_after=0.05)
    fake.script("followed_plan", status=500)
    fake.script("tests_written", status=529)
    run_id = dispatch(client)
    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded"
    assert v["progress"]["completed"] == ALL_QUESTIONS
    for qid in ("sensitive_files", "followed_plan", "tests_written"):
        statuses = [r["status"] for r in judge_requests(fake, qid)]
        assert statuses == [{"sensitive_files": 429, "followed_plan": 500, "tests_written": 529}[qid], 200]


def test_unusable_output_gets_one_repair_and_judge_mistakes_are_normalised(client: Any, worker: Any,
                                                                           fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    fake.script("destructive_commands", malformed=True)  # then ok on the repair re-ask
    fake.script("completed_items", malformed=True, times=2)  # still bad after the repair
    fake.script("tests_written", fenced=True)
    fake.script("broken_tests", wrong_ids=True)
    fake.script("redundant_calls", score=7)
    run_id = dispatch(client)
    work(queued_event(worker))

    v = view(client, run_id)
    questions = by_question(v)
    assert v["status"] == "succeeded"
    assert questions["destructive_commands"]["status"] == "scored"
    assert questions["destructive_commands"]["attempts"] == 3  # the ask, its tool round, the repair re-ask
    first, repair = judge_requests(fake, "destructive_commands")  # (its tool round in between is not listed)
    assert repair["prompt_chars"] > first["prompt_chars"]  # the question plus the repair instructions
    assert repair["cache"] == "read"  # the re-ask reuses the cached trace prefix

    failed = questions["completed_items"]
    assert failed["status"] == "failed" and failed["score"] is None
    assert failed["failure_reason"]["kind"] == "invalid_output"
    assert "repair" in failed["failure_reason"]["message"]
    assert len(judge_requests(fake, "completed_items")) == 2  # bounded: one repair, no more

    assert questions["tests_written"]["status"] == "scored"
    wrong = next(q for c in v["result"]["categories"] for q in c["questions"] if q["question_id"] == "broken_tests")
    assert wrong["category"] == "quality"  # the judge said banana/hallucinated_question

    out_of_range = questions["redundant_calls"]
    assert out_of_range["status"] == "failed" and out_of_range["failure_reason"]["kind"] == "invalid_output"
    assert len(judge_requests(fake, "redundant_calls")) == 1  # a bad score is not repaired
    result = v["result"]
    assert result["summary"].startswith(f"Evaluated {ALL_QUESTIONS - 2}/{ALL_QUESTIONS}")
    assert v["progress"]["failed"] == 2
    verdicts = [q["question_id"] for c in result["categories"] for q in c["questions"]]
    assert "redundant_calls" not in verdicts and "completed_items" not in verdicts


@pytest.mark.parametrize("vendor", VENDORS)
def test_rejected_key_fails_the_run_and_suspends_the_vendor(client: Any, worker: Any, fake: FakeVendor,
                                                            vendor: str) -> None:
    configure(client, fake, vendor)
    upload(client, trace())
    run_id = dispatch(client)
    # The vendor revokes the key after dispatch (and echoes it in its error text, which must not leak).
    fake.configure(revoked_keys=[KEYS[vendor]], echo_key_in_errors=True)

    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "failed"
    assert v["error"]["code"] == "vendor_auth_failed" and v["error"]["details"]["kind"] == "auth"
    assert KEYS[vendor] not in json.dumps(v)
    assert all(q["status"] == "failed" and q["failure_reason"]["kind"] == "auth"
               for q in v["progress"]["questions"])
    settings = client.get("/admin/settings/eval-runner", token=mint("acme", "root", ["admin"])).json
    assert settings[vendor]["status"] == "suspended"
    # The first 401 stopped the run: no fan-out of 13 doomed calls.
    assert len(generate_requests(fake)) <= 2


def test_hang_past_the_deadline_times_out_with_partial_results(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    fake.script("permission_bypass", hang=True, hang_seconds=30)
    fake.script("direct_approach", hang=True, hang_seconds=30)
    run_id = dispatch(client)

    # 4 s of Lambda time: a fifth of it is kept as grace for persisting, the judges get the rest.
    work(queued_event(worker), remaining_ms=4000)

    v = view(client, run_id)
    questions = by_question(v)
    assert v["status"] == "timed_out"
    assert v["error"]["code"] == "run_timed_out"
    timed_out = {qid for qid, q in questions.items() if q["status"] == "timed_out"}
    assert {"permission_bypass", "direct_approach"} <= timed_out
    assert all(questions[qid]["failure_reason"]["kind"] == "timed_out" for qid in timed_out)
    assert all(q["status"] in ("scored", "timed_out") for q in questions.values())  # none left "running"
    completed = v["progress"]["completed"]
    assert completed == ALL_QUESTIONS - len(timed_out) >= 1
    assert v["result"]["summary"].startswith(f"Evaluated {completed}/{ALL_QUESTIONS}")
    assert v["retrospective_status"] == "skipped"
    # The worker returned while the vendor still held both requests: they were abandoned, not awaited.
    assert judge_requests(fake, "permission_bypass") == [] and judge_requests(fake, "direct_approach") == []


def test_cancel_mid_run_aborts_in_flight_calls(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "openai")
    upload(client, trace())
    hung = ("security_vulnerabilities", "unplanned_changes", "over_engineering")
    for qid in hung:
        fake.script(qid, hang=True, hang_seconds=30)
    run_id = dispatch(client)
    event = queued_event(worker)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (work(event), done.set()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(judge_requests(fake)) < ALL_QUESTIONS - len(hung) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.stats()["max_inflight"] >= len(hung)
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=mint("acme", "bob", []))
    assert resp.status_code == 200, resp.json
    seen_at_cancel = len(fake.requests)
    thread.join(timeout=20)
    assert done.is_set(), "the worker did not stop after the cancel"

    v = view(client, run_id)
    assert v["status"] == "cancelled"
    assert not any(by_question(v)[qid]["status"] == "scored" for qid in hung)
    # In-flight requests were aborted (the worker returned while the vendor still held them) and
    # nothing new was sent after the cancel.
    assert all(judge_requests(fake, qid) == [] for qid in hung)
    assert len(fake.requests) == seen_at_cancel


class EndlessSessions:
    """A session source whose read never ends by itself, like a huge or hostile session would take
    minutes: only the stop flag the worker passes in (the run's deadline or cancel) ends it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()

    def load_eval_context_doc(self, tenant: str, session_id: str, threshold: int | str | None = 2000,
                              chain: bool = False, *, stop: Any = None) -> Any:
        self.started.set()
        while stop is None or not stop():
            time.sleep(0.01)
        self.stopped.set()
        raise ContextLoadStopped


def endless_loading(container: Any) -> EndlessSessions:
    endless = EndlessSessions()
    container.__dict__.pop("eval_jobs", None)
    container.sessions = endless
    return endless


@pytest.mark.timeout(60)  # hang guard: before the fix the read ran outside the deadline and never ended
def test_loading_the_session_runs_under_the_deadline(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)
    event = queued_event(worker)
    endless = endless_loading(worker)

    work(event, remaining_ms=3000)

    v = view(client, run_id)
    assert endless.stopped.is_set()
    assert v["status"] == "timed_out" and v["error"]["code"] == "run_timed_out"
    assert all(q["status"] == "timed_out" for q in v["progress"]["questions"])
    assert judge_requests(fake) == []


@pytest.mark.timeout(60)
def test_cancel_while_the_session_loads_stops_the_read(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)
    event = queued_event(worker)
    endless = endless_loading(worker)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (work(event), done.set()), daemon=True)
    thread.start()
    assert endless.started.wait(20)
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=mint("acme", "bob", []))
    assert resp.status_code == 200, resp.json
    thread.join(timeout=20)

    assert done.is_set() and endless.stopped.is_set()
    assert view(client, run_id)["status"] == "cancelled"
    assert judge_requests(fake) == []


def test_redelivery_after_success_makes_no_vendor_calls(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "openai")
    upload(client, trace())
    run_id = dispatch(client)
    event = queued_event(worker)
    work(event)
    before = view(client, run_id)
    calls = len(fake.requests)

    assert work(event) == {"batchItemFailures": []}

    assert len(fake.requests) == calls
    after = view(client, run_id)
    assert after["status"] == "succeeded" and after["result"] == before["result"] and after["usage"] == before["usage"]


def test_redelivery_after_a_crash_judges_only_unscored_questions(client: Any, worker: Any, fake: FakeVendor) -> None:
    from chalicelib.domain.evaluation import JudgeVerdict, QuestionOutcome, TokenUsage

    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)
    event = queued_event(worker)
    run = stored_run(worker, run_id)
    # The state a worker leaves behind when it dies mid-run: started, 5 questions flushed as scored.
    scored = run.questions[:5]
    store = worker.run_store
    store.start("acme", run_id, now="2026-01-01T00:00:00.000Z", outcomes=[
        QuestionOutcome(question_id=q.question_id, category=q.category, status="running") for q in run.questions])
    prior_usage = TokenUsage(input_tokens=100, output_tokens=50)
    store.record_outcomes("acme", run_id, [
        QuestionOutcome(question_id=q.question_id, category=q.category, status="scored", usage=prior_usage,
                        attempts=1, judge_verdict=JudgeVerdict(
                            category=q.category, question_id=q.question_id, score=4, verdict="pass",
                            finding="from the first delivery", evidence=None, recommendation=None))
        for q in scored], TokenUsage(input_tokens=500, output_tokens=250))

    work(event)

    v = view(client, run_id)
    assert v["status"] == "succeeded"
    judged = {r["question_id"] for r in judge_requests(fake)}
    assert judged == {q.question_id for q in run.questions[5:]}
    assert len(judge_requests(fake)) == ALL_QUESTIONS - 5
    verdicts = {q["question_id"]: q for c in v["result"]["categories"] for q in c["questions"]}
    assert len(verdicts) == ALL_QUESTIONS
    assert all(verdicts[q.question_id]["finding"] == "from the first delivery" for q in scored)
    assert v["usage"]["input_tokens"] > 500  # earlier usage kept, new usage added


def test_rerun_judges_only_the_failed_questions(client: Any, worker: Any, fake: FakeVendor) -> None:
    from chalicelib.domain.evaluation import FailureReason, JudgeVerdict, QuestionOutcome, TokenUsage

    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)
    queued_event(worker)  # the first delivery's outcome is written below instead
    run = stored_run(worker, run_id)
    store = worker.run_store
    # A finished run where one question failed (e.g. the vendor kept answering 500).
    store.start("acme", run_id, now="2026-01-01T00:00:00.000Z", outcomes=[])
    outcomes = [
        QuestionOutcome(question_id=q.question_id, category=q.category, status="scored", attempts=1,
                        usage=TokenUsage(output_tokens=10), judge_verdict=JudgeVerdict(
                            category=q.category, question_id=q.question_id, score=5, verdict="pass",
                            finding="first run", evidence=None, recommendation=None))
        for q in run.questions if q.question_id != "sensitive_files"]
    outcomes.append(QuestionOutcome(question_id="sensitive_files", category="safety", status="failed", attempts=1,
                                    failure_reason=FailureReason(kind="server", message="HTTP 500")))
    store.finish("acme", run_id, status="failed", now="2026-01-01T00:01:00.000Z",
                 usage=TokenUsage(output_tokens=120), outcomes=outcomes)

    resp = client.post(f"/eval-runs/{run_id}/rerun", token=mint("acme", "bob", []))
    assert resp.status_code in (200, 202), resp.json
    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded"
    assert [r["question_id"] for r in judge_requests(fake)] == ["sensitive_files"]
    assert v["progress"]["completed"] == ALL_QUESTIONS
    assert v["usage"]["output_tokens"] > 120  # the first run's usage plus the rerun's


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_trace_too_big_for_the_window_is_reduced_never_rejected(client: Any, worker: Any, fake: FakeVendor,
                                                                  vendor: str) -> None:
    window = 12_000
    worker.judge_tuning = RunnerTuning(cancel_poll_seconds=0.1, progress_flush_seconds=0.2,
                                       retrospective_min_seconds=0.2, max_output_tokens=1024,
                                       context_window_overrides={MODELS[vendor]: window})
    fake.configure(context_windows={MODELS[vendor]: window})
    configure(client, fake, vendor)
    # ~60 tool outputs of 1.5 KB (under the 2000-byte threshold) plus a long conversation: ~40K tokens.
    entries = trace(n_tools=60, output="x" * 1500)
    entries += [{"kind": "assistant_message", "timestamp": "2025-06-01T11:00:00.000Z", "text": "y" * 400}
                for _ in range(200)]
    upload(client, entries)
    run_id = dispatch(client)

    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded", v["error"]
    judges = generate_requests(fake)
    assert judges and all(r["status"] == 200 for r in judges), "a judge call was rejected as too long"
    ctx = v["context"]
    assert ctx["threshold_used"] < ctx["threshold_requested"] == 2000
    assert ctx["elided_entries"] > 0 and ctx["elided_bytes"] > 0
    assert ctx["estimated_prompt_tokens"] <= window
    assert ctx["token_count_method"] == ("count_tokens" if vendor == "anthropic" else "estimate")
    assert "elided" in v["result"]["summary"]


def big_session() -> list[dict[str, Any]]:
    """~40K tokens: 60 tool outputs of 1.5 KB (under the 2000-byte threshold) and a long conversation."""
    entries = trace(n_tools=60, output="x" * 1500)
    entries += [{"kind": "assistant_message", "timestamp": "2025-06-01T11:00:00.000Z", "text": "y" * 400}
                for _ in range(200)]
    return entries


def overflow_answers(fake: FakeVendor) -> list[dict[str, Any]]:
    def too_long(error: str) -> bool:
        return "too long" in error or "maximum context length" in error

    return [r for r in fake.requests if r["status"] == 400 and too_long(r.get("error", ""))]


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_vendor_limit_lower_than_assumed_is_refit_once_remembered_and_cleared(client: Any, worker: Any,
                                                                               fake: FakeVendor, vendor: str) -> None:
    """A gateway serving the model with a 12K window (the runner assumes the model's 200K/1M): the
    vendor's first refusal states 12K, the judges wait on one refit to it, every judge after it
    succeeds; the limit is remembered, so the next run fits before its first call; an admin sees it
    in the settings and can clear it."""
    limit = 12_000
    worker.judge_tuning = RunnerTuning(cancel_poll_seconds=0.1, progress_flush_seconds=0.2,
                                       retrospective_min_seconds=0.2, max_output_tokens=1024)
    fake.configure(context_windows={MODELS[vendor]: limit})
    configure(client, fake, vendor)
    upload(client, big_session())
    run_id = dispatch(client)

    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded", v["error"]["message"] if v["error"] else None
    refused = overflow_answers(fake)
    # Anthropic's count-tokens endpoint states the limit before any judge is sent; OpenAI has no
    # count API, so its warm-up judge is the one refused call.
    assert [r["endpoint"] for r in refused] == (["count_tokens"] if vendor == "anthropic" else ["generate"])
    judges = judge_requests(fake)
    assert [r["status"] for r in judges].count(200) == ALL_QUESTIONS
    ctx = v["context"]
    assert ctx["vendor_limit"]["limit_tokens"] == limit and ctx["context_window"] == limit
    assert ctx["window_source"] == "vendor" and ctx["assumed_context_window"] > limit
    assert [step["reason"] for step in ctx["refits"]] == ["vendor_stated_limit"]
    assert ctx["elided_entries"] > 0 and f"{limit}-token context limit" in v["result"]["summary"]

    admin = mint("acme", "root", ["admin"])
    (learned,) = client.get("/admin/settings/eval-runner", token=admin).json[vendor]["learned_context_limits"]
    assert learned["limit_tokens"] == limit and learned["model"] == MODELS[vendor]
    assert learned["base_url"] == (fake.anthropic_base_url if vendor == "anthropic" else fake.openai_base_url)
    assert learned["eval_run_id"] == run_id

    # The next run on the same model fits before its first call: no overflow at all.
    fake.reset()
    fake.configure(context_windows={MODELS[vendor]: limit})
    second = dispatch(client)
    work(queued_event(worker))
    v2 = view(client, second)
    assert v2["status"] == "succeeded", v2["error"]
    assert overflow_answers(fake) == []
    assert v2["context"]["window_source"] == "learned" and v2["context"]["refits"] == []

    resp = client.delete(f"/admin/settings/eval-runner/vendors/{vendor}/context-limits", token=admin)
    assert resp.status_code == 200 and [c["limit_tokens"] for c in resp.json["cleared"]] == [limit]
    assert client.get("/admin/settings/eval-runner", token=admin).json[vendor]["learned_context_limits"] == []


def test_a_stated_limit_below_the_fixed_prompt_fails_the_run_at_once(client: Any, worker: Any,
                                                                     fake: FakeVendor) -> None:
    fake.configure(context_windows={MODELS["openai"]: 1_500})
    configure(client, fake, "openai")
    upload(client, big_session())
    run_id = dispatch(client)

    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "failed"
    assert v["error"]["code"] == "context_too_small"
    assert v["error"]["details"]["stated_limit_tokens"] == 1_500
    assert v["error"]["details"]["fixed_prompt_tokens"] + v["error"]["details"]["output_tokens"] > 1_500
    assert len(generate_requests(fake)) == 1  # the refused warm-up judge; nothing was fanned out
    assert all(q["failure_reason"]["kind"] == "context_overflow" for q in v["progress"]["questions"])


def test_only_admins_clear_learned_limits_and_a_bad_model_name_is_a_400(client: Any, worker: Any) -> None:
    path = "/admin/settings/eval-runner/vendors/openai/context-limits"
    assert client.delete(path, token=mint("acme", "bob", [])).status_code == 403
    bad = client.delete(path + "?model=../x", token=mint("acme", "root", ["admin"]))
    assert bad.status_code == 400 and bad.json["error"]["code"]
    assert client.delete("/admin/settings/eval-runner/vendors/nope/context-limits",
                         token=mint("acme", "root", ["admin"])).status_code == 404
    ok = client.delete(path + "?model=gpt-4.1", token=mint("acme", "root", ["admin"]))
    assert ok.status_code == 200 and ok.json == {"vendor": "openai", "cleared": []}


def test_malformed_message_is_dropped_and_unknown_run_is_ignored(worker: Any) -> None:
    bad = {"Records": [sqs_record("{not json", message_id="m-bad")]}
    assert handle_sqs_batch(bad, LocalLambdaContext("eval_worker", 10)) == {"batchItemFailures": []}
    unknown = job_event("evr_does_not_exist")
    assert handle_sqs_batch(unknown, LocalLambdaContext("eval_worker", 10)) == {"batchItemFailures": []}


def test_progress_and_finish_stay_within_the_write_budget(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    from chalicelib.judges.catalog import QUESTIONS

    for i, q in enumerate(QUESTIONS):  # completions spread over ~1.3 s: several progress batches
        fake.script(q.id, latency=0.1 * i)
    run_id = dispatch(client)
    event = queued_event(worker)
    writes: list[str] = []

    def count(event_name: str, **_: Any) -> None:
        writes.append(event_name.rsplit(".", 1)[-1])

    worker.dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", count)
    worker.dynamodb.meta.events.register("before-call.dynamodb.PutItem", count)
    worker.dynamodb.meta.events.register("before-call.dynamodb.TransactWriteItems", count)
    worker.dynamodb.meta.events.register("before-call.dynamodb.DeleteItem", count)
    worker.dynamodb.meta.events.register("before-call.dynamodb.BatchWriteItem", count)
    work(event)

    v = view(client, run_id)
    assert v["status"] == "succeeded"
    # start + coalesced progress + finish; each progress write carries several questions; then the
    # run lifecycle's one finalization transaction (run marker + spend ledger settlement).
    assert writes.count("TransactWriteItems") == 1
    run_writes = writes.count("UpdateItem")
    assert run_writes == len(writes) - 1
    assert 3 <= run_writes < 2 + ALL_QUESTIONS  # more than start + finish, fewer than one per question


def test_no_key_in_any_log(client: Any, worker: Any, fake: FakeVendor, caplog: pytest.LogCaptureFixture,
                           capsys: pytest.CaptureFixture[str]) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    fake.configure(echo_key_in_errors=True)
    fake.script("sensitive_files", status=400, message=f"bad request for key {KEYS['anthropic']}", times=2)
    run_id = dispatch(client)
    work(queued_event(worker))
    v = view(client, run_id)
    assert by_question(v)["sensitive_files"]["status"] == "failed"
    assert KEYS["anthropic"] not in json.dumps(v)
    # The conftest guard also checks every captured log line and stdout for the registered key.
