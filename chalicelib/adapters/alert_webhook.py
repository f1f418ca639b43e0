"""Budget alert webhook delivery: one JSON POST through the stage's outbound guard, with a short timeout.

Every connection goes through `OutboundGuard` (resolved, every address checked, pinned; the one
origin of the URL; redirects elsewhere refused), so an admin-set URL cannot reach the function's
network even through a public name that resolves inside it. Delivery never raises: the caller (the
run lifecycle's settlement, after the run is already final) gets a `WebhookDelivery` saying what
happened, and a slow or broken receiver costs at most the timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from chalicelib.adapters.outbound_http import OutboundGuard
from chalicelib.domain.base_url import refusal_in_chain
from chalicelib.domain.budget_alerts import (
    MAX_WEBHOOK_BODY_BYTES,
    MAX_WEBHOOK_RESPONSE_BYTES,
    WEBHOOK_TIMEOUT_SECONDS,
    WebhookDelivery,
    webhook_origin,
)
from chalicelib.observability import logger

USER_AGENT = "eval-runner-budget-alerts/1"


class GuardedWebhookSender:
    def __init__(self, guard: OutboundGuard, *, now: Callable[[], str],
                 timeout_seconds: float = WEBHOOK_TIMEOUT_SECONDS) -> None:
        self._guard = guard
        self._now = now
        self._timeout = timeout_seconds

    def deliver(self, url: str, body: bytes, *, headers: Mapping[str, str] | None = None,
                budget: str | None = None, period: str | None = None) -> WebhookDelivery:
        import httpx2

        at = self._now()
        if len(body) > MAX_WEBHOOK_BODY_BYTES:
            return WebhookDelivery(at=at, outcome="failed", budget=budget, period=period,
                                   message="The alert body is larger than a webhook delivery may be.")
        sent = {"content-type": "application/json", "user-agent": USER_AGENT, **(headers or {})}
        try:
            with self._guard.client(url, timeout=httpx2.Timeout(self._timeout), follow_redirects=False) as client, \
                    client.stream("POST", url, content=body, headers=sent) as response:
                # Only the status matters; read a little so the connection ends cleanly, never more.
                for chunk in response.iter_bytes():
                    if response.num_bytes_downloaded >= MAX_WEBHOOK_RESPONSE_BYTES or not chunk:
                        break
                status = response.status_code
        except httpx2.HTTPError as exc:
            refusal = refusal_in_chain(exc)
            if refusal is not None:
                outcome, message = "refused", refusal.message.replace("base_url", "The webhook URL")
            elif isinstance(exc, httpx2.TimeoutException):
                outcome, message = "failed", f"The webhook did not answer within {self._timeout:g} seconds."
            else:
                outcome, message = "failed", f"The webhook could not be reached ({type(exc).__name__})."
            logger.warning("budget alert webhook not delivered", extra={
                "origin": webhook_origin(url), "outcome": outcome, "error_type": type(exc).__name__})
            return WebhookDelivery(at=at, outcome=outcome, budget=budget, period=period, message=message)
        if 200 <= status < 300:
            return WebhookDelivery(at=at, outcome="delivered", status=status, budget=budget, period=period)
        logger.warning("budget alert webhook rejected the alert", extra={"origin": webhook_origin(url),
                                                                         "status": status})
        return WebhookDelivery(at=at, outcome="rejected", status=status, budget=budget, period=period,
                               message=f"The webhook answered HTTP {status}.")
