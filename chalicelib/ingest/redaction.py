"""Secret redaction of trace entries: one linear-time scan per string, before any entry is stored.

Every string an entry carries (message, thinking and plan text, tool arguments at any depth,
tool outputs) has credentials replaced by `<redacted:KIND>`; tool names and call ids are never
touched, so invocation/result pairing survives. `redact_trace` returns the counts per kind.
`REDACTION_VERSION` names this rule set: traces are redacted once, at ingest, and the session
record keeps the version, so a trace stored under an older version is redacted again on read.

Why not detect-secrets' scanner: `detect_secrets.core.scan.scan_line` with its default plugins
measured ~1.6 ms per 300-character line (about 0.2 MB/s). The provider-token shapes follow
detect-secrets 1.5's plugins (`aws.py`, `github_token.py`, `gitlab_token.py`, `slack.py`,
`stripe.py`, `jwt.py`, `private_key.py`, `basic_auth.py`, `openai.py`, `npm.py`, `pypi_token.py`,
`sendgrid.py`) and add what those miss: Anthropic and current OpenAI key shapes, GitHub
fine-grained PATs, Google API keys, Hugging Face tokens, multi-line PEM blocks (the whole block,
not just its header), bearer/basic authorization headers, passwords inside connection strings
(scheme, user and host kept), `.env`/YAML/JSON/CLI-flag assignments to secret-looking keys, and
structured arguments whose dict key is secret-looking. Generic high-entropy strings are
redacted only when assigned to such a key, so UUIDs, git SHAs, hashes and paths stay readable.
The tests use detect-secrets itself as an independent oracle over the redacted fixture.

How it stays linear and fast (issue #12 found a 300 KB run of `eyJ` taking ~40 s and a run of
`token=` growing quadratically; bench/sessions has the adversarial benchmark):

- Provider tokens: one `re` pass per *anchor* (`-`, `_`, `:`, `J`, `A`, `G`, `earer`, `ws`), each
  pattern starting with its anchor literal so `re` finds candidates with its fast literal scan (a
  pattern starting with a character set is tried at every position, ~10x slower). The literal
  before the anchor (`sk`, `ey`, `gh?`, `xox?`) and the token boundary are fixed-width
  look-behinds, so a detector starts only at the start of a token: inside `eyJeyJeyJ…` every later
  `eyJ` follows a word character and fails in constant time; no run is read twice. Runs are
  possessive (`++`, `*+`), no quantifier nests over user text, separator runs (`-----`, `____`) are
  consumed as one ignored match, and an unterminated PEM block is consumed in the same single pass
  up to its first character that cannot be key material.
- Assignments (`KEY=value`, `"key": "value"`, `key => v`): a key ending in a keyword, then an
  operator. Reversed, that starts with the operator, so one pass per operator runs over the
  lower-cased *reversed* text, anchored on `=` and `:`, reading the keyword backwards through a
  prefix tree. Chains such as `token=token=…` or `secret: secret: …` are one match (a bare value
  swallows the keys that follow it), keys are visited in text order, and a key inside the value
  of the previous one is skipped, so value scans never overlap.

Only matches reach Python, where the per-detector checks (character classes, entropy,
placeholders) run in C regexes or on at most the first 1 KB of a value.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.trace import TextEntry, ToolInvocation, ToolResult, TraceEntry, utf8_len

# Bump when a detector changes: traces stored under an older version are redacted again on read.
REDACTION_VERSION = 2

_REDACTED_PREFIX = "<redacted:"
# Characters that continue a token or key; a match preceded by one is part of a longer word.
_WORD_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")
_W = "A-Za-z0-9_-"


def marker(kind: str) -> str:
    return f"<redacted:{kind}>"


# Character-class checks run in C: a candidate can be a megabyte long (a run of token characters).
_LOWER = re.compile(r"[a-z]")
_UPPER = re.compile(r"[A-Z]")
_DIGIT = re.compile(r"[0-9]")
_LETTER = re.compile(r"[^\W\d_]")
_NOT_LETTER = re.compile(r"[\W\d_]")
# Values longer than this are judged on their first this-many characters (entropy, classes).
_VALUE_SAMPLE = 1024


def _has_mixed_classes(value: str) -> bool:
    return bool(_LOWER.search(value) and _UPPER.search(value) and _DIGIT.search(value))


def _has_upper_and_lower(value: str) -> bool:
    return bool(_LOWER.search(value) and _UPPER.search(value))


def _has_letter_and_digit(value: str) -> bool:
    return bool(_LETTER.search(value) and _DIGIT.search(value))


def shannon_entropy(value: str) -> float:
    if not value:
        return 0.0
    value = value[:_VALUE_SAMPLE]
    counts = Counter(value)
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


# -- the token scanner -----------------------------------------------------------------------

# What a detector does with its match (text, match start = the anchor, match end): (kind, secret
# start, secret end), or None to keep the text.
Check = Callable[[str, int, int], "tuple[str, int, int] | None"]


@dataclass(frozen=True)
class _Token:
    """One detector: `pattern` follows its anchor (already consumed) in the anchor's pass."""

    anchor: str
    pattern: str
    check: Check


def _nb(literal: str) -> str:
    """`literal` (ending with the anchor) directly before here, itself not preceded by a word char."""
    return f"(?<={literal})(?<![{_W}]{literal})"


def _span(kind: str, back: int, accept: Callable[[str], bool] | None = None) -> Check:
    """The secret is the match plus the `back` characters of the literal before the anchor."""

    def check(text: str, start: int, end: int) -> tuple[str, int, int] | None:
        start -= back
        if accept is not None and not accept(text[start:end]):
            return None
        return kind, start, end

    return check


def _sk_key(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    start -= 2  # "sk" before the dash
    if text.startswith("-ant-", start + 2) and end - (start + 7) >= 20:
        return "anthropic_api_key", start, end
    if _has_mixed_classes(text[start:end]):
        return "openai_api_key", start, end
    return None


def _gitlab(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    head = text.rfind("gl", max(0, start - 7), start)
    if head < 0 or (head > 0 and text[head - 1] in _WORD_CHARS):
        return None
    return "gitlab_token", head, end


_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/]")


def _pem(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    body = text.index("-----", start + 11) + 5  # end of the BEGIN line (matched, so present)
    # A header followed by too little key material is a literal in code, not a key.
    if len(_BASE64_CHARS.findall(text, body, min(end, body + 400))) < 40:
        return None
    return "private_key", start, end


def _bearer(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    secret = start
    while not text[secret].isspace():  # past the rest of the word ("RER" / "earer")
        secret += 1
    while text[secret].isspace():
        secret += 1
    if not _has_letter_and_digit(text[secret:end]):
        return None
    return "bearer_token", secret, end


def _dash_token(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    before = text[max(0, start - 4) : start]
    if before.endswith("sk"):
        return _sk_key(text, start, end)
    if before.startswith("xox") or before == "xapp":
        return "slack_token", start - 4, end
    return _gitlab(text, start, end)


def _underscore_token(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    if text.startswith("hf", start - 2):
        return _span("huggingface_token", 2, _has_upper_and_lower)(text, start, end)
    return ("npm_token" if text.startswith("npm", start - 3) else "github_token"), start - 3, end


# `scheme://user:password@host`: the password may itself contain `@` or `:`; the last `@`
# followed by a host ends it. Scheme, user and host are kept.
_URL_USERINFO = re.compile(r"://[^\s:/@'\"<>\x00]*+:(?P<secret>[^\s/'\"<>\x00]+)@(?=[A-Za-z0-9\[])")


def _url(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    if text.startswith("://hooks.", start):
        return "slack_webhook", start - 5, end
    match = _URL_USERINFO.match(text, start)
    if match is None or _is_placeholder(match.group("secret")):
        return None
    return ("connection_string_password", *match.span("secret"))


def _curl_password(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    secret = text.index(":", start) + 1
    if _is_placeholder(text[secret:end]):
        return None
    return "basic_auth", secret, end


# `aws… key… "<40 characters>"` (detect-secrets' aws.py): a bounded context before the quoted value.
_AWS_QUOTED = r"[^\n\x00\"']{0,40}+[\"'][0-9a-zA-Z/+]{40}[\"']"
_AWS_KEYWORD = re.compile(r"(?i)key|pwd|pw|pass|token")


def _aws_quoted(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    if _AWS_KEYWORD.search(text, start + 2, end - 42) is None:
        return None
    return "aws_secret_access_key", end - 41, end - 1


def _cli_flag(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    match = _CLI_FLAG.match(text, start, end)
    if match is None:
        return None
    return _assigned_span(match.group("key"), match)


_PEM_BODY = r"[A-Za-z0-9+/=\t\n\r :,\\]"
_PASSWORD_WORDS = r"password|passwd|passphrase|pass|pwd"
_SECRET_WORDS = (
    r"secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|"
    r"client[_-]?secret|auth[_-]?key|credentials?|signing[_-]?key|encryption[_-]?key"
)
_GITLAB_PREFIXES = ("glpat", "gldt", "glft", "glsoat", "glrt", "glcbt", "glimt", "glptt", "glagent", "gloas")

def _skip(_text: str, _start: int, _end: int) -> tuple[str, int, int] | None:
    return None


_TOKEN_DETECTORS: tuple[_Token, ...] = (
    # Runs of separators (`-----`, `_____`) and long words through an anchor are consumed as one
    # match that `_skip` ignores: otherwise every character of the run would be a new attempt.
    # (the last five dashes of a run stay for the PEM header and `--flag` alternatives).
    _Token("-", r"(?=-----)(?:-(?=-----))*+", _skip),
    _Token("_", r"_++", _skip),
    # PEM private keys: the whole block; the body runs to its END line or its first character
    # that cannot be key material, in one pass (an unterminated block ends there or at the end).
    _Token("-", r"----BEGIN (?:[A-Z0-9]+ ){0,8}PRIVATE KEY(?: BLOCK)?-----"
                rf"(?:{_PEM_BODY}++|-(?!----END ))*+(?:-----END [A-Z0-9 ]{{0,60}}PRIVATE KEY(?: BLOCK)?-----)?",
           _pem),
    _Token("-", r"User-Key-File-(?<=PuTTY-User-Key-File-)\d++:(?:[^P\x00]++|P(?!rivate-MAC:))*+"
                r"(?:Private-MAC: *+[0-9a-fA-F]++)?", _span("private_key", 5)),
    _Token("-", rf"AgEIcHlwaS5vcmc(?<=pypi-AgEIcHlwaS5vcmc)[{_W}]{{50,}}+", _span("pypi_token", 4)),
    # `--password value` (the `--password=value` form is an assignment).
    _Token("-", rf"-(?<![{_W}]--)(?i:(?:[a-z0-9]++-)*(?:{_PASSWORD_WORDS}|{_SECRET_WORDS}))[ \t]++"
                r"(?:\"[^\"\n\x00]*+\"|'[^'\n\x00]*+'|[^\s\"'`;|&\x00]{3,}+)", _cli_flag),
    # `curl -u user:password`, `--user user:password`.
    _Token("-", r"(?:u(?<!\S-u)|-user(?<!\S--user))[ \t]++[\"']?[^\s:\"'\x00]++:[^\s\"'\x00]++", _curl_password),
    # Tokens after a dash: only a run of 10+ token characters is worth the look-behinds.
    _Token("-", rf"(?=[{_W}]{{10}})(?<=[ktsabpor]-)(?:" + _nb("sk-") + rf"[{_W}]{{20,}}+"
                + "|(?:" + "|".join(f"(?<={p}-)" for p in _GITLAB_PREFIXES) + rf")[{_W}]{{20,}}+"
                + "|" + _nb("xox[abposr]-") + r"[A-Za-z0-9-]{10,}+"
                + "|" + _nb("xapp-") + r"\d-[A-Za-z0-9-]{10,}+)", _dash_token),
    _Token("_", _nb("[rsp]k_") + r"(?:live|test)_[0-9a-zA-Z]{16,}+", _span("stripe_key", 2)),
    _Token("_", _nb("github_pat_") + r"[A-Za-z0-9_]{22,255}", _span("github_token", 10)),
    _Token("_", r"(?=[A-Za-z0-9]{16})(?<=[a-z]_)(?:" + _nb("gh[pousr]_") + r"[A-Za-z0-9]{36,255}"
                + "|" + _nb("npm_") + r"[A-Za-z0-9]{36}"
                + "|" + _nb("hf_") + r"[A-Za-z0-9]{34,}+)", _underscore_token),
    _Token(":", r"//(?:(?<=https://)hooks\.slack\.com/services/T[A-Za-z0-9_]++/B[A-Za-z0-9_]++/[A-Za-z0-9_]++"
                r"|[^\s:/@'\"<>\x00]*+:[^\s/'\"<>\x00]+@(?=[A-Za-z0-9\[]))", _url),
    _Token("J", _nb("eyJ") + rf"[{_W}]{{8,}}+\.[{_W}]{{8,}}+\.[{_W}]*+", _span("jwt", 2)),
    _Token("A", rf"(?<=[{_W}]A)(?=[{_W}]{{16}})[{_W}]*+", _skip),
    _Token("A", rf"(?<![{_W}]A)(?:3T[A-Z0-9]|BIA|CCA|KIA|SIA)[0-9A-Z]{{16}}(?![A-Za-z0-9])",
           _span("aws_access_key_id", 0)),
    _Token("A", rf"(?<![{_W}]A)Iza[0-9A-Za-z_-]{{35}}", _span("google_api_key", 0)),
    _Token("A", _nb("BEA") + r"RER\s++[A-Za-z0-9._~+/-]{16,}+=*+", _bearer),
    _Token("A", rf"(?<![{_W}]A)WS" + _AWS_QUOTED, _aws_quoted),
    _Token("G", rf"(?<![{_W}]G)R1348941[{_W}]{{20,}}+", _span("gitlab_token", 0)),
    _Token("G", rf"(?<=SG)(?<![{_W}]SG)\.[{_W}]{{22}}\.[{_W}]{{43}}", _span("sendgrid_key", 1)),
    _Token("earer", _nb("[Bb]earer") + r"\s++[A-Za-z0-9._~+/-]{16,}+=*+", _bearer),
    _Token("ws", rf"(?<=[Aa]ws)(?<![{_W}][Aa]ws)" + _AWS_QUOTED, _aws_quoted),
)


# One pass per anchor: its detectors' alternatives after the anchor literal, each ending in an
# empty marker group so `match.lastindex` names the detector. A pattern that starts with a literal
# is scanned for it at memchr speed; one that starts with a character set is tried at every
# position (about 10 ns a character), which is why the anchors are not merged into one pattern.
@dataclass(frozen=True)
class _Pass:
    pattern: re.Pattern[str]
    checks: tuple[tuple[int, Check], ...]  # by group index: (priority, check)


def _compile_passes(detectors: tuple[_Token, ...]) -> tuple[_Pass, ...]:
    anchors = list(dict.fromkeys(d.anchor for d in detectors))
    passes: list[_Pass] = []
    for anchor in anchors:
        mine = [(priority, d) for priority, d in enumerate(detectors) if d.anchor == anchor]
        pattern = re.escape(anchor) + "(?:" + "|".join(f"{d.pattern}()" for _, d in mine) + ")"
        compiled = re.compile(pattern)
        # The markers are the only groups, numbered in the order of the alternatives (0 is unused).
        checks: list[tuple[int, Check]] = [(0, _skip)]
        checks.extend((priority, d.check) for priority, d in mine)
        passes.append(_Pass(compiled, tuple(checks)))
    return tuple(passes)


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
_CODE_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*+(?:\.[A-Za-z_][A-Za-z0-9_]*+)+")


def _is_placeholder(value: str) -> bool:
    stripped = value[:_VALUE_SAMPLE].strip()
    if not stripped or stripped.startswith(_REDACTED_PREFIX):
        return True
    if stripped[0] in "$<{%*[(`&@" or stripped.startswith(("os.", "process.env")):
        return True
    if set(stripped) <= set("*xX.-_#") or stripped.lower() in _PLACEHOLDER_WORDS:
        return True
    return stripped.lower().startswith(("your_", "your-", "<your", "changeme", "example", "xxx"))


_KEY_SUFFIX = r"(?:[_-]?(?:key|base|value|hash|b64|string))?"
_PASSWORD_WORD_SET = frozenset(_PASSWORD_WORDS.split("|"))
# A secret keyword ending a key name (`DB_PASSWORD`, `apiKey`, `SECRET_KEY_BASE`).
_KEYWORD = re.compile(rf"(?i)(?P<word>{_PASSWORD_WORDS}|{_SECRET_WORDS}){_KEY_SUFFIX}$")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_KEY_RUN = re.compile(r"[A-Za-z0-9_.-]*+")
# Longest key tail looked at: the keyword, its suffix and the boundary before it fit easily.
_KEY_WINDOW = 80
# What follows such a key in an assignment: `=`, `:`, `:=`, `=>`, then a quoted or bare value
# (quotes may be JSON-escaped when the text is itself a JSON dump).
_ASSIGNED_VALUE = re.compile(
    r"(?:\\?[\"'])?[ \t]*+(?P<op>:=|=>|=|:)[ \t]*+"
    r"(?:\\?\"(?P<dq>[^\"\n\\]*+)\\?\"|\\?'(?P<sq>[^'\n\\]*+)\\?'|(?P<bare>[^\s\"'`,;#})\]\\]++))"
)
_CLI_FLAG = re.compile(
    rf"(?i)--(?P<key>(?:[a-z0-9]+-)*(?:{_PASSWORD_WORDS}|{_SECRET_WORDS}))"
    r"[ \t]++(?:\"(?P<dq>[^\"\n]*+)\"|'(?P<sq>[^'\n]*+)'|(?P<bare>[^\s\"'`;|&]++))"
)
_AWS_SECRET_KEY = re.compile(r"(?i)secret_?(?:access_?)?key(?:_?id)?$")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}")
_BASIC_AUTH_VALUE = re.compile(
    r"[\"'\\]*+[ \t]*+[:=][ \t]*+[\"'\\]*+(?:[Bb]asic|BASIC)[ \t]++(?P<secret>[A-Za-z0-9+/]{8,}+={0,2})")


def _trie(words: Iterable[str]) -> str:
    """An alternation of `words` as a prefix tree: `re` then tests one literal per level instead of
    every word in turn (the assignment scan runs at every `=` and `:` of the text)."""
    groups: dict[str, list[str]] = {}
    ends = False
    for word in words:
        if word:
            groups.setdefault(word[0], []).append(word[1:])
        else:
            ends = True
    alternatives = [re.escape(first) + _trie(rest) for first, rest in sorted(groups.items())]
    if not alternatives:
        return ""
    if len(alternatives) == 1 and not ends:
        return alternatives[0]
    return "(?:" + "|".join(alternatives) + ")" + ("?" if ends else "")


_KEY_KEYWORDS = ("password", "passwd", "passphrase", "pass", "pwd", "secret", "token", "key", "credential",
                 "credentials", "authorization")
_KEY_SUFFIXES = ("key", "base", "value", "hash", "b64", "string", "id")
# Key tails (keyword, or keyword + separator + suffix), reversed, as one prefix tree.
_REV_KEY_TAIL = _trie(sorted({word[::-1] for word in _KEY_KEYWORDS} | {
    f"{word}{sep}{suffix}"[::-1] for word in _KEY_KEYWORDS for sep in ("", "_", "-") for suffix in _KEY_SUFFIXES}))
# Over the lower-cased, reversed text, one pass per operator: the operator, the optional quote and
# spaces before it, a key ending in a keyword (read backwards), then more keys that directly precede
# it (`token=token=…` is one match: a bare value swallows the keys that follow it). A run of the
# operator is consumed whole, as a match with its marker group set, so no run is tried twice.
_REV_OPS = ("=", ":")
_ASSIGNMENT_PASSES = tuple(
    re.compile(rf"{re.escape(op)}(?:{re.escape(op)}++()|[ \t]*+(?:[\"']\\?)?{_REV_KEY_TAIL}[a-z0-9_.-]*+"
               rf"(?:[ \t]*+(?:>=|=:?|:)[ \t]*+{_REV_KEY_TAIL}[a-z0-9_.-]*+)*+)")
    for op in _REV_OPS)


@functools.lru_cache(maxsize=4096)
def _key_is_secret(key: str) -> str | None:
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
                _NOT_LETTER.search(value) is not None or (len(value) >= 8 and _has_upper_and_lower(value))
            )
        return len(value) >= 3
    if len(value) < 8 or value.isdigit() or shannon_entropy(value) < 3.0:
        return False
    return _has_letter_and_digit(value) or not strict


def _value_group(match: re.Match[str]) -> str:
    return next(name for name in ("dq", "sq", "bare") if match.group(name) is not None)


def _assigned_span(key: str, match: re.Match[str]) -> tuple[str, int, int] | None:
    """(kind, start, end) of the value to hide after `key`, or None when it is not a secret."""
    kind = _key_is_secret(key)
    if kind is None:
        return None
    group = _value_group(match)
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


def _assignment(text: str, key_start: int, memo: dict[str, tuple[tuple[str, int, int] | None, int]]
                ) -> tuple[tuple[str, int, int] | None, int]:
    """The secret assigned to the key starting at `key_start` (or None), and where its value ends.

    `memo` maps the text of an assignment already judged in this string to its verdict (offsets
    relative to the key), so a hostile string repeating one assignment pays the checks once.
    """
    run = _KEY_RUN.match(text, key_start)
    key_end = run.end() if run is not None else key_start
    key = text[max(key_start, key_end - _KEY_WINDOW) : key_end]
    if key[-13:].lower() == "authorization":
        basic = _BASIC_AUTH_VALUE.match(text, key_end)
        if basic is None:
            return None, key_end
        return ("basic_auth", *basic.span("secret")), basic.end()
    assigned = _ASSIGNED_VALUE.match(text, key_end)
    if assigned is None:
        return None, key_end
    seen = text[key_start : assigned.end() + 1]  # the verdict also depends on the next character
    if seen in memo:
        found, end = memo[seen]
        return (None if found is None else (found[0], found[1] + key_start, found[2] + key_start)), end + key_start
    group = _value_group(assigned)
    if _AWS_SECRET_KEY.search(key) and _AWS_SECRET_VALUE.fullmatch(assigned.group(group)):
        found = ("aws_secret_access_key", *assigned.span(group))
    else:
        found = _assigned_span(key, assigned)
    memo[seen] = ((None if found is None else (found[0], found[1] - key_start, found[2] - key_start)),
                  assigned.end() - key_start)
    return found, assigned.end()


_PASSES = _compile_passes(_TOKEN_DETECTORS)


class _Redactor:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    # -- strings ------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        found: list[tuple[int, int, int, str]] = []  # (start, priority, end, kind)
        for scan in _PASSES:
            for match in scan.pattern.finditer(value):
                priority, check = scan.checks[match.lastindex or 0]
                span = check(value, match.start(), match.end())
                if span is not None:
                    found.append((span[1], priority, span[2], span[0]))
        spans: list[tuple[str, int, int]] = []
        if found:
            found.sort()
            end = 0
            for start, _, stop, kind in found:
                if start >= end:  # overlapping detections: the earlier (then the more specific) wins
                    spans.append((kind, start, stop))
                    end = stop
        if "=" in value or ":" in value:
            spans = self._with_assignments(value, spans)
        if not spans:
            return value
        pieces: list[str] = []
        done = 0
        for kind, start, end in spans:
            self.counts[kind] += 1
            pieces.append(value[done:start])
            pieces.append(marker(kind))
            done = end
        pieces.append(value[done:])
        return "".join(pieces)

    @staticmethod
    def _with_assignments(value: str, tokens: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """Add the secret assignments to the token spans (sorted, disjoint); a token inside a value wins."""
        # Lower-casing must keep every index in place: true for ASCII, and for the ASCII-only table.
        lowered = value.lower() if value.isascii() else value.translate(_ASCII_LOWER)
        backwards = lowered[::-1]
        size = len(value)
        key_starts: list[int] = []
        for scan in _ASSIGNMENT_PASSES:
            # A run of operators (`====`) is one match with the marker group set: no key there.
            key_starts.extend(size - match.end() for match in scan.finditer(backwards) if match.lastindex is None)
        if not key_starts:
            return tokens
        key_starts.sort()
        merged: list[tuple[str, int, int]] = []
        token_index = 0
        scanned = 0
        memo: dict[str, tuple[tuple[str, int, int] | None, int]] = {}
        for key_start in key_starts:
            if key_start < scanned:
                continue  # inside the value of the previous key
            found, scanned = _assignment(value, key_start, memo)
            if found is None:
                continue
            _, start, end = found
            while token_index < len(tokens) and tokens[token_index][2] <= start:
                merged.append(tokens[token_index])
                token_index += 1
            if token_index < len(tokens) and tokens[token_index][1] < end:
                continue  # overlaps a recognised token, which keeps its specific kind
            merged.append(found)
        merged.extend(tokens[token_index:])
        return merged

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
            return entry if text is entry.text else entry.model_copy(update={"text": text})
        if isinstance(entry, ToolInvocation):
            arguments = self.value(entry.arguments)
            return entry if arguments == entry.arguments else entry.model_copy(update={"arguments": arguments})
        if isinstance(entry, ToolResult):
            output = self.text(entry.output)
            if output is entry.output:
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


class Redactor:
    """Streaming use: `redact(entry)` one entry at a time; `counts` accumulates over all of them."""

    def __init__(self) -> None:
        self._redactor = _Redactor()

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(self._redactor.counts.items()))

    def redact(self, entry: TraceEntry) -> TraceEntry:
        return self._redactor.entry(entry)
