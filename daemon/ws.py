"""Optional WebSocket listener (`--ws-url`): receives pushed job offers and cancels from the
WebSocket API and sends heartbeats over it. Long polling keeps running as the fallback.

Needs the `websockets` package (a dev dependency; the Lambda never imports this). The token goes
in the `Authorization` header of the upgrade request and the daemon id in `?daemon_id=`. API
Gateway closes connections after 2 h at the latest and after 10 min idle, so the listener
reconnects before the first and heartbeats well within the second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from daemon.agent import Daemon

RECONNECT_AFTER_SECONDS = 110 * 60
HEARTBEAT_SECONDS = 60.0


class WebSocketListener:
    def __init__(self, url: str, token: str, daemon: Daemon, *, log: Callable[[str], None]) -> None:
        self._url = url
        self._token = token
        self._daemon = daemon
        self._log = log

    def _connect_url(self) -> str:
        sep = "&" if "?" in self._url else "?"
        return f"{self._url}{sep}{urlencode({'daemon_id': self._daemon.daemon_id or ''})}"

    def run(self) -> None:
        try:
            from websockets.exceptions import ConnectionClosed, InvalidHandshake
            from websockets.sync.client import connect
        except ImportError:
            self._log("--ws-url needs the 'websockets' package (pip install websockets); using long polling only")
            return
        backoff = 1.0
        while not self._daemon.stopping:
            try:
                with connect(self._connect_url(), additional_headers={"Authorization": f"Bearer {self._token}"},
                             open_timeout=10) as ws:
                    self._log("websocket connected")
                    backoff = 1.0
                    opened = time.monotonic()
                    last_beat = opened
                    while not self._daemon.stopping and time.monotonic() - opened < RECONNECT_AFTER_SECONDS:
                        if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                            ws.send(json.dumps({"action": "heartbeat"}))
                            last_beat = time.monotonic()
                        try:
                            raw = ws.recv(timeout=1.0)
                        except TimeoutError:
                            continue
                        self._on_message(raw)
            except (OSError, ConnectionClosed, InvalidHandshake) as exc:
                if self._daemon.stopping:
                    return
                self._log(f"websocket unavailable ({type(exc).__name__}); retrying in {backoff:.0f} s")
                time.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    def _on_message(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") in ("job_offer", "cancel", "job"):
            self._daemon.handle(message)
