"""Running the fake vendor: in-process (`running`), in its own process (`FakeVendorProcess`), and the CLI."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from devstack.fake_vendor.options import FakeVendorOptions
from devstack.fake_vendor.vendor import FakeVendor


@contextlib.contextmanager
def running(options: FakeVendorOptions | None = None) -> Iterator[FakeVendor]:
    """`with running() as fake:` — a started FakeVendor, stopped on exit."""
    fake = FakeVendor(options=options)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


class FakeVendorProcess:
    """The fake vendor in its own process, driven over its control endpoints: what a benchmark measures
    against, so the fake's own CPU (parsing, hashing, streaming) does not compete with the client's."""

    def __init__(self, options: FakeVendorOptions | None = None) -> None:
        self._options = options or FakeVendorOptions()
        self._proc: Any = None
        self.base_url = self.anthropic_base_url = self.openai_base_url = ""

    def __enter__(self) -> FakeVendorProcess:
        import os
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._proc = subprocess.Popen([sys.executable, "-m", "devstack.fake_vendor", "--port", "0"],
                                      stdout=subprocess.PIPE, text=True, cwd=root)
        line = self._proc.stdout.readline()  # "fake vendor (dev only) listening on http://127.0.0.1:<port>"
        found = re.search(r"http://[\d.]+:\d+", line)
        if found is None:
            self.__exit__()
            raise RuntimeError(f"fake vendor did not start: {line!r}")
        self.base_url = self.anthropic_base_url = found.group(0)
        self.openai_base_url = f"{self.base_url}/v1"
        self.configure(**dataclasses.asdict(self._options))
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})
        self.configure(**dataclasses.asdict(self._options))

    def configure(self, **options: Any) -> None:
        self._call("POST", "/_fake/options", options)

    def script(self, *rules: Mapping[str, Any]) -> list[str]:
        """Add rules (see `Rule`); their ids."""
        return list(self._call("POST", "/_fake/script", {"rules": list(rules)})["rule_ids"])

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/requests")["requests"])

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_fake/stats"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FAKE LLM vendor (dev/test only; binds 127.0.0.1).")
    parser.add_argument("--port", type=int, default=5100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every judge call takes (L)")
    parser.add_argument("--ttft", type=float, default=None, help="seconds to the first token (default: L)")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per minute (429 past it)")
    parser.add_argument("--min-cacheable-tokens", type=int, default=0)
    args = parser.parse_args(argv)
    options = FakeVendorOptions(
        latency=args.latency,
        ttft=args.ttft,
        rate_limit_per_minute=args.rate_limit,
        min_cacheable_tokens=args.min_cacheable_tokens,
    )
    fake = FakeVendor(port=args.port, options=options)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"fake vendor (dev only) listening on {fake.start()}", flush=True)
    stop.wait()
    fake.stop()
    return 0
