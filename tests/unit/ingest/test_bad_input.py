"""Bad session bodies: each is an InvalidRequest with a stable code and the line number."""

from __future__ import annotations

import io
import json

import pytest

from chalicelib.domain.errors import InvalidRequest
from chalicelib.ingest import MAX_LINE_BYTES, iter_jsonl_lines, parse_session
from chalicelib.ingest.jsonl import JsonlRecords

from .support import FIXTURES, jsonl, parse

USER = {"type": "user", "timestamp": "2025-01-01T00:00:00Z", "message": {"role": "user", "content": "hi"}}


def error_of(fmt: str, lines: list[bytes]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(fmt, lines)
    return caught.value


def test_non_json_line_names_its_line_number() -> None:
    err = error_of("claude-code", [*jsonl(USER, USER), b"\n", b"{not json}\n", *jsonl(USER)])
    assert err.code == "invalid_jsonl"
    assert "Line 4" in err.message
    assert err.details is not None and err.details["line"] == 4


def test_truncated_last_line_says_the_file_looks_cut_off() -> None:
    err = error_of("claude-code", [*jsonl(USER, USER), b'{"type":"user","message":{"role":"us'])
    assert err.code == "invalid_jsonl"
    assert "cut off at line 3" in err.message
    assert err.details == {"line": 3, "reason": "truncated_last_line"}


def test_bad_last_line_that_ends_in_a_newline_is_plain_invalid_json() -> None:
    err = error_of("claude-code", [*jsonl(USER), b"oops\n"])
    assert err.code == "invalid_jsonl" and "cut off" not in err.message


def test_json_that_is_not_an_object_is_rejected() -> None:
    assert error_of("codex", [b"[1, 2]\n"]).code == "invalid_jsonl"


def test_line_over_ten_megabytes_is_rejected_before_parsing() -> None:
    huge = b'{"type":"user","x":"' + b"a" * MAX_LINE_BYTES + b'"}\n'
    err = error_of("claude-code", [*jsonl(USER), huge])
    assert err.code == "line_too_long" and "Line 2" in err.message


class EndlessLine(io.RawIOBase):
    """A stream of one line that never ends; counts what was read."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        self.read_bytes += size
        return b"x" * size


def test_stream_splitter_stops_reading_a_line_past_the_limit() -> None:
    stream = EndlessLine()
    with pytest.raises(InvalidRequest) as caught:
        list(iter_jsonl_lines(stream, chunk_size=64 * 1024, max_line_bytes=1024 * 1024))
    assert caught.value.code == "line_too_long"
    assert stream.read_bytes <= 1024 * 1024 + 64 * 1024


def test_stream_splitter_keeps_line_endings_and_a_final_partial_line() -> None:
    data = b'{"a":1}\n\n{"b":2}\r\n{"c":'
    assert list(iter_jsonl_lines(io.BytesIO(data), chunk_size=3)) == [b'{"a":1}\n', b"\n", b'{"b":2}\r\n', b'{"c":']


def test_non_utf8_bytes_name_the_line() -> None:
    err = error_of("codex", [*jsonl(USER), b'{"type":"x","t":"caf\xe9"}\n'])
    assert err.code == "invalid_encoding" and "Line 2" in err.message


@pytest.mark.parametrize(
    ("fixture", "declared", "detected"),
    [
        ("codex-full.jsonl", "claude-code", "codex"),
        ("claude-code-full.jsonl", "codex", "claude-code"),
    ],
)
def test_the_other_format_is_a_format_mismatch(fixture: str, declared: str, detected: str) -> None:
    lines = (FIXTURES / fixture).read_bytes().splitlines(keepends=True)
    err = error_of(declared, lines)
    assert err.code == "format_mismatch"
    assert err.details is not None and err.details["detected_format"] == detected
    assert f"format={detected}" in err.message


@pytest.mark.parametrize("body", [[], [b""], [b"\n", b"  \r\n", b"\n"]])
def test_empty_body_is_an_empty_session(body: list[bytes]) -> None:
    assert error_of("claude-code", body).code == "empty_session"


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_session("cursor", [])
    assert caught.value.code == "unsupported_format"


def test_bom_crlf_blank_lines_and_lone_surrogates_are_tolerated() -> None:
    record = {**USER, "message": {"role": "user", "content": "cut emoji \ud83d"}}
    text = json.dumps(record)  # ensure_ascii keeps the lone surrogate as an escape
    lines = [b"\xef\xbb\xbf" + json.dumps(USER).encode() + b"\r\n", b"\r\n", text.encode() + b"\r\n"]
    entries, stats = parse("claude-code", lines)
    assert [e.text for e in entries] == ["hi", "cut emoji \ufffd"]  # type: ignore[union-attr]
    assert (stats.lines, stats.blank_lines) == (3, 1)


def test_a_native_json_body_sent_as_jsonl_gets_a_content_type_hint() -> None:
    body = {"trace": [{"kind": "user_message", "timestamp": "2025-01-01T00:00:00Z", "text": "hi"}]}
    err = error_of("claude-code", jsonl(body))
    assert err.code == "format_mismatch" and "application/json" in err.message


# Lines where JSON parsers commonly differ (numbers, escapes, surrogates, whitespace, nesting).
TRICKY_LINES = [
    b'{"a":1,}', b'{"a":"x\ty"}', b"{'a':1}", b'{"a":01}', b'{"a":+1}', b'{"a":.5}', b'{"a":1.}', b'{"a":0x10}',
    b'{"a":1} x', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":1e400}', b'{"a":-1e99999}',
    b'{"a":123456789012345678901234567890}', b'{"a":-0}', b'{"a":-0.0}', b'{"a":5e-324}', b'{"a":1e-400}',
    b'{"a":1.0000000000000001}', b'{"a":0.1}', b'{"a":123456789.123456789e10}', b'{"a":1,"a":2}',
    b'{"\\u0061":"\\u00e9\\/\\b"}', b'{"a":"\\ud83d\\ude00"}', b'{"a":"\\ud800"}', b'{"a":"\\udc00\\ud800"}',
    b'{"a":"\\x41"}', b'{"a":"\\u12"}', b'{"a":"\x7f"}', b'{"a":"\x1f"}', b'{"a":"\xc3\xa9"}', b'{"a":"\xef\xbf\xbe"}',
    b'{"a":\x0b1}', b'{"a":\xc2\xa01}', b'{"a":[' + b"[" * 300 + b"]" * 300 + b"]}", b"[1]", b'"s"', b"{}",
]


def _reference(line: bytes) -> object:
    """What the json-module path makes of one line: the record, or the error's code and details."""
    try:
        text = line.decode("utf-8")
        record = json.loads(text)
    except (ValueError, RecursionError):
        return "error"
    return record if isinstance(record, dict) else "error"


@pytest.mark.parametrize("line", TRICKY_LINES)
def test_each_line_reads_as_the_json_module_reads_it(line: bytes) -> None:
    # Lines are parsed by pydantic-core's faster parser, falling back to `json` where it refuses:
    # what comes out must be what `json` alone gives (values, surrogates scrubbed, refusals).
    expected = _reference(line)
    try:
        ((_, record),) = list(JsonlRecords([line + b"\n"]))
    except InvalidRequest as exc:
        assert expected == "error", exc.message
        return
    if isinstance(expected, dict) and "\\ud800" in line.decode():
        expected = {"a": "\ufffd"}
    if isinstance(expected, dict) and "\\udc00\\ud800" in line.decode():
        expected = {"a": "\ufffd\ufffd"}
    assert repr(record) == repr(expected)
