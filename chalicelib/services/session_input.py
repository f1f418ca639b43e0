"""Reading an uploaded session's bytes: gzip sniffing and inflating, counting and hashing, the caps on
what a body may expand to, spooling the normalised trace as gzip JSONL, and reading it back."""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

from pydantic import TypeAdapter

from chalicelib.domain.errors import DomainError, InvalidRequest, PayloadTooLarge
from chalicelib.domain.trace import TraceEntry
from chalicelib.ingest.jsonl import ByteReader

# Level 3 compresses JSON traces ~6-8x at several times the speed of the default 9, which matters
# inside the 29 s API Gateway window.
GZIP_LEVEL = 3
GZIP_MAGIC = b"\x1f\x8b"

_ENTRY: TypeAdapter[TraceEntry] = TypeAdapter(TraceEntry)


class _Prefixed:
    """A reader that replays bytes already consumed (the sniffed magic) before the rest."""

    def __init__(self, prefix: bytes, inner: ByteReader) -> None:
        self._prefix = prefix
        self._inner = inner

    def read(self, amt: int = -1, /) -> bytes:
        if self._prefix:
            if amt is None or amt < 0:
                data, self._prefix = self._prefix + self._inner.read(), b""
                return data
            data, self._prefix = self._prefix[:amt], self._prefix[amt:]
            if len(data) < amt:
                data += self._inner.read(amt - len(data))
            return data
        return self._inner.read(amt)


class _Counting:
    """Counts the bytes read from the wire (before any gzip inflation)."""

    def __init__(self, inner: ByteReader) -> None:
        self._inner = inner
        self.bytes = 0

    def read(self, amt: int = -1, /) -> bytes:
        data = self._inner.read(amt)
        self.bytes += len(data)
        return data


@dataclass(frozen=True)
class Caps:
    """What one upload may expand to; `too_large(kind, limit)` is the error when a cap is crossed."""

    inflated_bytes: int
    lines: int
    parse_seconds: float | None
    too_large: Callable[[str, float], DomainError]


def direct_too_large(session_id: str) -> Callable[[str, float], DomainError]:
    def error(kind: str, limit: float) -> DomainError:
        what = {"inflated_bytes": f"more than {int(limit)} bytes once inflated",
                "lines": f"more than {int(limit)} lines",
                "parse_seconds": f"more than {limit:g} s to parse"}[kind]
        return PayloadTooLarge(
            f"The session is {what}, over what PUT /sessions accepts; upload it with the presigned upload "
            f"instead: POST /sessions/{session_id}/uploads.",
            code="direct_upload_too_large",
            details={"limit_kind": kind, "limit": limit, "upload_path": f"/sessions/{session_id}/uploads"})

    return error


def session_too_large(kind: str, limit: float) -> DomainError:
    if kind == "inflated_bytes":
        return PayloadTooLarge(f"The session is larger than {int(limit)} bytes uncompressed; split it or drop the "
                               "largest tool outputs before uploading.", code="session_too_large",
                               details={"limit_bytes": int(limit)})
    return PayloadTooLarge(f"The session has more than {int(limit)} lines; split it before uploading.",
                           code="session_too_large", details={"limit_kind": kind, "limit": limit})


def capped_lines(lines: Iterable[bytes], caps: Caps, monotonic: Callable[[], float]) -> Iterator[bytes]:
    """Stop at the first line over the line cap or past the parse-time cap (checked every 1024 lines)."""
    deadline = monotonic() + caps.parse_seconds if caps.parse_seconds is not None else None
    for count, line in enumerate(lines, 1):
        if count > caps.lines:
            raise caps.too_large("lines", caps.lines)
        if deadline is not None and not count & 1023 and monotonic() > deadline:
            raise caps.too_large("parse_seconds", caps.parse_seconds or 0.0)
        yield line


def inflates_past(body: bytes, limit: int) -> bool:
    """Whether a gzip body (one or more members) inflates to more than `limit` bytes; memory stays at
    one 1 MiB output chunk. A corrupt stream answers False: parsing reports it with its own code."""
    inflater = zlib.decompressobj(31)
    data, total = body, 0
    try:
        while data:
            total += len(inflater.decompress(data, 1 << 20))
            if total > limit:
                return True
            if inflater.eof:
                data = inflater.unused_data
                inflater = zlib.decompressobj(31)
            elif inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            else:
                break  # all input consumed (more output may follow with no new input)
        while not inflater.eof and (chunk := inflater.decompress(b"", 1 << 20)):
            total += len(chunk)
            if total > limit:
                return True
    except zlib.error:
        return False
    return False


class MeteredInput:
    """The decoded upload: counts and hashes bytes, enforces the inflated size cap, maps gzip errors."""

    def __init__(self, raw: ByteReader, *, limit: int,
                 too_large: Callable[[str, float], DomainError] = session_too_large) -> None:
        self._limit = limit
        self._too_large = too_large
        self._wire = _Counting(raw)
        head = b""
        while len(head) < 2:
            more = self._wire.read(2 - len(head))
            if not more:
                break
            head += more
        self.gzipped = head == GZIP_MAGIC
        replay = _Prefixed(head, self._wire)
        self._reader: Any = gzip.GzipFile(fileobj=cast(Any, replay), mode="rb") if self.gzipped else replay
        self.bytes = 0
        self._sha = hashlib.sha256()

    @property
    def received_bytes(self) -> int:
        return self._wire.bytes

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def read(self, amt: int = -1, /) -> bytes:
        try:
            data: bytes = self._reader.read(amt)
        except (gzip.BadGzipFile, EOFError, zlib.error):
            raise InvalidRequest("The body starts like gzip but is not a complete gzip stream; "
                                 "compress the file with `gzip -c` and upload again.",
                                 code="invalid_gzip") from None
        self.bytes += len(data)
        if self.bytes > self._limit:
            raise self._too_large("inflated_bytes", self._limit)
        self._sha.update(data)
        return data


@dataclass(frozen=True)
class InMemoryInput:
    bytes: int
    received_bytes: int
    sha256: str


class InputFacts(Protocol):
    """Size and digest of the upload, complete once its entries have been consumed."""

    @property
    def bytes(self) -> int: ...

    @property
    def received_bytes(self) -> int: ...

    @property
    def sha256(self) -> str: ...


@dataclass
class Spooled:
    file: IO[bytes]
    size: int
    entries: int
    by_kind: dict[str, int]


def spool_trace(entries: Iterable[TraceEntry], spool: IO[bytes]) -> Spooled:
    """Write entries as gzip JSONL into `spool`; the input iterator is consumed exactly once."""
    counts: Counter[str] = Counter()
    with gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
        for entry in entries:
            gz.write(entry.model_dump_json(exclude_none=True).encode("utf-8", "surrogatepass"))
            gz.write(b"\n")
            counts[entry.kind] += 1
    size = spool.tell()
    spool.seek(0)
    return Spooled(file=spool, size=size, entries=sum(counts.values()), by_kind=dict(sorted(counts.items())))


def read_trace(stream: ByteReader) -> Iterator[TraceEntry]:
    with gzip.GzipFile(fileobj=cast(Any, stream), mode="rb") as gz:
        for line in gz:
            if line.strip():
                yield _ENTRY.validate_json(line)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def scrub_surrogates(value: Any) -> Any:
    """Replace lone UTF-16 surrogates (a JSON `\\ud800` escape; unencodable as UTF-8) with U+FFFD."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [scrub_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    return value
