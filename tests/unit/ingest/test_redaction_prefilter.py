"""The redaction prefilter finds every place a detector can match, so the scans it narrows give
exactly the redactions of the full scans (issue #19: redaction at >= 100 MB/s).

The full scans (`secret_spans(text, None)`) are the reference: they are what the detector tests
and the detect-secrets oracle in test_redaction.py hold to. Here the prefiltered result must equal
them on the fixtures, on hostile runs and on a seeded corpus of near misses around every detector
(prefixes, cut-off tokens, case variants, non-ASCII look-alikes that `re` treats as letters,
spaces or digits). Speed is measured in bench/sessions, not here.
"""

from __future__ import annotations

import random

import pytest

from chalicelib.domain.trace import entry_to_json
from chalicelib.ingest.redaction import secret_spans
from chalicelib.ingest.redaction.prefilter import (
    NO_CANDIDATES,
    available,
    find_candidates,
    find_candidates_many,
)
from chalicelib.ingest.redaction.tokens import PASSES, TOKEN_DETECTORS

from .support import parse_fixture, strings

pytestmark = pytest.mark.skipif(not available(), reason="the hyperscan package is not installed")

KB = 1024
# True positives of every detector and the keys of assignments, whole and cut short.
SEEDS = [
    "sk-ant-api03-Zq8Wm3Rt6Yp1Kv4Nx7Bc0Hs5Lj2Gd9Fa-Ue8Io3Pw6Qe1Ry4Tu7Xm0Cn5Vb2Az9Sd",
    "sk-proj-Vb7Nm2Kl9Jh4Gf1Ds6Ap3Oi8Uy5Tr0EwQz2Xc7Vb4Nm9", "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q",
    "github_pat_11ABCDE2Y0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789", "glpat-Xy7Zq2Wv9Ub4Tc1Sd6Re",
    "gloas-Xy7Zq2Wv9Ub4Tc1Sd6Re", "xoxb-2048163594-7315928406152-Qw8Er4Ty1Ui7Op3As9Df6Gh", "xapp-1-A1A1A1A1A1A1",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig", "sk_live_51Hx7Qw2Er9Ty4Ui1Op6As3Df",
    "rk_test_51Hx7Qw2Er9Ty4Ui1Op6As3Df", "AKIAQ3EGRPSLKDTZW7NB", "ASIAQ3EGRPSLKDTZW7NB", "A3TXQ3EGRPSLKDTZW7NB",
    "AIza" + "Sy" * 17 + "x", "npm_" + "a1B2" * 9, "hf_" + "aB3" * 12, "pypi-AgEIcHlwaS5vcmc" + "x" * 50,
    "SG." + "a" * 22 + "." + "b" * 43, "GR1348941" + "x" * 20, "Bearer Zx81mQ0pLw55Zx81", "BEARER Zx81mQ0pLw55Zx81",
    "bearer\u00a0Zx81mQ0pLw55Zx81", "https://hooks.slack.com/services/T0AB/B0CD/xyz123",
    "postgres://user:p@ss:w0rd@db:5432/x", "redis://:Hunt3r22@cache:6379", "curl -u admin:S3cretPass1",
    "--user admin:S3cretPass1", "--password Tr0ub4dor", "--api-key 'Zx81mQ0pLw55'", "--ſecret Zx81mQ0pLw55",
    "--Kelvin-token Zx81mQ0pLw55", "--İtoken Zx81mQ0pLw55",
    "aws_secret = 'kQ9vT2mX7pL4sR8wN1cY6bH3jF5gD0aZ+eU/iO2t'", "AWS_KEY=\"kQ9vT2mX7pL4sR8wN1cY6bH3jF5gD0aZ+eU/iO2t\"",
    "Aws pwd 'kQ9vT2mX7pL4sR8wN1cY6bH3jF5gD0aZ+eU/iO2t'",
    "-----BEGIN RSA PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n"
    "-----END RSA PRIVATE KEY-----", "PuTTY-User-Key-File-2: ssh-rsa\nPrivate-MAC: 0a1b2c",
    "DB_PASSWORD=Xk7!pQ2mZ9vR", "api_key: 'Zx81mQ0pLw55'", '"clientSecret": "Ab3Cd5Ef7Gh9"',
    "SECRET_KEY_BASE=9d4f2a7c1e8b",
    'token\\": \\"Qm9vX2Jhcl9iYXo5\\"', "token=token=token=Qm9vX2Jhcl9iYXo5", "secret: secret: Zx81mQ0pLw55",
    "PASSWORD => hunter22!", "Authorization: Basic dXNlcjpwYXNzd29yZA==", "aws_secret_access_key = " + "k" * 40,
    "password:= x9!", "key:\tvalue12345678", "token == 5", "credentials::x", "x-auth-key: Zx81mQ0pLw55",
]
PIECES = [" ", "\n", "\t", "-", "--", "_", "__", ":", "=", "==", "://", "@", "/", '"', "'", "\\", ".", ",", "$",
          "x", "A", "9", "aB3", "eyJ", "sk", "gh", "xox", "Bea", "aws", "token", "PASS", "key", "Secret",
          "------", "ſ", "K", "İ", "ı", "é", "\u00a0", "\u2003", "\u0663", "\u1680", "\x1c"]


def _corpus() -> list[str]:
    rng = random.Random(19)
    texts = []
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.5:
                seed = rng.choice(SEEDS)
                cut = rng.randint(1, len(seed)) if rng.random() < 0.4 else len(seed)
                seed = seed[:cut]
                parts.append(seed.swapcase() if rng.random() < 0.1 else seed)
            else:
                parts.append(rng.choice(PIECES) * rng.choice((1, 1, 2, 7)))
        texts.append("".join(parts))
    return texts


CORPUS = _corpus()
HOSTILE = [(piece * (20 * KB // len(piece) + 1))[: 20 * KB]
           for piece in ("eyJ", "token=", "secret: ", "-", "_", "--", "aws_key = '", "://user:@", "-u user:",
                         "AKIA", "ghp_", "Bearer ", "api_key=x!", "-----BEGIN PRIVATE KEY-----\n", "A" * 17 + " ")]


def test_the_prefiltered_scan_equals_the_full_scan_on_near_misses_and_hostile_runs() -> None:
    differing = [text for text in CORPUS + HOSTILE if secret_spans(text) != secret_spans(text, None)]
    assert differing == []


def test_the_prefiltered_scan_equals_the_full_scan_on_the_fixture_transcripts() -> None:
    texts = []
    for fmt, name in (("claude-code", "claude-code-secrets.jsonl"), ("claude-code", "claude-code-full.jsonl"),
                      ("codex", "codex-full.jsonl")):
        entries, _ = parse_fixture(fmt, name)
        texts += [text for entry in entries for text in strings(entry_to_json(entry))]
    assert texts
    assert [text for text in texts if secret_spans(text) != secret_spans(text, None)] == []


def test_every_place_a_detector_matches_is_a_candidate() -> None:
    # Stronger than equal results: a gate that misses a match would show here even where the miss
    # happens not to change the redactions.
    missed = []
    for text in CORPUS:
        candidates = find_candidates(text)
        if candidates is None:
            continue
        for index, scan in enumerate(PASSES):
            starts = set(candidates.starts.get(index, ()))
            for position in range(len(text)):
                match = scan.pattern.match(text, position)
                skipped = match is None or scan.checks[match.lastindex or 0][1].__name__ == "_skip"
                if not skipped and position not in starts:
                    missed.append((text, index, position))
    assert missed == []


def test_every_detector_but_the_ignored_runs_has_a_gate() -> None:
    assert [d.pattern for d in TOKEN_DETECTORS if not d.gates and d.check.__name__ != "_skip"] == []


def test_text_without_any_candidate_skips_the_scans() -> None:
    assert find_candidates("def handler(event, context):\n    return {'status': 200}\n") is NO_CANDIDATES


def test_dense_candidates_hand_the_text_to_the_full_scan() -> None:
    text = "token=" * 4000
    assert find_candidates(text) is None
    assert secret_spans(text) == secret_spans(text, None) == []


def test_one_scan_over_many_texts_finds_what_a_scan_of_each_finds() -> None:
    # Joined by line breaks, a gate may also match across the end of a text ("://" + the break):
    # a spare candidate, which `re` then rejects.
    texts = [*CORPUS[:400], "token=" * 4000, "", "plain"]
    many = find_candidates_many(texts)
    for text, found in zip(texts, many, strict=True):
        alone = find_candidates(text)
        if alone is None or found is None:
            assert found is None and alone is None, text
            continue
        for index, starts in alone.starts.items():
            assert set(starts) <= set(found.starts.get(index, ())), text
        assert set(alone.operators) <= set(found.operators), text
        assert secret_spans(text, found) == secret_spans(text, None), text
