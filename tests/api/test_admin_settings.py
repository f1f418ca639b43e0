"""Admin Eval-runner settings over HTTP: storage (CMK, no key material in DynamoDB), masking, validation
that stores nothing, If-Match and concurrent writers, removal, rotation, audit, and the importer."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from chalicelib.domain.errors import PreconditionFailed
from chalicelib.domain.principal import Principal
from chalicelib.domain.settings import EvalRunnerSettingsUpdate, SettingsAuditRecord, SettingsRecord
from chalicelib.services.admin_settings import AdminSettingsService
from tests.conftest import register_secret

PATH = "/admin/settings/eval-runner"
ADMIN = Principal(tenant="acme", user="alice", roles=("admin",))


def put(client: Any, token: str, body: Any, **headers: str) -> Any:
    return client.put(PATH, token=token, json_body=body, headers=headers or None)


def scan_table(container: Any) -> str:
    items = container.dynamodb.scan(TableName=container.config.table_name)["Items"]
    return json.dumps(items)


def secret_versions(container: Any) -> dict[str, int]:
    sm = container.secretsmanager
    return {s["Name"]: len(sm.list_secret_version_ids(SecretId=s["ARN"])["Versions"])
            for s in sm.list_secrets()["SecretList"]}


def stored_state(client: Any, token: str, container: Any) -> tuple[Any, ...]:
    view = client.get(PATH, token=token).json
    audit = client.get(PATH + "/audit", token=token).json["items"]
    return view["version"], json.dumps(view, sort_keys=True), secret_versions(container), len(audit)


@pytest.fixture
def anthropic_key() -> str:
    return register_secret("sk-ant-api03-test-key-ab12")


@pytest.fixture
def configured(client: Any, admin_token: str, anthropic_key: str) -> dict[str, Any]:
    resp = put(client, admin_token, {"anthropic": {"api_key": anthropic_key, "model": "claude-sonnet-4-6"}})
    assert resp.status_code == 200, resp.json
    body: dict[str, Any] = resp.json
    return body


# ------------------------------------------------------------------------------------------ read


def test_defaults_before_anything_is_configured(client: Any, admin_token: str) -> None:
    resp = client.get(PATH, token=admin_token)
    assert resp.status_code == 200
    unconfigured = {"enabled": False, "model": None, "api_key_hint": None, "base_url": None,
                    "status": "unconfigured", "status_reason": None, "updated_at": None, "updated_by": None,
                    "learned_context_limits": []}
    assert resp.json == {"anthropic": unconfigured, "openai": unconfigured, "run_timeout_seconds": 300,
                         "max_run_timeout_seconds": 840, "version": 0, "judge_facts_in_prompts": False}
    assert resp.headers["ETag"] == '"0"'


def test_put_stores_key_in_secrets_manager_with_the_cmk_and_get_masks_it(
        client: Any, admin_token: str, container: Any, configured: dict[str, Any], anthropic_key: str) -> None:
    block = configured["anthropic"]
    assert block == {"enabled": True, "model": "claude-sonnet-4-6", "api_key_hint": "…ab12", "base_url": None,
                     "status": "ok", "status_reason": None, "updated_at": block["updated_at"],
                     "updated_by": "alice", "learned_context_limits": []}
    assert block["updated_at"].endswith("Z")
    assert configured["version"] == 1
    assert client.get(PATH, token=admin_token).json == configured

    sm = container.secretsmanager
    name = container.config.secret_prefix + "acme/anthropic"
    described = sm.describe_secret(SecretId=name)
    assert described["KmsKeyId"] == container.config.kms_key_id
    assert {t["Key"]: t["Value"] for t in described["Tags"]}["tenant"] == "acme"
    assert json.loads(sm.get_secret_value(SecretId=name)["SecretString"]) == {"api_key": anthropic_key}

    table = scan_table(container)
    assert anthropic_key not in table
    assert anthropic_key[4:-4] not in table
    assert described["ARN"] in table


def test_omitted_fields_stay(client: Any, admin_token: str, configured: dict[str, Any]) -> None:
    resp = put(client, admin_token, {"run_timeout_seconds": 600})
    assert resp.status_code == 200
    assert resp.json["anthropic"] == configured["anthropic"]
    assert resp.json["run_timeout_seconds"] == 600
    resp = put(client, admin_token, {"anthropic": {"model": "claude-opus-4-7"}})
    assert resp.json["anthropic"]["api_key_hint"] == "…ab12"
    assert resp.json["anthropic"]["model"] == "claude-opus-4-7"
    assert resp.json["run_timeout_seconds"] == 600
    assert resp.json["version"] == 3


def test_unchanged_put_does_not_bump_version_or_audit(client: Any, admin_token: str,
                                                      configured: dict[str, Any]) -> None:
    resp = put(client, admin_token, {"anthropic": {"model": "claude-sonnet-4-6"}, "run_timeout_seconds": 300})
    assert resp.status_code == 200 and resp.json["version"] == 1
    assert len(client.get(PATH + "/audit", token=admin_token).json["items"]) == 1


def test_both_vendors_are_independent(client: Any, admin_token: str, container: Any,
                                      configured: dict[str, Any]) -> None:
    openai_key = register_secret("sk-proj-openai-key-cd34")
    resp = put(client, admin_token, {"openai": {"api_key": openai_key, "model": "gpt-4o",
                                                "base_url": "https://gateway.example.com/v1/"}})
    assert resp.status_code == 200
    assert resp.json["openai"]["base_url"] == "https://gateway.example.com/v1"
    assert resp.json["anthropic"] == configured["anthropic"]
    assert sorted(secret_versions(container)) == [container.config.secret_prefix + "acme/anthropic",
                                                  container.config.secret_prefix + "acme/openai"]
    runner = container.admin_settings.load_runner_settings("acme")
    assert runner.usable_vendors == ("anthropic", "openai")
    assert container.admin_settings.resolve_vendor_credentials("acme", "openai").api_key == openai_key


# ------------------------------------------------------------------------------------------ validation

GOOD_KEY = "sk-valid-key-0000-zz99"
BAD_INPUTS: list[tuple[str, Any, int, str, list[str]]] = [
    ("key is a number", {"anthropic": {"api_key": 12345678}}, 400, "validation_failed", ["anthropic.api_key"]),
    ("block is a string", {"anthropic": GOOD_KEY}, 400, "validation_failed", ["anthropic"]),
    ("block is null", {"anthropic": None}, 400, "validation_failed", ["anthropic"]),
    ("model is a number", {"openai": {"model": 4}}, 400, "validation_failed", ["openai.model"]),
    ("model is null", {"openai": {"model": None}}, 400, "validation_failed", ["openai.model"]),
    ("model is empty", {"openai": {"model": ""}}, 400, "validation_failed", ["openai.model"]),
    ("model too long", {"openai": {"model": "g" * 129}}, 400, "validation_failed", ["openai.model"]),
    ("model charset", {"openai": {"model": "gpt-4o; rm -rf"}}, 400, "validation_failed", ["openai.model"]),
    ("unknown vendor", {"gemini": {"api_key": GOOD_KEY, "model": "gemini-pro"}}, 400, "validation_failed",
     ["gemini"]),
    ("unknown top-level field", {"run_timeout_seconds": 300, "colour": "red"}, 400, "validation_failed",
     ["colour"]),
    ("unknown block field", {"openai": {"api_key": GOOD_KEY, "model": "gpt-4o", "temperature": 0}}, 400,
     "validation_failed", ["openai.temperature"]),
    ("key without model", {"openai": {"api_key": GOOD_KEY}}, 400, "validation_failed", ["openai.model"]),
    ("key too short", {"openai": {"api_key": "sk-1", "model": "gpt-4o"}}, 400, "validation_failed",
     ["openai.api_key"]),
    ("key with spaces", {"openai": {"api_key": "sk key with spaces", "model": "gpt-4o"}}, 400,
     "validation_failed", ["openai.api_key"]),
    ("key too long", {"openai": {"api_key": "k" * 513, "model": "gpt-4o"}}, 400, "validation_failed",
     ["openai.api_key"]),
    ("key not ascii", {"openai": {"api_key": "sk-ключ-ключ-ключ", "model": "gpt-4o"}}, 400, "validation_failed",
     ["openai.api_key"]),
    ("timeout 0", {"run_timeout_seconds": 0}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout 29", {"run_timeout_seconds": 29}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout above ceiling", {"run_timeout_seconds": 841}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout huge", {"run_timeout_seconds": 10**30}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout negative", {"run_timeout_seconds": -300}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout float", {"run_timeout_seconds": 30.5}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout string", {"run_timeout_seconds": "300"}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout bool", {"run_timeout_seconds": True}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("timeout null", {"run_timeout_seconds": None}, 400, "validation_failed", ["run_timeout_seconds"]),
    ("http base_url", {"openai": {"api_key": GOOD_KEY, "model": "gpt-4o",
                                  "base_url": "http://gateway.example.com/v1"}}, 400, "validation_failed",
     ["openai.base_url"]),
    ("private base_url", {"openai": {"api_key": GOOD_KEY, "model": "gpt-4o", "base_url": "https://10.1.2.3/v1"}},
     400, "validation_failed", ["openai.base_url"]),
    ("metadata base_url", {"openai": {"api_key": GOOD_KEY, "model": "gpt-4o",
                                      "base_url": "https://169.254.169.254/latest"}}, 400, "validation_failed",
     ["openai.base_url"]),
    ("mapped IPv6 base_url", {"openai": {"api_key": GOOD_KEY, "model": "gpt-4o",
                                         "base_url": "https://[::ffff:192.168.0.1]"}}, 400, "validation_failed",
     ["openai.base_url"]),
    ("internal name base_url", {"openai": {"api_key": GOOD_KEY, "model": "gpt-4o",
                                           "base_url": "https://vault.internal"}}, 400, "validation_failed",
     ["openai.base_url"]),
    ("base_url without re-sent key", {"anthropic": {"base_url": "https://gateway.example.com"}}, 400,
     "api_key_required_for_base_url", ["anthropic.api_key"]),
    ("several errors at once", {"run_timeout_seconds": 5, "openai": {"api_key": GOOD_KEY}}, 400,
     "validation_failed", ["run_timeout_seconds", "openai.model"]),
]


@pytest.mark.parametrize(("case", "body", "status", "code", "fields"), BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_are_refused_with_field_details_and_store_nothing(
        client: Any, admin_token: str, container: Any, configured: dict[str, Any],
        case: str, body: Any, status: int, code: str, fields: list[str]) -> None:
    register_secret(GOOD_KEY)
    for vendor_block in body.values() if isinstance(body, dict) else ():
        if isinstance(vendor_block, dict) and isinstance(vendor_block.get("api_key"), str):
            register_secret(vendor_block["api_key"])
    before = stored_state(client, admin_token, container)
    resp = put(client, admin_token, body)
    assert resp.status_code == status, resp.json
    assert resp.json["error"]["code"] == code
    reported = [f["field"] for f in resp.json["error"]["details"]["fields"]]
    assert sorted(reported) == sorted(fields)
    for name in fields:
        assert name in resp.json["error"]["message"]
    assert stored_state(client, admin_token, container) == before


def test_timeout_errors_name_the_bounds(client: Any, admin_token: str) -> None:
    resp = put(client, admin_token, {"run_timeout_seconds": 29})
    (err,) = resp.json["error"]["details"]["fields"]
    assert (err["min"], err["max"]) == (30, 840)
    assert "30" in err["message"] and "840" in err["message"]


RAW_BODIES: list[tuple[str, bytes, str, int, str]] = [
    ("malformed json", b'{"anthropic": ', "application/json", 400, "malformed_json"),
    ("json array", b"[1, 2]", "application/json", 400, "malformed_json"),
    ("json string", b'"run_timeout_seconds"', "application/json", 400, "malformed_json"),
    ("json number", b"300", "application/json", 400, "malformed_json"),
    ("empty body", b"", "application/json", 400, "empty_body"),
    ("not json content type", b'{"run_timeout_seconds": 60}', "text/plain", 415, "unsupported_media_type"),
    ("oversize", json.dumps({"run_timeout_seconds": 60, "pad": "x" * (64 * 1024)}).encode(), "application/json",
     413, "payload_too_large"),
]


@pytest.mark.parametrize(("case", "raw", "ctype", "status", "code"), RAW_BODIES, ids=[c[0] for c in RAW_BODIES])
def test_unparseable_bodies_are_refused_and_store_nothing(client: Any, admin_token: str, container: Any,
                                                          configured: dict[str, Any], case: str, raw: bytes,
                                                          ctype: str, status: int, code: str) -> None:
    before = stored_state(client, admin_token, container)
    resp = client.put(PATH, token=admin_token, body=raw, headers={"Content-Type": ctype})
    assert resp.status_code == status
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["message"]
    assert stored_state(client, admin_token, container) == before


def test_base_url_change_with_the_key_is_accepted(client: Any, admin_token: str, configured: dict[str, Any],
                                                   anthropic_key: str) -> None:
    resp = put(client, admin_token, {"anthropic": {"api_key": anthropic_key,
                                                   "base_url": "https://gateway.example.com/anthropic"}})
    assert resp.status_code == 200
    assert resp.json["anthropic"]["base_url"] == "https://gateway.example.com/anthropic"
    # Going back to the vendor default is also a change of host: the key must come along.
    resp = put(client, admin_token, {"anthropic": {"base_url": None}})
    assert resp.json["error"]["code"] == "api_key_required_for_base_url"
    resp = put(client, admin_token, {"anthropic": {"base_url": None, "api_key": anthropic_key}})
    assert resp.status_code == 200 and resp.json["anthropic"]["base_url"] is None


# ------------------------------------------------------------------------------------------ If-Match


def test_if_match_current_version_succeeds_and_stale_is_412(client: Any, admin_token: str,
                                                            configured: dict[str, Any]) -> None:
    ok = put(client, admin_token, {"run_timeout_seconds": 400}, **{"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json["version"] == 2
    stale = put(client, admin_token, {"run_timeout_seconds": 500}, **{"If-Match": "1"})
    assert stale.status_code == 412
    err = stale.json["error"]
    assert err["code"] == "version_mismatch"
    assert err["details"]["current_version"] == 2
    assert err["details"]["updated_by"] == "alice"
    assert err["details"]["changed_fields"] == ["run_timeout_seconds"]
    assert client.get(PATH, token=admin_token).json["run_timeout_seconds"] == 400
    bad = put(client, admin_token, {"run_timeout_seconds": 500}, **{"If-Match": "v2"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_if_match"


class InterleavingSettings:
    """The real store, with a hook run just before the next save: lets a test put another writer's
    whole request between this request's read and its conditional write."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.before_next_save: Any = None

    def get(self, tenant: str, *, fresh: bool = False) -> SettingsRecord:
        record: SettingsRecord = self.inner.get(tenant, fresh=fresh)
        return record

    def save(self, tenant: str, record: SettingsRecord, *, expected_revision: int,
             audit: SettingsAuditRecord) -> None:
        hook, self.before_next_save = self.before_next_save, None
        if hook is not None:
            hook()
        self.inner.save(tenant, record, expected_revision=expected_revision, audit=audit)

    def list_audit(self, tenant: str, limit: int) -> list[SettingsAuditRecord]:
        items: list[SettingsAuditRecord] = self.inner.list_audit(tenant, limit)
        return items

    def invalidate(self, tenant: str) -> None:
        self.inner.invalidate(tenant)


def service_over(container: Any, settings: Any) -> AdminSettingsService:
    from chalicelib.domain.base_url import BaseUrlPolicy

    return AdminSettingsService(settings=settings, secrets=container.secret_store, clock=container.clock,
                                base_url_policy=BaseUrlPolicy(), max_run_timeout_seconds=840)


def update(body: dict[str, Any]) -> EvalRunnerSettingsUpdate:
    return EvalRunnerSettingsUpdate.model_validate(body)


def test_lost_race_with_if_match_is_412_and_its_orphan_secret_version_is_never_read(
        container: Any, configured: dict[str, Any]) -> None:
    winner_key, loser_key = register_secret("sk-winner-key-1111"), register_secret("sk-loser-key-2222")
    racing = InterleavingSettings(container.settings_store)
    loser = service_over(container, racing)
    racing.before_next_save = lambda: container.admin_settings.update_eval_runner_settings(
        ADMIN, update({"anthropic": {"api_key": winner_key}}), 1)
    with pytest.raises(PreconditionFailed) as info:
        loser.update_eval_runner_settings(ADMIN, update({"anthropic": {"api_key": loser_key}}), 1)
    assert info.value.code == "version_mismatch"
    # The loser's secret version exists (not rolled back blindly) but nothing references it.
    name = container.config.secret_prefix + "acme/anthropic"
    assert secret_versions(container)[name] == 3
    assert container.admin_settings.resolve_vendor_credentials("acme", "anthropic").api_key == winner_key
    view = container.admin_settings.get_eval_runner_settings(ADMIN)
    assert (view.version, view.anthropic.api_key_hint) == (2, "…1111")
    assert len(container.admin_settings.list_settings_audit(ADMIN).items) == 2


def test_lost_race_without_if_match_retries_and_keeps_both_changes(container: Any,
                                                                    configured: dict[str, Any]) -> None:
    racing = InterleavingSettings(container.settings_store)
    second = service_over(container, racing)
    racing.before_next_save = lambda: container.admin_settings.update_eval_runner_settings(
        ADMIN, update({"anthropic": {"model": "claude-opus-4-7"}}))
    view = second.update_eval_runner_settings(ADMIN, update({"run_timeout_seconds": 600}))
    assert (view.version, view.anthropic.model, view.run_timeout_seconds) == (3, "claude-opus-4-7", 600)


class BarrierSettings(InterleavingSettings):
    """Both writers read before either writes; the conditional write itself is serialised, as DynamoDB
    serialises writes to one item (moto's in-memory backend does not promise that across threads)."""

    def __init__(self, inner: Any, parties: int) -> None:
        super().__init__(inner)
        self.barrier = threading.Barrier(parties, timeout=10)
        self.first_reads = parties
        self.lock = threading.Lock()

    def get(self, tenant: str, *, fresh: bool = False) -> SettingsRecord:
        record = super().get(tenant, fresh=fresh)
        with self.lock:
            wait = self.first_reads > 0
            self.first_reads -= 1
        if wait:
            self.barrier.wait()
        return record

    def save(self, tenant: str, record: SettingsRecord, *, expected_revision: int,
             audit: SettingsAuditRecord) -> None:
        with self.lock:
            super().save(tenant, record, expected_revision=expected_revision, audit=audit)


def run_concurrently(*jobs: Any) -> list[Any]:
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except Exception as exc:  # collected for the assertions below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_two_concurrent_writers_with_the_same_if_match_exactly_one_412(container: Any,
                                                                        configured: dict[str, Any]) -> None:
    service = service_over(container, BarrierSettings(container.settings_store, parties=2))
    results = run_concurrently(
        lambda: service.update_eval_runner_settings(ADMIN, update({"run_timeout_seconds": 400}), 1),
        lambda: service.update_eval_runner_settings(ADMIN, update({"anthropic": {"model": "claude-opus-4-7"}}), 1))
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1 and isinstance(failures[0], PreconditionFailed)
    [winner] = [r for r in results if not isinstance(r, Exception)]
    final = container.admin_settings.get_eval_runner_settings(ADMIN)
    assert final == winner and final.version == 2
    assert len(container.admin_settings.list_settings_audit(ADMIN).items) == 2


def test_two_concurrent_writers_without_if_match_lose_nothing(container: Any,
                                                              configured: dict[str, Any]) -> None:
    service = service_over(container, BarrierSettings(container.settings_store, parties=2))
    results = run_concurrently(
        lambda: service.update_eval_runner_settings(ADMIN, update({"run_timeout_seconds": 400})),
        lambda: service.update_eval_runner_settings(ADMIN, update({"anthropic": {"model": "claude-opus-4-7"}})))
    assert not [r for r in results if isinstance(r, Exception)]
    final = container.admin_settings.get_eval_runner_settings(ADMIN)
    assert (final.version, final.run_timeout_seconds, final.anthropic.model) == (3, 400, "claude-opus-4-7")


# ------------------------------------------------------------------------------------------ removal, rotation


def test_null_key_disables_the_block_and_deletes_the_secret(client: Any, admin_token: str, container: Any,
                                                            configured: dict[str, Any]) -> None:
    resp = put(client, admin_token, {"anthropic": {"api_key": None}})
    assert resp.status_code == 200
    block = resp.json["anthropic"]
    assert (block["enabled"], block["api_key_hint"], block["status"], block["model"]) == (
        False, None, "unconfigured", "claude-sonnet-4-6")
    assert secret_versions(container) == {}
    assert container.admin_settings.load_runner_settings("acme").usable_vendors == ()


def test_delete_vendor_removes_key_and_block(client: Any, admin_token: str, container: Any,
                                             configured: dict[str, Any]) -> None:
    resp = client.delete(PATH + "/vendors/anthropic", token=admin_token)
    assert resp.status_code == 200
    block = resp.json["anthropic"]
    assert (block["enabled"], block["model"], block["api_key_hint"], block["status"]) == (
        False, None, None, "unconfigured")
    assert block["updated_by"] == "alice"
    assert resp.json["version"] == 2
    assert secret_versions(container) == {}
    [latest, _] = client.get(PATH + "/audit", token=admin_token).json["items"]
    assert latest["action"] == "remove_vendor"
    assert latest["changes"]["anthropic.api_key"] == {"from": "…ab12", "to": None}
    again = client.delete(PATH + "/vendors/anthropic", token=admin_token)
    assert again.status_code == 200 and again.json["version"] == 2
    # A new key after removal creates the secret again.
    new_key = register_secret("sk-after-removal-7777")
    resp = put(client, admin_token, {"anthropic": {"api_key": new_key, "model": "claude-sonnet-4-6"}})
    assert resp.json["anthropic"]["api_key_hint"] == "…7777"
    assert container.admin_settings.resolve_vendor_credentials("acme", "anthropic").api_key == new_key


def test_delete_unknown_vendor_is_404(client: Any, admin_token: str) -> None:
    resp = client.delete(PATH + "/vendors/gemini", token=admin_token)
    assert resp.status_code == 404
    assert resp.json["error"]["code"] == "unknown_vendor"


def test_rotation_creates_a_new_version_changes_the_hint_and_the_worker_reads_the_new_key(
        client: Any, admin_token: str, container: Any, configured: dict[str, Any], anthropic_key: str) -> None:
    settings = container.admin_settings
    assert settings.resolve_vendor_credentials("acme", "anthropic").api_key == anthropic_key
    rotated = register_secret("sk-ant-api03-rotated-cd34")
    resp = put(client, admin_token, {"anthropic": {"api_key": rotated}})
    assert resp.status_code == 200
    assert resp.json["anthropic"]["api_key_hint"] == "…cd34"
    name = container.config.secret_prefix + "acme/anthropic"
    assert secret_versions(container)[name] == 2
    settings.invalidate_vendor_credentials("acme", "anthropic")
    creds = settings.resolve_vendor_credentials("acme", "anthropic")
    assert creds.api_key == rotated
    assert rotated not in repr(creds)
    audit = client.get(PATH + "/audit", token=admin_token).json["items"]
    assert audit[0]["changes"]["anthropic.api_key"] == {"from": "…ab12", "to": "…cd34"}
    assert rotated not in scan_table(container) and anthropic_key not in scan_table(container)


# ------------------------------------------------------------------------------------------ audit


def test_audit_is_newest_first_with_hints_only(client: Any, admin_token: str, container: Any,
                                               configured: dict[str, Any], anthropic_key: str) -> None:
    put(client, admin_token, {"run_timeout_seconds": 450})
    put(client, admin_token, {"openai": {"api_key": register_secret("sk-proj-audit-key-ef56"), "model": "gpt-4o"}})
    resp = client.get(PATH + "/audit", token=admin_token)
    assert resp.status_code == 200
    items = resp.json["items"]
    assert [i["version"] for i in items] == [3, 2, 1]
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    assert items[0]["by"] == "alice"
    assert items[0]["changes"]["openai.api_key"] == {"from": None, "to": "…ef56"}
    assert items[1]["changes"] == {"run_timeout_seconds": {"from": 300, "to": 450}}
    assert items[2]["changes"]["anthropic.api_key"] == {"from": None, "to": "…ab12"}
    limited = client.get(PATH + "/audit?limit=2", token=admin_token)
    assert [i["version"] for i in limited.json["items"]] == [3, 2]
    bad = client.get(PATH + "/audit?limit=0", token=admin_token)
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_query"


# ------------------------------------------------------------------------------------------ runner side


def test_suspension_is_ignored_for_a_replaced_key_and_does_not_bump_version(
        container: Any, configured: dict[str, Any]) -> None:
    settings = container.admin_settings
    old_version = settings.load_runner_settings("acme").anthropic.secret_version_id
    assert old_version is not None
    settings.update_eval_runner_settings(ADMIN, update({"anthropic": {"api_key": register_secret("sk-new-9999")}}))
    assert not settings.mark_vendor_suspended("acme", "anthropic", "401 from vendor", secret_version_id=old_version)
    assert settings.load_runner_settings("acme").anthropic.status == "ok"
    assert settings.mark_vendor_suspended("acme", "anthropic", "401 from vendor")
    assert not settings.mark_vendor_suspended("acme", "anthropic", "already suspended: no second audit record")
    runner = settings.load_runner_settings("acme")
    assert runner.anthropic.status == "suspended" and runner.usable_vendors == ()
    view = settings.get_eval_runner_settings(ADMIN)
    assert view.version == 2 and view.anthropic.status_reason == "401 from vendor"
    [latest, *_] = settings.list_settings_audit(ADMIN).items
    assert (latest.action, latest.by) == ("suspend", "system")
    assert latest.changes["anthropic.status"].model_dump() == {"from": "ok", "to": "suspended"}


# ------------------------------------------------------------------------------------------ importer


def test_import_applies_the_dotnet_shape_through_the_service(container: Any, capsys: Any) -> None:
    from devstack.import_settings import import_settings, summary

    key = register_secret("sk-ant-imported-key-4242")
    data = {"Logging": {"LogLevel": {"Default": "Information"}},
            "Evals": {"ServerRunner": {"Anthropic": {"ApiKey": key, "Model": "claude-sonnet-4-6"},
                                       "OpenAI": {"ApiKey": "", "Model": "gpt-4o"},
                                       "RunTimeoutSeconds": "600"}}}
    view = import_settings(container.admin_settings, tenant="acme", user="import", data=data)
    assert view.anthropic.enabled and view.anthropic.api_key_hint == "…4242"
    assert not view.openai.enabled and view.openai.model == "gpt-4o"
    assert view.run_timeout_seconds == 600
    [entry] = container.admin_settings.list_settings_audit(ADMIN).items
    assert (entry.action, entry.by) == ("import", "import")
    text = summary(view, "acme")
    print(text)
    assert key not in text and "…4242" in text


@pytest.mark.parametrize(("data", "message"), [
    ({"Evals": {}}, "no Evals:ServerRunner"),
    ({"Evals": {"ServerRunner": {"Anthropic": {"ApiKey": "sk-x-12345678", "Modle": "x"}}}}, "Modle"),
    ({"Evals": {"ServerRunner": {"Gemini": {}}}}, "Gemini"),
])
def test_import_refuses_unknown_shapes(container: Any, data: Any, message: str) -> None:
    from devstack.import_settings import SettingsFileError, import_settings

    with pytest.raises(SettingsFileError, match=message):
        import_settings(container.admin_settings, tenant="acme", user="import", data=data)
    assert container.admin_settings.get_eval_runner_settings(ADMIN).version == 0


def test_import_validation_is_the_api_validation(container: Any) -> None:
    from pydantic import ValidationError

    from chalicelib.domain.errors import InvalidRequest
    from devstack.import_settings import import_settings

    with pytest.raises(ValidationError):
        import_settings(container.admin_settings, tenant="acme", user="import",
                        data={"Evals": {"ServerRunner": {"RunTimeoutSeconds": 30.5}}})
    with pytest.raises(InvalidRequest):
        import_settings(container.admin_settings, tenant="acme", user="import",
                        data={"Evals": {"ServerRunner": {"OpenAI": {"ApiKey": register_secret("sk-nomodel-1234")}}}})
    assert container.admin_settings.get_eval_runner_settings(ADMIN).version == 0


def test_resending_the_stored_key_is_not_a_rotation(client: Any, admin_token: str, container: Any,
                                                     configured: dict[str, Any], anthropic_key: str) -> None:
    resp = put(client, admin_token, {"anthropic": {"api_key": anthropic_key, "model": "claude-sonnet-4-6"}})
    assert resp.status_code == 200 and resp.json["version"] == 1
    assert secret_versions(container)[container.config.secret_prefix + "acme/anthropic"] == 1
    # Same last four, different key: that is a rotation.
    lookalike = register_secret("sk-ant-api03-other-key-ab12")
    resp = put(client, admin_token, {"anthropic": {"api_key": lookalike}})
    assert resp.json["version"] == 2
    assert container.admin_settings.resolve_vendor_credentials("acme", "anthropic").api_key == lookalike
    # Re-sending the key still counts as sending it for a base_url change.
    resp = put(client, admin_token, {"anthropic": {"api_key": lookalike, "base_url": "https://gw.example.com"}})
    assert resp.status_code == 200 and resp.json["anthropic"]["base_url"] == "https://gw.example.com"
    assert set(client.get(PATH + "/audit", token=admin_token).json["items"][0]["changes"]) == {"anthropic.base_url"}


def test_suspension_reason_is_scrubbed_of_key_shaped_text(container: Any, configured: dict[str, Any]) -> None:
    leaked = register_secret("sk-proj-LEAKEDKEY123456")
    container.admin_settings.mark_vendor_suspended("acme", "anthropic", f"Incorrect API key provided: {leaked}")
    reason = container.admin_settings.get_eval_runner_settings(ADMIN).anthropic.status_reason
    assert reason is not None and leaked not in reason and "[redacted]" in reason


def test_judge_facts_in_prompts_is_off_by_default_audited_and_strict(client: Any, admin_token: str,
                                                                     member_token: str) -> None:
    on = client.put(PATH, token=admin_token, json_body={"judge_facts_in_prompts": True})
    assert on.status_code == 200 and on.json["judge_facts_in_prompts"] is True and on.json["version"] == 1
    audit = client.get(PATH + "/audit", token=admin_token).json["items"][0]
    assert audit["changes"] == {"judge_facts_in_prompts": {"from": False, "to": True}}
    for bad in (None, "yes", 1):
        refused = client.put(PATH, token=admin_token, json_body={"judge_facts_in_prompts": bad})
        assert refused.status_code == 400, bad
    assert client.get(PATH, token=admin_token).json["judge_facts_in_prompts"] is True
    assert client.put(PATH, token=member_token, json_body={"judge_facts_in_prompts": False}).status_code == 403
