"""The export's streaming path under moto S3: a file larger than a response goes up part by part
(real 5 MiB minimum parts) while the buffer never holds more than a part, and reads back whole."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.adapters.export_store import S3ExportObjects
from chalicelib.domain.evaluation import SessionEvalCompleted
from chalicelib.domain.export import ExportQuery
from chalicelib.domain.history import EvalRunSummary, RunFilters
from chalicelib.domain.principal import Principal
from chalicelib.services.export import RunExportService
from tests.history_support import result_for

RUNS = 800
FINDING = "x" * 1900   # ~2 KB a verdict row: 13 rows a run, ~21 MB in all


@dataclass
class Page:
    items: list[EvalRunSummary]
    next_position: str | None


@dataclass
class FakeIndex:
    """Pages of synthetic summaries, newest first, like the run index."""

    pages_served: int = 0
    filters_seen: list[RunFilters] = field(default_factory=list)

    def page(self, tenant: str, filters: RunFilters, *, limit: int, before: str | None, now_epoch: int,
             read_budget: int | None = None) -> Page:
        self.pages_served += 1
        self.filters_seen.append(filters)
        start = int(before) if before else RUNS
        ids = list(range(start - 1, max(start - 1 - limit, -1), -1))
        items = [EvalRunSummary(eval_run_id=f"evr_{i:04d}", session_id="s", status="succeeded", runner="server",
                                created_by="bob", created_at="2026-11-01T10:00:00.000Z", overall_score=3)
                 for i in ids]
        return Page(items, str(ids[-1]) if ids and ids[-1] > 0 else None)


class FakeResults:
    def results(self, tenant: str, run_ids: list[str]) -> dict[str, SessionEvalCompleted]:
        return {r: result_for(r, 3, finding=FINDING) for r in run_ids}


class Clock:
    def now(self) -> datetime:
        return datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0


class CountingExports(S3ExportObjects):
    parts: list[int] = []

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        self.parts.append(len(data))
        return super().upload_part(key, upload_id, number, data)


@pytest.fixture
def objects(aws: Any) -> tuple[CountingExports, Any, str]:
    from botocore.config import Config

    session, resources = aws
    s3 = session.client("s3", config=Config(signature_version="s3v4"))
    store = CountingExports(s3, bucket=resources.bucket_name, kms_key_id=resources.kms_key_id)
    store.parts = []
    return store, s3, resources.bucket_name


def test_a_large_export_is_uploaded_in_parts_with_a_bounded_buffer(objects: Any) -> None:
    store, s3, bucket = objects
    index = FakeIndex()
    service = RunExportService(index=index, results=FakeResults(), objects=store, clock=Clock(),
                               part_bytes=5 * 1024 * 1024)
    outcome = service.export(Principal(tenant="acme", user="bob"), ExportQuery(format="csv"))
    assert outcome.body is None and outcome.url is not None and outcome.rows == RUNS * 13
    assert index.filters_seen[0].min_score == 0   # only runs with results: the score index
    key = outcome.url.split("?")[0].split(".amazonaws.com/")[-1]
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []
    assert len(store.parts) >= 2 and all(size >= 5 * 1024 * 1024 for size in store.parts[:-1])
    text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == RUNS * 13 and rows[0]["eval_run_id"] == f"evr_{RUNS - 1:04d}"
    assert outcome.bytes == len(text.encode())
    # Flat memory: the buffer peaked near the first part (or the inline limit), never the file.
    assert service.last_peak_buffer < max(6_000_000, 5 * 1024 * 1024) + 4096
    assert outcome.bytes > 2 * service.last_peak_buffer


def test_a_failed_export_aborts_its_upload(objects: Any) -> None:
    store, s3, bucket = objects

    class Failing(FakeResults):
        calls = 0

        def results(self, tenant: str, run_ids: list[str]) -> dict[str, SessionEvalCompleted]:
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("the table went away")
            return super().results(tenant, run_ids)

    service = RunExportService(index=FakeIndex(), results=Failing(), objects=store, clock=Clock(),
                               inline_limit=1000)
    with pytest.raises(RuntimeError):
        service.export(Principal(tenant="acme", user="bob"), ExportQuery(format="jsonl"))
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
