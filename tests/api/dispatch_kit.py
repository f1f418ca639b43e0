"""What the dispatch tests share: vendor settings and limits set through the API, a seeded session, an
in-memory daemon directory installed in the container, dispatch through the API and the drained job queue."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.runs import EvalRun
from tests.conftest import mint, register_secret

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o"}
SESSION = "sess-1"


@dataclass(frozen=True)
class FakeDaemonInfo:
    daemon_id: str
    name: str
    platform: str = "linux"
    judges: tuple[str, ...] = ("claude",)
    last_seen_at: str | None = "2026-11-29T10:00:00.000Z"
    connected: bool = False


@dataclass
class FakeDaemons:
    """In-memory DaemonDirectory: who has which daemons, and what was offered/cancelled."""

    available: dict[tuple[str, str], list[FakeDaemonInfo]] = field(default_factory=dict)
    offers: list[tuple[str, str]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    fail_offers: bool = False

    def add(self, tenant: str, user: str, daemon_id: str, name: str = "laptop") -> None:
        self.available.setdefault((tenant, user), []).append(FakeDaemonInfo(daemon_id, name))

    def list_available(self, tenant: str, user: str) -> list[FakeDaemonInfo]:
        return list(self.available.get((tenant, user), []))

    def offer_job(self, run: EvalRun, daemon_id: str) -> None:
        if self.fail_offers:
            raise ConnectionError("daemon store down")
        self.offers.append((run.eval_run_id, daemon_id))

    def notify_cancel(self, run: EvalRun) -> None:
        self.cancels.append(run.eval_run_id)

    def reconcile_run(self, run: EvalRun) -> EvalRun:
        return run


def install_daemons(container: Any, daemons: FakeDaemons) -> None:
    """Rebuild the container's eval service around a fake daemon directory."""
    from chalicelib.services.eval_runs import EvalRunService

    container.__dict__["eval_runs"] = EvalRunService(
        runs=container.run_store, queue=container.job_queue, settings=container.admin_settings,
        catalog=container.catalog, daemons=lambda: daemons, clock=container.clock,
        max_run_timeout_seconds=container.config.max_run_timeout_seconds,
        lifecycle=container.run_lifecycle, budgeting=container.run_budgeting,
        session_exists=container._session_exists, session_facts=container._session_facts)


def configure_vendors(client: Any, *vendors: str, run_timeout_seconds: int | None = None,
                      tenant: str = "acme") -> None:
    body: dict[str, Any] = {v: {"api_key": register_secret(f"sk-{v}-test-key-000{i}"), "model": MODELS[v]}
                            for i, v in enumerate(vendors)}
    if run_timeout_seconds is not None:
        body["run_timeout_seconds"] = run_timeout_seconds
    resp = client.put("/admin/settings/eval-runner", token=mint(tenant, "root", ["admin"]), json_body=body)
    assert resp.status_code == 200, resp.json


def suspend_vendor(container: Any, vendor: str, tenant: str = "acme") -> None:
    assert container.admin_settings.mark_vendor_suspended(tenant, vendor, "vendor answered 401")


def set_limits(client: Any, tenant: str = "acme", **limits: Any) -> dict[str, Any]:
    """PUT the tenant's spend limits (e.g. a larger active-run quota for a test that keeps runs queued)."""
    resp = client.put("/admin/settings/eval-runner/limits", token=mint(tenant, "root", ["admin"]), json_body=limits)
    assert resp.status_code == 200, resp.json
    return dict(resp.json)


def seed_session(container: Any, session_id: str = SESSION, tenant: str = "acme") -> None:
    """A real (small) stored session: dispatch checks it exists, and a server run's cost bound is
    estimated from its eval context."""
    from chalicelib.domain.principal import Principal

    body = json.dumps({"trace": [
        {"kind": "user_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "Add a test for the parser."},
        {"kind": "assistant_message", "timestamp": "2026-11-29T10:00:05.000Z", "text": "Added tests/test_parser.py."},
    ]}).encode()
    container.sessions.store_native(Principal(tenant=tenant, user="seeder", roles=("admin",)), session_id, body)


def drain_queue(container: Any) -> list[dict[str, Any]]:
    sqs, url = container.sqs, container.config.queue_url
    bodies = []
    while True:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                   VisibilityTimeout=600)
        messages = resp.get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(json.loads(m["Body"]) for m in messages)


def dispatch(client: Any, token: str, body: dict[str, Any] | None = None, *, session_id: str = SESSION,
             key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else None
    return client.post(f"/sessions/{session_id}/eval-runs", token=token, json_body=body or {}, headers=headers)
