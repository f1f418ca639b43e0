"""OpenAPI schemas of path parameters that several route modules share.

Kept apart from the route modules so that declaring a route with one of these parameters imports no
other route module (and nothing of its service) on the route's first request.
"""

from __future__ import annotations

from typing import Any

from chalicelib.domain.ids import SESSION_ID_PATTERN

# The {session_id} path parameter: the pattern the sessions service validates with.
SESSION_ID_PARAM: dict[str, dict[str, Any]] = {
    "session_id": {"type": "string", "pattern": SESSION_ID_PATTERN.pattern,
                   "description": "Your session id: 1-200 of A-Z a-z 0-9 . _ ~ -, starting with a letter or digit."}}
