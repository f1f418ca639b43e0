"""Secret redaction of trace entries before any of them reaches a judge.

Every string an entry carries (message, thinking and plan text, tool arguments at any depth,
tool outputs) has credentials replaced by `<redacted:KIND>`; tool names and call ids are never
touched, so invocation/result pairing survives. `redact_trace` returns the counts per kind.

Why not detect-secrets' scanner: `detect_secrets.core.scan.scan_line` with its default plugins
measured ~1.6 ms per 300-character line (about 0.2 MB/s) and its import pulls in `requests`
and the settings machinery (~190 ms); it also reports secret values, not positions. A trace of
tens of MB must redact in seconds inside a Lambda, so this module uses its own precompiled
patterns that start with a literal (so `re` can skip ahead with a substring search) or are
guarded by a cheap substring trigger, and finds secret-looking keys with `str.find`; about
35 MB/s of tool output per CPU core (see bench/sessions). The provider-token patterns follow
detect-secrets 1.5's plugins (`aws.py`, `github_token.py`, `gitlab_token.py`, `slack.py`,
`stripe.py`, `jwt.py`, `private_key.py`, `basic_auth.py`, `openai.py`, `npm.py`, `pypi_token.py`,
`sendgrid.py`) and add what those miss: Anthropic and current OpenAI key shapes, GitHub
fine-grained PATs, Google API keys, Hugging Face tokens, multi-line PEM blocks (the whole block,
not just its header), bearer/basic authorization headers, passwords inside connection strings
(scheme, user and host kept), `.env`/YAML/JSON/CLI-flag assignments to secret-looking keys, and
structured arguments whose dict key is secret-looking. Generic high-entropy strings are
redacted only when assigned to such a key, so UUIDs, git SHAs, hashes and paths stay readable.
The tests use detect-secrets itself as an independent oracle over the redacted fixture.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.trace import TextEntry, ToolInvocation, ToolResult, TraceEntry, utf8_len

_REDACTED_PREFIX = "<redacted:"
# Characters that continue a token or key; a match preceded by one is part of a longer word.
_WORD_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")


def marker(kind: str) -> str:
    return f"<redacted:{kind}>"


@dataclass(frozen=True)
class _Detector:
    kind: str
    # Patterns start with a literal where possible: Python's `re` then finds candidates with a
    # fast substring search, which a leading look-behind would disable (hence `bounded`).
    pattern: re.Pattern[str]
    # Cheap pre-check: one of these substrings must occur for the regex to run at all; none
    # means always run (for patterns whose own literal-prefix scan is as cheap as the check).
    triggers: tuple[str, ...]
    group: int | str = 0
    # The match must not be preceded by a letter, digit, `_` or `-`.
    bounded: bool = False
    # One of these characters must directly precede the match: the word's first letter, left out
    # of the pattern so that it starts with a literal in every spelling ("Bearer", "bearer").
    lead: str = ""
    # Triggers are lower-case and checked against the lower-cased text.
    fold_case: bool = False
    accept: Callable[[str], bool] | None = None
    accept_match: Callable[[re.Match[str]], bool] | None = None


def _has_mixed_classes(value: str) -> bool:
    return any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)


def _has_upper_and_lower(value: str) -> bool:
    return any(c.islower() for c in value) and any(c.isupper() for c in value)


def _has_letter_and_digit(value: str) -> bool:
    return any(c.isalpha() for c in value) and any(c.isdigit() for c in value)


def shannon_entropy(value: str) -> float:
    if not value:
        return 0.0
    counts = Counter(value)
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


# PEM body characters: base64, whitespace, `Proc-Type:`/`DEK-Info:` headers, and the backslash of
# JSON-escaped newlines; a header followed by anything else is a literal in code, not a key.
_PEM_BODY = r"[A-Za-z0-9+/=\s:,\\-]"
_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/]")


def _pem_has_key_material(match: re.Match[str]) -> bool:
    return len(_BASE64_CHARS.findall(match.group("body"), 0, 400)) >= 40


_TOKEN_DETECTORS: tuple[_Detector, ...] = (
    _Detector(
        "private_key",
        re.compile(
            r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY((?: BLOCK)?)-----(?P<body>" + _PEM_BODY + r"*?)"
            r"(?:-----END \1PRIVATE KEY\2-----|(?=[^" + _PEM_BODY[1:-1] + r"])|\Z)"
        ),
        ("PRIVATE KEY",),
        accept_match=_pem_has_key_material,
    ),
    _Detector(
        "private_key",
        re.compile(r"PuTTY-User-Key-File-\d+:.*?(?:Private-MAC: *[0-9a-fA-F]+|\Z)", re.DOTALL),
        ("PuTTY-User-Key-File",),
    ),
    _Detector("jwt", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), ("eyJ",), bounded=True),
    _Detector("anthropic_api_key", re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}"), ("sk-ant-",), bounded=True),
    _Detector(
        "openai_api_key",
        re.compile(r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}"),
        ("sk-",),
        bounded=True,
        accept=_has_mixed_classes,
    ),
    _Detector(
        "aws_access_key_id",
        re.compile(r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
        (),
        bounded=True,
    ),
    _Detector(
        "aws_secret_access_key",
        re.compile(
            r"(?i)(?:aws_?)?secret_?(?:access_?)?key(?:_?id)?[\"'\\]*\s*(?:=|:|=>)\s*[\"'\\]*"
            r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        ("secret",),
        group="secret",
        fold_case=True,
    ),
    *(
        _Detector(
            "aws_secret_access_key",
            re.compile(
                spelling
                + r"(?i:.{0,20}?(?:key|pwd|pw|password|pass|token).{0,20}?)['\"](?P<secret>[0-9a-zA-Z/+]{40})['\"]"
            ),
            ("aws",),
            group="secret",
            fold_case=True,
        )
        for spelling in ("aws", "AWS", "Aws")
    ),
    _Detector(
        "github_token",
        re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
        (),
        bounded=True,
    ),
    _Detector(
        "gitlab_token",
        re.compile(r"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-[A-Za-z0-9_-]{20,}"),
        (),
        bounded=True,
    ),
    _Detector("gitlab_token", re.compile(r"GR1348941[A-Za-z0-9_-]{20,}"), ("GR1348941",), bounded=True),
    _Detector(
        "slack_webhook",
        re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"),
        ("hooks.slack.com",),
    ),
    _Detector(
        "slack_token",
        re.compile(r"(?:xox[abposr]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,})"),
        (),
        bounded=True,
    ),
    _Detector(
        "stripe_key",
        re.compile(r"[rsp]k_(?:live|test)_[0-9a-zA-Z]{16,}"),
        ("k_live_", "k_test_"),
        bounded=True,
    ),
    _Detector("google_api_key", re.compile(r"AIza[0-9A-Za-z_-]{35}"), ("AIza",), bounded=True),
    _Detector("npm_token", re.compile(r"npm_[A-Za-z0-9]{36}"), ("npm_",), bounded=True),
    _Detector("pypi_token", re.compile(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"), ("pypi-AgEIcHlwaS5vcmc",)),
    _Detector(
        "huggingface_token",
        re.compile(r"hf_[A-Za-z0-9]{34,}"),
        ("hf_",),
        bounded=True,
        accept=_has_upper_and_lower,
    ),
    _Detector("sendgrid_key", re.compile(r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"), ("SG.",)),
    *(
        _Detector(
            "bearer_token",
            re.compile(tail + r"\s+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)"),
            ("bearer",),
            group="secret",
            bounded=True,
            fold_case=True,
            lead=lead,
            accept=_has_letter_and_digit,
        )
        for lead, tail in (("Bb", "earer"), ("B", "EARER"))
    ),
    *(
        _Detector(
            "basic_auth",
            re.compile(
                tail + r"[\"'\\]*\s*[:=]\s*[\"'\\]*(?:[Bb]asic|BASIC)\s+(?P<secret>[A-Za-z0-9+/]{8,}={0,2})"
            ),
            ("authorization",),
            group="secret",
            fold_case=True,
            lead=lead,
        )
        for lead, tail in (("Aa", "uthorization"), ("A", "UTHORIZATION"))
    ),
)

# -- passwords in URLs and secret-looking assignments ---------------------------------------

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
_CODE_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _is_placeholder(value: str) -> bool:
    stripped = value.strip()
    if not stripped or stripped.startswith(_REDACTED_PREFIX):
        return True
    if stripped[0] in "$<{%*[(`&@" or stripped.startswith(("os.", "process.env")):
        return True
    if set(stripped) <= set("*xX.-_#") or stripped.lower() in _PLACEHOLDER_WORDS:
        return True
    return stripped.lower().startswith(("your_", "your-", "<your", "changeme", "example", "xxx"))


# `scheme://user:password@host`: the password may itself contain `@` or `:`; the last `@`
# followed by a host ends it. Scheme, user and host are kept.
_URL_USERINFO = re.compile(r"://[^\s:/@'\"<>]*:(?P<secret>[^\s/'\"<>]+)@(?=[A-Za-z0-9\[])")
_CURL_USER = re.compile(r"(?:-u|--user)[ \t]+[\"']?[^\s:\"']+:(?P<secret>[^\s\"']+)")

_PASSWORD_WORDS = r"password|passwd|passphrase|pass|pwd"
_SECRET_WORDS = (
    r"secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|"
    r"client[_-]?secret|auth[_-]?key|credentials?|signing[_-]?key|encryption[_-]?key"
)
_KEY_SUFFIX = r"(?:[_-]?(?:key|base|value|hash|b64|string))?"
_PASSWORD_WORD_SET = frozenset(_PASSWORD_WORDS.split("|"))
_KEY_TRIGGERS = ("pass", "pwd", "secret", "token", "key", "credential")
# A secret keyword ending a key name (`DB_PASSWORD`, `apiKey`, `SECRET_KEY_BASE`).
_KEYWORD = re.compile(rf"(?i)(?P<word>{_PASSWORD_WORDS}|{_SECRET_WORDS}){_KEY_SUFFIX}$")
_KEY_RUN = re.compile(r"[A-Za-z0-9_.-]*")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# What follows such a key in an assignment: `=`, `:`, `:=`, `=>`, then a quoted or bare value
# (quotes may be JSON-escaped when the text is itself a JSON dump).
_ASSIGNED_VALUE = re.compile(
    r"(?:\\?[\"'])?[ \t]*(?P<op>:=|=>|=|:)[ \t]*"
    r"(?:\\?\"(?P<dq>[^\"\n\\]*)\\?\"|\\?'(?P<sq>[^'\n\\]*)\\?'|(?P<bare>[^\s\"'`,;#})\]\\]+))"
)
_CLI_FLAG = re.compile(
    rf"(?i)--(?P<key>(?:[a-z0-9]+-)*(?:{_PASSWORD_WORDS}|{_SECRET_WORDS}))"
    r"[ \t]+(?:\"(?P<dq>[^\"\n]*)\"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s\"'`;|&]+))"
)


def _key_is_secret(key: str) -> str | None:
    """'password' / 'secret_assignment' when a key names a secret, else None.

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


def _value_is_secret(kind: str, value: str, *, strict: bool = False) -> bool:
    """Whether a value assigned to a secret key is a real value worth hiding.

    `strict` applies to bare values after a `:` (YAML, or prose such as "password: click the
    link"): they must look like credentials, not words.
    """
    if _is_placeholder(value):
        return False
    if kind == "password":
        if strict:
            return len(value) >= 3 and (
                any(not c.isalpha() for c in value) or (len(value) >= 8 and _has_upper_and_lower(value))
            )
        return len(value) >= 3
    if len(value) < 8 or value.isdigit() or shannon_entropy(value) < 3.0:
        return False
    return _has_letter_and_digit(value) or not strict


def _assigned_span(key: str, match: re.Match[str]) -> tuple[str, int, int] | None:
    """(kind, start, end) of the value to hide after `key`, or None when it is not a secret."""
    kind = _key_is_secret(key)
    if kind is None:
        return None
    group = next(name for name in ("dq", "sq", "bare") if match.group(name) is not None)
    value = match.group(group)
    if group == "bare":
        following = match.string[match.end() : match.end() + 1]
        # `token = get_token()`, `password: str`, `secret = settings.SECRET`: code, not values.
        if following in ("(", "[", ".") or _CODE_REFERENCE.fullmatch(value):
            return None
    strict = group == "bare" and match.groupdict().get("op") == ":" and not key.isupper()
    if not _value_is_secret(kind, value, strict=strict):
        return None
    start, end = match.span(group)
    return kind, start, end


class _Redactor:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    # -- strings ------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        lower = value.lower()
        present: dict[str, bool] = {}
        for detector in _TOKEN_DETECTORS:
            if detector.triggers:
                haystack = lower if detector.fold_case else value
                for trigger in detector.triggers:
                    found = present.get(trigger)
                    if found is None:
                        found = present[trigger] = trigger in haystack
                    if found:
                        break
                else:
                    continue
            redacted = detector.pattern.sub(self._replacer(detector), value)
            if redacted is not value and redacted != value:
                value, lower = redacted, redacted.lower()
        before = value
        if "://" in value and "@" in value:
            value = _URL_USERINFO.sub(self._url_password, value)
        if "-u" in value and ":" in value:
            value = _CURL_USER.sub(self._curl_password, value)
        if value is not before:
            lower = value.lower()
        if any(trigger in lower for trigger in _KEY_TRIGGERS):
            value = self._assignments(value, lower)
            if "--" in value:
                value = _CLI_FLAG.sub(self._cli_flag, value)
        return value

    def _replacer(self, detector: _Detector) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            start = match.start()
            if detector.lead:
                if start == 0 or match.string[start - 1] not in detector.lead:
                    return match.group(0)
                start -= 1
            if detector.bounded and start > 0 and match.string[start - 1] in _WORD_CHARS:
                return match.group(0)
            if detector.accept is not None and not detector.accept(match.group(detector.group)):
                return match.group(0)
            if detector.accept_match is not None and not detector.accept_match(match):
                return match.group(0)
            return self._splice(match, detector.group, detector.kind)

        return replace

    def _url_password(self, match: re.Match[str]) -> str:
        if _is_placeholder(match.group("secret")):
            return match.group(0)
        return self._splice(match, "secret", "connection_string_password")

    def _curl_password(self, match: re.Match[str]) -> str:
        start = match.start()
        if (start > 0 and not match.string[start - 1].isspace()) or _is_placeholder(match.group("secret")):
            return match.group(0)
        return self._splice(match, "secret", "basic_auth")

    def _cli_flag(self, match: re.Match[str]) -> str:
        start = match.start()
        if start > 0 and match.string[start - 1] in _WORD_CHARS:
            return match.group(0)
        span = _assigned_span(match.group("key"), match)
        if span is None:
            return match.group(0)
        kind, value_start, value_end = span
        self.counts[kind] += 1
        offset = match.start()
        whole = match.group(0)
        return whole[: value_start - offset] + marker(kind) + whole[value_end - offset :]

    def _assignments(self, value: str, lower: str) -> str:
        """Hide values assigned to secret-looking keys (`.env`, YAML, JSON, code, `--flag=`).

        Finds the trigger words with `str.find` (far faster than a case-insensitive regex
        alternation), widens each hit to its whole key (`[A-Za-z0-9_.-]` run), then checks the key
        name and what follows it.
        """
        if len(lower) != len(value):  # a few non-ASCII letters change length when lower-cased
            lower = value.translate(_ASCII_LOWER)
        hits: list[int] = []
        for word in _KEY_TRIGGERS:
            at = lower.find(word)
            while at >= 0:
                hits.append(at)
                at = lower.find(word, at + len(word))
        if not hits:
            return value
        hits.sort()
        pieces: list[str] = []
        done = scanned = 0
        for hit in hits:
            if hit < scanned:
                continue
            run = _KEY_RUN.match(value, hit)
            key_end = run.end() if run is not None else hit
            scanned = key_end
            key_start = hit
            floor = max(done, hit - 60)
            while key_start > floor and value[key_start - 1] in _KEY_CHARS:
                key_start -= 1
            assigned = _ASSIGNED_VALUE.match(value, key_end)
            if assigned is None:
                continue
            span = _assigned_span(value[key_start:key_end], assigned)
            if span is None:
                continue
            kind, value_start, value_end = span
            self.counts[kind] += 1
            pieces.extend((value[done:value_start], marker(kind)))
            done = scanned = value_end
        if not pieces:
            return value
        pieces.append(value[done:])
        return "".join(pieces)

    def _splice(self, match: re.Match[str], group: int | str, kind: str) -> str:
        self.counts[kind] += 1
        whole = match.group(0)
        start, end = match.span(group)
        offset = match.start()
        return whole[: start - offset] + marker(kind) + whole[end - offset :]

    # -- structures ---------------------------------------------------------------------------

    def value(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, str):
            redacted = self.text(value)
            if key is None or redacted != value:
                return redacted  # a recognised token keeps its specific kind
            kind = _key_is_secret(key)
            if kind is not None and "\n" not in value.strip() and _value_is_secret(kind, value):
                self.counts[kind] += 1
                return marker(kind)
            return value
        if isinstance(value, dict):
            return {name: self.value(item, name if isinstance(name, str) else None) for name, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def entry(self, entry: TraceEntry) -> TraceEntry:
        if isinstance(entry, TextEntry):
            text = self.text(entry.text)
            return entry if text == entry.text else entry.model_copy(update={"text": text})
        if isinstance(entry, ToolInvocation):
            arguments = self.value(entry.arguments)
            return entry if arguments == entry.arguments else entry.model_copy(update={"arguments": arguments})
        if isinstance(entry, ToolResult):
            output = self.text(entry.output)
            if output == entry.output:
                return entry
            update: dict[str, Any] = {"output": output}
            if not entry.truncated:
                # output_bytes describes the output the trace holds, which is now the redacted one.
                update["output_bytes"] = utf8_len(output)
            return entry.model_copy(update=update)
        return entry


def redact_text(value: str) -> tuple[str, dict[str, int]]:
    """Redact one string; returns it and the number of redactions per kind."""
    redactor = _Redactor()
    return redactor.text(value), dict(redactor.counts)


def redact_value(value: Any) -> tuple[Any, dict[str, int]]:
    """Redact every string in a JSON-like value (dict keys are kept, and used as context)."""
    redactor = _Redactor()
    return redactor.value(value), dict(redactor.counts)


def redact_trace(entries: Iterable[TraceEntry]) -> tuple[list[TraceEntry], dict[str, int]]:
    """Redact every entry; returns the new trace (same order, same call ids) and counts by kind."""
    redactor = _Redactor()
    out = [redactor.entry(entry) for entry in entries]
    return out, dict(sorted(redactor.counts.items()))
