"""EventBridge publisher: announces finished eval runs (`SessionEvalCompleted`) to downstream consumers.

The detail carries identifiers, status, scores and token counts only, never transcript text or
verdict findings (consumers fetch `GET /eval-runs/{id}` for those).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger

EVENT_SOURCE = "eval-runner"
# EventBridge rejects entries above 256 KB; our details are a few hundred bytes.
_MAX_DETAIL_BYTES = 256 * 1024


class EventBridgePublisher:
    def __init__(self, client: Any, bus_name: str, *, source: str = EVENT_SOURCE) -> None:
        self._events = client
        self._bus = bus_name
        self._source = source

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        """Put one event; `DependencyUnavailable` when EventBridge refused or could not be reached."""
        body = json.dumps(detail, separators=(",", ":"), sort_keys=True)
        if len(body.encode()) > _MAX_DETAIL_BYTES:
            raise ValueError(f"{detail_type} detail is too large for EventBridge")
        try:
            resp = self._events.put_events(Entries=[{
                "Source": self._source, "DetailType": detail_type, "Detail": body, "EventBusName": self._bus}])
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
            logger.warning("event publish failed", extra={"detail_type": detail_type, "aws_error": code})
            raise DependencyUnavailable("The event bus is unavailable.", code="event_bus_unavailable") from None
        if resp.get("FailedEntryCount"):
            entry = (resp.get("Entries") or [{}])[0]
            logger.warning("event rejected by the bus", extra={"detail_type": detail_type,
                                                                "aws_error": entry.get("ErrorCode")})
            raise DependencyUnavailable("The event bus rejected the event.", code="event_bus_unavailable")
