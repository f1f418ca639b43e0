"""Online evaluation rules through chalice.test.Client under moto: admin CRUD and bad input, and the
path from an upload to a rule run: the upload sends one notice (only when the tenant has an enabled
rule), the worker matches it, one run per (rule, session content), runs carry their trigger, and the
rule shows what it matched, ran and skipped.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.dispatch_kit import configure_vendors, drain_queue
from tests.api.rules_kit import (
    ADMIN,
    MEMBER,
    create_rule,
    deliver,
    jobs,
    notices,
    process_uploads,
    rule_body,
    runs_of,
    upload,
)
from tests.conftest import mint


@pytest.fixture
def vendor(client: Any) -> None:
    configure_vendors(client, "anthropic")


# ----------------------------------------------------------------------------------- CRUD


def test_create_read_replace_delete(client: Any, vendor: None) -> None:
    created = create_rule(client, filter={"repository": "github.com/acme/*", "format": ["native"], "min_entries": 2},
                          sample_rate=0.25, questions=["safety"], mode="batch")
    rule_id = created["rule_id"]
    assert created["enabled"] is True and created["version"] == 1
    assert created["filter"]["repository"] == "github.com/acme/*" and created["mode"] == "batch"
    assert created["stats"]["runs"] == 0 and created["skipped_total"] == 0

    listed = client.get("/admin/eval-rules", token=ADMIN)
    assert [r["rule_id"] for r in listed.json["items"]] == [rule_id]

    got = client.get(f"/admin/eval-rules/{rule_id}", token=ADMIN)
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'

    replaced = client.put(f"/admin/eval-rules/{rule_id}", token=ADMIN, headers={"If-Match": "1"},
                          json_body=rule_body(name="renamed", enabled=False, sample_rate=0.5))
    assert replaced.status_code == 200, replaced.json
    assert (replaced.json["name"], replaced.json["enabled"], replaced.json["version"]) == ("renamed", False, 2)
    stale = client.put(f"/admin/eval-rules/{rule_id}", token=ADMIN, headers={"If-Match": "1"},
                       json_body=rule_body())
    assert stale.status_code == 412 and stale.json["error"]["code"] == "version_mismatch"

    deleted = client.delete(f"/admin/eval-rules/{rule_id}", token=ADMIN)
    assert deleted.status_code == 200 and deleted.json == {"rule_id": rule_id, "deleted": True}
    assert client.get(f"/admin/eval-rules/{rule_id}", token=ADMIN).status_code == 404
    assert client.delete(f"/admin/eval-rules/{rule_id}", token=ADMIN).status_code == 404


def test_members_and_other_tenants_cannot_see_rules(client: Any, vendor: None) -> None:
    rule_id = create_rule(client)["rule_id"]
    assert client.get("/admin/eval-rules", token=MEMBER).status_code == 403
    assert client.post("/admin/eval-rules", token=MEMBER, json_body=rule_body()).status_code == 403
    assert client.get(f"/admin/eval-rules/{rule_id}", token=mint("globex", "eve", ["admin"])).status_code == 404


@pytest.mark.parametrize(("body", "code", "field"), [
    (rule_body(filter={"repository": "acme/[web"}), "validation_failed", "filter.repository"),
    (rule_body(filter={"repository": ""}), "validation_failed", "filter.repository"),
    (rule_body(sample_rate=1.01), "validation_failed", "sample_rate"),
    (rule_body(sample_rate=-1), "validation_failed", "sample_rate"),
    (rule_body(vendor="mistral"), "validation_failed", "vendor"),
    (rule_body(vendor="openai"), "vendor_not_enabled", "vendor"),
    (rule_body(questions=["no_such_question"]), "unknown_question", "questions"),
    (rule_body(mode="tomorrow"), "validation_failed", "mode"),
    (rule_body(filter={"users": []}), "validation_failed", "filter.users"),
])
def test_bad_rules_are_400_with_field_details_and_nothing_stored(client: Any, vendor: None, body: dict[str, Any],
                                                                 code: str, field: str) -> None:
    resp = client.post("/admin/eval-rules", token=ADMIN, json_body=body)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"]["code"] == code
    assert field in [f["field"] for f in resp.json["error"]["details"]["fields"]]
    assert client.get("/admin/eval-rules", token=ADMIN).json["items"] == []


def test_a_rule_needs_a_vendor_when_both_are_enabled(client: Any) -> None:
    configure_vendors(client, "anthropic", "openai")
    resp = client.post("/admin/eval-rules", token=ADMIN, json_body=rule_body())
    assert resp.status_code == 400 and resp.json["error"]["code"] == "vendor_required"
    assert create_rule(client, vendor="openai")["vendor"] == "openai"


# ----------------------------------------------------------------------------------- matching


def test_an_upload_without_enabled_rules_sends_no_notice(client: Any, container: Any, vendor: None) -> None:
    create_rule(client, enabled=False)
    upload(client, "s1")
    assert notices(drain_queue(container)) == []


def test_a_matching_upload_gets_one_rule_run_and_identical_bytes_get_none(client: Any, container: Any,
                                                                          vendor: None) -> None:
    rule = create_rule(client, filter={"repository": "github.com/acme/*"}, questions=["safety"])
    upload(client, "s1")
    bodies = drain_queue(container)
    assert len(notices(bodies)) == 1 and jobs(bodies) == []  # the upload itself queued only the notice
    deliver(notices(bodies))
    queued = jobs(drain_queue(container))

    (run,) = runs_of(client, "s1")
    assert run["trigger"] == {"kind": "rule", "rule_id": rule["rule_id"]}
    assert run["status"] == "queued" and run["delayed"] is False and run["mode"] == "now"
    assert run["created_by"] == f"rule:{rule['rule_id']}"
    assert [q["category"] for q in run["progress"]["questions"]] == ["safety"] * 4
    assert [(j["eval_run_id"], j["mode"]) for j in queued] == [(run["eval_run_id"], "now")]

    # Same bytes again (a re-upload, and a redelivered notice): nothing new.
    upload(client, "s1")
    bodies = drain_queue(container)
    deliver(notices(bodies) * 2)
    assert jobs(drain_queue(container)) == []
    assert len(runs_of(client, "s1")) == 1

    # Different bytes: a new revision, a new run.
    upload(client, "s1", text="fix it properly")
    assert len(process_uploads(container)) == 1
    assert len(runs_of(client, "s1")) == 2

    stats = client.get(f"/admin/eval-rules/{rule['rule_id']}", token=ADMIN).json["stats"]
    assert (stats["matched"], stats["runs"], stats["skipped"]) == (2, 2, {})
    assert [m["outcome"] for m in stats["last_matches"]] == ["run", "run"]
    assert stats["last_matches"][0]["session_id"] == "s1" and stats["last_matches"][0]["revision"] == 3


def test_manual_runs_carry_the_manual_trigger(client: Any, container: Any, vendor: None) -> None:
    upload(client, "s1")
    resp = client.post("/sessions/s1/eval-runs", token=MEMBER, json_body={})
    assert resp.status_code == 202
    run = client.get(f"/eval-runs/{resp.json['eval_run_id']}", token=MEMBER).json
    assert run["trigger"] == {"kind": "manual"} and run["batch_id"] is None and run["mode"] == "now"


def test_filters_decide_which_sessions_match(client: Any, container: Any, vendor: None) -> None:
    create_rule(client, filter={"repository": "*acme/web", "users": ["bob"], "format": ["native"]})
    upload(client, "hit")
    upload(client, "other-repo", repository="github.com/globex/web")
    upload(client, "no-repo", repository=None)
    upload(client, "other-user", user="carol")
    process_uploads(container)
    assert [len(runs_of(client, s)) for s in ("hit", "other-repo", "no-repo", "other-user")] == [1, 0, 0, 0]


def test_rules_with_the_same_rate_judge_the_same_sessions(client: Any, container: Any, vendor: None) -> None:
    first = create_rule(client, name="a", sample_rate=0.5)
    second = create_rule(client, name="b", sample_rate=0.5)
    sessions = [f"s{i}" for i in range(12)]
    for session_id in sessions:
        upload(client, session_id)
    process_uploads(container)

    def judged_by(rule_id: str) -> set[str]:
        return {s for s in sessions if any(r["trigger"].get("rule_id") == rule_id for r in runs_of(client, s))}

    picked = judged_by(first["rule_id"])
    assert picked == judged_by(second["rule_id"])
    assert 0 < len(picked) < len(sessions)
    stats = client.get(f"/admin/eval-rules/{first['rule_id']}", token=ADMIN).json["stats"]
    assert stats["matched"] == 12 and stats["runs"] == len(picked) and stats["sampled_out"] == 12 - len(picked)


def test_a_rule_that_cannot_run_counts_the_skip_and_why(client: Any, container: Any, vendor: None) -> None:
    rule = create_rule(client)
    client.delete("/admin/settings/eval-runner/vendors/anthropic", token=ADMIN)
    upload(client, "s1")
    process_uploads(container)
    assert runs_of(client, "s1") == []
    view = client.get(f"/admin/eval-rules/{rule['rule_id']}", token=ADMIN).json
    assert view["stats"]["skipped"] == {"no_server_vendor": 1} and view["skipped_total"] == 1
    assert view["stats"]["last_matches"][0] == {"session_id": "s1", "revision": 1, "at": view["stats"][
        "last_matches"][0]["at"], "outcome": "skipped", "eval_run_id": None, "reason": "no_server_vendor"}


def test_batch_mode_rules_queue_batch_mode_runs(client: Any, container: Any, vendor: None) -> None:
    create_rule(client, mode="batch")
    upload(client, "s1")
    (job,) = process_uploads(container)
    (run,) = runs_of(client, "s1")
    assert job["mode"] == "batch" and run["mode"] == "batch"
    assert run["run_timeout_seconds"] == 24 * 3600


def test_a_deleted_session_is_forgotten_by_the_rules(client: Any, container: Any, vendor: None) -> None:
    rule = create_rule(client)
    upload(client, "gone")
    process_uploads(container)
    (run,) = runs_of(client, "gone")
    client.post(f"/eval-runs/{run['eval_run_id']}/cancel", token=ADMIN)
    resp = client.delete("/sessions/gone", token=ADMIN)
    assert resp.status_code in (200, 204), resp.json
    stats = client.get(f"/admin/eval-rules/{rule['rule_id']}", token=ADMIN).json["stats"]
    assert stats["last_matches"] == []
    # The same bytes under the same id later are a new session: judged afresh.
    upload(client, "gone")
    assert len(process_uploads(container)) == 1
    assert len(runs_of(client, "gone")) == 1
