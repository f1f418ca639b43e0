"""`make token TENANT=acme USER=alice ROLE=admin`: prints only a bearer token for the local stack."""

from __future__ import annotations

import argparse

from chalicelib.adapters.jwt_tokens import HS256TokenVerifier
from devstack.common import dev_jwt_secret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--role", default="admin", help="admin or member (comma-separated roles allowed)")
    parser.add_argument("--ttl", type=int, default=12 * 3600)
    args = parser.parse_args()
    roles = [r for r in args.role.split(",") if r and r != "member"]
    print(HS256TokenVerifier(dev_jwt_secret()).mint(tenant=args.tenant, user=args.user, roles=roles,
                                                     ttl_seconds=args.ttl))


if __name__ == "__main__":
    main()
