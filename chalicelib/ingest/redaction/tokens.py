"""Provider-token detectors (AWS, GitHub, Slack, JWTs, PEM keys, …): one `re` pass per anchor.

The shapes follow detect-secrets 1.5's plugins (`aws.py`, `github_token.py`, `gitlab_token.py`,
`slack.py`, `stripe.py`, `jwt.py`, `private_key.py`, `basic_auth.py`, `openai.py`, `npm.py`,
`pypi_token.py`, `sendgrid.py`) and add what those miss: Anthropic and current OpenAI key shapes,
GitHub fine-grained PATs, Google API keys, Hugging Face tokens, multi-line PEM blocks (the whole
block, not just its header), bearer/basic authorization headers, passwords inside connection
strings (scheme, user and host kept) and `--password value` flags.

Every detector belongs to the pass of its *anchor* (`-`, `_`, `:`, `J`, `A`, `G`, `earer`, `ws`)
and starts with it, so `re` finds candidates with its fast literal scan (a pattern starting with a
character set is tried at every position, ~10x slower). The literal before the anchor (`sk`,
`ey`, `gh?`, `xox?`) and the token boundary are fixed-width look-behinds, so a detector starts
only at the start of a token: inside `eyJeyJeyJ…` every later `eyJ` follows a word character and
fails in constant time; no run is read twice. Runs are possessive (`++`, `*+`), no quantifier nests
over user text, separator runs (`-----`, `____`) are consumed as one ignored match, and an
unterminated PEM block is consumed in the same single pass up to its first character that cannot
be key material.

Each detector also declares its *gates* for the prefilter (`prefilter.py`): patterns that match
wherever the detector can match, so a pass only needs `re` at the positions they report.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from chalicelib.ingest.redaction.values import (
    CLI_FLAG,
    PASSWORD_WORDS,
    SECRET_WORDS,
    WORD_CHARS,
    assigned_span,
    has_letter_and_digit,
    has_mixed_classes,
    has_upper_and_lower,
    is_placeholder,
)

_W = "A-Za-z0-9_-"
# In a gate: a character that does not continue a token (the gates' version of the `(?<![_W]…)`
# look-behinds; hyperscan has no look-behind). The prefilter puts a line break before every text,
# so this also matches at its start (`(?:^|…)` measured ~25x slower on a run of `AIza`).
_NB = f"[^{_W}]"

# What a detector does with its match (text, match start = the anchor, match end): (kind, secret
# start, secret end), or None to keep the text.
Check = Callable[[str, int, int], "tuple[str, int, int] | None"]


@dataclass(frozen=True)
class Gate:
    """A hyperscan pattern (over the text with every non-ASCII character folded to `?`) that matches
    wherever its detector can match, ending exactly `width` characters after the anchor.

    Wherever the detector's `re` alternative can match, the gate must match too (it may match more:
    a gate is only a prefilter). Non-ASCII characters are `?` to the gate, so where the detector
    can match a non-ASCII character inside the gate's span, the gate must accept `?` there.

    A gate with `line_literal` instead ends somewhere after the anchor on the same line (for a
    detector whose start is not a fixed distance before anything distinctive, and which never
    crosses a line break): every occurrence of `line_literal` on that line before the gate's end is
    then a candidate.
    """

    pattern: str
    width: int = 0
    caseless: bool = False
    line_literal: str | None = None


@dataclass(frozen=True)
class Token:
    """One detector: `pattern` follows its anchor (already consumed) in the anchor's pass.

    A detector without gates must be a run the pass ignores (`_skip`): the prefilter never sends
    `re` to a position on its behalf (it never hides another detector's match, see `_skip`).
    """

    anchor: str
    pattern: str
    check: Check
    gates: tuple[Gate, ...] = ()


def _caseless_ascii(words: str) -> str:
    """`words` (an alternation) for a case-insensitive gate: `re` matching case-insensitively also
    takes `İ`/`ı` for `i`, `ſ` for `s` and the Kelvin sign for `k`, which the gate sees as `?`."""
    return "(?:" + re.sub(r"[isk]", lambda m: f"[{m.group(0)}?]", words) + ")"


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
    if has_mixed_classes(text[start:end]):
        return "openai_api_key", start, end
    return None


def _gitlab(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    head = text.rfind("gl", max(0, start - 7), start)
    if head < 0 or (head > 0 and text[head - 1] in WORD_CHARS):
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
    if not has_letter_and_digit(text[secret:end]):
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
        return _span("huggingface_token", 2, has_upper_and_lower)(text, start, end)
    return ("npm_token" if text.startswith("npm", start - 3) else "github_token"), start - 3, end


# `scheme://user:password@host`: the password may itself contain `@` or `:`; the last `@`
# followed by a host ends it. Scheme, user and host are kept.
_URL_USERINFO = re.compile(r"://[^\s:/@'\"<>\x00]*+:(?P<secret>[^\s/'\"<>\x00]+)@(?=[A-Za-z0-9\[])")


def _url(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    if text.startswith("://hooks.", start):
        return "slack_webhook", start - 5, end
    match = _URL_USERINFO.match(text, start)
    if match is None or is_placeholder(match.group("secret")):
        return None
    return ("connection_string_password", *match.span("secret"))


def _curl_password(text: str, start: int, end: int) -> tuple[str, int, int] | None:
    secret = text.index(":", start) + 1
    if is_placeholder(text[secret:end]):
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
    match = CLI_FLAG.match(text, start, end)
    if match is None:
        return None
    return assigned_span(match.group("key"), match)


_PEM_BODY = r"[A-Za-z0-9+/=\t\n\r :,\\]"
_GITLAB_PREFIXES = ("glpat", "gldt", "glft", "glsoat", "glrt", "glcbt", "glimt", "glptt", "glagent", "gloas")


def _skip(_text: str, _start: int, _end: int) -> tuple[str, int, int] | None:
    """A run consumed so that no character of it is a new attempt. It never hides a detection:
    every other detector of its pass needs, where the run consumed, a character the run is not
    (a letter after `-`, a letter before `_`, no word character before `A`)."""
    return None


TOKEN_DETECTORS: tuple[Token, ...] = (
    # Runs of separators (`-----`, `_____`) and long words through an anchor are consumed as one
    # match that `_skip` ignores: otherwise every character of the run would be a new attempt.
    # (the last five dashes of a run stay for the PEM header and `--flag` alternatives).
    Token("-", r"(?=-----)(?:-(?=-----))*+", _skip),
    Token("_", r"_++", _skip),
    # PEM private keys: the whole block; the body runs to its END line or its first character
    # that cannot be key material, in one pass (an unterminated block ends there or at the end).
    Token("-", r"----BEGIN (?:[A-Z0-9]+ ){0,8}PRIVATE KEY(?: BLOCK)?-----"
               rf"(?:{_PEM_BODY}++|-(?!----END ))*+(?:-----END [A-Z0-9 ]{{0,60}}PRIVATE KEY(?: BLOCK)?-----)?",
          _pem, (Gate("-----BEGIN ", 11),)),
    Token("-", r"User-Key-File-(?<=PuTTY-User-Key-File-)\d++:(?:[^P\x00]++|P(?!rivate-MAC:))*+"
               r"(?:Private-MAC: *+[0-9a-fA-F]++)?", _span("private_key", 5),
          (Gate("PuTTY-User-Key-File-", 15),)),
    Token("-", rf"AgEIcHlwaS5vcmc(?<=pypi-AgEIcHlwaS5vcmc)[{_W}]{{50,}}+", _span("pypi_token", 4),
          (Gate("pypi-AgEIcHlwaS5vcmc", 16),)),
    # `--password value` (the `--password=value` form is an assignment). The gate reads the flag's
    # name, on the line of the `--`: a gate on `--` alone was the prefilter's costliest literal.
    Token("-", rf"-(?<![{_W}]--)(?i:(?:[a-z0-9]++-)*(?:{PASSWORD_WORDS}|{SECRET_WORDS}))[ \t]++"
               r"(?:\"[^\"\n\x00]*+\"|'[^'\n\x00]*+'|[^\s\"'`;|&\x00]{3,}+)", _cli_flag,
          (Gate(rf"--(?:[a-z0-9?]+-)*{_caseless_ascii(PASSWORD_WORDS + '|' + SECRET_WORDS)}[ \t]", caseless=True,
                line_literal="--"),)),
    # `curl -u user:password`, `--user user:password`.
    Token("-", r"(?:u(?<!\S-u)|-user(?<!\S--user))[ \t]++[\"']?[^\s:\"'\x00]++:[^\s\"'\x00]++", _curl_password,
          (Gate(r"-u[ \t]", 3), Gate(r"--user[ \t]", 7))),
    # Tokens after a dash: only a run of 10+ token characters is worth the look-behinds.
    Token("-", rf"(?=[{_W}]{{10}})(?<=[ktsabpor]-)(?:" + _nb("sk-") + rf"[{_W}]{{20,}}+"
               + "|(?:" + "|".join(f"(?<={p}-)" for p in _GITLAB_PREFIXES) + rf")[{_W}]{{20,}}+"
               + "|" + _nb("xox[abposr]-") + r"[A-Za-z0-9-]{10,}+"
               + "|" + _nb("xapp-") + r"\d-[A-Za-z0-9-]{10,}+)", _dash_token,
          (Gate(f"{_NB}sk-[{_W}]{{20}}", 21),
           Gate(f"(?:{'|'.join(_GITLAB_PREFIXES)})-[{_W}]{{20}}", 21),
           Gate(f"{_NB}xox[abposr]-[A-Za-z0-9-]{{10}}", 11),
           Gate(f"{_NB}xapp-[0-9]-", 3))),
    Token("_", _nb("[rsp]k_") + r"(?:live|test)_[0-9a-zA-Z]{16,}+", _span("stripe_key", 2),
          (Gate(_NB + r"[rsp]k_(?:live|test)_[0-9a-zA-Z]{16}", 22),)),
    Token("_", _nb("github_pat_") + r"[A-Za-z0-9_]{22,255}", _span("github_token", 10),
          (Gate(_NB + r"github_pat_[A-Za-z0-9_]{22}", 23),)),
    Token("_", r"(?=[A-Za-z0-9]{16})(?<=[a-z]_)(?:" + _nb("gh[pousr]_") + r"[A-Za-z0-9]{36,255}"
               + "|" + _nb("npm_") + r"[A-Za-z0-9]{36}"
               + "|" + _nb("hf_") + r"[A-Za-z0-9]{34,}+)", _underscore_token,
          (Gate(_NB + r"gh[pousr]_[A-Za-z0-9]{36}", 37), Gate(_NB + r"npm_[A-Za-z0-9]{36}", 37),
           Gate(_NB + r"hf_[A-Za-z0-9]{34}", 35))),
    Token(":", r"//(?:(?<=https://)hooks\.slack\.com/services/T[A-Za-z0-9_]++/B[A-Za-z0-9_]++/[A-Za-z0-9_]++"
               r"|[^\s:/@'\"<>\x00]*+:[^\s/'\"<>\x00]+@(?=[A-Za-z0-9\[]))", _url,
          (Gate("://[^/]", 4),)),
    Token("J", _nb("eyJ") + rf"[{_W}]{{8,}}+\.[{_W}]{{8,}}+\.[{_W}]*+", _span("jwt", 2),
          (Gate(f"{_NB}eyJ[{_W}]{{8}}", 9),)),
    Token("A", rf"(?<=[{_W}]A)(?=[{_W}]{{16}})[{_W}]*+", _skip),
    Token("A", rf"(?<![{_W}]A)(?:3T[A-Z0-9]|BIA|CCA|KIA|SIA)[0-9A-Z]{{16}}(?![A-Za-z0-9])",
          _span("aws_access_key_id", 0), (Gate(_NB + "A(?:3T[A-Z0-9]|BIA|CCA|KIA|SIA)[0-9A-Z]{16}", 20),)),
    Token("A", rf"(?<![{_W}]A)Iza[0-9A-Za-z_-]{{35}}", _span("google_api_key", 0),
          (Gate(f"{_NB}AIza[{_W}]{{35}}", 39),)),
    Token("A", _nb("BEA") + r"RER\s++[A-Za-z0-9._~+/-]{16,}+=*+", _bearer, (Gate(_NB + "BEARER", 4),)),
    Token("A", rf"(?<![{_W}]A)WS" + _AWS_QUOTED, _aws_quoted, (Gate(_NB + "AWS", 3),)),
    Token("G", rf"(?<![{_W}]G)R1348941[{_W}]{{20,}}+", _span("gitlab_token", 0),
          (Gate(f"{_NB}GR1348941[{_W}]{{20}}", 29),)),
    Token("G", rf"(?<=SG)(?<![{_W}]SG)\.[{_W}]{{22}}\.[{_W}]{{43}}", _span("sendgrid_key", 1),
          (Gate(f"{_NB}SG\\.[{_W}]{{22}}\\.[{_W}]{{43}}", 68),)),
    Token("earer", _nb("[Bb]earer") + r"\s++[A-Za-z0-9._~+/-]{16,}+=*+", _bearer, (Gate(_NB + "[Bb]earer", 5),)),
    Token("ws", rf"(?<=[Aa]ws)(?<![{_W}][Aa]ws)" + _AWS_QUOTED, _aws_quoted, (Gate(_NB + "[Aa]ws", 2),)),
)


# One pass per anchor: its detectors' alternatives after the anchor literal, each ending in an
# empty marker group so `match.lastindex` names the detector. A pattern that starts with a literal
# is scanned for it at memchr speed; one that starts with a character set is tried at every
# position (about 10 ns a character), which is why the anchors are not merged into one pattern.
@dataclass(frozen=True)
class Pass:
    pattern: re.Pattern[str]
    checks: tuple[tuple[int, Check], ...]  # by group index: (priority, check)
    gates: tuple[Gate, ...]  # every gate of its detectors


def _compile_passes(detectors: tuple[Token, ...]) -> tuple[Pass, ...]:
    anchors = list(dict.fromkeys(d.anchor for d in detectors))
    passes: list[Pass] = []
    for anchor in anchors:
        mine = [(priority, d) for priority, d in enumerate(detectors) if d.anchor == anchor]
        pattern = re.escape(anchor) + "(?:" + "|".join(f"{d.pattern}()" for _, d in mine) + ")"
        compiled = re.compile(pattern)
        # The markers are the only groups, numbered in the order of the alternatives (0 is unused).
        checks: list[tuple[int, Check]] = [(0, _skip)]
        checks.extend((priority, d.check) for priority, d in mine)
        passes.append(Pass(compiled, tuple(checks), tuple(g for _, d in mine for g in d.gates)))
    return tuple(passes)


PASSES = _compile_passes(TOKEN_DETECTORS)
# (start, priority, end, kind) of one detection; priority orders detections starting together.
Found = tuple[int, int, int, str]


def scan_pass(scan: Pass, text: str, found: list[Found], starts: list[int] | None = None) -> None:
    """Add the detections of one pass over `text` to `found` as (start, priority, end, kind).

    With `starts` (every position where a gate of the pass matched, in any order), `re` is tried
    only there; that finds the same matches as the full scan, since the full scan finds a match
    only where a detector can match, every such position is among `starts`, and a skipped run
    never hides a detection (see `_skip`), so trying `re` inside one changes nothing.
    """
    if starts is None:
        matches = [(match.start(), match.end(), match.lastindex or 0) for match in scan.pattern.finditer(text)]
    else:
        matches = []
        done = 0
        match_at = scan.pattern.match
        for start in sorted(set(starts)):
            if start < done:
                continue  # inside the previous match, which the full scan would not re-read either
            match = match_at(text, start)
            if match is not None:
                done = match.end()
                matches.append((start, done, match.lastindex or 0))
    for start, end, group in matches:
        priority, check = scan.checks[group]
        span = check(text, start, end)
        if span is not None:
            found.append((span[1], priority, span[2], span[0]))
