"""What the judge phase of a run needs from the outside world: progress writes, the cancel poll, a key
refresh, and remembering a context limit the vendor stated.

Implemented by `chalicelib.services.eval_job_run_ports.JobRunPorts` (DynamoDB, the settings service);
the benchmark and the unit tests implement it without AWS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chalicelib.domain.context_limits import LimitSource, StatedLimit
from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage
from chalicelib.domain.judging import JudgeModel


class RunPorts(Protocol):
    async def flush(self, outcomes: Sequence[QuestionOutcome], usage: TokenUsage,
                    context: Mapping[str, Any] | None) -> bool:
        """Persist finished questions and the run's new usage; False when the run is no longer running."""
        ...

    async def is_cancelled(self) -> bool: ...

    async def refresh_model(self) -> JudgeModel | None:
        """After a 401/403: re-read the key; a model with the new key, or None if it did not change."""
        ...

    async def remember_context_limit(self, stated: StatedLimit, source: LimitSource) -> None:
        """The vendor stated the model's real context limit: keep it for the next runs (best effort)."""
        ...
