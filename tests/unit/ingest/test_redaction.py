"""Secret redaction over a transcript full of fake credentials, plus targeted cases."""

from __future__ import annotations

import json
from typing import Any

import pytest
from detect_secrets.core.scan import scan_line
from detect_secrets.settings import transient_settings

from chalicelib.domain.trace import ToolResult, entry_to_json, parse_trace, utf8_len
from chalicelib.ingest import redact_text, redact_trace, redact_value

from .support import parse_fixture, strings

# The fake credentials written into claude-code-secrets.jsonl.
SECRETS = [
    "AKIAQ3EGRPSLKDTZW7NB",
    "kQ9vT2mX7pL4sR8wN1cY6bH3jF5gD0aZ+eU/iO2t",
    "sk-ant-api03-Zq8Wm3Rt6Yp1Kv4Nx7Bc0Hs5Lj2Gd9Fa-Ue8Io3Pw6Qe1Ry4Tu7Xm0Cn5Vb2Az9Sd_Kf3Lh6Jg1Pq4Wm7Er0Ty3Ui6Op9As2Df5Gh8AA",
    "sk-proj-Vb7Nm2Kl9Jh4Gf1Ds6Ap3Oi8Uy5Tr0EwQz2Xc7Vb4Nm9Kl1Jh6Gf3Ds8Ap5Oi0Uy",
    "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q",
    "github_pat_11ABCDE2Y0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ01234",
    "glpat-Xy7Zq2Wv9Ub4Tc1Sd6Re",
    "xoxb-2048163594-7315928406152-Qw8Er4Ty1Ui7Op3As9Df6Gh",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "sk_live_51Hx7Qw2Er9Ty4Ui1Op6As3Df",
    "Xk7!pQ2mZ9vR",
    "Wq8zP2vLm4Tn",
    "s3cr3t-Staging-2025",
    "9d4f2a7c1e8b5f3a6d0c9e2b7f4a1d8c5e3b0f6a9d2c7e4b1f8a5d3c0e9b6f2a",
    "tok_8Fh3Kd9Lq2Wm5Zx7Cv1Bn4",
    "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "c2Vzc2lvbl9hYmMxMjNfZGVmNDU2X2doaTc4OQ",
    "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t",
    "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW",
]
# Things that look technical but are not credentials; redaction must leave them alone.
KEPT = [
    "123e4567-e89b-12d3-a456-426614174000",
    "3f786850e387550fdab836ed7e6dc881de23001b",
    "/srv/app/deploy/id_rsa",
    "~/.aws/credentials",
    "MAX_TOKENS=4096",
    "max_tokens = 4096",
    'tokenizer = \\"cl100k_base\\"',
    "token = get_token()",
    'password: str = os.environ.get(\\"DB_PASSWORD\\", \\"\\")',
    "region = eu-west-1",
    "https://api.staging.example.com/v1/deploys",
    "@db.staging.internal:5432/billing",
]
# detect-secrets plugins used as an independent oracle; its entropy plugins are left out because
# they flag git SHAs and UUIDs, which the trace deliberately keeps.
ORACLE_PLUGINS = [
    "AWSKeyDetector",
    "BasicAuthDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "JwtTokenDetector",
    "KeywordDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "SlackDetector",
    "StripeDetector",
]


def oracle_findings(entries: list[Any]) -> list[str]:
    found: list[str] = []
    with transient_settings({"plugins_used": [{"name": name} for name in ORACLE_PLUGINS]}):
        for entry in entries:
            for text in strings(entry_to_json(entry)):
                for line in text.splitlines():
                    found.extend(secret.type for secret in scan_line(line))
    return found


def test_no_secret_survives_and_counts_are_per_kind() -> None:
    entries, _ = parse_fixture("claude-code", "claude-code-secrets.jsonl")
    raw_dump = json.dumps([entry_to_json(e) for e in entries])
    assert all(secret in raw_dump for secret in SECRETS)

    redacted, counts = redact_trace(entries)
    dump = json.dumps([entry_to_json(e) for e in redacted])
    assert [secret for secret in SECRETS if secret in dump] == []
    assert counts == {
        "anthropic_api_key": 2,  # user message + thinking
        "aws_access_key_id": 2,  # thinking + credentials file
        "aws_secret_access_key": 1,
        "bearer_token": 1,
        "connection_string_password": 2,
        "github_token": 2,  # ghp_ in .env, github_pat_ in nested arguments
        "gitlab_token": 1,
        "jwt": 1,
        "openai_api_key": 1,
        "password": 2,
        "private_key": 1,
        "secret_assignment": 3,  # SECRET_KEY_BASE, API_TOKEN, structured api_key
        "slack_token": 1,
        "stripe_key": 2,
    }
    assert [text for text in KEPT if text not in dump] == []
    assert oracle_findings(entries) != [] and oracle_findings(redacted) == []


def test_structure_pairing_and_json_survive_redaction() -> None:
    entries, _ = parse_fixture("claude-code", "claude-code-secrets.jsonl")
    redacted, _ = redact_trace(entries)
    assert [(e.kind, getattr(e, "call_id", None), getattr(e, "tool", None)) for e in redacted] == [
        (e.kind, getattr(e, "call_id", None), getattr(e, "tool", None)) for e in entries
    ]
    assert parse_trace(json.loads(json.dumps([entry_to_json(e) for e in redacted]))) == redacted
    for entry in redacted:
        if isinstance(entry, ToolResult):
            assert entry.output_bytes == utf8_len(entry.output)
    pem = next(e for e in redacted if isinstance(e, ToolResult) and e.call_id == "toolu_sec06")
    assert pem.output == "<redacted:private_key>\n"  # the whole multi-line block, not just its header


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://user:p@ss:w0rd@db:5432/x", "postgres://user:<redacted:connection_string_password>@db:5432/x"),
        ("redis://:Hunt3r22@cache:6379", "redis://:<redacted:connection_string_password>@cache:6379"),
        ("api_key: 'Zx81mQ0pLw55'", "api_key: '<redacted:secret_assignment>'"),
        ('"clientSecret": "Ab3Cd5Ef7Gh9"', '"clientSecret": "<redacted:secret_assignment>"'),
        ("export DB_PASS=correcthorse", "export DB_PASS=<redacted:password>"),
        ("mysql --password=Tr0ub4dor", "mysql --password=<redacted:password>"),
        ("curl -u admin:S3cretPass1 https://x", "curl -u admin:<redacted:basic_auth> https://x"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\\n"
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\\n",
            "<redacted:private_key>",
        ),
    ],
)
def test_targeted_patterns(text: str, expected: str) -> None:
    assert redact_text(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Reset your password: click the link. The token: expired.",
        "token = get_token()\npassword: str\nsecret = settings.SECRET_KEY\nPASSWORD=${DB_PASSWORD}",
        "pip install scikit-learn; task-management-system-v2 sk-learn-compatible-estimator-2024",
        'if line.startswith("-----BEGIN PRIVATE KEY-----"):',
        "git clone https://github.com/org/repo.git && ssh git@github.com:org/repo.git",
        "tokenizer: cl100k_base\nmax_tokens: 4096\ntoken_type: bearer\nbypass=true",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b, id 123e4567-e89b-12d3-a456-426614174000",
        "DATABASE_URL=postgres://app:${DB_PASSWORD}@db/app",
    ],
)
def test_non_secrets_are_untouched(text: str) -> None:
    assert redact_text(text) == (text, {})


def test_structured_arguments_use_their_keys_and_keep_specific_kinds() -> None:
    value = {
        "env": {"API_TOKEN": "Qm9vX2Jhcl9iYXo5", "token_count": 5},
        "auth": {"token": "glpat-Xy7Zq2Wv9Ub4Tc1Sd6Re"},
        "password": "hunter22",
    }
    redacted, counts = redact_value(value)
    assert redacted == {
        "env": {"API_TOKEN": "<redacted:secret_assignment>", "token_count": 5},
        "auth": {"token": "<redacted:gitlab_token>"},
        "password": "<redacted:password>",
    }
    assert counts == {"secret_assignment": 1, "gitlab_token": 1, "password": 1}
