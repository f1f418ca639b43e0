"""The scheduled maintenance Lambda: every 5 minutes the run lifecycle's sweep ends and finalizes
admitted runs that are past their deadline and that nobody read, so quota slots and budget
reservations never leak (a vanished worker, a silent daemon, an interrupted finalization).

Like the worker, its Lambda handler is this module (never `app.py`), so it carries its own logging
and metrics (`lambda_entry`)."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Rate

from chalicelib.observability import lambda_entry

maintenance_bp = Blueprint(__name__)

SWEEP_RATE_MINUTES = 5


def run_maintenance_sweep() -> dict[str, Any]:
    """The plain-Python entry (the local stack calls it on a timer)."""
    from dataclasses import asdict

    from chalicelib.wiring import container

    report = container().run_lifecycle.sweep()
    return asdict(report)


@maintenance_bp.schedule(Rate(SWEEP_RATE_MINUTES, unit=Rate.MINUTES), name="run_maintenance",
                         description="Ends and finalizes overdue eval runs (quota slots, budget reservations)")
@lambda_entry
def run_maintenance(event: Any) -> dict[str, Any]:
    return run_maintenance_sweep()
