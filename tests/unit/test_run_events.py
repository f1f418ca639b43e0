"""The SessionEvalCompleted event: one detail shape for every run, whichever path judged it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.services.eval_job_ports import EVENT_DETAIL_TYPE
from chalicelib.services.run_events import announce_completed
from tests.history_support import new_run, result_for


class RecordingBus:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._fail = fail

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        if self._fail:
            raise DependencyUnavailable("EventBridge is unavailable")
        self.events.append((detail_type, dict(detail)))


def _finished(run_id: str, mode: str) -> Any:
    run = new_run(run_id, status="succeeded", mode=mode)
    return run.model_copy(update={"result": result_for(run_id, 4), "finished_at": "2026-12-01T10:01:00Z"})


def test_direct_and_batch_mode_runs_publish_the_same_fields_with_their_mode_and_cost() -> None:
    bus = RecordingBus()
    announce_completed(bus, _finished("evr_now", "now"))
    announce_completed(bus, _finished("evr_batch", "batch"))
    (now_type, now), (batch_type, batch) = bus.events
    assert now_type == batch_type == EVENT_DETAIL_TYPE
    assert set(now) == set(batch)
    assert (now["mode"], batch["mode"]) == ("now", "batch")
    assert now["cost"]["batch"] is False and batch["cost"]["batch"] is True
    assert now["overall_score"] == batch["overall_score"] == 4 and now["questions_scored"] == 13


def test_a_lost_notification_is_not_raised_and_no_bus_publishes_nothing() -> None:
    announce_completed(RecordingBus(fail=True), _finished("evr_lost", "now"))
    announce_completed(None, _finished("evr_none", "now"))
