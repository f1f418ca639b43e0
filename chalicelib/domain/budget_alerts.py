"""Budget threshold alerts (pure): the alert webhook URL an admin may set in the limits, the body
POSTed to it, and the record of the last delivery shown to admins.

The webhook URL is an outbound destination chosen by a tenant admin, so it follows the same policy
as a vendor `base_url` (`chalicelib.domain.base_url`): https only, no credentials, no query or
fragment, no private/loopback/link-local/metadata hosts unless the stage allow-lists them, port 443
plus the stage's allowed ports. The text is checked when it is saved; every connection is checked
again at connect time by the outbound guard (a public name may resolve to an internal address).
Webhook paths are often bearer secrets (chat incoming-webhook URLs), so audit records and logs only
ever carry the URL's origin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.base_url import BaseUrlPolicy, BaseUrlRefused, normalize_base_url

BUDGET_ALERT_DETAIL_TYPE = "EvalBudgetThresholdReached"
ALERT_EVENT_SOURCE = "eval-runner"
MAX_WEBHOOK_URL_LENGTH = 2048
# The body is a few hundred bytes; the bound keeps a future detail field from turning the POST into
# an upload.
MAX_WEBHOOK_BODY_BYTES = 16 * 1024
WEBHOOK_TIMEOUT_SECONDS = 3.0
# What is read of the receiver's answer: only the status matters, the body is not kept.
MAX_WEBHOOK_RESPONSE_BYTES = 4 * 1024


class WebhookUrlRefused(ValueError):
    """The webhook URL is not acceptable; `reason` is machine-readable, the message is for humans."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_webhook_url(url: str, policy: BaseUrlPolicy) -> str:
    """The URL as it will be called (surrounding blanks removed), or `WebhookUrlRefused` saying why not.

    The check is the vendor base-URL policy's; the stored URL keeps its path exactly (a trailing
    slash can matter to a receiver), unlike a base URL's canonical form."""
    raw = url.strip()
    if len(raw) > MAX_WEBHOOK_URL_LENGTH:
        raise WebhookUrlRefused("invalid_url", f"The webhook URL must be at most {MAX_WEBHOOK_URL_LENGTH} characters.")
    try:
        normalize_base_url(raw, policy)
    except BaseUrlRefused as refused:
        raise WebhookUrlRefused(refused.reason, refused.message.replace("base_url", "The webhook URL")
                                .replace("use a public HTTPS gateway", "use a public HTTPS endpoint")) from None
    return raw


def webhook_origin(url: str | None) -> str | None:
    """`scheme://host[:port]` of a webhook URL: what audit records and logs may show of it."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def alert_event(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook body: the EventBridge event's envelope fields with the same `detail`."""
    return {"source": ALERT_EVENT_SOURCE, "detail-type": BUDGET_ALERT_DETAIL_TYPE, "time": detail.get("at"),
            "detail": dict(detail)}


def alert_body(detail: Mapping[str, Any]) -> bytes:
    body = json.dumps(alert_event(detail), separators=(",", ":"), sort_keys=True).encode()
    if len(body) > MAX_WEBHOOK_BODY_BYTES:
        raise ValueError("budget alert body is too large for the webhook")
    return body


class WebhookDelivery(BaseModel):
    """The outcome of one POST to the alert webhook (what the admin sees as the last delivery)."""

    # Built on first use: the dispatch path imports this module (through the limits) but never needs it.
    model_config = ConfigDict(defer_build=True)

    at: str
    outcome: Literal["delivered", "rejected", "refused", "failed"] = Field(
        description="delivered: 2xx; rejected: the receiver answered another status; refused: the outbound "
                    "guard would not connect (private address, port, redirect elsewhere); failed: timeout or "
                    "network error")
    status: int | None = Field(default=None, description="the receiver's HTTP status, when it answered")
    budget: str | None = None
    period: str | None = None
    message: str | None = Field(default=None, description="why, in words, when not delivered")
