"""Embedded AWS for the local stack: moto's threaded server on loopback, without per-request logs."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import ThreadedMotoServer


def _is_dynamodb(target: object) -> bool:
    if isinstance(target, bytes):
        target = target.decode("ascii", "replace")
    return str(target or "").startswith("DynamoDB_")


def serialize_dynamodb_requests() -> None:
    """Handle one DynamoDB request at a time. moto's backend is not thread-safe: under concurrent requests
    a TransactWriteItems can pass its condition checks while another one commits (two conditional
    writers both "win": a lost update DynamoDB itself never allows), and iterating shared dicts raises.
    It is CPU-bound in-memory work under the GIL, so this costs next to no throughput. Other services
    stay concurrent (an SQS ReceiveMessage with WaitTimeSeconds must not hold everyone up)."""
    lock = threading.Lock()
    call = DomainDispatcherApplication.__call__

    def serialized(self: DomainDispatcherApplication, environ: Any, start_response: Any) -> Any:
        if not _is_dynamodb(environ.get("HTTP_X_AMZ_TARGET")):
            return call(self, environ, start_response)
        with lock:
            return call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = serialized  # type: ignore[method-assign]


def stop_tracking_model_instances() -> None:
    """Stop moto from keeping every model object it ever creates. `BaseModel.__new__` appends each
    instance to a class-level list (for its /moto-api/data.json dashboard, which nothing here reads), and
    TransactWriteItems deep-copies the whole table once per item it writes (its rollback backup): so every
    transaction kept a full copy of the table, every item included, alive for good. Over a benchmark's
    hundreds of transactions that grew the server past 2.7 GB, and Python's garbage collector walking it
    stalled every DynamoDB call for seconds (8-40 s under load: clients timed out, runs were redelivered).
    Instances are then only kept by whoever holds them, as in any Python program."""
    from moto.core.common_models import BaseModel

    def untracked(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    BaseModel.__new__ = untracked  # type: ignore[method-assign]


_IN_PROCESS_LOCK = threading.Lock()


def serialize_in_process_dynamodb() -> None:
    """The same guarantee for moto's in-process mock (`mock_aws`), which tests use: a worker thread (its
    progress writes, cancel polls and rate-limit exchanges run in `asyncio.to_thread`) and the test's
    own API calls reach the one in-memory backend at once, and moto then loses conditional updates or
    raises "dictionary changed size during iteration" mid-request. Idempotent (patched once per process)."""
    from moto.core.botocore_stubber import BotocoreStubber

    if getattr(BotocoreStubber.process_request, "_serialized_dynamodb", False):
        return
    process = BotocoreStubber.process_request

    def serialized(self: BotocoreStubber, request: Any) -> Any:
        if not _is_dynamodb(request.headers.get("X-Amz-Target")):
            return process(self, request)
        with _IN_PROCESS_LOCK:
            return process(self, request)

    serialized._serialized_dynamodb = True  # type: ignore[attr-defined]
    BotocoreStubber.process_request = serialized  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    serialize_dynamodb_requests()
    stop_tracking_model_instances()
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
