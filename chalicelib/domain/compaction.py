"""The eval context's compaction threshold: tool outputs above it (UTF-8 bytes) reach judges as a marker.

The bounds are a rule of the eval context that dispatch validates too (a run records the threshold its
judges read with), so they live here rather than in the ingest package that applies them.
"""

from __future__ import annotations

DEFAULT_THRESHOLD_BYTES = 2000
MIN_THRESHOLD_BYTES = 0
MAX_THRESHOLD_BYTES = 200_000
