"""Catalog shape and the questions/skip selection rules (reference §1.1, §1.3)."""

from __future__ import annotations

import pytest

from chalicelib.domain.errors import InvalidRequest
from chalicelib.judges.catalog import (
    CATEGORIES,
    QUESTIONS,
    Question,
    check_catalog,
    get_question,
    select_questions,
)

EXPECTED = [
    ("safety", "sensitive_files", False),
    ("safety", "destructive_commands", True),
    ("safety", "security_vulnerabilities", False),
    ("safety", "permission_bypass", False),
    ("plan_adherence", "followed_plan", False),
    ("plan_adherence", "completed_items", False),
    ("plan_adherence", "unplanned_changes", False),
    ("quality", "tests_written", True),
    ("quality", "broken_tests", True),
    ("quality", "over_engineering", False),
    ("efficiency", "redundant_calls", False),
    ("efficiency", "repeated_failures", False),
    ("efficiency", "direct_approach", True),
]


def ids(questions: list[Question]) -> list[str]:
    return [q.id for q in questions]


def test_catalog_matches_reference_taxonomy() -> None:
    assert [(q.category, q.id, q.needs_tools) for q in QUESTIONS] == EXPECTED
    assert CATEGORIES == ("safety", "plan_adherence", "quality", "efficiency")


def test_every_prompt_states_the_polarity_and_has_no_placeholders() -> None:
    for q in QUESTIONS:
        assert q.text.strip() and q.prompt.strip()
        assert "Score 5" in q.prompt and "Score 1" in q.prompt, q.id
        assert "{" not in q.prompt and "}" not in q.prompt, q.id


def test_get_question() -> None:
    assert get_question("tests_written") == QUESTIONS[7]
    assert get_question("nope") is None


def test_neither_given_means_full_catalog() -> None:
    assert select_questions(None, None) == list(QUESTIONS)


def test_category_expands() -> None:
    assert ids(select_questions(["safety"], None)) == [
        "sensitive_files",
        "destructive_commands",
        "security_vulnerabilities",
        "permission_bypass",
    ]


@pytest.mark.parametrize("request_value", [["safety", "tests_written"], ["safety,tests_written"]])
def test_category_plus_id(request_value: list[str]) -> None:
    assert len(select_questions(request_value, None)) == 5


def test_skip_category() -> None:
    selected = select_questions(None, ["efficiency"])
    assert len(selected) == 10
    assert all(q.category != "efficiency" for q in selected)


def test_skip_ids_and_category_mix() -> None:
    selected = ids(select_questions(None, ["safety", "over_engineering"]))
    assert len(selected) == 8
    assert "over_engineering" not in selected and "sensitive_files" not in selected


def test_empty_skip_skips_nothing() -> None:
    assert select_questions(None, []) == list(QUESTIONS)


def test_result_is_deduplicated_in_catalog_order() -> None:
    selected = ids(select_questions(["direct_approach", " safety ", "sensitive_files", "direct_approach", ""], None))
    assert selected == [
        "sensitive_files",
        "destructive_commands",
        "security_vulnerabilities",
        "permission_bypass",
        "direct_approach",
    ]


def test_both_given_is_an_error() -> None:
    with pytest.raises(InvalidRequest) as err:
        select_questions(["safety"], ["efficiency"])
    assert err.value.code == "questions_and_skip_exclusive"


def test_both_given_even_when_empty() -> None:
    with pytest.raises(InvalidRequest) as err:
        select_questions([], [])
    assert err.value.code == "questions_and_skip_exclusive"


def test_tokens_are_trimmed() -> None:
    assert len(select_questions(["  safety ", " tests_written"], None)) == 5


@pytest.mark.parametrize("token", ["Safety", "tests-written", "bogus", "TESTS_WRITTEN"])
def test_unknown_token_lists_valid_choices(token: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        select_questions([token, "safety"], None)
    assert err.value.code == "unknown_question"
    assert err.value.details is not None
    assert err.value.details["unknown"] == [token]
    assert err.value.details["valid_categories"] == list(CATEGORIES)
    assert err.value.details["valid_question_ids"] == [q.id for q in QUESTIONS]


def test_unknown_in_skip_is_an_error_too() -> None:
    with pytest.raises(InvalidRequest) as err:
        select_questions(None, ["nope"])
    assert err.value.code == "unknown_question"


@pytest.mark.parametrize("questions", [[], [""], [" ", ","]])
def test_empty_include_is_an_error_not_the_full_catalog(questions: list[str]) -> None:
    with pytest.raises(InvalidRequest) as err:
        select_questions(questions, None)
    assert err.value.code == "empty_selection"


def test_skipping_everything_is_an_empty_selection() -> None:
    with pytest.raises(InvalidRequest) as err:
        select_questions(None, list(CATEGORIES))
    assert err.value.code == "empty_selection"


def test_duplicate_ids_in_a_supplied_catalog_are_a_controlled_error() -> None:
    dup = [QUESTIONS[0], QUESTIONS[0]]
    with pytest.raises(ValueError, match="duplicate question ids"):
        check_catalog(dup)
    with pytest.raises(ValueError, match="duplicate question ids"):
        select_questions(None, None, catalog=dup)


def test_category_matched_before_id() -> None:
    q = QUESTIONS[0]
    catalog = [q, q.model_copy(update={"category": "x", "id": "y"})]
    assert ids(select_questions(["x"], None, catalog=catalog)) == ["y"]


def test_an_empty_rubric_stays_out_of_the_wire_form() -> None:
    # A daemon released before rubrics refuses unknown keys: only a question with a rubric carries one.
    assert "rubric" not in QUESTIONS[0].model_dump(mode="json")
    with_rubric = QUESTIONS[0].model_copy(update={"rubric": "5: fine"})
    assert with_rubric.model_dump(mode="json")["rubric"] == "5: fine"
    assert Question.model_validate(QUESTIONS[0].model_dump(mode="json")) == QUESTIONS[0]
