"""The version of the redaction rule set (`chalicelib.ingest.redaction`), apart from its detectors.

Readers of stored traces compare a session's `redaction_version` with it and redact only an older
trace, so they import this, not the detectors (their regexes and prefilter cost a cold start).
"""

from __future__ import annotations

# Bump when a detector changes: traces stored under an older version are redacted again on read.
REDACTION_VERSION = 2
