"""The daemon's HTTP client for the eval-runner API, over an injectable transport.

Transport errors (connection refused/reset, timeouts) are retried with exponential backoff from
250 ms up to 4 s within a 30 s budget, like the reference daemon; HTTP statuses are never retried
here, because each caller knows what a 404/409 means for it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote


class Transport(Protocol):
    def request(self, method: str, path: str, *, headers: dict[str, str], body: bytes | None,
                timeout: float) -> tuple[int, bytes]:
        """Send one request to `path` (starting with '/'); return (status, body). Raise OSError on
        transport failures."""
        ...


class UrllibTransport:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, path: str, *, headers: dict[str, str], body: bytes | None,
                timeout: float) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except urllib.error.URLError as exc:
            raise OSError(str(exc.reason)) from exc


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class ApiClient:
    def __init__(self, transport: Transport, token: str, *, retry_budget_seconds: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._transport = transport
        self.token = token
        self._retry_budget = retry_budget_seconds
        self._sleep = sleep

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 30.0,
             retry: bool = True) -> tuple[int, Any]:
        """(status, parsed JSON or None). Raises ApiError for 4xx/5xx, OSError when the transport
        keeps failing past the retry budget."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        delay, spent = 0.25, 0.0
        while True:
            try:
                status, raw = self._transport.request(method, path, headers=headers, body=data, timeout=timeout)
                break
            except OSError:
                if not retry or spent + delay > self._retry_budget:
                    raise
                self._sleep(delay)
                spent += delay
                delay = min(delay * 2, 4.0)
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        if status >= 400:
            err = parsed.get("error", {}) if isinstance(parsed, dict) else {}
            raise ApiError(status, str(err.get("code", "http_error")), str(err.get("message", raw[:200])))
        return status, parsed

    # -- the daemon protocol -------------------------------------------------------------------
    def register(self, name: str, platform: str, judges: list[str], *, version: str | None = None,
                 concurrency: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "platform": platform, "judges": judges}
        if version:
            body["version"] = version
        if concurrency:
            body["concurrency"] = concurrency
        return dict(self.call("POST", "/daemons", body)[1])

    def heartbeat(self, daemon_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/daemons/{quote(daemon_id, safe='')}/heartbeat", timeout=10)[1])

    def poll(self, daemon_id: str, *, wait: int, claim: bool = True) -> dict[str, Any] | None:
        path = f"/daemons/{quote(daemon_id, safe='')}/jobs?wait={wait}" + ("" if claim else "&claim=false")
        status, body = self.call("GET", path, timeout=wait + 10, retry=False)
        return dict(body) if status == 200 and isinstance(body, dict) else None

    def get(self, path: str, *, timeout: float = 60.0) -> Any:
        return self.call("GET", path, timeout=timeout)[1]

    def post_event(self, run_id: str, event: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/eval-runs/{quote(run_id, safe='')}/events", event)[1])

    def post_result(self, run_id: str, result: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/eval-runs/{quote(run_id, safe='')}/result", result)[1])
