"""Rule rules (pure): deterministic sampling shared by rules of equal rate, filters, and what a rule
body may hold (each bad field is a validation error naming it)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.domain.automation import EvalRuleInput, RuleFilter, SessionFacts, is_sampled, sample_position

SESSIONS = [f"sess-{i}" for i in range(2000)]


def facts(**kw: Any) -> SessionFacts:
    base: dict[str, Any] = {"session_id": "s1", "repository": "github.com/acme/web", "format": "claude-code",
                            "uploaded_by": "bob", "entries": 40}
    return SessionFacts(**{**base, **kw})


def test_sampling_depends_on_tenant_and_session_only() -> None:
    assert sample_position("acme", "s1") == sample_position("acme", "s1")
    assert sample_position("acme", "s1") != sample_position("globex", "s1")
    assert all(0 <= sample_position("acme", s) < 1 for s in SESSIONS[:200])


def test_rules_with_the_same_rate_pick_the_same_sessions_and_a_lower_rate_a_subset() -> None:
    tenth = {s for s in SESSIONS if is_sampled(0.1, "acme", s)}
    tenth_again = {s for s in SESSIONS if is_sampled(0.1, "acme", s)}
    half = {s for s in SESSIONS if is_sampled(0.5, "acme", s)}
    assert tenth == tenth_again
    assert tenth < half
    # The share is what the rate says (2000 sessions: within a few points).
    assert 0.07 < len(tenth) / len(SESSIONS) < 0.13
    assert 0.45 < len(half) / len(SESSIONS) < 0.55


def test_rate_bounds_take_all_or_nothing() -> None:
    assert all(is_sampled(1.0, "acme", s) for s in SESSIONS[:100])
    assert not any(is_sampled(0.0, "acme", s) for s in SESSIONS[:100])


def test_filter_conditions_all_hold() -> None:
    flt = RuleFilter(repository="github.com/acme/*", format=["claude-code"], users=["bob"], min_entries=10)
    assert flt.matches(facts())
    assert not flt.matches(facts(repository="github.com/globex/web"))
    assert not flt.matches(facts(repository=None))
    assert not flt.matches(facts(format="codex"))
    assert not flt.matches(facts(uploaded_by="carol"))
    assert not flt.matches(facts(entries=9))
    assert RuleFilter().matches(facts(repository=None))


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "r", "sample_rate": 1.5}, "sample_rate"),
    ({"name": "r", "sample_rate": -0.1}, "sample_rate"),
    ({"name": "r", "sample_rate": "half"}, "sample_rate"),
    ({"name": "r", "sample_rate": True}, "sample_rate"),
    ({"name": "r"}, "sample_rate"),
    ({"name": " ", "sample_rate": 0.5}, "name"),
    ({"name": "r", "sample_rate": 0.5, "filter": {"repository": "acme/[x"}}, "filter.repository"),
    ({"name": "r", "sample_rate": 0.5, "filter": {"format": ["zip"]}}, "filter.format.0"),
    ({"name": "r", "sample_rate": 0.5, "filter": {"min_entries": -1}}, "filter.min_entries"),
    ({"name": "r", "sample_rate": 0.5, "filter": {"colour": "red"}}, "filter.colour"),
    ({"name": "r", "sample_rate": 0.5, "mode": "later"}, "mode"),
    ({"name": "r", "sample_rate": 0.5, "vendor": "mistral"}, "vendor"),
    ({"name": "r", "sample_rate": 0.5, "questions": []}, "questions"),
])
def test_bad_rule_bodies_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        EvalRuleInput.model_validate(body)
    assert field in {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}


def test_an_invalid_glob_says_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="never closed"):
        EvalRuleInput.model_validate({"name": "r", "sample_rate": 1, "filter": {"repository": "acme/[x"}})
