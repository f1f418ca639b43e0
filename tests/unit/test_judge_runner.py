"""The async judge orchestration with an in-memory judge model: warm-up then fan-out at its first token, the
concurrency bound, deadline and cancel (in-flight calls cancelled), key rotation, repair, refits to a
vendor-stated context limit, coalesced progress, usage accounting, and the worker's budget rules."""

from __future__ import annotations

import json

import pytest

from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage
from chalicelib.domain.judging import VendorCallError
from chalicelib.judges.catalog import QUESTIONS
from chalicelib.services.eval_job_run_ports import sdk_max_retries
from chalicelib.services.eval_jobs import run_budget_seconds
from chalicelib.services.judge_runner import JudgeRunResult, RunnerTuning
from tests.unit.judge_runner_kit import TEAM, Ports, ScriptedModel, Step, doc, run, verdict_json


def all_outcomes(result: JudgeRunResult) -> dict[str, QuestionOutcome]:
    return dict(result.outcomes)


def test_first_judge_warms_the_cache_then_the_rest_fan_out_in_parallel() -> None:
    model = ScriptedModel(default_latency=0.05)
    result, _ = run(model)

    assert result.stop == "done" and result.result is not None
    assert len(result.result.verdicts()) == 13
    assert model.starts[0] == QUESTIONS[0].id
    # Nothing else started before the warm-up judge finished, then 12 ran at once.
    assert model.finished[0] == QUESTIONS[0].id
    assert model.max_inflight == 12  # the first token comes with the whole answer here (ttft = latency)
    usage = [o.usage for o in result.outcomes.values()]
    assert sum(u.cache_creation_input_tokens > 0 for u in usage) == 1
    assert sum(u.cache_read_input_tokens > 0 for u in usage) == 12
    assert model.closed


def test_the_others_fan_out_at_the_warm_up_judges_first_token_and_read_its_prefix() -> None:
    model = ScriptedModel(default_latency=0.3, ttft=0.05)
    result, _ = run(model)

    assert result.result is not None and len(result.result.verdicts()) == 13
    # All 12 started while the warm-up judge was still answering (13 in flight), and every one of them
    # found the prefix its answer had begun to write.
    assert model.max_inflight == 13
    assert model.finished[0] == QUESTIONS[0].id
    usage = [o.usage for o in result.outcomes.values()]
    assert sum(u.cache_creation_input_tokens > 0 for u in usage) == 1
    assert sum(u.cache_read_input_tokens > 0 for u in usage) == 12


def test_a_twenty_question_catalog_fans_out_in_one_wave_by_default() -> None:
    model = ScriptedModel(default_latency=0.3, ttft=0.05)
    questions = [*QUESTIONS, *TEAM]
    result, _ = run(model, questions=questions, tuning=RunnerTuning(cancel_poll_seconds=0.02, retrospective=False))
    assert result.result is not None and len(result.result.verdicts()) == 20
    assert model.max_inflight == 20  # the warm-up still answering + the other 19 at once
    assert sum(o.usage.cache_read_input_tokens > 0 for o in result.outcomes.values()) == 19


def test_without_warm_up_every_judge_pays_the_cache_write() -> None:
    model = ScriptedModel(default_latency=0.05)
    result, _ = run(model, tuning=RunnerTuning(concurrency=13, warm_up="none", cancel_poll_seconds=0.02,
                                               retrospective=False))
    assert model.max_inflight == 13
    assert sum(o.usage.cache_creation_input_tokens > 0 for o in result.outcomes.values()) == 13


def test_concurrency_is_bounded() -> None:
    model = ScriptedModel(default_latency=0.02)
    run(model, tuning=RunnerTuning(concurrency=3, cancel_poll_seconds=0.02))
    assert model.max_inflight == 3


def test_a_slow_warm_up_judge_does_not_hold_the_others_back_forever() -> None:
    model = ScriptedModel(script={QUESTIONS[0].id: [Step(hang=True)]})
    result, _ = run(model, seconds=0.8, tuning=RunnerTuning(cancel_poll_seconds=0.02, warm_up_share=0.25))
    assert result.stop == "deadline"
    assert len(model.finished) == 12
    assert result.unfinished == [QUESTIONS[0].id]
    assert model.cancelled == [QUESTIONS[0].id]


def test_the_deadline_cancels_in_flight_calls_and_keeps_finished_verdicts() -> None:
    hung = {"permission_bypass", "direct_approach"}
    model = ScriptedModel(script={q: [Step(hang=True)] for q in hung})
    result, _ = run(model, seconds=0.5)

    assert result.stop == "deadline"
    assert set(result.unfinished) == hung
    assert set(model.cancelled) == hung  # the calls were cancelled, not left running
    assert result.result is not None and len(result.result.verdicts()) == 11
    assert result.retrospective_status == "skipped"


def test_a_cancel_stops_in_flight_calls_and_further_writes() -> None:
    hung = {"followed_plan", "tests_written", "redundant_calls"}
    model = ScriptedModel(script={q: [Step(hang=True)] for q in hung})
    ports = Ports(cancel_when=lambda m: len(m.finished) >= 10)
    result, ports = run(model, ports)

    assert result.stop == "cancelled"
    assert set(model.cancelled) == hung
    assert result.result is None
    assert len(model.starts) == 13  # nothing new was sent after the cancel


def test_a_rotated_key_is_picked_up_once_and_the_question_retried() -> None:
    rejected = VendorCallError("auth", "invalid key", status=401)
    old = ScriptedModel(script={q.id: [Step(error=rejected)] for q in QUESTIONS})
    new = ScriptedModel()
    ports = Ports(refreshed_model=new)
    result, ports = run(old, ports)

    assert result.stop == "done" and result.result is not None and len(result.result.verdicts()) == 13
    assert ports.refreshes == 1
    assert len(new.finished) == 14  # 13 judges + the retrospective, all on the new key
    assert old.closed and new.closed


def test_a_refused_key_that_was_not_rotated_aborts_the_run() -> None:
    rejected = VendorCallError("auth", "invalid key", status=401)
    model = ScriptedModel(script={q.id: [Step(error=rejected)] for q in QUESTIONS}, counts=False)
    result, ports = run(model, Ports(refreshed_model=None))
    assert result.stop == "aborted" and result.abort is not None and result.abort.kind == "auth"
    assert ports.refreshes == 1
    assert len(model.starts) == 1  # the warm-up judge failed: the other 12 were never sent


def test_unknown_model_aborts_the_run() -> None:
    missing = VendorCallError("model_not_found", "no such model", status=404)
    model = ScriptedModel(script={q.id: [Step(error=missing)] for q in QUESTIONS}, counts=False)
    result, _ = run(model)
    assert result.stop == "aborted" and result.abort is not None and result.abort.kind == "model_not_found"


def test_one_repair_re_ask_then_failure_and_no_repair_for_a_bad_score() -> None:
    model = ScriptedModel(script={
        "sensitive_files": [Step(text="not json at all"), Step()],
        "followed_plan": [Step(text="{"), Step(text="still not json")],
        "tests_written": [Step(text=verdict_json("tests_written", score=9))],
    })
    result, _ = run(model)
    outcomes = all_outcomes(result)
    assert outcomes["sensitive_files"].status == "scored" and outcomes["sensitive_files"].attempts == 2
    assert outcomes["followed_plan"].status == "failed"
    assert outcomes["followed_plan"].failure_reason is not None
    assert outcomes["followed_plan"].failure_reason.kind == "invalid_output"
    assert model.starts.count("followed_plan") == 2
    assert outcomes["tests_written"].status == "failed" and model.starts.count("tests_written") == 1
    # Usage of the failed first attempt is kept with the question.
    assert outcomes["sensitive_files"].usage.output_tokens == 40


def test_a_vendor_context_overflow_shrinks_the_trace_once_and_retries() -> None:
    overflow = VendorCallError("context_overflow", "prompt is too long", status=400)
    model = ScriptedModel(script={QUESTIONS[0].id: [Step(error=overflow), Step()]})
    result, _ = run(model, context=doc(400))
    assert result.stop == "done" and result.result is not None and len(result.result.verdicts()) == 13
    assert result.context_report is not None and result.context_report["vendor_overflow_retries"] == 1
    assert model.contexts[1] < model.contexts[0]  # the retry carried the elided trace
    assert result.context_report["elided_entries"] > 0


def test_a_vendor_stated_limit_is_met_by_one_refit_that_every_refused_judge_waits_for() -> None:
    """No warm-up: all 13 judges are refused at once, one refit serves them all, all then succeed."""
    document = doc(400)
    full = ScriptedModel()
    run(full, context=document, tuning=RunnerTuning(retrospective=False))
    limit = max(full.contexts) // 4 // 2  # half of what the fitted prompt takes
    model = ScriptedModel(limit=limit, counts=False)
    result, ports = run(model, context=document,
                        tuning=RunnerTuning(concurrency=13, warm_up="none", cancel_poll_seconds=0.02,
                                            retrospective=False))

    assert result.stop == "done" and result.result is not None and len(result.result.verdicts()) == 13
    assert result.context_refits == 1
    assert len(model.refused) == 13 and result.vendor_errors == {"context_overflow": 13}
    assert all(size <= limit * 4 for size in model.contexts[13:])  # every retry carried the refit trace
    report = result.context_report
    assert report is not None and report["vendor_limit"]["limit_tokens"] == limit
    assert report["context_window"] == limit and report["window_source"] == "vendor"
    assert [step["reason"] for step in report["refits"]] == ["vendor_stated_limit"]
    assert report["elided_entries"] > 0
    assert [(stated.limit_tokens, source) for stated, source in ports.remembered] == [(limit, "generate")]
    assert f"{limit}-token context limit" in result.result.summary


def test_with_the_warm_up_only_one_call_is_refused_and_a_learned_limit_avoids_even_that() -> None:
    document = doc(400)
    limit = len(json.dumps(document)) // 4 // 2
    model = ScriptedModel(limit=limit, counts=False)
    result, ports = run(model, context=document)
    assert result.result is not None and len(result.result.verdicts()) == 13
    assert model.refused == [QUESTIONS[0].id]  # the warm-up judge; the fan-out used the refit trace
    assert result.context_refits == 1

    again = ScriptedModel(limit=limit, counts=False)
    second, ports = run(again, context=document, learned=limit)
    assert second.result is not None and len(second.result.verdicts()) == 13
    assert again.refused == [] and second.context_refits == 0
    assert second.context_report is not None and second.context_report["window_source"] == "learned"
    assert ports.remembered == []


def test_a_count_api_that_states_the_limit_gets_it_fitted_before_any_judge_is_sent() -> None:
    document = doc(400)
    limit = len(json.dumps(document)) // 4 // 2
    model = ScriptedModel(limit=limit, counts=True)
    result, ports = run(model, context=document)
    assert result.result is not None and model.refused == []
    assert result.context_report is not None and result.context_report["vendor_limit"]["source"] == "count_tokens"
    assert [source for _, source in ports.remembered] == ["count_tokens"]


def test_a_stated_limit_below_the_fixed_prompt_fails_the_run_with_context_too_small() -> None:
    model = ScriptedModel(limit=300, counts=False)
    result, _ = run(model, context=doc(400))
    assert result.stop == "aborted" and result.abort is not None
    assert result.abort.error is not None and result.abort.error.code == "context_too_small"
    assert result.abort.error.details is not None and result.abort.error.details["stated_limit_tokens"] == 300
    assert model.starts == [QUESTIONS[0].id]  # nothing was fanned out after the warm-up was refused
    assert result.result is None


def test_a_vendor_that_keeps_refusing_without_a_number_is_refit_a_bounded_number_of_times() -> None:
    overflow = VendorCallError("context_overflow", "Input is too long for the requested model.", status=400)
    model = ScriptedModel(script={QUESTIONS[0].id: [Step(error=overflow)]}, counts=False)
    result, _ = run(model, context=doc(400), tuning=RunnerTuning(max_context_refits=2, cancel_poll_seconds=0.02))
    assert result.stop == "aborted" and result.abort is not None and result.abort.error is not None
    assert result.abort.error.code == "context_too_small"
    assert result.context_refits == 2 and model.starts.count(QUESTIONS[0].id) == 3


def test_progress_is_coalesced_and_the_last_batch_is_left_for_the_finish_write() -> None:
    model = ScriptedModel(script={q.id: [Step(latency=0.03 * i)] for i, q in enumerate(QUESTIONS)})
    result, ports = run(model)
    flushed = [qid for batch in ports.flushes for qid in batch]
    assert 1 <= len(ports.flushes) < 12
    assert any(len(batch) > 1 for batch in ports.flushes)
    assert sorted(flushed + [o.question_id for o in result.unflushed]) == sorted(q.id for q in QUESTIONS)
    assert ports.flushed_contexts[0] is not None  # the context report rides on the first progress write
    assert all(c is None for c in ports.flushed_contexts[1:])


def test_run_usage_is_the_sum_of_every_call_including_repairs_and_the_retrospective() -> None:
    model = ScriptedModel(script={"sensitive_files": [Step(text="nope"), Step()]})
    result, _ = run(model)
    per_question = sum((o.usage for o in result.outcomes.values()), TokenUsage())
    assert result.usage.output_tokens == per_question.output_tokens + 20  # + the retrospective
    assert result.calls == 15  # 13 judges + 1 repair + the retrospective
    assert result.retrospective_status == "succeeded"
    assert result.result is not None and result.result.retrospective is not None


def test_a_failed_retrospective_is_not_fatal() -> None:
    model = ScriptedModel(script={"retrospective": [Step(text="nope"), Step(text="nope again")]})
    result, _ = run(model)
    assert result.stop == "done" and result.result is not None
    assert result.result.retrospective is None and result.retrospective_status == "failed"


def test_all_judges_failing_leaves_no_result() -> None:
    model = ScriptedModel(script={q.id: [Step(error=VendorCallError("server", "boom", status=500))]
                                  for q in QUESTIONS})
    result, _ = run(model)
    assert result.stop == "done" and result.result is None
    assert all(o.status == "failed" and o.failure_reason and o.failure_reason.kind == "server"
               for o in result.outcomes.values())


@pytest.mark.parametrize(("remaining_ms", "grace", "expected"), [
    (900_000, 60, 240.0),      # run deadline (300 s from dispatch, 60 s ago) is the tighter bound
    (100_000, 60, 80.0),       # Lambda time minus a fifth (20 s < the 60 s grace)
    (3_000, 60, 2.0),          # tiny invocation: grace scales down to its 1 s floor
])
def test_budget_is_the_run_deadline_clamped_to_lambda_time_minus_grace(remaining_ms: int, grace: int,
                                                                       expected: float) -> None:
    budget = run_budget_seconds(deadline_at="2026-01-01T00:05:00.000Z", now_iso="2026-01-01T00:01:00.000Z",
                                remaining_ms=remaining_ms, grace_seconds=grace)
    assert budget == pytest.approx(expected)


def test_sdk_retries_follow_the_budget() -> None:
    assert sdk_max_retries(10) < sdk_max_retries(60) < sdk_max_retries(600)


def test_a_tool_round_echoes_a_bounded_answer() -> None:
    from chalicelib.domain.judging import JudgeReply, ToolCallRequest
    from chalicelib.judges.tools import CALLS_PER_ROUND_ECHOED, ROUND_TEXT_MAX_CHARS
    from chalicelib.services.session_tools import echoed_round

    calls = tuple(ToolCallRequest(call_id=f"t{i}", name="search_session", arguments={"query": "x"},
                                  raw_arguments='{"query": "x"}') for i in range(12))
    huge = ToolCallRequest(call_id="big", name="g" * 100, arguments={"query": "x" * 5000},
                           raw_arguments=json.dumps({"query": "x" * 5000}))
    reply = JudgeReply(text="y" * 10_000, usage=TokenUsage(), latency_ms=0, model="m", request_id=None,
                       tool_calls=(huge, *calls))
    text, echoed = echoed_round(reply)
    assert len(text) == ROUND_TEXT_MAX_CHARS and len(echoed) == CALLS_PER_ROUND_ECHOED
    assert echoed[0].arguments is None and echoed[0].raw_arguments == "{}" and len(echoed[0].name) == 64
