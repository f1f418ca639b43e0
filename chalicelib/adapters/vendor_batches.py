"""The vendors' batch APIs for judge calls: Anthropic Message Batches (`client.messages.batches.*`) and
the OpenAI Batch API (`client.files` + `client.batches.*`), over the same outbound-guarded async SDK
clients as the judges (`adapters/judge_models.build_vendor_client`).

A request is the same judge call a run would make directly (`JudgeCall`): Anthropic gets the trace as
a system block marked `cache_control` (prompt caching works in batches, best effort, and cache hits
are billed at the batch discount too), OpenAI the trace as the first message with the run's
`prompt_cache_key`. Results come back per `custom_id` as `RequestOutcome`s; SDK errors become
`VendorCallError`s through the judge adapters' own translation, so keys are scrubbed the same way.
The SDKs are imported only inside these functions (worker and scheduled paths).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.adapters.outbound_http import OutboundGuard
from chalicelib.domain.context_limits import is_context_overflow_message
from chalicelib.domain.evaluation import FailureKind, TokenUsage, VendorName
from chalicelib.domain.json_depth import loads_bounded
from chalicelib.domain.judging import JudgeCall, VendorCallError, scrub_secrets, split_one_million_suffix
from chalicelib.domain.vendor_batches import RequestOutcome, VendorBatchStatus

# Batch control calls are small and quick; the SDK retries 429/5xx within this.
BATCH_CALL_TIMEOUT_SECONDS = 60.0
BATCH_MAX_RETRIES = 3
_ANTHROPIC_ERROR_KINDS: dict[str, FailureKind] = {
    "authentication_error": "auth", "permission_error": "auth", "billing_error": "auth",
    "not_found_error": "model_not_found", "rate_limit_error": "rate_limited", "overloaded_error": "overloaded",
    "api_error": "server", "timeout_error": "timeout", "request_too_large": "context_overflow",
}


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    call: JudgeCall


@dataclass(frozen=True)
class SubmittedBatch:
    vendor_batch_id: str
    input_file_id: str | None = None


class VendorBatchClient(ABC):
    """One vendor's batch API for one tenant key. Subclasses supply the wire shapes."""

    vendor: VendorName

    def __init__(self, client: Any) -> None:
        self._client = client

    @abstractmethod
    def _translator(self) -> Any:
        """The vendor's judge adapter over the same client: its SDK and its error translation."""

    @abstractmethod
    async def submit(self, requests: Sequence[BatchRequest], *, metadata: dict[str, str]) -> SubmittedBatch:
        """Create the vendor batch of these requests."""

    @abstractmethod
    async def status(self, batch_id: str, *, model: str) -> VendorBatchStatus:
        """Where the vendor is with the batch."""

    @abstractmethod
    async def results(self, batch_id: str, *, model: str) -> list[RequestOutcome]:
        """Every request's result, once the batch has ended."""

    @abstractmethod
    async def cancel(self, batch_id: str, *, model: str) -> None:
        """Ask the vendor to stop the batch (processed requests stay billed)."""

    def _fail(self, exc: BaseException, model: str) -> VendorCallError:
        translated: VendorCallError = self._translator().translate(exc, model=model)
        return translated

    async def aclose(self) -> None:
        await self._client.close()

    async def _guard(self, model: str, coro: Any) -> Any:
        sdk = self._translator()._sdk()
        try:
            return await coro
        except getattr(sdk, self._translator().sdk_error) as exc:
            raise self._fail(exc, model) from exc


class AnthropicBatches(VendorBatchClient):
    vendor: VendorName = "anthropic"

    def _translator(self) -> Any:
        from chalicelib.adapters.anthropic_judge import AnthropicJudgeModel

        return AnthropicJudgeModel(self._client)

    @staticmethod
    def params(call: JudgeCall) -> dict[str, Any]:
        """The Messages parameters of one judge call, as a batch request carries them."""
        model, _ = split_one_million_suffix(call.model)
        params: dict[str, Any] = {"model": model, "max_tokens": call.max_output_tokens,
                                  "messages": [{"role": "user", "content": call.prompt}],
                                  "output_config": {"format": {"type": "json_schema", "schema": call.response_schema}}}
        if call.shared_context:
            params["system"] = [{"type": "text", "text": call.shared_context, "cache_control": {"type": "ephemeral"}}]
        return params

    async def submit(self, requests: Sequence[BatchRequest], *, metadata: dict[str, str]) -> SubmittedBatch:
        model = requests[0].call.model
        _, one_million = split_one_million_suffix(model)
        headers = {"anthropic-beta": "context-1m-2025-08-07"} if one_million else None
        batch = await self._guard(model, self._client.messages.batches.create(
            requests=[{"custom_id": r.custom_id, "params": self.params(r.call)} for r in requests],
            extra_headers=headers, timeout=BATCH_CALL_TIMEOUT_SECONDS))
        return SubmittedBatch(vendor_batch_id=str(batch.id))

    async def status(self, batch_id: str, *, model: str) -> VendorBatchStatus:
        batch = await self._guard(model, self._client.messages.batches.retrieve(
            batch_id, timeout=BATCH_CALL_TIMEOUT_SECONDS))
        counts = batch.request_counts
        return VendorBatchStatus(ended=batch.processing_status == "ended", vendor_status=str(batch.processing_status),
                                 counts={"processing": counts.processing, "succeeded": counts.succeeded,
                                         "errored": counts.errored, "canceled": counts.canceled,
                                         "expired": counts.expired})

    async def results(self, batch_id: str, *, model: str) -> list[RequestOutcome]:
        decoder = await self._guard(model, self._client.messages.batches.results(
            batch_id, timeout=BATCH_CALL_TIMEOUT_SECONDS))
        outcomes: list[RequestOutcome] = []
        secrets = [self._client.api_key]
        async for line in decoder:
            result = line.result
            if result.type == "succeeded":
                message = result.message
                usage = message.usage
                outcomes.append(RequestOutcome(
                    custom_id=line.custom_id, result="succeeded",
                    text="".join(block.text for block in message.content if block.type == "text"),
                    usage=TokenUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                     cache_read_input_tokens=usage.cache_read_input_tokens or 0,
                                     cache_creation_input_tokens=usage.cache_creation_input_tokens or 0)))
            elif result.type == "errored":
                error = result.error.error
                message = scrub_secrets(str(getattr(error, "message", "") or ""), secrets)[:500]
                kind = _ANTHROPIC_ERROR_KINDS.get(str(error.type), "bad_request")
                if kind == "bad_request" and is_context_overflow_message(message):
                    kind = "context_overflow"
                outcomes.append(RequestOutcome(custom_id=line.custom_id, result="errored", error_kind=kind,
                                               error_message=f"{error.type}: {message}"))
            else:
                outcomes.append(RequestOutcome(custom_id=line.custom_id, result=result.type))
        return outcomes

    async def cancel(self, batch_id: str, *, model: str) -> None:
        await self._guard(model, self._client.messages.batches.cancel(batch_id, timeout=BATCH_CALL_TIMEOUT_SECONDS))


class OpenAIBatches(VendorBatchClient):
    vendor: VendorName = "openai"

    def _translator(self) -> Any:
        from chalicelib.adapters.openai_judge import OpenAIJudgeModel

        return OpenAIJudgeModel(self._client)

    @staticmethod
    def body(call: JudgeCall) -> dict[str, Any]:
        """The Chat Completions body of one judge call, as a batch input line carries it."""
        messages: list[dict[str, Any]] = []
        if call.shared_context:
            messages.append({"role": "system", "content": call.shared_context})
        messages.append({"role": "user", "content": call.prompt})
        body: dict[str, Any] = {
            "model": call.model, "messages": messages, "max_completion_tokens": call.max_output_tokens,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": call.schema_name, "schema": call.response_schema, "strict": True}}}
        if call.cache_key:
            body["prompt_cache_key"] = call.cache_key
        return body

    async def submit(self, requests: Sequence[BatchRequest], *, metadata: dict[str, str]) -> SubmittedBatch:
        model = requests[0].call.model
        lines = b"".join(json.dumps({"custom_id": r.custom_id, "method": "POST", "url": "/v1/chat/completions",
                                     "body": self.body(r.call)}, separators=(",", ":")).encode() + b"\n"
                         for r in requests)
        uploaded = await self._guard(model, self._client.files.create(
            file=("eval-run.jsonl", lines, "application/jsonl"), purpose="batch", timeout=BATCH_CALL_TIMEOUT_SECONDS))
        batch = await self._guard(model, self._client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata,
            timeout=BATCH_CALL_TIMEOUT_SECONDS))
        return SubmittedBatch(vendor_batch_id=str(batch.id), input_file_id=str(uploaded.id))

    async def _batch(self, batch_id: str, model: str) -> Any:
        return await self._guard(model, self._client.batches.retrieve(batch_id, timeout=BATCH_CALL_TIMEOUT_SECONDS))

    async def status(self, batch_id: str, *, model: str) -> VendorBatchStatus:
        batch = await self._batch(batch_id, model)
        counts = batch.request_counts
        return VendorBatchStatus(
            ended=batch.status in ("completed", "failed", "expired", "cancelled"), vendor_status=str(batch.status),
            counts={"total": counts.total, "completed": counts.completed, "failed": counts.failed} if counts else {})

    async def results(self, batch_id: str, *, model: str) -> list[RequestOutcome]:
        from openai.types import CompletionUsage

        from chalicelib.adapters.openai_judge import usage_from_openai

        batch = await self._batch(batch_id, model)
        outcomes: list[RequestOutcome] = []
        secrets = [self._client.api_key]
        if batch.status == "failed":
            # The whole input was refused (validation): no request ran.
            reasons = "; ".join(str(e.message) for e in (batch.errors.data or [])) if batch.errors else ""
            return [RequestOutcome(custom_id="*", result="errored", error_kind="bad_request",
                                   error_message=scrub_secrets(reasons or "the batch failed validation", secrets))]
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._guard(model, self._client.files.content(file_id, timeout=BATCH_CALL_TIMEOUT_SECONDS))
            for raw in content.read().splitlines():
                if not raw.strip():
                    continue
                line = loads_bounded(raw)
                custom_id = str(line.get("custom_id"))
                response = line.get("response") or {}
                error = line.get("error") or {}
                raw_body = response.get("body")
                body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
                if response.get("status_code") == 200 and body.get("choices") is not None:
                    choices = body.get("choices") or []
                    text = ((choices[0].get("message") or {}).get("content") or "") if choices else ""
                    usage = usage_from_openai(CompletionUsage.model_validate(body["usage"])) \
                        if body.get("usage") else TokenUsage()
                    outcomes.append(RequestOutcome(custom_id=custom_id, result="succeeded", text=text, usage=usage))
                    continue
                code = str(error.get("code") or (body.get("error") or {}).get("code") or "")
                message = str(error.get("message") or (body.get("error") or {}).get("message") or "")
                if code == "batch_expired":
                    outcomes.append(RequestOutcome(custom_id=custom_id, result="expired"))
                elif code == "batch_cancelled":
                    outcomes.append(RequestOutcome(custom_id=custom_id, result="canceled"))
                else:
                    outcomes.append(RequestOutcome(
                        custom_id=custom_id, result="errored",
                        error_kind=_openai_kind(int(response.get("status_code") or 0), code, message),
                        error_message=scrub_secrets(f"{code or 'error'}: {message}", secrets)[:500]))
        return outcomes

    async def cancel(self, batch_id: str, *, model: str) -> None:
        await self._guard(model, self._client.batches.cancel(batch_id, timeout=BATCH_CALL_TIMEOUT_SECONDS))


def _openai_kind(status: int, code: str, message: str) -> FailureKind:
    if code == "context_length_exceeded" or is_context_overflow_message(message):
        return "context_overflow"
    if code == "model_not_found" or status == 404:
        return "model_not_found"
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server"
    return "bad_request"


def build_batch_client(vendor: VendorName, *, api_key: str, base_url: str | None,
                       outbound: OutboundGuard) -> AnthropicBatches | OpenAIBatches:
    """The tenant's batch API client for `vendor` (closed with `aclose`)."""
    from chalicelib.adapters.judge_models import build_vendor_client

    client = build_vendor_client(vendor, api_key=api_key, base_url=base_url, max_retries=BATCH_MAX_RETRIES,
                                 timeout_seconds=BATCH_CALL_TIMEOUT_SECONDS, outbound=outbound)
    return AnthropicBatches(client) if vendor == "anthropic" else OpenAIBatches(client)
