"""`python -m daemon …` entry point."""

import sys

from daemon.cli import main

sys.exit(main())
