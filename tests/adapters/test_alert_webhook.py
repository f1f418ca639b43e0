"""The budget alert webhook sender against a real local HTTP receiver: the event JSON arrives as sent,
a receiver's refusal or silence is reported (never raised), and on a deployed stage's policy the
outbound guard refuses a URL whose public-looking name resolves to a private address (checked at
connect time: nothing reaches the receiver)."""

from __future__ import annotations

import json
import threading

import pytest

from chalicelib.adapters.alert_webhook import GuardedWebhookSender
from chalicelib.adapters.outbound_http import OutboundGuard
from chalicelib.domain.base_url import BaseUrlPolicy
from chalicelib.domain.budget_alerts import WebhookUrlRefused, alert_body, check_webhook_url
from tests.adapters.http_kit import receiver

LOCAL = OutboundGuard(BaseUrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True))
DETAIL = {"tenant": "acme", "budget": "tenant_monthly", "period": "2026-12", "user": None, "limit_usd": 100.0,
          "spent_usd": 81.5, "alert_at_fraction": 0.8, "eval_run_id": "run-1", "at": "2026-12-04T20:00:00.000Z"}


def sender(guard: OutboundGuard = LOCAL, timeout: float = 3.0) -> GuardedWebhookSender:
    return GuardedWebhookSender(guard, now=lambda: "2026-12-04T20:00:01.000Z", timeout_seconds=timeout)


def test_the_alert_event_is_posted_as_json_to_the_webhook() -> None:
    with receiver() as hook:
        delivery = sender().deliver(hook.url, alert_body(DETAIL), budget="tenant_monthly", period="2026-12")
    assert (delivery.outcome, delivery.status, delivery.budget, delivery.period) == (
        "delivered", 204, "tenant_monthly", "2026-12")
    [(path, headers, body)] = hook.posts
    assert path == "/hooks/budget" and headers["content-type"] == "application/json"
    event = json.loads(body)
    assert event["detail-type"] == "EvalBudgetThresholdReached" and event["source"] == "eval-runner"
    assert event["detail"] == DETAIL and event["time"] == DETAIL["at"]


def test_a_receiver_that_answers_an_error_is_reported_as_rejected() -> None:
    with receiver(status=500) as hook:
        delivery = sender().deliver(hook.url, alert_body(DETAIL))
    assert (delivery.outcome, delivery.status) == ("rejected", 500)
    assert delivery.message == "The webhook answered HTTP 500."
    assert len(hook.posts) == 1


def test_a_silent_receiver_is_given_up_after_the_timeout_without_raising() -> None:
    with receiver(hang=threading.Event()) as hook:
        delivery = sender(timeout=0.2).deliver(hook.url, alert_body(DETAIL))
    assert delivery.outcome == "failed" and delivery.status is None
    assert "did not answer within 0.2 seconds" in (delivery.message or "")


def test_an_unreachable_receiver_is_reported_as_failed() -> None:
    with receiver() as hook:
        url = hook.url
    delivery = sender().deliver(url, alert_body(DETAIL))  # the receiver is gone: connection refused
    assert delivery.outcome == "failed" and "could not be reached" in (delivery.message or "")


def test_on_a_deployed_stage_a_name_resolving_to_a_private_address_is_refused_at_connect_time() -> None:
    # The text is acceptable (https, public-looking name, port 443 allowed here as the receiver's port)…
    with receiver() as hook:
        policy = BaseUrlPolicy(allowed_ports=(443, hook.port))
        url = f"https://hooks.example.com:{hook.port}/budget"
        assert check_webhook_url(url, policy) == url
        # …but the name resolves to loopback when the alert is sent (DNS changed after it was saved).
        guard = OutboundGuard(policy, resolver=lambda host, port: ["127.0.0.1"])
        delivery = sender(guard).deliver(url, alert_body(DETAIL))
    assert delivery.outcome == "refused" and "127.0.0.1" in (delivery.message or "")
    assert hook.posts == []


def test_a_redirect_elsewhere_is_not_followed() -> None:
    with receiver(status=307) as hook:
        delivery = sender().deliver(hook.url, alert_body(DETAIL))
    assert (delivery.outcome, delivery.status) == ("rejected", 307)
    assert len(hook.posts) == 1


@pytest.mark.parametrize(("url", "reason"), [
    ("http://hooks.example.com/budget", "insecure_scheme"),
    ("https://127.0.0.1/budget", "private_host"),
    ("https://10.1.2.3/budget", "private_host"),
    ("https://169.254.169.254/latest", "private_host"),
    ("https://metadata.google.internal/x", "private_host"),
    ("https://hooks.example.com:8443/budget", "port_not_allowed"),
    ("https://user:pw@hooks.example.com/budget", "credentials_in_url"),
    ("https://hooks.example.com/budget?token=1", "invalid_url"),
    ("https://" + "a" * 2100 + ".example.com/", "invalid_url"),
])
def test_the_deployed_policy_refuses_webhook_urls_a_vendor_base_url_could_not_use(url: str, reason: str) -> None:
    with pytest.raises(WebhookUrlRefused) as refused:
        check_webhook_url(url, BaseUrlPolicy())
    assert refused.value.reason == reason
    assert "base_url" not in refused.value.message


def test_a_webhook_url_keeps_its_exact_path() -> None:
    assert check_webhook_url(" https://Hooks.Example.com/services/T0/B1/xyz/ ", BaseUrlPolicy()) == \
        "https://Hooks.Example.com/services/T0/B1/xyz/"
