"""Verdict export: one row per scored question of each run, as CSV or JSON Lines.

Rows are produced and encoded one at a time, so an export never holds more than a page of runs.
CSV cells that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, CR at the start:
judge findings quote session text, which anyone could have written) are prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from chalicelib.domain.evaluation import SessionEvalCompleted
from chalicelib.domain.history import EvalRunSummary, RunFilterQuery

EXPORT_FORMATS: tuple[str, ...] = ("csv", "jsonl")
DELIVERIES: tuple[str, ...] = ("auto", "link")
COLUMNS: tuple[str, ...] = (
    "eval_run_id", "session_id", "repository", "user", "status", "runner", "vendor", "model", "category",
    "question_id", "score", "verdict", "finding", "recommendation", "category_score", "overall_score",
    "run_cost_usd", "created_at", "finished_at")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportQuery(RunFilterQuery):
    """`GET /eval-runs/export`: the list filters plus the format."""

    format: str | None = Field(default=None, min_length=1, max_length=10, description="csv (default) or jsonl",
                               json_schema_extra={"enum": list(EXPORT_FORMATS)})
    delivery: str | None = Field(default=None, min_length=1, max_length=10, description=(
        "auto (default): the file in the response when it fits, else 303 to a presigned S3 link; "
        "link: always a JSON body with the link"), json_schema_extra={"enum": list(DELIVERIES)})


def verdict_rows(summary: EvalRunSummary, result: SessionEvalCompleted) -> Iterator[dict[str, Any]]:
    cost = summary.cost.get("usd") if summary.cost else None
    for category in result.categories:
        for v in category.questions:
            yield {"eval_run_id": summary.eval_run_id, "session_id": summary.session_id,
                   "repository": summary.repository, "user": summary.created_by, "status": summary.status,
                   "runner": summary.runner, "vendor": summary.vendor, "model": summary.model,
                   "category": category.name, "question_id": v.question_id, "score": v.score,
                   "verdict": v.verdict, "finding": v.finding, "recommendation": v.recommendation,
                   "category_score": category.score, "overall_score": result.overall_score,
                   "run_cost_usd": cost, "created_at": summary.created_at, "finished_at": summary.finished_at}


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


class RowEncoder:
    """Encodes rows to text in the chosen format; `header()` is the file's first line (CSV only)."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\r\n")

    def header(self) -> str:
        if self.format != "csv":
            return ""
        return self._csv(list(COLUMNS))

    def encode(self, row: dict[str, Any]) -> str:
        if self.format == "jsonl":
            return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
        return self._csv([_cell(row.get(c)) for c in COLUMNS])

    def _csv(self, cells: list[Any]) -> str:
        self._buf.seek(0)
        self._buf.truncate()
        self._writer.writerow(cells)
        return self._buf.getvalue()
