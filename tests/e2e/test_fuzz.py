"""Schemathesis fuzzing of every operation in GET /openapi.json against the real local stack.

Each generated case (valid and invalid inputs, 50 per operation, derandomized so a run is
reproducible) is sent twice, with an admin and with a member token of a dedicated `fuzz` tenant,
and each response must be no 5xx and conform to the document: a documented status code, the
documented content type, the documented schema and headers, and invalid input rejected with a 4xx.

Side effects stay inside the fuzz tenant and on loopback: every `base_url` (and alert webhook URL) the
fuzzer writes into the settings is mapped onto the dev fake vendor or a closed loopback port before it is sent, so
connection tests and runs never reach another host, and daemon long polls return at once.
A summary (operations, requests, wall time) goes to `.local/fuzz-report.json`.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.stack import ROOT, LocalStack, mint_token

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 50
FUZZ_TENANT = "fuzz"
# A closed port on loopback: a connection attempt is refused at once (nothing listens on discard).
CLOSED_LOOPBACK = "http://127.0.0.1:9"
# Generous for a loaded 2-core machine, short enough that a hung request fails the run quickly.
REQUEST_TIMEOUT_SECONDS = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]

_STATS: dict[str, dict[str, Any]] = defaultdict(lambda: {"cases": 0, "requests": 0, "seconds": 0.0,
                                                          "statuses": defaultdict(int)})


@pytest.fixture(scope="module")
def fuzz_tokens(local_stack: LocalStack) -> dict[str, str]:
    return {"admin": mint_token(FUZZ_TENANT, "fuzz-admin", "admin"),
            "member": mint_token(FUZZ_TENANT, "fuzz-member", "member")}


@pytest.fixture(scope="module")
def fuzz_stack(local_stack: LocalStack, fuzz_tokens: dict[str, str]) -> Iterator[LocalStack]:
    # The cases come from the in-process document (collection happens before the stack starts):
    # it must be the one the stack serves.
    served = httpx.get(f"{local_stack.api_url}/openapi.json", timeout=REQUEST_TIMEOUT_SECONDS).json()
    assert served == schema.raw_schema, "the stack serves another OpenAPI document than the code builds"
    # Seed the tenant so generated cases also meet configured vendors, a stored session, a daemon
    # and runs of both runners.
    vendor = local_stack.fake_vendor_url
    fixture = (ROOT / "tests" / "fixtures" / "sessions" / "claude-code-full.jsonl").read_bytes()
    with local_stack.http(fuzz_tokens["admin"]) as admin, local_stack.http(fuzz_tokens["member"]) as member:
        resp = admin.put("/admin/settings/eval-runner", json={
            "anthropic": {"api_key": "sk-ant-fuzz-0123456789abcdef", "model": "claude-sonnet-4-6",
                          "base_url": vendor},
            "openai": {"api_key": "sk-proj-fuzz-0123456789abcdef", "model": "gpt-4o", "base_url": f"{vendor}/v1"},
            "run_timeout_seconds": 60})
        assert resp.status_code == 200, resp.text
        resp = member.put("/sessions/fuzz-session?format=claude-code", content=fixture,
                          headers={"Content-Type": "application/x-ndjson"})
        assert resp.status_code in (200, 201), resp.text
        resp = member.post("/daemons", json={"name": "fuzz-daemon", "platform": "linux-x86_64",
                                             "judges": ["claude"]})
        assert resp.status_code == 201, resp.text
        daemon_id = resp.json()["daemon_id"]
        runs = []
        for request in ({"vendor": "anthropic"}, {"runner": "daemon", "questions": ["safety"]}):
            resp = member.post("/sessions/fuzz-session/eval-runs", json=request)
            assert resp.status_code == 202, resp.text
            runs.append(resp.json()["eval_run_id"])
    _KNOWN.update({"session_id": ["fuzz-session"], "eval_run_id": runs, "daemon_id": [daemon_id],
                   "vendor": ["anthropic", "openai"]})
    _VENDOR_URL[:] = [vendor]
    started = time.monotonic()
    yield local_stack
    _write_report(time.monotonic() - started)
    _KNOWN.clear()
    _VENDOR_URL.clear()


def _write_report(wall_seconds: float) -> None:
    report = {"max_examples": MAX_EXAMPLES, "tokens": ["admin", "member"], "wall_seconds": round(wall_seconds, 1),
              "operations": len(_STATS), "cases": sum(s["cases"] for s in _STATS.values()),
              "requests": sum(s["requests"] for s in _STATS.values()),
              "per_operation": {label: {**s, "seconds": round(s["seconds"], 2), "statuses": dict(s["statuses"])}
                                for label, s in sorted(_STATS.items())}}
    out = ROOT / ".local" / "fuzz-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


# Objects the fuzz fixture created, by path parameter name: a third of the generated ids are swapped
# for one of these (deterministically, from the generated text) so cases also reach stored objects.
_KNOWN: dict[str, list[str]] = {}
_VENDOR_URL: list[str] = []


def _pick(generated: str, choices: list[str], every: int = 1) -> str | None:
    digest = zlib.crc32(generated.encode("utf-8", "replace"))
    return choices[(digest // every) % len(choices)] if digest % every == 0 else None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Steers each case before it is sent (twice: once per token, so every edit is idempotent).
    Edits made here are revalidated by schemathesis, so a case that stops being invalid is no
    longer expected to be rejected."""
    if not _VENDOR_URL:
        return
    path_params = case.path_parameters or {}
    for name, value in list(path_params.items()):
        known = _KNOWN.get(name)
        if known and isinstance(value, str) and value and value not in known:
            swapped = _pick(value, known, every=3)
            if swapped is not None:
                path_params[name] = swapped
    # An event addressed to a stored run carries that run's id, as a daemon's would.
    run_id = path_params.get("eval_run_id")
    if run_id in _KNOWN.get("eval_run_id", ()) and isinstance(case.body, dict) \
            and isinstance(case.body.get("eval_run_id"), str) and case.body["eval_run_id"]:
        case.body["eval_run_id"] = run_id
    # Every base_url written to the settings points at loopback: the fake vendor or a closed port.
    if case.operation.path == "/admin/settings/eval-runner" and isinstance(case.body, dict):
        for vendor in ("anthropic", "openai"):
            block = case.body.get(vendor)
            if isinstance(block, dict) and isinstance(block.get("base_url"), str):
                base = _VENDOR_URL[0] if vendor == "anthropic" else f"{_VENDOR_URL[0]}/v1"
                loopback = [base, CLOSED_LOOPBACK]
                if block["base_url"] not in loopback:
                    block["base_url"] = _pick(block["base_url"], loopback)
    # A budget alert webhook likewise: a closed loopback port (an alert never POSTs to a generated host).
    if case.operation.path == "/admin/settings/eval-runner/limits" and isinstance(case.body, dict) \
            and isinstance(case.body.get("alert_webhook_url"), str):
        case.body["alert_webhook_url"] = f"{CLOSED_LOOPBACK}/budget-alerts"
    # Long polls answer at once (a real daemon's wait is covered by the daemon tests); an absent
    # wait means the default 20 s.
    if case.operation.path == "/daemons/{daemon_id}/jobs":
        if case.query is None:
            case.query = {}
        wait = case.query.get("wait", 20)
        if isinstance(wait, int) and not isinstance(wait, bool) and 0 < wait <= 25:
            case.query["wait"] = 0


# Session transcripts (PUT /sessions/{id} as application/x-ndjson) are sent as the generated text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


def _load_schema() -> Any:
    import app  # noqa: F401 - registers every route
    from chalicelib.api.openapi import build_openapi

    # Every case carries one of the two real tokens: schemathesis does not generate (or strip) the
    # Authorization header itself. Missing and invalid tokens are covered by tests/api/test_auth.py.
    config = schemathesis.config.SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}})
    # A JSON round trip: exactly what GET /openapi.json serves.
    return schemathesis.openapi.from_dict(json.loads(json.dumps(build_openapi())), config=config)


schema = _load_schema()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_fuzz_every_operation(case: Any, fuzz_stack: LocalStack, fuzz_tokens: dict[str, str]) -> None:
    stats = _STATS[f"{case.operation.method.upper()} {case.operation.path}"]
    stats["cases"] += 1
    for role in ("admin", "member"):
        started = time.monotonic()
        response = case.call_and_validate(base_url=fuzz_stack.api_url,
                                          headers={"Authorization": f"Bearer {fuzz_tokens[role]}"},
                                          checks=CHECKS, timeout=REQUEST_TIMEOUT_SECONDS)
        stats["seconds"] += time.monotonic() - started
        stats["requests"] += 1
        stats["statuses"][str(response.status_code)] += 1


def test_fuzz_report_lists_every_operation() -> None:
    """Runs after the fuzz test (file order): every operation of the document was exercised."""
    if not _STATS:
        pytest.skip("the fuzz test did not run in this session")
    documented = {f"{method.upper()} {path}" for path, item in schema.raw_schema["paths"].items()
                  for method in item}
    assert documented <= set(_STATS), f"not fuzzed: {sorted(documented - set(_STATS))}"

