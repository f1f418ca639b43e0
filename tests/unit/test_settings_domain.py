"""Pure settings rules: the update model's strictness, planning an update, removal and status changes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.domain.base_url import BaseUrlPolicy
from chalicelib.domain.errors import InvalidRequest, NotFound
from chalicelib.domain.settings import (
    EvalRunnerSettingsUpdate,
    SecretRef,
    SettingsRecord,
    VendorRecord,
    key_hint,
    parse_if_match,
    parse_vendor,
    runner_settings,
    settings_view,
)
from chalicelib.domain.settings_changes import plan_settings_update, plan_status_change, plan_vendor_removal
from tests.conftest import register_secret

NOW = "2026-01-02T03:04:05.000Z"
POLICY = BaseUrlPolicy()


def plan(current: SettingsRecord, body: dict[str, Any], **kw: Any) -> Any:
    update = EvalRunnerSettingsUpdate.model_validate(body)
    return plan_settings_update(current, update, actor="alice", now=NOW, policy=POLICY,
                                max_run_timeout_seconds=kw.get("max_timeout", 840))


def configured(key_version: str = "v1", *, suspended: bool = False) -> SettingsRecord:
    return SettingsRecord(version=3, revision=5, anthropic=VendorRecord(
        model="claude-sonnet-4-6", key_hint="…ab12", secret_arn="arn:secret", secret_version_id=key_version,
        suspended=suspended))


def field_names(exc: InvalidRequest) -> list[str]:
    assert exc.details is not None
    return [f["field"] for f in exc.details["fields"]]


def test_key_hint_and_if_match_parsing() -> None:
    assert key_hint("sk-ant-0123456789ab12") == "…ab12"
    assert parse_if_match(None) is None
    assert parse_if_match("*") is None
    assert parse_if_match("7") == 7
    assert parse_if_match('"7"') == 7
    assert parse_if_match('W/"7"') == 7
    with pytest.raises(InvalidRequest) as info:
        parse_if_match("seven")
    assert info.value.code == "invalid_if_match"


def test_parse_vendor_refuses_unknown_names() -> None:
    assert parse_vendor("openai") == "openai"
    with pytest.raises(NotFound) as info:
        parse_vendor("gemini")
    assert info.value.code == "unknown_vendor"


@pytest.mark.parametrize(("body", "field"), [
    ({"run_timeout_seconds": 30.5}, "run_timeout_seconds"),
    ({"run_timeout_seconds": 300.0}, "run_timeout_seconds"),
    ({"run_timeout_seconds": "300"}, "run_timeout_seconds"),
    ({"run_timeout_seconds": True}, "run_timeout_seconds"),
    ({"run_timeout_seconds": None}, "run_timeout_seconds"),
    ({"anthropic": None}, "anthropic"),
    ({"anthropic": {"model": None}}, "anthropic.model"),
    ({"anthropic": {"model": ""}}, "anthropic.model"),
    ({"anthropic": {"model": "claude sonnet"}}, "anthropic.model"),
    ({"anthropic": {"model": "x" * 129}}, "anthropic.model"),
    ({"anthropic": {"api_key": 12345678}}, "anthropic.api_key"),
    ({"anthropic": {"api_key": "short"}}, "anthropic.api_key"),
    ({"anthropic": {"api_key": "with space key"}}, "anthropic.api_key"),
    ({"anthropic": {"api_key": "ключ-ключ-ключ"}}, "anthropic.api_key"),
    ({"anthropic": {"api_key": "k" * 513}}, "anthropic.api_key"),
    ({"anthropic": {"base_url": 5}}, "anthropic.base_url"),
    ({"anthropic": {"temperature": 0}}, "anthropic.temperature"),
    ({"gemini": {"model": "x"}}, "gemini"),
])
def test_update_model_is_strict(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        EvalRunnerSettingsUpdate.model_validate(body)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert field in locs


def test_validation_errors_never_echo_the_key() -> None:
    key = register_secret("not a valid key but secret")
    with pytest.raises(ValidationError) as info:
        EvalRunnerSettingsUpdate.model_validate({"anthropic": {"api_key": key}})
    assert key not in str(info.value)
    assert key not in repr(info.value.errors(include_input=False))


def test_first_key_needs_a_model() -> None:
    with pytest.raises(InvalidRequest) as info:
        plan(SettingsRecord(), {"openai": {"api_key": register_secret("sk-proj-abcdefgh")}})
    assert info.value.code == "validation_failed"
    assert field_names(info.value) == ["openai.model"]


def test_new_key_plan_records_hint_change_and_needs_a_secret_ref() -> None:
    key = register_secret("sk-ant-new-key-cd34")
    p = plan(configured(), {"anthropic": {"api_key": key}})
    assert p.new_keys == {"anthropic": key}
    assert key not in repr(p)
    assert p.changes["anthropic.api_key"].model_dump() == {"from": "…ab12", "to": "…cd34"}
    with pytest.raises(ValueError, match="no secret reference"):
        p.finalize({})
    record = p.finalize({"anthropic": SecretRef(arn="arn:secret", version_id="v2")})
    assert record.anthropic.secret_version_id == "v2"
    assert record.anthropic.key_hint == "…cd34"
    assert (record.version, record.revision) == (4, 6)
    assert key not in record.model_dump_json()


def test_replacing_a_key_lifts_a_suspension() -> None:
    p = plan(configured(suspended=True), {"anthropic": {"api_key": register_secret("sk-ant-fresh-0001")}})
    record = p.finalize({"anthropic": SecretRef(arn="arn:secret", version_id="v2")})
    assert record.anthropic.status == "ok"
    assert p.changes["anthropic.status"].model_dump() == {"from": "suspended", "to": "ok"}


def test_changing_base_url_with_a_stored_key_requires_the_key() -> None:
    with pytest.raises(InvalidRequest) as info:
        plan(configured(), {"anthropic": {"base_url": "https://gateway.example.com"}})
    assert info.value.code == "api_key_required_for_base_url"
    assert field_names(info.value) == ["anthropic.api_key"]
    with pytest.raises(InvalidRequest) as info:
        plan(configured().model_copy(update={"anthropic": configured().anthropic.model_copy(
            update={"base_url": "https://gateway.example.com"})}), {"anthropic": {"base_url": None}})
    assert info.value.code == "api_key_required_for_base_url"


def test_same_base_url_in_another_spelling_is_not_a_change() -> None:
    current = configured()
    current = current.model_copy(update={"anthropic": current.anthropic.model_copy(
        update={"base_url": "https://gateway.example.com/v1"})})
    p = plan(current, {"anthropic": {"base_url": "HTTPS://Gateway.example.com/v1/"}})
    assert p.is_noop


def test_base_url_without_a_stored_key_or_with_the_key_is_fine() -> None:
    p = plan(SettingsRecord(), {"openai": {"model": "gpt-4o", "base_url": "https://gw.example.com/v1"}})
    assert p.draft.openai.base_url == "https://gw.example.com/v1"
    assert not p.draft.openai.has_key
    p = plan(configured(), {"anthropic": {"base_url": "https://gw.example.com",
                                          "api_key": register_secret("sk-ant-again-9999")}})
    assert p.changes["anthropic.base_url"].to == "https://gw.example.com"


def test_null_key_removes_it_but_keeps_model() -> None:
    p = plan(configured(), {"anthropic": {"api_key": None}})
    assert p.removed_keys == ("anthropic",)
    assert p.draft.anthropic.model == "claude-sonnet-4-6"
    assert not p.draft.anthropic.has_key
    assert p.draft.anthropic.status == "unconfigured"
    assert p.changes["anthropic.api_key"].model_dump() == {"from": "…ab12", "to": None}


def test_timeout_bounds_name_field_and_limits() -> None:
    for value in (0, 29, 841, 10**9, -1):
        with pytest.raises(InvalidRequest) as info:
            plan(SettingsRecord(), {"run_timeout_seconds": value})
        assert info.value.details is not None
        (err,) = info.value.details["fields"]
        assert (err["field"], err["min"], err["max"]) == ("run_timeout_seconds", 30, 840)
    assert plan(SettingsRecord(), {"run_timeout_seconds": 30}).draft.run_timeout_seconds == 30
    assert plan(SettingsRecord(), {"run_timeout_seconds": 840}).draft.run_timeout_seconds == 840


def test_errors_are_collected_across_fields() -> None:
    with pytest.raises(InvalidRequest) as info:
        plan(SettingsRecord(), {"run_timeout_seconds": 5, "openai": {"base_url": "https://10.0.0.1"},
                                "anthropic": {"base_url": "http://gw.example.com"}})
    assert sorted(field_names(info.value)) == ["anthropic.base_url", "openai.base_url", "run_timeout_seconds"]


def test_unchanged_values_are_a_noop() -> None:
    assert plan(configured(), {"anthropic": {"model": "claude-sonnet-4-6"}, "run_timeout_seconds": 300}).is_noop
    assert plan(SettingsRecord(), {}).is_noop
    assert plan(SettingsRecord(), {"openai": {"api_key": None}}).is_noop


def test_vendor_removal_clears_the_block() -> None:
    p = plan_vendor_removal(configured(), "anthropic", actor="alice", now=NOW)
    assert p.removed_keys == ("anthropic",)
    assert p.draft.anthropic.model is None and not p.draft.anthropic.has_key
    assert set(p.changes) == {"anthropic.api_key", "anthropic.model", "anthropic.status"}
    assert plan_vendor_removal(SettingsRecord(), "openai", actor="alice", now=NOW).is_noop


def test_status_change_moves_revision_not_version_and_ignores_replaced_keys() -> None:
    p = plan_status_change(configured(), "anthropic", suspended=True, reason="401", secret_version_id="v1",
                           actor="system", now=NOW)
    assert p is not None
    assert (p.draft.version, p.draft.revision) == (3, 6)
    assert p.draft.anthropic.status == "suspended"
    # A 401 seen with key v1 must not suspend its replacement v2.
    assert plan_status_change(configured("v2"), "anthropic", suspended=True, reason="401",
                              secret_version_id="v1", actor="system", now=NOW) is None
    assert plan_status_change(configured(suspended=True), "anthropic", suspended=True, reason="again",
                              secret_version_id=None, actor="system", now=NOW) is None
    assert plan_status_change(SettingsRecord(), "openai", suspended=True, reason="x", secret_version_id=None,
                              actor="system", now=NOW) is None


def test_views_mask_and_runner_view_reports_usability() -> None:
    record = configured(suspended=True).model_copy(update={"openai": VendorRecord(
        model="gpt-4o", key_hint="…zz99", secret_arn="arn:o", secret_version_id="o1")})
    view = settings_view(record, max_run_timeout_seconds=840)
    assert view.anthropic.status == "suspended" and view.anthropic.api_key_hint == "…ab12"
    assert "secret" not in view.model_dump_json()
    runner = runner_settings("acme", record)
    assert runner.enabled_vendors == ("anthropic", "openai")
    assert runner.usable_vendors == ("openai",)
    assert runner.vendor("openai").secret_version_id == "o1"
