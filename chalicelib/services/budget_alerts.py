"""Sending a budget threshold alert: the `EvalBudgetThresholdReached` EventBridge event and, when an
admin configured one, the same event POSTed to the tenant's alert webhook.

Called by the spend settlement (`services/spend.py`) after a run is final and only when its
conditional write won this budget period's alert flag, so each budget alerts once per period. The
event decides whether the alert counts as sent (if it cannot be published the flag is put back and
the next settlement tries again); the webhook is best effort after it: a short timeout through the
outbound guard, never raised to the run, its outcome recorded as the tenant's last delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from chalicelib.domain.budget_alerts import BUDGET_ALERT_DETAIL_TYPE, WebhookDelivery, alert_body, webhook_origin
from chalicelib.domain.errors import DependencyUnavailable, DomainError
from chalicelib.observability import logger


class EventSink(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


class AlertWebhookSender(Protocol):
    """`chalicelib.adapters.alert_webhook.GuardedWebhookSender`."""

    def deliver(self, url: str, body: bytes, *, headers: Mapping[str, str] | None = None,
                budget: str | None = None, period: str | None = None) -> WebhookDelivery: ...


class WebhookDeliveryLog(Protocol):
    """Where the last delivery is kept for admins (`DynamoSpendStore.record_webhook_delivery`)."""

    def record_webhook_delivery(self, tenant: str, delivery: WebhookDelivery) -> None: ...


class BudgetAlerts:
    def __init__(self, *, events: Callable[[], EventSink | None] | None = None,
                 webhook: Callable[[], AlertWebhookSender | None] | None = None,
                 deliveries: WebhookDeliveryLog | None = None) -> None:
        self._events = events
        self._webhook = webhook
        self._deliveries = deliveries

    def send(self, tenant: str, detail: Mapping[str, Any], *, webhook_url: str | None) -> bool:
        """Publish the alert; False when the event could not be published (nothing was sent, so the
        caller puts the period's flag back). The webhook follows a published event only."""
        sink = self._events() if self._events is not None else None
        try:
            if sink is None:
                raise DependencyUnavailable("no event bus configured", code="event_bus_unavailable")
            sink.publish(BUDGET_ALERT_DETAIL_TYPE, detail)
        except (DomainError, ValueError) as exc:
            logger.error("budget threshold alert not sent", extra={"tenant": tenant, "budget": detail.get("budget"),
                                                                   "error_type": type(exc).__name__})
            return False
        logger.warning("budget threshold reached", extra={"tenant": tenant, "budget": detail.get("budget"),
                                                           "period": detail.get("period"),
                                                           "spent_usd": detail.get("spent_usd"),
                                                           "limit_usd": detail.get("limit_usd")})
        if webhook_url:
            self._deliver(tenant, webhook_url, detail)
        return True

    def _deliver(self, tenant: str, url: str, detail: Mapping[str, Any]) -> None:
        sender = self._webhook() if self._webhook is not None else None
        if sender is None:
            return
        delivery = sender.deliver(url, alert_body(detail), budget=str(detail.get("budget")),
                                  period=str(detail.get("period")))
        logger.info("budget alert webhook", extra={"tenant": tenant, "origin": webhook_origin(url),
                                                   "outcome": delivery.outcome, "status": delivery.status})
        if self._deliveries is None:
            return
        try:
            self._deliveries.record_webhook_delivery(tenant, delivery)
        except DomainError as exc:
            # The alert went out; only the admin's "last delivery" line is stale.
            logger.warning("webhook delivery not recorded", extra={"tenant": tenant,
                                                                    "error_type": type(exc).__name__})
