"""Embedded AWS for the local stack: moto's threaded server on loopback, without per-request logs."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import ThreadedMotoServer


def serialize_dynamodb_requests() -> None:
    """Handle one DynamoDB request at a time. moto's backend is not thread-safe: under concurrent requests
    a TransactWriteItems can pass its condition checks while another one commits (two conditional
    writers both "win": a lost update DynamoDB itself never allows), and iterating shared dicts raises.
    It is CPU-bound in-memory work under the GIL, so this costs next to no throughput. Other services
    stay concurrent (an SQS ReceiveMessage with WaitTimeSeconds must not hold everyone up)."""
    lock = threading.Lock()
    call = DomainDispatcherApplication.__call__

    def serialized(self: DomainDispatcherApplication, environ: Any, start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return call(self, environ, start_response)
        with lock:
            return call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = serialized  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    serialize_dynamodb_requests()
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    print(f"moto server (embedded AWS) listening on http://{args.host}:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
