"""What a cold API container loads for the first request of its common routes: the structure behind the
cold-start figures (bench/coldstart measures the time; nothing here is timed).

Each case runs in a fresh interpreter: it imports the app, the route's module and builds the services
the route's view builds, then reports the modules loaded and the AWS clients built. No AWS call is made.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STAGE": "test", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "EVAL_TABLE_NAME": "t",
       "EVAL_BUCKET_NAME": "b", "EVAL_QUEUE_URL": "https://sqs.invalid/q", "EVAL_KMS_KEY_ID": "k",
       "EVAL_SECRET_PREFIX": "eval-runner/test/tenant/",
       "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
CLIENTS = ("dynamodb", "sqs", "secretsmanager", "s3", "events")

# Loaded only by other routes, the worker or finalization: never on these routes' first request.
ELSEWHERE = ("chalicelib.services.analytics", "chalicelib.services.judge_facts", "chalicelib.services.connection_test",
             "chalicelib.services.automation_dispatch", "chalicelib.domain.history", "chalicelib.services.eval_jobs")
# Dispatch reads the session's eval context for the spend estimate (its true upper bound): the sessions
# service and ingest are on its path, loaded by the estimate itself (a dispatch carrying the estimate's
# quote, the console's, reads no session); the settings routes never read a trace or build a prompt.
SESSION_READING = ("chalicelib.ingest", "chalicelib.services.sessions", "chalicelib.services.eval_context",
                   "chalicelib.services.session_models")
TRACE_READING = (*SESSION_READING, "chalicelib.judges.prompts")
# The worker's judge phase: the estimate runs the same context fit without an event loop (nothing in it
# waits) and reads the judge tuning from its own module, so asyncio and the judge runner stay off the API.
JUDGE_PHASE = ("asyncio", "chalicelib.services.judge_runner", "chalicelib.services.judge_session",
               "chalicelib.services.judge_fanout")
# Dispatch reads stored traces, redacted at upload under the current rules: the parsers and the redaction
# detectors (regexes, prefilter) are an upload's or an older trace's, never on its first request. The
# redaction package imports its detector modules, so "chalicelib.ingest.redaction." covers it.
UPLOAD_ONLY = ("chalicelib.ingest.redaction.", "chalicelib.ingest.claude_code", "chalicelib.ingest.codex",
               "chalicelib.ingest.context")
# A dispatch's own estimate reads the eval context through the reader the composition root builds for it,
# not through the sessions service: the upload side (its rate limit, counters, stats) stays off its path.
UPLOAD_SIDE = ("chalicelib.services.sessions", "chalicelib.services.upload_limits",
               "chalicelib.adapters.upload_rate_store", "chalicelib.ingest.stats")
# A dispatch carrying the estimate's quote only fingerprints its prompts (judges.prompts, which itself needs
# the schema's keys and the tools' names): the estimate's arithmetic and context fit are imported where an
# estimate is computed.
ESTIMATE_ONLY = ("chalicelib.services.context_fit", "chalicelib.domain.spend_estimate")


def _cold(route_module: str, services: list[str], then: str = "") -> tuple[list[str], list[str]]:
    code = f"""
import json, sys
import app, {route_module}
from chalicelib.wiring import container
for name in {services!r}:
    getattr(container(), name)
{then}
built = [n for n in {CLIENTS!r} if n in vars(container()) and vars(container())[n]._client is not None]
print(json.dumps([sorted(sys.modules), built]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
    modules, built = json.loads(out.stdout.strip().splitlines()[-1])
    return modules, built


@pytest.mark.parametrize(("route_module", "services", "not_loaded"), [
    ("chalicelib.api.eval_routes", ["eval_runs"],
     ELSEWHERE + UPLOAD_ONLY + SESSION_READING + JUDGE_PHASE + ESTIMATE_ONLY),
    ("chalicelib.api.admin_routes", ["admin_settings"], ELSEWHERE + TRACE_READING),
], ids=["dispatch", "admin settings"])
def test_a_first_request_loads_only_its_route_and_builds_no_client_before_calling(
        route_module: str, services: list[str], not_loaded: tuple[str, ...]) -> None:
    modules, built = _cold(route_module, services)
    assert [m for m in modules if m.startswith(not_loaded)] == []
    assert [m for m in modules if m.endswith("_routes")] == [route_module]
    # Clients are built on their first call: building the services calls nothing.
    assert built == []


# A spend estimate as dispatch makes one, on a stored session's eval context (read from a fake: no AWS).
_ESTIMATE = """
from chalicelib.judges.catalog import QUESTIONS
from chalicelib.services.session_models import EvalContext
from chalicelib.services.spend_estimates import RunShape, SpendEstimator

class Sessions:
    def get_session(self, tenant, session_id):
        raise AssertionError("a dispatch's own estimate issues no quote")

    def load_eval_context(self, tenant, session_id, threshold=2000, chain=False):
        return EvalContext(session_id=session_id, session_chain=[session_id], trace=[],
                           compaction={"threshold_bytes": threshold})

c = container()
estimator = SpendEstimator(sessions=Sessions(), quotes=c.spend_store, clock=c.clock, tuning=lambda: c.judge_tuning)
shape = RunShape(session_id="s", questions=list(QUESTIONS)[:3], threshold=2000, chain=False, runner="server",
                 vendor="anthropic", model="claude-sonnet-4-5")
assert estimator.estimate("t", "u", shape, None, issue_quote=False).estimate.input_tokens > 0
"""


def test_a_dispatch_prices_its_run_without_asyncio_or_the_judge_runner() -> None:
    modules, built = _cold("chalicelib.api.eval_routes", ["eval_runs"], then=_ESTIMATE)
    assert [m for m in modules if m.startswith(JUDGE_PHASE + UPLOAD_ONLY)] == []
    assert "chalicelib.services.context_fit" in modules
    assert built == []


# The quoted dispatch's part of the estimator (fingerprint and quote check), and the container's estimator
# reading a session: an invalid id is refused before any AWS call, after the reader is built.
_QUOTED = """
from chalicelib.judges.catalog import QUESTIONS
from chalicelib.services.spend_estimates import RunShape, decode_quote
shape = RunShape(session_id="s", questions=list(QUESTIONS)[:3], threshold=2000, chain=False, runner="server",
                 vendor="anthropic", model="claude-sonnet-4-5")
assert len(shape.fingerprint()) == 32 and decode_quote("not a quote") is None
"""
_READ_THROUGH_CONTAINER = """
from chalicelib.domain.errors import InvalidRequest
try:
    container().spend_estimator.estimate("t", "u", RunShape(session_id="bad id!", questions=[], threshold=2000,
                                         chain=False, runner="server", vendor=None, model=None), None)
except InvalidRequest:
    pass
else:
    raise AssertionError("an invalid session id reads nothing")
"""


def test_a_quoted_dispatch_imports_none_of_the_estimate() -> None:
    modules, built = _cold("chalicelib.api.eval_routes", ["eval_runs"], then=_QUOTED)
    assert [m for m in modules if m.startswith(ESTIMATE_ONLY + SESSION_READING)] == []
    assert built == []


def test_a_dispatch_estimates_through_the_eval_context_reader_not_the_sessions_service() -> None:
    modules, built = _cold("chalicelib.api.eval_routes", ["eval_runs"], then=_QUOTED + _READ_THROUGH_CONTAINER)
    assert [m for m in modules if m.startswith(UPLOAD_SIDE + UPLOAD_ONLY)] == []
    assert "chalicelib.services.eval_context" in modules
    assert built == []


# Models dispatch never validates: built on first use (`defer_build`), so its first request builds none.
_DEFERRED = """
from chalicelib.domain import automation, context_limits, session_uploads, spend, trace
from chalicelib.services import session_models, spend_admission
deferred = [automation.EvalRule, automation.EvalRuleInput, automation.RuleFilter, automation.SessionStoredNotice,
            session_models.SessionStored, session_models.UploadStatus, session_models.UploadRequest,
            session_uploads.SessionUploadJob, trace.SessionUpload, spend.SpendLimitsUpdate,
            context_limits.LearnedContextLimit, spend_admission.EvalRunEstimate]
assert [m.__name__ for m in deferred if m.__pydantic_complete__] == [], "built at import"
"""


def test_dispatch_builds_none_of_the_models_it_never_validates() -> None:
    _cold("chalicelib.api.eval_routes", ["eval_runs"], then=_ESTIMATE + _DEFERRED)
