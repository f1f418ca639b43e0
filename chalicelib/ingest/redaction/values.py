"""When a value is a credential: placeholders, entropy, character classes and secret-looking key names.

Shared by the token detectors (`--password value`, passwords in URLs) and the assignment scan
(`KEY=value`, `"key": "value"`), and by structured arguments whose dict key is secret-looking.
Every check reads at most the first `VALUE_SAMPLE` characters of a value, or runs in a C regex:
a candidate can be a megabyte long.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter

REDACTED_PREFIX = "<redacted:"
# Characters that continue a token; a match preceded by one is part of a longer word.
WORD_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
# Values longer than this are judged on their first this-many characters (entropy, classes).
VALUE_SAMPLE = 1024


def marker(kind: str) -> str:
    return f"<redacted:{kind}>"


# Character-class checks run in C: a candidate can be a megabyte long (a run of token characters).
_LOWER = re.compile(r"[a-z]")
_UPPER = re.compile(r"[A-Z]")
_DIGIT = re.compile(r"[0-9]")
_LETTER = re.compile(r"[^\W\d_]")
_NOT_LETTER = re.compile(r"[\W\d_]")


def has_mixed_classes(value: str) -> bool:
    return bool(_LOWER.search(value) and _UPPER.search(value) and _DIGIT.search(value))


def has_upper_and_lower(value: str) -> bool:
    return bool(_LOWER.search(value) and _UPPER.search(value))


def has_letter_and_digit(value: str) -> bool:
    return bool(_LETTER.search(value) and _DIGIT.search(value))


def shannon_entropy(value: str) -> float:
    if not value:
        return 0.0
    value = value[:VALUE_SAMPLE]
    counts = Counter(value)
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


_PLACEHOLDER_WORDS = frozenset(
    {
        "none",
        "null",
        "nil",
        "true",
        "false",
        "undefined",
        "str",
        "string",
        "int",
        "bytes",
        "secretstr",
        "optional",
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "token",
        "required",
        "redacted",
        "hidden",
        "masked",
        "env",
    }
)
_CODE_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*+(?:\.[A-Za-z_][A-Za-z0-9_]*+)+")


def is_placeholder(value: str) -> bool:
    stripped = value[:VALUE_SAMPLE].strip()
    if not stripped or stripped.startswith(REDACTED_PREFIX):
        return True
    if stripped[0] in "$<{%*[(`&@" or stripped.startswith(("os.", "process.env")):
        return True
    if set(stripped) <= set("*xX.-_#") or stripped.lower() in _PLACEHOLDER_WORDS:
        return True
    return stripped.lower().startswith(("your_", "your-", "<your", "changeme", "example", "xxx"))


PASSWORD_WORDS = r"password|passwd|passphrase|pass|pwd"
SECRET_WORDS = (
    r"secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|"
    r"client[_-]?secret|auth[_-]?key|credentials?|signing[_-]?key|encryption[_-]?key"
)
_KEY_SUFFIX = r"(?:[_-]?(?:key|base|value|hash|b64|string))?"
_PASSWORD_WORD_SET = frozenset(PASSWORD_WORDS.split("|"))
# A secret keyword ending a key name (`DB_PASSWORD`, `apiKey`, `SECRET_KEY_BASE`).
_KEYWORD = re.compile(rf"(?i)(?P<word>{PASSWORD_WORDS}|{SECRET_WORDS}){_KEY_SUFFIX}$")
# `--password value`, `--api-key "value"` (the `--password=value` form is an assignment).
CLI_FLAG = re.compile(
    rf"(?i)--(?P<key>(?:[a-z0-9]+-)*(?:{PASSWORD_WORDS}|{SECRET_WORDS}))"
    r"[ \t]++(?:\"(?P<dq>[^\"\n]*+)\"|'(?P<sq>[^'\n]*+)'|(?P<bare>[^\s\"'`;|&]++))"
)


@functools.lru_cache(maxsize=4096)
def key_is_secret(key: str) -> str | None:
    """'password' / 'secret_assignment' when a key names a secret, else None (cached: keys repeat).

    The keyword must end the key and start at a word boundary (`_`, `-`, `.`, a camelCase
    hump or the key start), so `tokenizer`, `max_tokens` and `bypass` are not secret keys.
    """
    match = _KEYWORD.search(key)
    if match is None:
        return None
    start = match.start("word")
    if start > 0:
        before, first = key[start - 1], key[start]
        if not (before in "_-." or (before.islower() and first.isupper()) or before.isdigit()):
            return None
    return "password" if match.group("word").lower() in _PASSWORD_WORD_SET else "secret_assignment"


def value_is_secret(kind: str, value: str, *, strict: bool = False) -> bool:
    """Whether a value assigned to a secret key is a real value worth hiding.

    `strict` applies to bare values after a `:` (YAML, or prose such as "password: click the
    link"): they must look like credentials, not words.
    """
    if is_placeholder(value):
        return False
    if kind == "password":
        if strict:
            return len(value) >= 3 and (
                _NOT_LETTER.search(value) is not None or (len(value) >= 8 and has_upper_and_lower(value))
            )
        return len(value) >= 3
    if len(value) < 8 or value.isdigit() or shannon_entropy(value) < 3.0:
        return False
    return has_letter_and_digit(value) or not strict


def value_group(match: re.Match[str]) -> str:
    return next(name for name in ("dq", "sq", "bare") if match.group(name) is not None)


def assigned_span(key: str, match: re.Match[str]) -> tuple[str, int, int] | None:
    """(kind, start, end) of the value to hide after `key`, or None when it is not a secret.

    `match` has the value in one of the groups `dq`, `sq` or `bare` (and may name the operator `op`).
    """
    kind = key_is_secret(key)
    if kind is None:
        return None
    group = value_group(match)
    value = match.group(group)
    if group == "bare":
        following = match.string[match.end() : match.end() + 1]
        # `token = get_token()`, `password: str`, `secret = settings.SECRET`: code, not values.
        if following in ("(", "[", ".") or _CODE_REFERENCE.fullmatch(value):
            return None
    strict = group == "bare" and match.groupdict().get("op") == ":" and not key.isupper()
    if not value_is_secret(kind, value, strict=strict):
        return None
    start, end = match.span(group)
    return kind, start, end
