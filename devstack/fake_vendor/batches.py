"""FAKE vendor batch APIs (dev/test only): Anthropic Message Batches and the OpenAI Files + Batch APIs,
served by the dev fake vendor (`devstack.fake_vendor`) so the real SDKs' batch calls run offline.

Endpoints (vendor wire formats, shapes taken from the SDKs' types):
  POST /v1/messages/batches                 create ({"requests": [{"custom_id", "params"}]})
  GET  /v1/messages/batches/{id}            retrieve (processing_status, request_counts, results_url)
  GET  /v1/messages/batches/{id}/results    JSONL: {"custom_id", "result": {"type": succeeded|errored|expired|canceled}}
  POST /v1/messages/batches/{id}/cancel
  POST /v1/files                            multipart upload (purpose=batch) of the JSONL input
  GET  /v1/files/{id}/content               an uploaded input, or a batch's output/error file
  POST /v1/batches                          create ({"input_file_id", "endpoint", "completion_window"})
  GET  /v1/batches/{id}                     retrieve (status, request_counts, output_file_id, error_file_id)
  POST /v1/batches/{id}/cancel
Control: POST /_fake/batches/options ({"end_after_seconds", "hold", "expire"}), GET /_fake/batches.

Each request of a batch is answered by the fake's own generate logic (`FakeVendor.handle_generate`),
one after another in a background thread, so verdicts, scripted rules (a rule's HTTP status becomes
an `errored` result), usage and the prompt-cache simulation (the first request writes the trace
prefix, the rest read it) are exactly what a direct call gets. A batch ends `end_after_seconds` after
it was processed. `hold` keeps new batches unprocessed until it is switched off (a cancel then finds
every request unprocessed: `canceled`). Requests whose prompt contains one of the `expire` strings
(a question id, say) are never processed and come back `expired`, like requests still pending when
the vendor's 24 h window closes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

    from devstack.fake_vendor.vendor import FakeVendor

Vendor = Literal["anthropic", "openai"]
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ANTHROPIC_BATCH = re.compile(r"^/v1/messages/batches(?:/([A-Za-z0-9_]+)(?:/(results|cancel))?)?$")
_OPENAI_BATCH = re.compile(r"^/v1/batches(?:/([A-Za-z0-9_]+)(?:/(cancel))?)?$")
_OPENAI_FILE = re.compile(r"^/v1/files(?:/([A-Za-z0-9_-]+)/content)?$")
WINDOW = timedelta(hours=24)


@dataclass
class BatchOptions:
    end_after_seconds: float = 0.0
    hold: bool = False
    expire: list[str] = field(default_factory=list)


@dataclass
class _Request:
    custom_id: str
    body: dict[str, Any]
    result: dict[str, Any] | None = None  # Anthropic-shaped result, or the OpenAI output/error line


@dataclass
class _Batch:
    id: str
    vendor: Vendor
    requests: list[_Request]
    headers: dict[str, str]
    api_key: str | None
    created: datetime
    input_file_id: str | None = None
    metadata: dict[str, Any] | None = None
    processed_at: float | None = None
    cancelled_at: datetime | None = None
    ended_at: datetime | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


class BatchState:
    """The batches and files of one fake vendor (reset with it)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.options = BatchOptions()
        self.batches: dict[str, _Batch] = {}
        self.files: dict[str, tuple[str, bytes]] = {}
        self.ids = itertools.count(1)
        self.released = threading.Condition(self.lock)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):06d}fake"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


# ------------------------------------------------------------------------------------- processing


def _process(fake: FakeVendor, batch: _Batch) -> None:
    """Answer every request of the batch with the fake's generate logic (in order: the cache simulation
    then makes the first request write the shared prefix and the others read it)."""
    state: BatchState = fake.batches
    with state.lock:
        while state.options.hold and batch.cancelled_at is None:
            state.released.wait(0.5)
        expire = list(state.options.expire)
    path = "/v1/messages/batches" if batch.vendor == "anthropic" else "/v1/batches"
    for request in batch.requests:
        with state.lock:
            if batch.cancelled_at is not None:
                break
        prompt = json.dumps(request.body)
        if any(marker in prompt for marker in expire):
            continue  # left pending: `expired` when the batch ends
        generate = "/v1/messages" if batch.vendor == "anthropic" else "/v1/chat/completions"
        outcome = fake.handle_generate(batch.vendor, "generate", dict(request.body),
                                       {**batch.headers, ":path": generate}, batch.api_key)
        outcome.record.update(path=path, batch_id=batch.id, custom_id=request.custom_id)
        body = json.loads(outcome.body)
        if batch.vendor == "anthropic":
            request.result = ({"type": "succeeded", "message": body} if outcome.status == 200
                              else {"type": "errored", "error": body})
        else:
            request.result = {"id": f"batch_req_{request.custom_id}", "custom_id": request.custom_id,
                              "response": {"status_code": outcome.status,
                                           "request_id": outcome.headers.get("x-request-id"), "body": body},
                              "error": None}
    with state.lock:
        batch.processed_at = time.monotonic()


def _ended(state: BatchState, batch: _Batch) -> bool:
    """Ended: cancelled, or processed and `end_after_seconds` later; on the first look that finds it
    ended, pending requests get their final result and an OpenAI batch its output files."""
    with state.lock:
        if batch.ended_at is not None:
            return True
        done = batch.cancelled_at is not None or (
            batch.processed_at is not None
            and time.monotonic() - batch.processed_at >= state.options.end_after_seconds)
        if not done:
            return False
        batch.ended_at = _now()
        kind = "canceled" if batch.cancelled_at is not None else "expired"
        for request in batch.requests:
            if request.result is None:
                if batch.vendor == "anthropic":
                    request.result = {"type": kind}
                else:
                    code = "batch_cancelled" if kind == "canceled" else "batch_expired"
                    request.result = {"id": f"batch_req_{request.custom_id}", "custom_id": request.custom_id,
                                      "response": None, "error": {"code": code, "message": (
                                          "This request was cancelled before it was executed." if kind == "canceled"
                                          else "This request could not be executed before the completion window "
                                               "expired.")}}
        if batch.vendor == "openai":
            results = [r.result for r in batch.requests if r.result is not None]
            ok = [r for r in results if (r.get("response") or {}).get("status_code") == 200]
            bad = [r for r in results if (r.get("response") or {}).get("status_code") != 200]
            if ok:
                batch.output_file_id = state.new_id("file-out")
                state.files[batch.output_file_id] = ("batch_output.jsonl", _jsonl(ok))
            if bad:
                batch.error_file_id = state.new_id("file-err")
                state.files[batch.error_file_id] = ("batch_errors.jsonl", _jsonl(bad))
        return True


def _jsonl(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


# ------------------------------------------------------------------------------------- wire shapes


def _anthropic_counts(batch: _Batch, ended: bool) -> dict[str, int]:
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    for request in batch.requests:
        kind = (request.result or {}).get("type") if ended else None
        counts[kind if kind in counts else "processing"] += 1
    return counts


def _anthropic_batch(fake: FakeVendor, batch: _Batch) -> dict[str, Any]:
    ended = _ended(fake.batches, batch)
    status = "ended" if ended else "canceling" if batch.cancelled_at is not None else "in_progress"
    return {"id": batch.id, "type": "message_batch", "processing_status": status,
            "request_counts": _anthropic_counts(batch, ended), "created_at": _iso(batch.created),
            "expires_at": _iso(batch.created + WINDOW), "ended_at": _iso(batch.ended_at), "archived_at": None,
            "cancel_initiated_at": _iso(batch.cancelled_at),
            "results_url": f"{fake.base_url}/v1/messages/batches/{batch.id}/results" if ended else None}


def _openai_batch(fake: FakeVendor, batch: _Batch) -> dict[str, Any]:
    ended = _ended(fake.batches, batch)
    if ended:
        status = "cancelled" if batch.cancelled_at is not None else "completed"
    else:
        status = "cancelling" if batch.cancelled_at is not None else "in_progress"
    failed = sum(1 for r in batch.requests if ended and r.result is not None
                 and (r.result.get("response") or {}).get("status_code") != 200)
    epoch = int(batch.created.timestamp())
    return {"id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
            "input_file_id": batch.input_file_id, "completion_window": "24h", "status": status,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id, "created_at": epoch,
            "in_progress_at": epoch, "expires_at": epoch + int(WINDOW.total_seconds()),
            "completed_at": int(batch.ended_at.timestamp()) if ended and batch.ended_at else None,
            "cancelled_at": int(batch.cancelled_at.timestamp()) if batch.cancelled_at else None,
            "request_counts": {"total": len(batch.requests),
                               "completed": len(batch.requests) - failed if ended else 0, "failed": failed},
            "metadata": batch.metadata}


def _error(vendor: Vendor, status: int, message: str) -> tuple[int, Any]:
    if vendor == "anthropic":
        kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
        return status, {"type": "error", "error": {"type": kind, "message": message}}
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


# ------------------------------------------------------------------------------------- routing


def route(handler: BaseHTTPRequestHandler, fake: FakeVendor, method: str, path: str) -> bool:
    """Answer the request if it is a batch endpoint (or a batch control); False when it is not one."""
    if path in ("/_fake/batches", "/_fake/batches/options"):
        _control(handler, fake, method, path)
        return True
    for pattern, vendor in ((_ANTHROPIC_BATCH, "anthropic"), (_OPENAI_BATCH, "openai"), (_OPENAI_FILE, "files")):
        found = pattern.match(path)
        if found is None:
            continue
        api_key = _api_key(handler)
        key_error = fake._key_error("anthropic" if vendor == "anthropic" else "openai", api_key)
        if key_error is not None:
            _send(handler, *_error("anthropic" if vendor == "anthropic" else "openai", 401, key_error.message))
            return True
        if vendor == "files":
            _files(handler, fake, method, found.group(1))
        else:
            _batches(handler, fake, method, vendor, found.group(1), found.group(2), api_key)  # type: ignore[arg-type]
        return True
    return False


def _batches(handler: BaseHTTPRequestHandler, fake: FakeVendor, method: str, vendor: Vendor, batch_id: str | None,
             action: str | None, api_key: str | None) -> None:
    state = fake.batches
    render = _anthropic_batch if vendor == "anthropic" else _openai_batch
    if batch_id is None:
        if method != "POST":
            _send(handler, 404, {"error": {"message": "listing batches is not faked"}})
            return
        _create(handler, fake, vendor, api_key)
        return
    with state.lock:
        batch = state.batches.get(batch_id)
    if batch is None or batch.vendor != vendor:
        _send(handler, *_error(vendor, 404, f"batch {batch_id} not found"))
        return
    if action == "cancel" and method == "POST":
        with state.lock:
            if batch.ended_at is None and batch.cancelled_at is None:
                batch.cancelled_at = _now()
                state.released.notify_all()
        _send(handler, 200, render(fake, batch))
    elif action == "results" and method == "GET":
        if not _ended(state, batch):
            _send(handler, *_error(vendor, 400, "the batch has not ended yet"))
            return
        lines = [{"custom_id": r.custom_id, "result": r.result} for r in batch.requests]
        _send(handler, 200, _jsonl(lines), content_type="application/binary")
    elif action is None and method == "GET":
        _send(handler, 200, render(fake, batch))
    else:
        _send(handler, *_error(vendor, 404, "no such batch action"))


def _create(handler: BaseHTTPRequestHandler, fake: FakeVendor, vendor: Vendor, api_key: str | None) -> None:
    state = fake.batches
    try:
        body = json.loads(_read(handler) or b"{}")
    except ValueError:
        _send(handler, *_error(vendor, 400, "body is not valid JSON"))
        return
    requests: list[_Request] = []
    input_file_id = None
    if vendor == "anthropic":
        for entry in body.get("requests") or []:
            requests.append(_Request(custom_id=str(entry.get("custom_id")), body=dict(entry.get("params") or {})))
    else:
        input_file_id = str(body.get("input_file_id"))
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            _send(handler, *_error(vendor, 400, "endpoint must be /v1/chat/completions and completion_window 24h"))
            return
        with state.lock:
            stored = state.files.get(input_file_id)
        if stored is None:
            _send(handler, *_error(vendor, 400, f"no input file {input_file_id}"))
            return
        for line in stored[1].splitlines():
            if line.strip():
                entry = json.loads(line)
                if entry.get("url") != "/v1/chat/completions":
                    _send(handler, *_error(vendor, 400, "every line must POST /v1/chat/completions"))
                    return
                requests.append(_Request(custom_id=str(entry.get("custom_id")), body=dict(entry.get("body") or {})))
    ids = [r.custom_id for r in requests]
    if not requests or len(set(ids)) != len(ids) or not all(_CUSTOM_ID.match(i) for i in ids):
        _send(handler, *_error(vendor, 400, "requests need unique custom_ids matching ^[a-zA-Z0-9_-]{1,64}$"))
        return
    headers = {k.lower(): v for k, v in handler.headers.items() if k.lower() not in ("authorization", "x-api-key")}
    batch = _Batch(id=state.new_id("msgbatch_" if vendor == "anthropic" else "batch_"), vendor=vendor,
                   requests=requests, headers=headers, api_key=api_key, created=_now(), input_file_id=input_file_id,
                   metadata=body.get("metadata") if vendor == "openai" else None)
    with state.lock:
        state.batches[batch.id] = batch
    threading.Thread(target=_process, args=(fake, batch), name=f"fake-batch-{batch.id}", daemon=True).start()
    _send(handler, 200, (_anthropic_batch if vendor == "anthropic" else _openai_batch)(fake, batch))


def _files(handler: BaseHTTPRequestHandler, fake: FakeVendor, method: str, file_id: str | None) -> None:
    state = fake.batches
    if file_id is not None and method == "GET":
        with state.lock:
            stored = state.files.get(file_id)
        if stored is None:
            _send(handler, *_error("openai", 404, f"no file {file_id}"))
        else:
            _send(handler, 200, stored[1], content_type="application/octet-stream")
        return
    if file_id is not None or method != "POST":
        _send(handler, *_error("openai", 404, "no such file route"))
        return
    raw = _read(handler)
    content_type = handler.headers.get("content-type", "")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
        _send(handler, *_error("openai", 400, "a multipart 'file' with purpose=batch is required"))
        return
    filename, content = fields["file"]
    file_id = state.new_id("file-")
    with state.lock:
        state.files[file_id] = (filename or "input.jsonl", content)
    _send(handler, 200, {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                         "filename": filename or "input.jsonl", "purpose": "batch", "status": "processed"})


def _control(handler: BaseHTTPRequestHandler, fake: FakeVendor, method: str, path: str) -> None:
    state = fake.batches
    if path == "/_fake/batches/options" and method == "POST":
        try:
            update = json.loads(_read(handler) or b"{}")
            configure(fake, **update)
        except (TypeError, ValueError) as exc:
            _send(handler, 400, {"error": {"message": str(exc)}})
            return
        _send(handler, 200, dataclasses.asdict(state.options))
        return
    with state.lock:
        listed = [{"id": b.id, "vendor": b.vendor, "requests": len(b.requests),
                   "cancelled": b.cancelled_at is not None, "ended": b.ended_at is not None}
                  for b in state.batches.values()]
    _send(handler, 200, {"batches": listed, "options": dataclasses.asdict(state.options)})


def configure(fake: FakeVendor, **options: Any) -> BatchOptions:
    """Set batch options (`end_after_seconds`, `hold`, `expire`); switching `hold` off releases held batches."""
    state = fake.batches
    allowed = {f.name for f in dataclasses.fields(BatchOptions)}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown batch option(s): {sorted(unknown)}; allowed: {sorted(allowed)}")
    with state.lock:
        state.options = dataclasses.replace(state.options, **options)
        state.released.notify_all()
        return dataclasses.replace(state.options)


def _api_key(handler: BaseHTTPRequestHandler) -> str | None:
    if key := handler.headers.get("x-api-key"):
        return str(key)
    auth = handler.headers.get("authorization") or ""
    return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None


def _read(handler: BaseHTTPRequestHandler) -> bytes:
    length = int(handler.headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


def _send(handler: BaseHTTPRequestHandler, status: int, payload: Any, *,
          content_type: str = "application/json", headers: Mapping[str, str] | None = None) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up before the answer
