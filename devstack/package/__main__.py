"""`python -m devstack.package --stage <stage>` (what `make package` runs)."""

import sys

from devstack.package.build import main

sys.exit(main())
