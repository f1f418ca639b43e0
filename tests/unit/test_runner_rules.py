"""The eval dialog's runner rules, pure: settings x daemons → GET /eval/runners and the dispatch choice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from chalicelib.domain.catalog import ResolvedCatalog, default_catalog, enabled_view
from chalicelib.domain.errors import Conflict, DomainError, InvalidRequest
from chalicelib.domain.settings import EvalRunnerSettings, SettingsRecord, VendorRecord, runner_settings
from chalicelib.judges.catalog import QUESTIONS, Question
from chalicelib.services.eval_runners import (
    DEFAULT_THRESHOLD,
    EvalRunRequest,
    RunnerChoice,
    check_idempotency_key,
    check_threshold,
    choose_runner,
    plan_dispatch,
    runner_options,
)

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o"}
BUILTINS = default_catalog().resolved()


@dataclass(frozen=True)
class Daemon:
    daemon_id: str
    name: str
    last_seen_at: str | None = "2026-11-29T10:00:00.000Z"


LAPTOP = Daemon("dmn_laptop", "laptop")
DESKTOP = Daemon("dmn_desktop", "desktop", "2026-11-29T09:00:00.000Z")


def settings(ok: Sequence[str] = (), suspended: Sequence[str] = ()) -> EvalRunnerSettings:
    blocks = {}
    for vendor in (*ok, *suspended):
        blocks[vendor] = VendorRecord(model=MODELS[vendor], key_hint="…abcd", secret_version_id="v1",
                                      secret_arn=f"arn:{vendor}", suspended=vendor in suspended)
    return runner_settings("acme", SettingsRecord(version=1, **blocks))


def request(**fields: object) -> EvalRunRequest:
    return EvalRunRequest.model_validate(fields)


def choose(s: EvalRunnerSettings, daemons: Sequence[Daemon] = (), **fields: object) -> RunnerChoice:
    return choose_runner(s, request(**fields), lambda: list(daemons))


def error_of(s: EvalRunnerSettings, daemons: Sequence[Daemon] = (), **fields: object) -> DomainError:
    with pytest.raises(DomainError) as exc:
        choose(s, daemons, **fields)
    return exc.value


# ----------------------------------------------------------------------------- GET /eval/runners

@pytest.mark.parametrize(("ok", "suspended", "daemons", "vendors", "required", "default", "routes"), [
    ((), (), (), [], False, None, []),
    ((), (), (LAPTOP,), [], False, None, ["daemon"]),
    (("anthropic",), (), (), ["anthropic"], False, "anthropic", ["server"]),
    (("openai",), (), (LAPTOP,), ["openai"], False, "openai", ["server", "daemon"]),
    (("anthropic", "openai"), (), (), ["anthropic", "openai"], True, None, ["server"]),
    (("anthropic", "openai"), (), (LAPTOP,), ["anthropic", "openai"], True, None, ["server", "daemon"]),
    ((), ("anthropic",), (), [], False, None, []),
    ((), ("anthropic",), (LAPTOP,), [], False, None, ["daemon"]),
    (("openai",), ("anthropic",), (), ["openai"], False, "openai", ["server"]),
    ((), ("anthropic", "openai"), (LAPTOP, DESKTOP), [], False, None, ["daemon"]),
])
def test_dialog_matrix(ok: tuple[str, ...], suspended: tuple[str, ...], daemons: tuple[Daemon, ...],
                       vendors: list[str], required: bool, default: str | None, routes: list[str]) -> None:
    view = runner_options(settings(ok, suspended), daemons).model_dump(mode="json")
    assert view["server"]["vendors"] == vendors
    assert view["server"]["vendor_required"] is required
    assert view["server"]["default_vendor"] == default
    assert view["daemon"]["available"] is bool(daemons)
    assert [d["daemon_id"] for d in view["daemon"]["daemons"]] == [d.daemon_id for d in daemons]
    assert view["run_button"] == {"visible": bool(routes), "routes": routes}


def test_dialog_lists_daemon_fields_in_given_order() -> None:
    view = runner_options(settings(), [LAPTOP, DESKTOP]).model_dump(mode="json")
    assert view["daemon"]["daemons"] == [
        {"daemon_id": "dmn_laptop", "name": "laptop", "last_seen_at": "2026-11-29T10:00:00.000Z"},
        {"daemon_id": "dmn_desktop", "name": "desktop", "last_seen_at": "2026-11-29T09:00:00.000Z"}]


def test_dialog_names_the_models_of_offered_vendors_only() -> None:
    view = runner_options(settings(("openai",), ("anthropic",)), [])
    assert view.server.models == {"openai": "gpt-4o"}


# ------------------------------------------------------------------------------- dispatch choice

def test_one_vendor_is_used_implicitly() -> None:
    assert choose(settings(("openai",)), [LAPTOP]) == RunnerChoice(runner="server", vendor="openai",
                                                                   model="gpt-4o")


def test_both_vendors_require_a_choice_naming_them() -> None:
    err = error_of(settings(("anthropic", "openai")), [LAPTOP])
    assert isinstance(err, InvalidRequest) and err.status == 400
    assert err.code == "vendor_required"
    assert err.details == {"choices": ["anthropic", "openai"], "field": "vendor"}
    assert "anthropic or openai" in err.message


def test_both_vendors_and_a_named_one() -> None:
    choice = choose(settings(("anthropic", "openai")), vendor="anthropic")
    assert (choice.runner, choice.vendor, choice.model) == ("server", "anthropic", "claude-sonnet-4-6")


def test_both_vendors_but_runner_daemon_needs_no_vendor() -> None:
    choice = choose(settings(("anthropic", "openai")), [DESKTOP, LAPTOP], runner="daemon")
    assert choice == RunnerChoice(runner="daemon", daemon_id="dmn_desktop")


def test_named_vendor_not_enabled_is_409() -> None:
    err = error_of(settings(("anthropic",)), vendor="openai")
    assert isinstance(err, Conflict) and err.code == "vendor_not_enabled"
    assert err.details == {"vendor": "openai", "enabled_vendors": ["anthropic"]}


def test_named_suspended_vendor_is_409_and_says_an_admin_must_replace_the_key() -> None:
    err = error_of(settings(("openai",), ("anthropic",)), vendor="anthropic")
    assert isinstance(err, Conflict) and err.code == "vendor_suspended"
    assert "admin must replace the key" in err.message


def test_suspended_vendor_is_not_implicit_but_the_other_one_is() -> None:
    choice = choose(settings(("openai",), ("anthropic",)))
    assert (choice.runner, choice.vendor) == ("server", "openai")


def test_none_enabled_falls_back_to_the_most_recent_daemon() -> None:
    assert choose(settings(), [LAPTOP, DESKTOP]) == RunnerChoice(runner="daemon", daemon_id="dmn_laptop")


def test_none_enabled_and_no_daemon_is_no_runner_available() -> None:
    err = error_of(settings())
    assert isinstance(err, Conflict) and err.code == "no_runner_available"


def test_only_a_suspended_vendor_and_no_daemon_explains_the_suspension() -> None:
    assert error_of(settings((), ("openai",))).code == "vendor_suspended"


def test_only_a_suspended_vendor_with_a_daemon_routes_to_the_daemon() -> None:
    assert choose(settings((), ("openai",)), [LAPTOP]).runner == "daemon"


def test_explicit_daemon_without_daemon_is_409() -> None:
    err = error_of(settings(("anthropic",)), runner="daemon")
    assert isinstance(err, Conflict) and err.code == "no_daemon_available"


def test_explicit_daemon_with_a_vendor_is_400() -> None:
    assert error_of(settings(("anthropic",)), [LAPTOP], runner="daemon", vendor="anthropic").code == \
        "vendor_not_applicable"


def test_explicit_server_without_vendor_is_409() -> None:
    err = error_of(settings(), [LAPTOP], runner="server")
    assert isinstance(err, Conflict) and err.code == "no_server_vendor"
    assert error_of(settings((), ("anthropic",)), [LAPTOP], runner="server").code == "vendor_suspended"


def test_explicit_server_with_one_vendor() -> None:
    assert choose(settings(("anthropic",)), runner="server").vendor == "anthropic"


def test_server_dispatch_never_asks_for_daemons() -> None:
    def no_lookup() -> list[Daemon]:
        raise AssertionError("daemons looked up on a server dispatch")

    choose_runner(settings(("anthropic",)), request(), no_lookup)
    choose_runner(settings(("anthropic", "openai")), request(vendor="openai"), no_lookup)


# ------------------------------------------------------------------------------- request checks

def test_request_rejects_unknown_fields_and_wrong_types() -> None:
    with pytest.raises(ValidationError):
        EvalRunRequest.model_validate({"vendor": "anthropic", "temperature": 0})
    with pytest.raises(ValidationError):
        EvalRunRequest.model_validate({"vendor": "bedrock"})
    with pytest.raises(ValidationError):
        EvalRunRequest.model_validate({"threshold": "2000"})
    with pytest.raises(ValidationError):
        EvalRunRequest.model_validate({"chain": "yes"})


@pytest.mark.parametrize("value", [-1, 200_001])
def test_threshold_out_of_range(value: int) -> None:
    with pytest.raises(InvalidRequest) as exc:
        check_threshold(value)
    assert exc.value.code == "threshold_out_of_range"


def test_threshold_bounds_and_default() -> None:
    assert check_threshold(None) == DEFAULT_THRESHOLD
    assert check_threshold(0) == 0  # same range as eval-context: 0 truncates every tool output
    assert check_threshold(1) == 1
    assert check_threshold(200_000) == 200_000


@pytest.mark.parametrize("key", ["a" * 129, "has space", "hash#key", "ünïcode", "new\nline"])
def test_idempotency_key_shape(key: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        check_idempotency_key(key)
    assert exc.value.code == "invalid_idempotency_key"


def test_idempotency_key_accepts_uuids_and_base64() -> None:
    assert check_idempotency_key("3f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f") is not None
    assert check_idempotency_key("YWJj+ZGVm/Z2hp==") is not None
    assert check_idempotency_key(None) is None


def test_plan_selects_questions_and_validates_before_runner_rules() -> None:
    plan = plan_dispatch(request(questions=["safety", "direct_approach"], threshold=5000, chain=True),
                         settings(("anthropic",)), lambda: [], BUILTINS)
    assert [q.id for q in plan.questions] == ["sensitive_files", "destructive_commands",
                                              "security_vulnerabilities", "permission_bypass", "direct_approach"]
    assert (plan.threshold, plan.chain, plan.choice.vendor) == (5000, True, "anthropic")
    # A bad selection is reported even when no runner is available.
    with pytest.raises(InvalidRequest) as exc:
        plan_dispatch(request(questions=["nope"]), settings(), lambda: [], BUILTINS)
    assert exc.value.code == "unknown_question"


def test_catalog_is_13_questions_in_catalog_order() -> None:
    catalog = enabled_view(BUILTINS).model_dump()["questions"]
    assert len(catalog) == 13
    assert [q["category"] for q in catalog][:1] == ["safety"]
    assert {"category", "id", "text", "needs_tools"} <= set(catalog[0])


def _tenant_catalog() -> ResolvedCatalog:
    custom = Question(category="docs", id="changelog_updated", text="Changelog?", prompt="Changelog?",
                      rubric="5: yes")
    return ResolvedCatalog(version=7, questions=(*QUESTIONS[4:], custom), disabled_ids=("sensitive_files",))


def test_dispatch_selects_tenant_questions_and_categories_and_records_the_version() -> None:
    plan = plan_dispatch(request(questions=["docs", "followed_plan"]), settings(("anthropic",)), lambda: [],
                         _tenant_catalog())
    assert [q.id for q in plan.questions] == ["followed_plan", "changelog_updated"]
    assert plan.catalog_version == 7 and not plan.trial
    skipped = plan_dispatch(request(skip=["docs"]), settings(("anthropic",)), lambda: [], _tenant_catalog())
    assert [q.id for q in skipped.questions] == [q.id for q in QUESTIONS[4:]]


def test_a_disabled_question_is_named_as_such() -> None:
    with pytest.raises(InvalidRequest) as exc:
        plan_dispatch(request(questions=["sensitive_files"]), settings(("anthropic",)), lambda: [],
                      _tenant_catalog())
    assert exc.value.code == "question_disabled"
    assert exc.value.details is not None and exc.value.details["disabled"] == ["sensitive_files"]


def test_a_trial_judges_exactly_its_question_and_takes_no_selection() -> None:
    draft = Question(category="data", id="migrations_down", text="Reversible?", prompt="Reversible?")
    plan = plan_dispatch(request(), settings(("anthropic",)), lambda: [], _tenant_catalog(), trial=draft)
    assert plan.questions == [draft] and plan.trial and plan.catalog_version == 7
    with pytest.raises(InvalidRequest) as exc:
        plan_dispatch(request(questions=["docs"]), settings(("anthropic",)), lambda: [], _tenant_catalog(),
                      trial=draft)
    assert exc.value.code == "selection_not_applicable"
