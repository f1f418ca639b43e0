"""Bounded-memory JSONL reading: splitting a byte stream into lines and decoding them into records.

Owns every input error an uploaded JSONL body can produce, each an `InvalidRequest` naming the
1-based line number: `line_too_long` (a line over 10 MiB, checked before any decoding),
`invalid_encoding` (not UTF-8), `invalid_jsonl` (not JSON, or not a JSON object) and
`empty_session` (no non-blank line at all).

A half-written last line is normal for a transcript copied while its session was still running
(session-formats.md §1.2). It is still rejected, because a silently shortened session would be
judged on partial evidence; the message says the file looks cut off so the caller can re-copy it
once the session ended, or drop the last line deliberately.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from pydantic_core import from_json

from chalicelib.domain.errors import InvalidRequest

MAX_LINE_BYTES = 10 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# A JSON escape of a UTF-16 surrogate: the only way a decoded line can hold a lone surrogate,
# which Claude Code writes when it cuts a long tool output in the middle of an emoji.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class ByteReader(Protocol):
    def read(self, amt: int = ..., /) -> bytes: ...


def iter_jsonl_lines(
    stream: ByteReader, *, chunk_size: int = 1 << 20, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[bytes]:
    """Split a binary stream (file, S3 streaming body) into lines, keeping the b"\\n".

    Holds at most one line plus one chunk: a line longer than `max_line_bytes` is rejected as soon
    as that many bytes have been seen, without buffering the rest of it.
    """
    pending = bytearray()
    line_no = 1
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            break
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                pending += chunk[start:]
                if len(pending) > max_line_bytes:
                    raise _line_too_long(line_no, max_line_bytes)
                break
            if pending:
                pending += chunk[start : newline + 1]
                line = bytes(pending)
                pending.clear()
            else:
                line = chunk[start : newline + 1]
            if len(line) > max_line_bytes + 2:  # the limit excludes the line ending
                raise _line_too_long(line_no, max_line_bytes)
            yield line
            line_no += 1
            start = newline + 1
    if pending:
        yield bytes(pending)


def _line_too_long(line_no: int, max_line_bytes: int) -> InvalidRequest:
    return InvalidRequest(
        f"Line {line_no} is longer than {max_line_bytes} bytes; a transcript line that large is not "
        "a real session record. Remove or shorten it and upload again.",
        code="line_too_long",
        details={"line": line_no, "max_line_bytes": max_line_bytes},
    )


class JsonlRecords:
    """Iterate `(line_no, record)` over raw byte lines; skips blank lines, counts what it saw.

    Lines may come with or without their line ending (`iter_jsonl_lines`, a file object, or
    botocore's `iter_lines()` all work). One line of look-ahead tells whether a line that fails
    to parse is the last one.
    """

    def __init__(self, lines: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._lines = lines
        self._max = max_line_bytes
        self.lines = 0
        self.blank_lines = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        source = iter(self._lines)
        following = next(source, None)
        while following is not None:
            raw = following
            following = next(source, None)
            self.lines += 1
            self.bytes += len(raw)
            line_no = self.lines
            if len(raw) > self._max + 2:
                raise _line_too_long(line_no, self._max)
            stripped = raw.strip()
            if line_no == 1 and stripped.startswith(_BOM):
                stripped = stripped[len(_BOM) :].strip()
            if not stripped:
                self.blank_lines += 1
                continue
            yield line_no, self._decode(stripped, line_no, is_last=following is None, ended=raw[-1:] == b"\n")
        if self.lines == self.blank_lines:
            raise InvalidRequest(
                "The session body is empty: upload at least one JSONL record.",
                code="empty_session",
                details={"lines": self.lines},
            )

    @staticmethod
    def _decode(stripped: bytes, line_no: int, *, is_last: bool, ended: bool) -> dict[str, Any]:
        # pydantic-core's JSON parser (jiter) reads a line in about half the time of `json.loads`.
        # It accepts no input that `json` rejects, gives the same values where both accept, and
        # refuses what needs this module's care (invalid UTF-8, lone surrogates, a BOM, nesting past
        # its depth limit): those lines take the `json` path below, which words the errors.
        try:
            parsed = from_json(stripped)
        except ValueError:
            pass
        else:
            if isinstance(parsed, dict):
                return parsed
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"Line {line_no} is not valid UTF-8 (byte {exc.start + 1}); save the transcript as "
                "UTF-8 and upload again.",
                code="invalid_encoding",
                details={"line": line_no, "byte": exc.start + 1},
            ) from None
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            if is_last and not ended:
                raise InvalidRequest(
                    f"The file looks cut off at line {line_no}: its last line is incomplete JSON "
                    "with no line ending. Upload the transcript again once the session has "
                    "finished writing it, or remove the partial last line.",
                    code="invalid_jsonl",
                    details={"line": line_no, "reason": "truncated_last_line"},
                ) from None
            position = exc.pos + 1 if isinstance(exc, json.JSONDecodeError) else None
            raise InvalidRequest(
                f"Line {line_no} is not valid JSON"
                + (f" (column {position})" if position is not None else "")
                + "; every line of a JSONL session must be one JSON object.",
                code="invalid_jsonl",
                details={"line": line_no, "column": position},
            ) from None
        if not isinstance(record, dict):
            raise InvalidRequest(
                f"Line {line_no} is JSON but not an object; every line of a JSONL session must be "
                "one JSON object.",
                code="invalid_jsonl",
                details={"line": line_no},
            )
        if _SURROGATE_ESCAPE.search(text):
            return {_scrub_surrogates(key): _scrub_surrogates(item) for key, item in record.items()}
        return record


def _scrub_surrogates(value: Any) -> Any:
    """Replace lone UTF-16 surrogates (unencodable as UTF-8) with U+FFFD, recursively."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_scrub_surrogates(key): _scrub_surrogates(item) for key, item in value.items()}
    return value
