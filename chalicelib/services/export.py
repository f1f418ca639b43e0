"""Verdict export: the list filters → one row per scored question, CSV or JSON Lines, streamed.

Runs are read a page at a time from the history indexes (only runs with a result can have
verdicts, so the score index serves an unfiltered export), their results fetched 100 at a time,
and each row is encoded and appended to a bounded buffer. While the file still fits in a Lambda
response it stays in that buffer and goes back inline; the moment it would not, the buffer becomes
the first part of an S3 multipart upload and every further 8 MiB is uploaded as it fills, so
memory stays flat whatever the export's size, and the client gets a presigned link.

Why the inline limit is ~5.9 MB and not API Gateway's 10 MB: the body reaches API Gateway inside
the Lambda's synchronous response, which is capped at 6 MB after the body is JSON-escaped into it
(quotes and newlines double, non-ASCII becomes `\\uXXXX`); the buffer counts escaped bytes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.evaluation import SessionEvalCompleted
from chalicelib.domain.export import CONTENT_TYPES, DELIVERIES, EXPORT_FORMATS, ExportQuery, RowEncoder, verdict_rows
from chalicelib.domain.history import RunFilters, parse_run_filters
from chalicelib.domain.ids import new_id
from chalicelib.domain.principal import Principal
from chalicelib.observability import logger
from chalicelib.services.history import RunIndex

MAX_INLINE_ESCAPED_BYTES = 6_000_000 - 64 * 1024
PART_BYTES = 8 * 1024 * 1024       # S3 parts must be ≥ 5 MiB except the last
LINK_TTL_SECONDS = 15 * 60
RUNS_PER_PAGE = 100                # = BatchGetItem's 100 keys


class RunResults(Protocol):
    def results(self, tenant: str, run_ids: list[str]) -> dict[str, SessionEvalCompleted]: ...


class ExportObjects(Protocol):
    def export_key(self, tenant: str, export_id: str, ext: str) -> str: ...

    def start(self, key: str, content_type: str) -> str: ...

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str: ...

    def complete(self, key: str, upload_id: str, etags: list[str]) -> None: ...

    def abort(self, key: str, upload_id: str) -> None: ...

    def presign_get(self, key: str, *, expires_in: int, filename: str) -> str: ...


@dataclass
class ExportOutcome:
    format: str
    content_type: str
    filename: str
    rows: int
    bytes: int
    body: str | None = None            # inline
    url: str | None = None             # presigned link
    expires_at: str | None = None


class _Sink:
    """The bounded buffer that becomes an S3 multipart upload once the file outgrows a response."""

    def __init__(self, objects: ExportObjects, key: str, content_type: str, *, force_upload: bool,
                 inline_limit: int, part_bytes: int) -> None:
        self._objects = objects
        self._key = key
        self._content_type = content_type
        self._inline_limit = inline_limit
        self._part_bytes = part_bytes
        self._buffer = bytearray()
        self._escaped = 0
        self._upload_id: str | None = None
        self._etags: list[str] = []
        self.bytes = 0
        self.peak_buffer = 0
        if force_upload:
            self._upload_id = objects.start(key, content_type)

    @property
    def uploading(self) -> bool:
        return self._upload_id is not None

    def write(self, text: str) -> None:
        data = text.encode()
        self._buffer += data
        self.bytes += len(data)
        self.peak_buffer = max(self.peak_buffer, len(self._buffer))
        if self._upload_id is None:
            self._escaped += len(json.dumps(text)) - 2
            if self._escaped > self._inline_limit:
                self._upload_id = self._objects.start(self._key, self._content_type)
        if self._upload_id is not None and len(self._buffer) >= self._part_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._upload_id is None:  # pragma: no cover - only called while uploading
            raise RuntimeError("not uploading")
        etag = self._objects.upload_part(self._key, self._upload_id, len(self._etags) + 1, bytes(self._buffer))
        self._etags.append(etag)
        self._buffer = bytearray()

    def inline_text(self) -> str:
        return self._buffer.decode()

    def finish_upload(self) -> None:
        if self._upload_id is None:  # pragma: no cover - callers check `uploading`
            raise RuntimeError("not uploading")
        if self._buffer or not self._etags:
            self._flush()
        self._objects.complete(self._key, self._upload_id, self._etags)

    def abort(self) -> None:
        if self._upload_id is not None:
            self._objects.abort(self._key, self._upload_id)


class RunExportService:
    def __init__(self, *, index: RunIndex, results: RunResults, objects: ExportObjects, clock: Clock,
                 inline_limit: int = MAX_INLINE_ESCAPED_BYTES, part_bytes: int = PART_BYTES) -> None:
        self._index = index
        self._results = results
        self._objects = objects
        self._clock = clock
        self._inline_limit = inline_limit
        self._part_bytes = part_bytes
        self.last_peak_buffer = 0   # bench: the largest the buffer grew in the last export

    def export(self, principal: Principal, query: ExportQuery) -> ExportOutcome:
        fmt = query.format if query.format is not None else "csv"
        if fmt not in EXPORT_FORMATS:
            raise InvalidRequest(f"Unknown format {fmt[:20]!r}; use csv or jsonl.", code="invalid_filter",
                                 details={"field": "format", "allowed": list(EXPORT_FORMATS)})
        delivery = query.delivery if query.delivery is not None else "auto"
        if delivery not in DELIVERIES:
            raise InvalidRequest(f"Unknown delivery {delivery[:20]!r}; use auto or link.", code="invalid_filter",
                                 details={"field": "delivery", "allowed": list(DELIVERIES)})
        filters = parse_run_filters(query)
        if not filters.scored_only:
            # Only runs with a result have verdicts: the score index skips the others.
            filters = dataclasses.replace(filters, min_score=0)
        now = self._clock.now()
        export_id = new_id("exp")
        filename = f"eval-runs-{now.strftime('%Y%m%d-%H%M%S')}.{fmt}"
        key = self._objects.export_key(principal.tenant, export_id, fmt)
        sink = _Sink(self._objects, key, CONTENT_TYPES[fmt], force_upload=delivery == "link",
                     inline_limit=self._inline_limit, part_bytes=self._part_bytes)
        try:
            rows = self._write_rows(principal.tenant, filters, RowEncoder(fmt), sink, int(now.timestamp()))
            outcome = ExportOutcome(format=fmt, content_type=CONTENT_TYPES[fmt], filename=filename, rows=rows,
                                    bytes=sink.bytes)
            if sink.uploading:
                sink.finish_upload()
                outcome.url = self._objects.presign_get(key, expires_in=LINK_TTL_SECONDS, filename=filename)
                outcome.expires_at = iso(now + timedelta(seconds=LINK_TTL_SECONDS))
            else:
                outcome.body = sink.inline_text()
        except BaseException:
            sink.abort()
            raise
        self.last_peak_buffer = sink.peak_buffer
        logger.info("eval runs exported", extra={"format": fmt, "rows": rows, "bytes": sink.bytes,
                                                 "delivery": "link" if outcome.url else "inline"})
        return outcome

    def _write_rows(self, tenant: str, filters: RunFilters, encoder: RowEncoder, sink: _Sink, now_epoch: int) -> int:
        header = encoder.header()
        if header:
            sink.write(header)
        rows = 0
        before: str | None = None
        while True:
            page = self._index.page(tenant, filters, limit=RUNS_PER_PAGE, before=before, now_epoch=now_epoch,
                                    read_budget=10 * RUNS_PER_PAGE)
            results = self._results.results(tenant, [s.eval_run_id for s in page.items]) if page.items else {}
            for summary in page.items:
                result = results.get(summary.eval_run_id)
                if result is None:
                    continue  # rerun in progress: its earlier result was cleared
                for row in verdict_rows(summary, result):
                    sink.write(encoder.encode(row))
                    rows += 1
            if page.next_position is None:
                return rows
            before = page.next_position
