"""What the spend tests share: the limits route, an admin's and a member's token, estimate and dispatch of
the worker tests' session through the API, and an event publisher that records what it is given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.api.worker_kit import SESSION
from tests.conftest import mint

LIMITS = "/admin/settings/eval-runner/limits"
ADMIN = mint("acme", "root", ["admin"])
BOB = mint("acme", "bob", [])


class RecordedEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self.events.append((detail_type, dict(detail)))


def estimate(client: Any, body: dict[str, Any] | None = None, token: str = BOB) -> Any:
    return client.post(f"/sessions/{SESSION}/eval-runs/estimate", token=token, json_body=body or {})


def dispatch(client: Any, body: dict[str, Any] | None = None, token: str = BOB) -> Any:
    return client.post(f"/sessions/{SESSION}/eval-runs", token=token, json_body=body or {})
