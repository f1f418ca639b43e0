"""Repository globs: syntax, whole-text case-insensitive matching, refusals, and agreement with
fnmatch's reference semantics on generated patterns (fnmatch compiles to a regex; ours never does)."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.glob import MAX_GLOB_CHARS, GlobError, compile_glob


@pytest.mark.parametrize(("pattern", "text", "expected"), [
    ("github.com/acme/*", "github.com/acme/web", True),
    ("github.com/acme/*", "github.com/acme/web/sub", True),
    ("github.com/acme/*", "github.com/other/web", False),
    ("GitHub.com/ACME/*", "github.com/acme/web", True),
    ("*acme*", "https://github.com/acme/api.git", True),
    ("*acme", "https://github.com/acme/api.git", False),
    ("acme", "acme", True),
    ("acme", "acme2", False),
    ("ac?e", "acme", True),
    ("ac?e", "ace", False),
    ("*/api-[0-9]", "git/api-7", True),
    ("*/api-[0-9]", "git/api-x", False),
    ("*/api-[!0-9]", "git/api-x", True),
    ("[a-c]*", "Banana", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "axxb", False),
    ("*", "", True),
    ("a*b*c", "abc", True),
    ("a*b*c", "aXbYbZc", True),
    ("a*b*c", "acb", False),
    ("*ab*ab", "abab", True),
    ("*aab", "aaaab", True),
    ("[]]x", "]x", True),
    ("[a-]", "-", True),
])
def test_matches(pattern: str, text: str, expected: bool) -> None:
    assert compile_glob(pattern).matches(text) is expected


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("", "empty"),
    ("x" * (MAX_GLOB_CHARS + 1), "at most"),
    ("acme/[abc", "never closed"),
    ("acme]", "closes no"),
    ("[z-a]", "runs backwards"),
    ("acme\\", "escapes nothing"),
    ("acme\x00", "control character"),
])
def test_invalid_patterns_say_why(pattern: str, fragment: str) -> None:
    with pytest.raises(GlobError, match=fragment):
        compile_glob(pattern)


def test_a_hostile_pattern_over_a_long_text_reads_it_once_per_segment() -> None:
    # The textbook catastrophic case for a backtracking matcher; here each segment is one pass.
    glob = compile_glob("*a*a*a*a*a*a*a*a*a*b")
    assert glob.matches("a" * 2000) is False
    assert glob.matches("a" * 2000 + "b") is True


_PATTERNS = st.text(alphabet="ab*?[]!-", max_size=12)
_TEXTS = st.text(alphabet="abAB-]!", max_size=16)


@settings(max_examples=400, deadline=None)
@given(_PATTERNS, _TEXTS)
def test_agrees_with_fnmatch(pattern: str, text: str) -> None:
    try:
        glob = compile_glob(pattern)
    except GlobError:
        return  # fnmatch reads an unclosed '[' (or a stray ']') literally; we refuse it
    assert glob.matches(text) is fnmatch.fnmatchcase(text.lower(), pattern.lower())
