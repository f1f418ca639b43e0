"""Secret-looking assignments: `KEY=value`, `"key": "value"`, `key => v`, `Authorization: Basic …`.

A key ending in a keyword, then an operator. Reversed, that starts with the operator, so one pass
per operator runs over the lower-cased *reversed* text, anchored on `=` and `:`, reading the
keyword backwards through a prefix tree. Chains such as `token=token=…` or `secret: secret: …` are
one match (a bare value swallows the keys that follow it), keys are visited in text order, and a
key inside the value of the previous one is skipped, so value scans never overlap.

Nothing here crosses a line break (keys, operators and values never contain one), so the scan can
be limited to the lines where the prefilter saw a keyword before an operator (`KEY_OPERATOR`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from chalicelib.ingest.redaction.values import assigned_span, value_group

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
# The ends of a key worth a look: a keyword, or a keyword + separator + suffix.
_KEY_TAILS = sorted({*_KEY_KEYWORDS} | {
    f"{word}{sep}{suffix}" for word in _KEY_KEYWORDS for sep in ("", "_", "-") for suffix in _KEY_SUFFIXES})
_REV_KEY_TAIL = _trie(tail[::-1] for tail in _KEY_TAILS)
# Over the lower-cased, reversed text, one pass per operator: the operator, the optional quote and
# spaces before it, a key ending in a keyword (read backwards), then more keys that directly precede
# it (`token=token=…` is one match: a bare value swallows the keys that follow it). A run of the
# operator is consumed whole, as a match with its marker group set, so no run is tried twice.
_REV_OPS = ("=", ":")
ASSIGNMENT_PASSES = tuple(
    re.compile(rf"{re.escape(op)}(?:{re.escape(op)}++()|[ \t]*+(?:[\"']\\?)?{_REV_KEY_TAIL}[a-z0-9_.-]*+"
               rf"(?:[ \t]*+(?:>=|=:?|:)[ \t]*+{_REV_KEY_TAIL}[a-z0-9_.-]*+)*+)")
    for op in _REV_OPS)
# For the prefilter (hyperscan syntax, case-insensitive): a key tail, the optional quote and spaces,
# an operator; it ends right after the operator. Every match of a pass above (other than a run of
# operators) starts at such an operator, read backwards.
KEY_OPERATOR = "(?:" + "|".join(_KEY_TAILS) + ")" + r"""(?:\\?["'])?[ \t]*[=:]"""


def _key_starts_of(lowered_line: str, line_end: int) -> list[int]:
    backwards = lowered_line[::-1]
    starts: list[int] = []
    for scan in ASSIGNMENT_PASSES:
        # A run of operators (`====`) is one match with the marker group set: no key there.
        starts.extend(line_end - match.end() for match in scan.finditer(backwards) if match.lastindex is None)
    return starts


def _lowered(value: str) -> str:
    # Lower-casing must keep every index in place: true for ASCII, and for the ASCII-only table.
    return value.lower() if value.isascii() else value.translate(_ASCII_LOWER)


def key_starts(value: str, operators: list[int] | None = None) -> list[int]:
    """Where the keys of secret-looking assignments start, sorted. With `operators` (positions of
    operators after a key tail, from the prefilter), only the lines holding them are read."""
    if operators is None:
        starts = _key_starts_of(_lowered(value), len(value))
    else:
        starts = []
        line_end = -1
        for operator in sorted(operators):
            if operator < line_end:
                continue  # on the line just read
            line_start = value.rfind("\n", 0, operator) + 1
            line_end = value.find("\n", operator)
            if line_end < 0:
                line_end = len(value)
            starts.extend(_key_starts_of(_lowered(value[line_start:line_end]), line_end))
    starts.sort()
    return starts


class Verdicts(dict[str, tuple[tuple[str, int, int] | None, int]]):
    """Verdicts on assignments already judged: the assignment's text (key, operator, value and the
    character after it: all the verdict depends on) → (secret or None, value end), offsets relative
    to the key. A hostile string repeating one assignment pays the checks once; a trace repeating
    its keys and values (`"key": "…"` in every JSON line of a tool output) too. Only short
    assignments are kept, and at most `LIMIT` of them."""

    LIMIT = 4096
    LONGEST = 256


def _assignment(text: str, key_start: int, memo: Verdicts) -> tuple[tuple[str, int, int] | None, int]:
    """The secret assigned to the key starting at `key_start` (or None), and where its value ends."""
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
    group = value_group(assigned)
    if _AWS_SECRET_KEY.search(key) and _AWS_SECRET_VALUE.fullmatch(assigned.group(group)):
        found = ("aws_secret_access_key", *assigned.span(group))
    else:
        found = assigned_span(key, assigned)
    if len(seen) <= Verdicts.LONGEST:
        if len(memo) >= Verdicts.LIMIT:
            memo.clear()
        memo[seen] = ((None if found is None else (found[0], found[1] - key_start, found[2] - key_start)),
                      assigned.end() - key_start)
    return found, assigned.end()


def with_assignments(value: str, tokens: list[tuple[str, int, int]], starts: list[int],
                     memo: Verdicts | None = None) -> list[tuple[str, int, int]]:
    """Add the secret assignments whose keys start at `starts` (sorted) to the token spans (sorted,
    disjoint); a token inside a value wins."""
    if not starts:
        return tokens
    merged: list[tuple[str, int, int]] = []
    token_index = 0
    scanned = 0
    if memo is None:
        memo = Verdicts()
    for key_start in starts:
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
