"""Repository globs (pure): a linear, bounded matcher for admin-written patterns over uploaded text.

Syntax: `*` any run of characters (`/` included), `?` exactly one character, `[abc]` / `[a-z]` /
`[!a-z]` one character from (not from) a set, `\\` makes the next character literal; everything
else matches itself. Matching is case-insensitive and covers the whole text (`github.com/acme/*`
matches every acme repository; `*acme*` any text that contains "acme").

Why no regex: the text is whatever an uploader put in `repository`, so the matcher must not be able
to backtrack. A pattern is split at its stars into fixed-length segments; the first must match at the
start, the last at the end, and each middle one is found leftmost in between (leftmost is optimal for
star-separated segments, so nothing is ever retried). Each segment is found with the shift-and
(bitap) algorithm: one pass over the text with a bit per pattern position, so the whole match reads
each character of the text once per segment it crosses, and costs O(len(text) + distinct characters
x len(pattern)) at worst. Patterns are at most `MAX_GLOB_CHARS` long and texts are bounded by the
session metadata caps.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_GLOB_CHARS = 200


class GlobError(ValueError):
    """An invalid pattern; the message says what and where (1-based character position)."""


@dataclass(frozen=True)
class _Atom:
    """One pattern position: a literal character, any character (`?`), or a character set."""

    literal: str | None = None
    chars: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()
    negated: bool = False
    any: bool = False

    def matches(self, char: str) -> bool:
        if self.any:
            return True
        folded = (char.lower(), char.upper())
        if self.literal is not None:
            return folded[0] == self.literal
        hit = any(c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges) for c in folded)
        return hit != self.negated


Segment = tuple[_Atom, ...]


@dataclass(frozen=True)
class Glob:
    """A compiled pattern: the segments between its stars (`starred` False: no star at all)."""

    pattern: str
    segments: tuple[Segment, ...]
    starred: bool

    def matches(self, text: str) -> bool:
        if not self.starred:
            (only,) = self.segments
            return len(text) == len(only) and _matches_at(only, text, 0)
        first, *middle, last = self.segments
        start, end = len(first), len(text) - len(last)
        if start > end or not _matches_at(first, text, 0) or not _matches_at(last, text, end):
            return False
        for segment in middle:
            found = _find(segment, text, start, end)
            if found is None:
                return False
            start = found + len(segment)
        return True


def _matches_at(segment: Segment, text: str, offset: int) -> bool:
    return all(atom.matches(text[offset + i]) for i, atom in enumerate(segment))


def _find(segment: Segment, text: str, start: int, end: int) -> int | None:
    """Start of the leftmost occurrence of `segment` inside text[start:end] (shift-and, one pass)."""
    size = len(segment)
    if size == 0:
        return start
    accept = 1 << (size - 1)
    masks: dict[str, int] = {}
    state = 0
    for index in range(start, end):
        char = text[index]
        mask = masks.get(char)
        if mask is None:
            mask = 0
            for bit, atom in enumerate(segment):
                if atom.matches(char):
                    mask |= 1 << bit
            masks[char] = mask
        state = ((state << 1) | 1) & mask
        if state & accept:
            return index - size + 1
    return None


def _parse_class(pattern: str, at: int) -> tuple[_Atom, int]:
    """The set starting at pattern[at] == '['; returns the atom and the index after its ']'."""
    i = at + 1
    negated = i < len(pattern) and pattern[i] == "!"
    if negated:
        i += 1
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern):
                raise GlobError(f"'\\' at position {i + 1} escapes nothing")
            i += 1
            char = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            high = pattern[i + 2]
            if high < char:
                raise GlobError(f"the range '{char}-{high}' at position {i + 1} runs backwards")
            ranges.append((char.lower(), high.lower()))
            ranges.append((char.upper(), high.upper()))
            i += 3
        else:
            chars.update((char.lower(), char.upper()))
            i += 1
        first = False
    if i >= len(pattern):
        raise GlobError(f"the '[' at position {at + 1} is never closed with ']'")
    return _Atom(chars=frozenset(chars), ranges=tuple(ranges), negated=negated), i + 1


def compile_glob(pattern: str) -> Glob:
    """Parse and check a pattern; raises GlobError with a message fit for a 400's field details."""
    if not pattern:
        raise GlobError("the pattern is empty")
    if len(pattern) > MAX_GLOB_CHARS:
        raise GlobError(f"the pattern is {len(pattern)} characters; at most {MAX_GLOB_CHARS}")
    for position, char in enumerate(pattern, 1):
        if char < " " or char == "\x7f":
            raise GlobError(f"control character at position {position}")
    segments: list[Segment] = []
    current: list[_Atom] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            segments.append(tuple(current))
            current = []
            while i < len(pattern) and pattern[i] == "*":
                i += 1  # a run of stars is one star
            continue
        if char == "?":
            current.append(_Atom(any=True))
            i += 1
        elif char == "[":
            atom, i = _parse_class(pattern, i)
            current.append(atom)
        elif char == "\\":
            if i + 1 >= len(pattern):
                raise GlobError(f"'\\' at position {i + 1} escapes nothing")
            current.append(_Atom(literal=pattern[i + 1].lower()))
            i += 2
        elif char == "]":
            raise GlobError(f"']' at position {i + 1} closes no '['; write '\\]' for the character")
        else:
            current.append(_Atom(literal=char.lower()))
            i += 1
    segments.append(tuple(current))
    return Glob(pattern=pattern, segments=tuple(segments), starred=len(segments) > 1)
