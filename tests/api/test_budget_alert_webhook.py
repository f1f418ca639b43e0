"""The budget alert webhook through the API: the URL an admin sets in the limits (validated with the
stage's outbound policy, 400 with field details and nothing stored when refused, audited with its
origin only), the alert POSTed to a local receiver once per budget period when a run's settlement
crosses the threshold, and the last delivery shown to the admin — a dead receiver never fails a run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.base_url import BaseUrlPolicy
from devstack.fake_vendor import FakeVendor
from tests.adapters.http_kit import receiver
from tests.api.spend_kit import ADMIN, LIMITS, RecordedEvents, dispatch, estimate
from tests.api.worker_kit import SESSION, configure, queued_event, trace, upload, view, work

AUDIT = "/admin/settings/eval-runner/audit"
SECRET_PATH = "/services/T000/B000/s3cr3t-webhook-token"


@pytest.mark.parametrize("url", [
    "ftp://hooks.example.com/x", "https://10.0.0.7/hook", "https://169.254.169.254/latest/meta-data",
    "https://hooks.example.com/x?token=1", "https://user:pw@hooks.example.com/x", "not a url", "",
    "https://hooks.example.com/" + "a" * 2100, 42,
])
def test_a_refused_webhook_url_is_400_naming_the_field_and_nothing_is_stored(client: Any, url: Any) -> None:
    resp = client.put(LIMITS, token=ADMIN, json_body={"alert_webhook_url": url, "user_daily_usd": 1})
    assert resp.status_code == 400, resp.json
    assert resp.json["error"]["details"]["fields"][0]["field"] == "alert_webhook_url", resp.json
    after = client.get(LIMITS, token=ADMIN).json
    assert (after["version"], after["alert_webhook_url"]) == (0, None)
    assert after["user_daily_usd"] != 1


def test_on_a_deployed_stage_a_private_webhook_is_refused_that_the_local_stack_accepts(client: Any,
                                                                                     container: Any) -> None:
    with receiver() as hook:
        local = client.put(LIMITS, token=ADMIN, json_body={"alert_webhook_url": hook.url})
        assert local.status_code == 200 and local.json["alert_webhook_url"] == hook.url, local.json
    # A deployed stage allow-lists nothing: loopback and private hosts are refused by the same policy
    # the vendor base URLs follow, whatever the scheme.
    container.__dict__["base_url_policy"] = BaseUrlPolicy()
    container.__dict__.pop("spend_admin", None)
    for url in (hook.url, "https://127.0.0.1/hook", "https://[::1]/hook", "https://localhost/hook"):
        resp = client.put(LIMITS, token=ADMIN, json_body={"alert_webhook_url": url})
        assert resp.status_code == 400, (url, resp.json)
    assert client.get(LIMITS, token=ADMIN).json["version"] == 1


def test_the_webhook_url_is_stored_shown_cleared_and_audited_by_origin_only(client: Any) -> None:
    url = f"https://hooks.example.com{SECRET_PATH}"
    resp = client.put(LIMITS, token=ADMIN, headers={"If-Match": "0"}, json_body={"alert_webhook_url": url})
    assert resp.status_code == 200 and resp.json["alert_webhook_url"] == url, resp.json
    assert resp.json["alert_webhook_last_delivery"] is None
    cleared = client.put(LIMITS, token=ADMIN, headers={"If-Match": "1"}, json_body={"alert_webhook_url": None})
    assert cleared.status_code == 200 and cleared.json["alert_webhook_url"] is None

    audit = client.get(AUDIT, token=ADMIN).json["items"]
    limit_changes = [a for a in audit if a["action"] == "limits"]
    assert [a["version"] for a in limit_changes] == [2, 1]
    assert limit_changes[1]["changes"] == {"alert_webhook_url": {"from": None, "to": "https://hooks.example.com/…"}}
    assert limit_changes[0]["by"] == "root"
    assert "s3cr3t" not in json.dumps(audit)


def _crossing_setup(client: Any, worker: Any, fake: FakeVendor, webhook_url: str) -> RecordedEvents:
    configure(client, fake, "anthropic")
    upload(client, trace())
    events = RecordedEvents()
    worker.__dict__["event_publisher"] = events
    high = estimate(client).json["usd_high"]
    # A monthly budget the first run alone takes past the threshold (its reservation fits, its cost crosses).
    resp = client.put(LIMITS, token=ADMIN, json_body={"tenant_monthly_usd": round(high * 3, 2), "user_daily_usd": None,
                                                      "alert_at_fraction": 0.0001, "alert_webhook_url": webhook_url})
    assert resp.status_code == 200, resp.json
    return events


def test_crossing_the_threshold_posts_the_alert_to_the_webhook_once_per_period(client: Any, worker: Any,
                                                                               fake: FakeVendor) -> None:
    with receiver() as hook:
        events = _crossing_setup(client, worker, fake, hook.url)
        runs = [dispatch(client).json["eval_run_id"] for _ in range(2)]
        work(queued_event(worker))
        assert [view(client, r)["status"] for r in runs] == ["succeeded", "succeeded"]
    alerts = [d for t, d in events.events if t == "EvalBudgetThresholdReached"]
    assert len(alerts) == 1 and len(hook.posts) == 1, (events.events, hook.posts)
    event = json.loads(hook.posts[0][2])
    assert event["detail-type"] == "EvalBudgetThresholdReached" and event["detail"] == alerts[0]
    last = client.get(LIMITS, token=ADMIN).json["alert_webhook_last_delivery"]
    assert (last["outcome"], last["status"], last["budget"]) == ("delivered", 204, "tenant_monthly")


def test_a_dead_webhook_never_fails_the_run_and_the_admin_sees_why(client: Any, worker: Any,
                                                                   fake: FakeVendor) -> None:
    with receiver() as hook:
        url = hook.url  # the receiver stops here: every connection is refused
    events = _crossing_setup(client, worker, fake, url)
    run_id = dispatch(client).json["eval_run_id"]
    work(queued_event(worker))
    assert view(client, run_id)["status"] == "succeeded"
    # The event went out (the alert counts as sent for the period); the webhook's failure is reported.
    assert len([t for t, _ in events.events if t == "EvalBudgetThresholdReached"]) == 1
    last = client.get(LIMITS, token=ADMIN).json["alert_webhook_last_delivery"]
    assert last["outcome"] == "failed" and "could not be reached" in last["message"]


def test_the_settings_audit_lists_limits_changes_beside_the_deletion_trail(client: Any) -> None:
    # Deletion records share the AUDIT# prefix (AUDIT#DELETE#…); the settings audit must not read them.
    upload(client, trace())
    assert client.delete(f"/sessions/{SESSION}", token=ADMIN).status_code == 204
    assert client.put(LIMITS, token=ADMIN, json_body={"retention_days": 30}).status_code == 200
    resp = client.get(AUDIT, token=ADMIN)
    assert resp.status_code == 200, resp.json
    assert [(a["action"], a["changes"]) for a in resp.json["items"]] == [
        ("limits", {"retention_days": {"from": None, "to": 30}})]
    assert len(client.get("/admin/audit/deletions", token=ADMIN).json["items"]) == 1
