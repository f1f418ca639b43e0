"""Vendor batch APIs (pure): the record of a batch-mode run's vendor batch, the outcomes a vendor
reports per request, and how they become question outcomes.

A batch-mode run sends its judge calls as ONE vendor batch (Anthropic Message Batches, or an OpenAI
Batch over an uploaded JSONL file): one request per question, `custom_id` = `q<index>` (the vendors
allow only `[A-Za-z0-9_-]{1,64}`, catalog question ids may hold other characters). The vendors
finish a batch within 24 hours at half the price; the run's deadline is that window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.evaluation import FailureKind, TokenUsage, VendorName

# Both vendors complete (or expire) a batch within 24 hours of its creation.
VENDOR_BATCH_WINDOW_SECONDS = 24 * 3600
CUSTOM_ID = re.compile(r"^q[0-9]{1,4}$")

VendorBatchState = Literal["submitting", "in_progress", "closed"]
RequestResult = Literal["succeeded", "errored", "expired", "canceled"]


def custom_id(index: int) -> str:
    return f"q{index}"


class VendorBatchRecord(BaseModel):
    """`VBATCH#<run_id>`: the vendor batch of the run's current attempt (`attempt` = the attempt's deadline)."""

    model_config = ConfigDict(extra="ignore")

    tenant: str
    eval_run_id: str
    attempt: str
    vendor: VendorName
    model: str
    status: VendorBatchState = "submitting"
    custom_ids: dict[str, str] = Field(default_factory=dict)  # custom_id → question id
    vendor_batch_id: str | None = None
    input_file_id: str | None = None
    submitted_at: str | None = None
    deadline_at: str
    vendor_status: str | None = None
    request_counts: dict[str, int] = Field(default_factory=dict)
    context_report: dict[str, Any] | None = None
    cancel_requested: bool = False


@dataclass(frozen=True)
class VendorBatchStatus:
    """Where the vendor is with a batch: `ended` once every request has a result (or never will)."""

    ended: bool
    vendor_status: str
    counts: dict[str, int]


@dataclass(frozen=True)
class RequestOutcome:
    """One request's result as the vendor reports it."""

    custom_id: str
    result: RequestResult
    text: str = ""
    usage: TokenUsage = field(default_factory=TokenUsage)
    error_kind: FailureKind | None = None
    error_message: str = ""


def failure_for(outcome: RequestOutcome) -> tuple[FailureKind, str]:
    """The question's failure reason for a request that produced no answer."""
    if outcome.result == "expired":
        return "batch_expired", ("The vendor's batch window (24 h) ended before this request was processed; "
                                 "rerun the run to judge it again.")
    if outcome.result == "canceled":
        return "cancelled", "The vendor batch was cancelled before this request was processed."
    kind: FailureKind = outcome.error_kind or "batch_errored"
    message = outcome.error_message or "The vendor reported an error for this request."
    return kind, f"Batch request errored: {message}"[:1000]
