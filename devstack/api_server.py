"""Serves the Chalice REST API on 127.0.0.1 with `chalice local`'s threaded server (run by devstack.run)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from chalice.cli import create_local_server
from chalice.cli.factory import CLIFactory
from chalice.local import ChaliceRequestHandler

from devstack.common import ROOT


def _answer_every_method() -> None:
    """`chalice local` handles only the seven REST methods and lets http.server answer any other
    (TRACE, QUERY, made-up ones) with a 501 HTML page. Route every method through the app like API
    Gateway does, so an unsupported one gets the contract's 405 error body."""

    def any_method(self: ChaliceRequestHandler, name: str) -> Any:
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    ChaliceRequestHandler.__getattr__ = any_method  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args()
    logging.getLogger("botocore").setLevel(logging.WARNING)
    import os

    _answer_every_method()
    factory = CLIFactory(project_dir=str(ROOT), debug=False, environ=dict(os.environ))
    server = create_local_server(factory, args.host, args.port, args.stage)
    server.serve_forever()


if __name__ == "__main__":
    main()
