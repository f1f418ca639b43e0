"""Redaction on hostile input (issue #12): linear scans, one true positive per detector, no runs re-read.

The two inputs that were quadratic before the single-pass scanner (a 300 KB run of `eyJ` took
~30 s, a 300 KB run of `token=` several minutes) are kept here with pytest-timeout as a hang guard
only: they now take milliseconds, and the 10 s limit is three orders of magnitude above that, so a
loaded machine cannot make them flaky. Speed itself is measured in bench/sessions, not here.
"""

from __future__ import annotations

import re

import pytest

from chalicelib.ingest import redact_text
from chalicelib.ingest.redaction.assignments import ASSIGNMENT_PASSES as _ASSIGNMENT_PASSES
from chalicelib.ingest.redaction.tokens import PASSES as _PASSES
from chalicelib.ingest.redaction.tokens import TOKEN_DETECTORS as _TOKEN_DETECTORS

KB = 1024


def run(piece: str, size: int = 300 * KB) -> str:
    return (piece * (size // len(piece) + 1))[:size]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("piece", ["eyJ", "token=", "secret: ", "eyJa.", "-", "_", ":", "=", "--"])
def test_runs_that_were_quadratic_finish_and_stay_unredacted(piece: str) -> None:
    text = run(piece)
    assert redact_text(text) == (text, {})


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "piece",
    ["ghp_", "github_pat_", "sk_live_", "npm_", "hf_", "SG.", "AKIA", "AIza", "Bearer ", "BEARER ", "xapp-",
     "sk-ant-", "sk-", "glpat-", "xoxb-", "GR1348941", "pypi-AgEIcHlwaS5vcmc", "api_key=x!", "password=",
     "https://hooks.slack.com/services/T", "://a:@", "-u a:", "PuTTY-User-Key-File-2:",
     "aws_key = '", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo+/"],
)
def test_a_run_of_a_detectors_prefix_is_at_most_one_candidate(piece: str) -> None:
    # Where a detector's run class includes its own prefix (or a bare value swallows the keys that
    # follow it) the whole run is one token, read once; elsewhere every repeat fails in constant time.
    redacted, counts = redact_text(run(piece, 100 * KB) + "A1b")
    assert redacted.count("<redacted:") == sum(counts.values()) <= 1


def test_an_unterminated_pem_block_is_one_redaction_up_to_its_first_non_key_character() -> None:
    body = run("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n", 200 * KB)
    text = "key: -----BEGIN RSA PRIVATE KEY-----\n" + body + "} tail"
    assert redact_text(text) == ("key: <redacted:private_key>} tail", {"private_key": 1})


def test_nested_begin_lines_inside_an_unterminated_block_are_swallowed_not_rescanned() -> None:
    text = run("-----BEGIN PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n", 50 * KB)
    assert redact_text(text) == ("<redacted:private_key>", {"private_key": 1})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("npm_" + "a1B2" * 9, "<redacted:npm_token>"),
        ("hf_" + "aB3" * 12, "<redacted:huggingface_token>"),
        ("SG." + "a" * 22 + "." + "b" * 43, "<redacted:sendgrid_key>"),
        ("see https://hooks.slack.com/services/T0AB/B0CD/xyz123 now",
         "see <redacted:slack_webhook> now"),
        ("AIza" + "Sy" * 17 + "x", "<redacted:google_api_key>"),
        ("GR1348941" + "x" * 20, "<redacted:gitlab_token>"),
        ("xapp-1-" + "A1" * 6, "<redacted:slack_token>"),
        ("pypi-AgEIcHlwaS5vcmc" + "x" * 50, "<redacted:pypi_token>"),
        ("AUTHORIZATION: BEARER Zx81mQ0pLw55Zx81", "AUTHORIZATION: BEARER <redacted:bearer_token>"),
        ("-H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "-H 'Authorization: Basic <redacted:basic_auth>'"),
        ("aws_key = 'kQ9vT2mX7pL4sR8wN1cY6bH3jF5gD0aZ+eU/iO2t'",
         "aws_key = '<redacted:aws_secret_access_key>'"),
        ("PuTTY-User-Key-File-2: ssh-rsa\nPrivate-Lines: 1\nAAAA\nPrivate-MAC: 0a1b2c\nafter",
         "<redacted:private_key>\nafter"),
        ("login --token Qm9vX2Jhcl9iYXo5 --verbose", "login --token <redacted:secret_assignment> --verbose"),
        ("token=x;token=Qm9vX2Jhcl9iYXo5", "token=x;token=<redacted:secret_assignment>"),
    ],
)
def test_one_true_positive_per_detector(text: str, expected: str) -> None:
    assert redact_text(text)[0] == expected


def test_every_scan_starts_with_a_literal_anchor() -> None:
    # The property that keeps the scans fast and linear: `re` looks for a literal first and only
    # then tries the alternatives, all of which are fixed-width look-behinds or possessive runs.
    anchors = {detector.anchor for detector in _TOKEN_DETECTORS}
    assert {scan.pattern.pattern.split("(?:", 1)[0] for scan in _PASSES} == {re.escape(a) for a in anchors}
    assert [scan.pattern[:1] for scan in _ASSIGNMENT_PASSES] == ["=", ":"]
