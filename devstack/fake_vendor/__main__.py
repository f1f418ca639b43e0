"""`python -m devstack.fake_vendor --port 5100`: the fake vendor in its own process (dev and tests only)."""

from devstack.fake_vendor.server import main

raise SystemExit(main())
