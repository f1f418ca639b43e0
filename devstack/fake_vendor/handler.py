"""The fake vendor's HTTP request handler: the vendors' endpoints and the control endpoints."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

from devstack.fake_vendor import batches as fake_vendor_batches
from devstack.fake_vendor.options import Vendor

if TYPE_CHECKING:
    from devstack.fake_vendor.vendor import FakeVendor


class _FakeVendorHTTPServer(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when a run fans out 12 judges at once,
    # which would make the local stack look slow for reasons real vendors do not have.
    request_queue_size = 128
    daemon_threads = True


def _make_handler(fake: FakeVendor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeVendor/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # silent: request lines could carry nothing secret, but tests stay quiet

        def _headers(self) -> dict[str, str]:
            out = {k.lower(): v for k, v in self.headers.items()}
            out[":path"] = urlsplit(self.path).path
            return out

        def _api_key(self) -> str | None:
            if key := self.headers.get("x-api-key"):
                return key
            auth = self.headers.get("authorization") or ""
            return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None

        def _body(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else {}

        def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before we answered

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if fake_vendor_batches.route(self, fake, "GET", parts.path):
                return
            if parts.path == "/_fake/requests":
                since = int(parse_qs(parts.query).get("since", ["0"])[0])
                self._send(200, {"requests": fake.requests[since:]})
            elif parts.path == "/_fake/stats":
                self._send(200, fake.stats())
            elif parts.path == "/_fake/health":
                self._send(200, {"ok": True})
            elif parts.path == "/_fake/options":
                self._send(200, dataclasses.asdict(fake.options))
            elif parts.path.startswith("/v1/models/"):
                vendor: Vendor = "anthropic" if self.headers.get("anthropic-version") else "openai"
                status, payload = fake.handle_model(vendor, parts.path.removeprefix("/v1/models/"), self._api_key())
                self._send(status, payload)
            else:
                self._send(404, {"error": {"type": "not_found_error", "message": f"no route {parts.path}"}})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if fake_vendor_batches.route(self, fake, "POST", path):
                return  # before the JSON body is read: a file upload is multipart
            try:
                body = self._body()
            except (ValueError, UnicodeDecodeError):
                self._send(
                    400,
                    {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "body is not valid JSON"},
                    },
                )
                return
            if path.startswith("/_fake/"):
                self._control(path, body)
                return
            routes: dict[str, tuple[Vendor, Literal["generate", "count_tokens"]]] = {
                "/v1/messages": ("anthropic", "generate"),
                "/v1/messages/count_tokens": ("anthropic", "count_tokens"),
                "/v1/chat/completions": ("openai", "generate"),
            }
            if path not in routes or not isinstance(body, dict):
                self._send(404, {"error": {"type": "not_found_error", "message": f"no route {path}"}})
                return
            vendor, endpoint = routes[path]
            outcome = fake.handle_generate(vendor, endpoint, body, self._headers(), self._api_key())
            if outcome.events is not None:
                self._send_events(outcome.status, outcome.events, outcome.headers)
            else:
                self._send(outcome.status, outcome.body, outcome.headers)

        def _send_events(self, status: int, events: Iterator[bytes], headers: Mapping[str, str]) -> None:
            """Server-sent events in HTTP/1.1 chunks, each flushed as it is produced."""
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("transfer-encoding", "chunked")
                self.send_header("cache-control", "no-cache")
                self.end_headers()
                for event in events:
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up mid-stream (a cancelled judge)
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()  # ends the generator, which leaves the in-flight count

        def _control(self, path: str, body: Any) -> None:
            try:
                if path == "/_fake/script":
                    if isinstance(body, dict) and ("rules" in body or "options" in body):
                        if body.get("options"):
                            fake.configure(**body["options"])
                        ids = [fake.add_rule(rule) for rule in body.get("rules") or []]
                    elif isinstance(body, list):
                        ids = [fake.add_rule(rule) for rule in body]
                    else:
                        ids = [fake.add_rule(body)]
                    self._send(200, {"rule_ids": ids})
                elif path == "/_fake/options":
                    self._send(200, dataclasses.asdict(fake.configure(**(body or {}))))
                elif path == "/_fake/reset":
                    fake.reset()
                    self._send(200, {"ok": True})
                else:
                    self._send(404, {"error": {"message": f"no control route {path}"}})
            except (TypeError, ValueError) as exc:
                self._send(400, {"error": {"message": str(exc)}})

    return Handler
