"""The scheduled automation Lambda: every minute it polls the open vendor batches of batch-mode runs
(verdicts written, runs finished and finalized as the vendors end them), starts rule and batch runs
that wait for an active-run slot when one is free (a safety net: runs normally start when another run
of the tenant is finalized), ends runs that waited 24 h for a slot, and finishes creating an eval
batch whose request died mid-way.

Like the worker, its Lambda handler is this module (never `app.py`), so it carries its own logging
and metrics (`lambda_entry`)."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Rate

from chalicelib.observability import lambda_entry, logger

automation_bp = Blueprint(__name__)

POLL_RATE_MINUTES = 1
WAITING_TENANTS_PER_POLL = 50


def poll_automation() -> dict[str, Any]:
    """The plain-Python entry (the local stack calls it on a timer)."""
    from dataclasses import asdict

    from chalicelib.domain.errors import DomainError
    from chalicelib.wiring import container

    c = container()
    report: dict[str, Any] = {}
    try:
        report["vendor_batches"] = asdict(c.vendor_batch_runs.poll())
    except DomainError as exc:
        logger.warning("vendor batch poll failed", extra={"error_code": exc.code})
    started = expired = 0
    try:
        tenants = list(dict.fromkeys(w.tenant for w in c.automation_store.waiting_anywhere(limit=200)))
        for tenant in tenants[:WAITING_TENANTS_PER_POLL]:
            expired += c.automated_dispatch.expire_overdue_waiting(tenant)
            started += c.automated_dispatch.promote(tenant).started
    except DomainError as exc:
        logger.warning("waiting runs not promoted", extra={"error_code": exc.code})
    report["waiting"] = {"started": started, "expired": expired}
    try:
        report["batches_resumed"] = c.eval_batches.resume_interrupted()
    except DomainError as exc:
        logger.warning("interrupted batches not resumed", extra={"error_code": exc.code})
    return report


@automation_bp.schedule(Rate(POLL_RATE_MINUTES, unit=Rate.MINUTES), name="automation_poller",
                        description="Polls vendor batches of batch-mode runs, starts runs waiting for a slot")
@lambda_entry
def automation_poller(event: Any) -> dict[str, Any]:
    return poll_automation()
