"""Test connection: one minimal judge call with a vendor's stored key, on the judges' exact request path.

Same adapter (`build_judge_model`), same model, same structured-output mode and verdict schema as a
real judge call; only the prompt is tiny and retries are off with a short timeout, so an admin gets an
answer in seconds. A 401/403 suspends the vendor (eval dispatch refuses it) until its key is replaced
or a later test succeeds; a success lifts a suspension of that same key version.

The answer is an error kind and a short message of our own (plus the HTTP status): never text from
the target's response, because `base_url` may point anywhere an admin chooses and the test would
otherwise be a way to read what an internal host answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import BaseModel

from chalicelib.domain.base_url import refusal_in_chain
from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.judging import (
    JudgeCall,
    JudgeModel,
    JudgeReply,
    PublicVendorErrorKind,
    VendorCallError,
    VendorErrorKind,
)
from chalicelib.domain.principal import Principal
from chalicelib.domain.settings import VendorStatus
from chalicelib.judges.catalog import Question
from chalicelib.judges.schema import VERDICT_SCHEMA_NAME, verdict_json_schema
from chalicelib.judges.verdicts import VerdictFailure, parse_verdict
from chalicelib.observability import logger
from chalicelib.services.admin_settings import AdminSettingsService

PROBE_TIMEOUT_SECONDS = 15.0  # + 2 s hard cap: well inside the 29 s API Gateway/handler limit
PROBE_MAX_RETRIES = 0
PROBE_MAX_OUTPUT_TOKENS = 300
_PROBE_INSTRUCTION = (
    "This is a connection test of the evaluation service, not a real evaluation; there is no session to "
    'judge. Answer with the verdict JSON: category "connection_test", question_id "connection_probe", score 5, '
    'verdict "pass", finding "Connection test.", evidence null, recommendation null, retain_fact null.'
)
# Same header lines as a real judge prompt (`chalicelib.judges.prompts`), parsed by the judges' parser.
PROBE_QUESTION = Question(category="connection_test", id="connection_probe", text="Connection test",
                          prompt=_PROBE_INSTRUCTION)
PROBE_PROMPT = f"Category: {PROBE_QUESTION.category}\nID: {PROBE_QUESTION.id}\n\n{_PROBE_INSTRUCTION}"
_SUSPENDING_STATUSES = frozenset({401, 403})
# What the admin reads, per internal error kind: our words only (see the module docstring).
_OWN_MESSAGES: dict[VendorErrorKind, str] = {
    "auth": "The vendor rejected the API key (or the account behind it); replace the key.",
    "model_not_found": "The vendor does not offer this model, or the base URL does not serve the vendor's API.",
    "rate_limited": "The vendor is rate limiting this key; try again later.",
    "overloaded": "The vendor is overloaded; try again later.",
    "network": "Could not reach the vendor's API at the configured base URL.",
    "timeout": "The vendor did not answer in time.",
    "server": "The vendor answered with a server error; try again later.",
    "invalid_output": "The model answered, but not with a verdict the judges can use.",
    "context_overflow": "The vendor refused the probe as too long for the model.",
    "bad_request": "The vendor rejected the request; check the model and the base URL.",
}


def own_message(exc: VendorCallError) -> str:
    """The admin-facing message for a failed probe: ours, with the HTTP status, never the target's text."""
    refusal = refusal_in_chain(exc)
    if refusal is not None:
        return f"The base URL was refused: {refusal.message}"
    message = _OWN_MESSAGES[exc.kind]
    return f"{message} (HTTP {exc.status})" if exc.status is not None else message


class JudgeModelFactory(Protocol):
    def __call__(self, vendor: Literal["anthropic", "openai"], *, api_key: str, base_url: str | None,
                 max_retries: int, timeout_seconds: float) -> JudgeModel: ...


class ConnectionTestError(BaseModel):
    kind: PublicVendorErrorKind
    message: str


class ConnectionTestResult(BaseModel):
    ok: bool
    latency_ms: int
    error: ConnectionTestError | None
    vendor: VendorName
    model: str
    status: VendorStatus


class ConnectionTestService:
    def __init__(self, *, settings: AdminSettingsService, build_judge_model: JudgeModelFactory,
                 monotonic: Callable[[], float] = time.monotonic,
                 timeout_seconds: float = PROBE_TIMEOUT_SECONDS, max_retries: int = PROBE_MAX_RETRIES) -> None:
        self._settings = settings
        self._build = build_judge_model
        self._monotonic = monotonic
        self._timeout = timeout_seconds
        self._max_retries = max_retries

    def test_vendor_connection(self, principal: Principal, vendor: VendorName) -> ConnectionTestResult:
        principal.require_admin()
        tenant = principal.tenant
        creds = self._settings.resolve_vendor_credentials(tenant, vendor, fresh=True)
        call = JudgeCall(model=creds.model, shared_context="", prompt=PROBE_PROMPT,
                         response_schema=verdict_json_schema(), schema_name=VERDICT_SCHEMA_NAME,
                         max_output_tokens=PROBE_MAX_OUTPUT_TOKENS, timeout_seconds=self._timeout)
        started = self._monotonic()
        error: ConnectionTestError | None = None
        status_written = False
        import asyncio  # here, not at module top: the API handler's cold start never needs the event loop

        try:
            reply = asyncio.run(self._probe(vendor, creds.api_key, creds.base_url, call))
            parsed = parse_verdict(reply.text, PROBE_QUESTION)
            if isinstance(parsed, VerdictFailure):
                error = ConnectionTestError(kind="invalid_output", message=_OWN_MESSAGES["invalid_output"])
        except VendorCallError as exc:
            error = ConnectionTestError(kind=exc.public_kind, message=own_message(exc))
            if exc.kind == "auth" and exc.status in _SUSPENDING_STATUSES:
                self._settings.mark_vendor_suspended(tenant, vendor, error.message,
                                                     secret_version_id=creds.secret_version_id,
                                                     actor=principal.user)
                status_written = True
        latency_ms = max(0, int((self._monotonic() - started) * 1000))
        if error is None and creds.status == "suspended":
            self._settings.mark_vendor_ok(tenant, vendor, secret_version_id=creds.secret_version_id,
                                          actor=principal.user)
            status_written = True
        # The credentials were read fresh above; only a status write since then needs a second read
        # (each status write re-reads the item itself, so skipping a no-op saves two round trips).
        status = (self._settings.load_runner_settings(tenant, fresh=True).vendor(vendor).status
                  if status_written else creds.status)
        logger.info("vendor connection tested", extra={"tenant": tenant, "vendor": vendor, "ok": error is None,
                                                        "error_kind": error.kind if error else None,
                                                        "latency_ms": latency_ms})
        return ConnectionTestResult(ok=error is None, latency_ms=latency_ms, error=error, vendor=vendor,
                                    model=creds.model, status=status)

    async def _probe(self, vendor: VendorName, api_key: str, base_url: str | None, call: JudgeCall) -> JudgeReply:
        model = self._build(vendor, api_key=api_key, base_url=base_url, max_retries=self._max_retries,
                            timeout_seconds=self._timeout)
        import asyncio

        try:
            async with asyncio.timeout(self._timeout + 2.0):
                return await model.judge(call)
        except TimeoutError as exc:
            raise VendorCallError("timeout", f"No answer within {self._timeout:g}s.") from exc
        finally:
            await model.aclose()

