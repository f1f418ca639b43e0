"""Serves the Chalice REST API on 127.0.0.1 with `chalice local`'s threaded server (run by devstack.run)."""

from __future__ import annotations

import argparse
import logging

from chalice.cli import create_local_server
from chalice.cli.factory import CLIFactory

from devstack.common import ROOT


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args()
    logging.getLogger("botocore").setLevel(logging.WARNING)
    import os

    factory = CLIFactory(project_dir=str(ROOT), debug=False, environ=dict(os.environ))
    server = create_local_server(factory, args.host, args.port, args.stage)
    server.serve_forever()


if __name__ == "__main__":
    main()
