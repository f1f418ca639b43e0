"""Local HTTP servers for the outbound tests: a webhook receiver that records what is POSTed to it, and a
recorder that answers every request as set (a status, a body, a redirect; optionally over TLS)."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Receiver:
    port: int = 0
    status: int = 204
    hang: threading.Event | None = None
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/budget"


@contextmanager
def receiver(**options: Any) -> Iterator[Receiver]:
    state = Receiver(**options)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            state.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if state.hang is not None:
                state.hang.wait(10)
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    # A hanging handler is released first, or shutting the server down would wait on it.
    with _serving(server, before_shutdown=state.hang.set if state.hang is not None else None):
        yield state


@dataclass
class Recorder:
    """A tiny HTTP(S) server on 127.0.0.1 recording every request it gets."""

    port: int = 0
    paths: list[str] = field(default_factory=list)
    redirect_to: str | None = None
    status: int = 200
    body: bytes = b'{"ok": true}'


@contextmanager
def recorder(*, tls: ssl.SSLContext | None = None, **options: Any) -> Iterator[Recorder]:
    state = Recorder(**options)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            state.paths.append(self.path)
            if state.redirect_to is not None and not self.path.startswith("/landed"):
                self.send_response(307)
                self.send_header("Location", state.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    with _serving(server):
        yield state


@contextmanager
def _serving(
    server: http.server.ThreadingHTTPServer, *, before_shutdown: Callable[[], None] | None = None
) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        if before_shutdown is not None:
            before_shutdown()
        server.shutdown()
        server.server_close()
        thread.join()
