"""The run lifecycle's one finalizer: every terminal transition of an eval run ends here, exactly once.

Who calls `RunLifecycle.finalize` (and nobody else ends a run without it):
- the server worker when a run ends (succeeded, failed, timed out, and a cancel it noticed, with
  the usage its in-flight judges still reported), and the worker's crash handler;
- the daemon reporter on a result, an `eval_failed` event and a deadline that passed;
- dispatch when the hand-off failed (`dispatch_failed`), and cancel of a queued run (a cancelled
  *running* server run is finalized by its worker once the judges have stopped, so the usage they
  still billed is settled too; if that worker is gone, by the sweep after the deadline);
- readers (`GET /eval-runs/…`, lists) and the scheduled sweep (`sweep`), which end overdue runs
  `timed_out` and finalize terminal runs whose finalization never happened (a crash in between).

Idempotent per run attempt: the run item gets `finalized_at` in a conditional write (not
finalized yet, still in the terminal status it is being finalized for) inside ONE DynamoDB
transaction together with every participant's writes, so a redelivery, a race between a reader
and the worker, or a sweep settles once or not at all. A rerun removes the marker; the next
attempt is finalized on its own.

Extension point: a `FinalizationParticipant` contributes fields on the run item and writes on other
items to that transaction (spend: the run's cost, the budget settlement and the quota slot; later
history's daily aggregates, automation's batch counts), and gets `after_finalized` once the
transaction committed, for side effects that are not DynamoDB writes (events, webhooks, starting
delayed runs). `after_finalized` runs in the process that won the finalization; it is best effort
(a crash right after the commit loses it), so anything that must never be lost belongs in the
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.adapters.run_store import AlreadyFinalized, ExtraWriteRefused, RunStateConflict, TransactItem
from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.errors import DependencyUnavailable, DomainError, NotFound
from chalicelib.domain.evaluation import FailureReason, QuestionOutcome, TokenUsage
from chalicelib.domain.runs import EvalRun, RunError
from chalicelib.observability import emit_run_status, logger

# A participant whose write was refused gets this many more tries (it re-reads and rebuilds it).
MAX_FINALIZE_ATTEMPTS = 4
# Runs per sweep invocation at most: the rest waits for the next schedule.
SWEEP_MAX_RUNS = 500


# ----------------------------------------------------------------------------------------- ports


class FinalizationStore(Protocol):
    """The run store's side of finalization (`chalicelib.adapters.run_store.DynamoRunStore`)."""

    def get(self, tenant: str, run_id: str) -> EvalRun | None: ...

    def commit_finalization(self, run: EvalRun, *, now: str, fields: Mapping[str, Any],
                            extra_writes: Sequence[TransactItem] = ()) -> None: ...

    def finish(self, tenant: str, run_id: str, *, status: str, now: str, usage: TokenUsage,
               result: Any = None, error: RunError | None = None, outcomes: list[QuestionOutcome] = ...,
               from_statuses: tuple[str, ...] = ..., extra: dict[str, Any] | None = None) -> EvalRun: ...


@dataclass
class Contribution:
    """What one participant adds to a run's finalization transaction."""

    run_fields: dict[str, Any] = field(default_factory=dict)  # set on the run item (top-level names)
    writes: list[TransactItem] = field(default_factory=list)  # other items, committed atomically


@dataclass(frozen=True)
class Finalization:
    """The run as finalized: the terminal record plus what the participants set on it."""

    run: EvalRun
    finalized_at: str
    usage: TokenUsage
    # What only the finalizing process knows, for the participants (the worker's spend guard:
    # `unreported_cost_micros`, the worst case of calls cut off before their usage came back).
    facts: Mapping[str, Any] = field(default_factory=dict)


class FinalizationParticipant(Protocol):
    """A plug-in of the finalizer. `name` appears in logs; `contribute` must be pure apart from reads
    (it may be called again after a refused write, with `attempt` > 0 and the refusal's old item)."""

    name: str

    def contribute(self, final: Finalization, *, attempt: int, refused: Mapping[str, Any] | None) -> Contribution:
        ...

    def after_finalized(self, final: Finalization) -> None:
        ...


class OpenRunRegistry(Protocol):
    """Where the sweep finds runs that are not finalized yet (the spend ledger's open-run map)."""

    def tenants_with_open_runs(self) -> Sequence[str]: ...

    def open_runs(self, tenant: str) -> Mapping[str, int]:
        """run id → its deadline (epoch seconds) for every run admitted and not finalized."""
        ...


class DaemonDeadlines(Protocol):
    """The daemon side of a deadline (`DaemonService.reconcile_run`): ends an overdue daemon run
    `timed_out`, closes its job, and finalizes it through this lifecycle."""

    def reconcile_run(self, run: EvalRun) -> EvalRun: ...


@dataclass(frozen=True)
class SweepReport:
    tenants: int = 0
    open_runs: int = 0
    timed_out: int = 0
    finalized: int = 0
    errors: int = 0


# ----------------------------------------------------------------------------------------- service


class RunLifecycle:
    """The finalizer (see the module docstring). One per container; participants are added at wiring."""

    def __init__(self, *, runs: FinalizationStore, clock: Clock, worker_grace_seconds: int = 60,
                 participants: Sequence[FinalizationParticipant] = (),
                 registry: OpenRunRegistry | None = None,
                 daemon_deadlines: Callable[[], DaemonDeadlines] | None = None) -> None:
        self._runs = runs
        self._clock = clock
        self._participants: list[FinalizationParticipant] = list(participants)
        self._registry = registry
        self._daemon_deadlines = daemon_deadlines
        # A server run cannot legitimately be unfinished once its deadline plus the worker's grace
        # (the Lambda timeout covers it) has passed; a minute more absorbs clock skew.
        self.stale_after = timedelta(seconds=worker_grace_seconds + 60)

    def add_participant(self, participant: FinalizationParticipant) -> None:
        """The extension point: history, evidence and automation register theirs at wiring time."""
        self._participants.append(participant)

    @property
    def participants(self) -> tuple[FinalizationParticipant, ...]:
        return tuple(self._participants)

    # -- the finalizer ---------------------------------------------------------------------------
    def finalize(self, run: EvalRun, *, usage: TokenUsage | None = None,
                 facts: Mapping[str, Any] | None = None) -> EvalRun:
        """Finalize a terminal run once. `usage` replaces the stored usage in the same write (a worker
        that noticed a cancel reports what its judges billed after the cancel was recorded).

        Returns the run as finalized, or as stored when someone else finalized it first. Raises
        DependencyUnavailable when the transaction cannot be committed: the run stays unfinalized and
        the next reader or sweep retries, so nothing is settled twice and nothing is lost.
        """
        if not run.is_terminal:
            raise ValueError(f"finalize() needs a terminal run, got {run.status}")
        if run.finalized_at is not None:
            return run
        now = iso(self._clock.now())
        final = Finalization(run=run if usage is None else run.model_copy(update={"usage": usage}),
                             finalized_at=now, usage=usage if usage is not None else run.usage, facts=dict(facts or {}))
        refused: dict[int, Mapping[str, Any] | None] = {}
        for attempt in range(MAX_FINALIZE_ATTEMPTS):
            contributions = [(p, p.contribute(final, attempt=attempt, refused=refused.get(i)))
                             for i, p in enumerate(self._participants)]
            fields: dict[str, Any] = {}
            writes: list[TransactItem] = []
            owners: list[int] = []
            for i, (_, c) in enumerate(contributions):
                fields.update(c.run_fields)
                writes.extend(c.writes)
                owners.extend([i] * len(c.writes))
            if usage is not None:
                fields["usage"] = usage.model_dump(mode="json")
            refused = {}
            try:
                self._runs.commit_finalization(final.run, now=now, fields=fields, extra_writes=writes)
            except AlreadyFinalized:
                stored = self._runs.get(run.tenant, run.eval_run_id)
                return stored or run
            except ExtraWriteRefused as exc:
                owner = owners[exc.position]
                refused[owner] = exc.item
                logger.info("run finalization write refused; retrying", extra={
                    "eval_run_id": run.eval_run_id, "participant": self._participants[owner].name,
                    "attempt": attempt})
                continue
            finalized = EvalRun.model_validate({**final.run.model_dump(mode="json"), **fields,
                                                "finalized_at": now, "version": final.run.version + 1})
            done = Finalization(run=finalized, finalized_at=now, usage=final.usage, facts=final.facts)
            logger.info("eval run finalized", extra={"eval_run_id": run.eval_run_id, "status": run.status,
                                                    "runner": run.runner})
            for participant in self._participants:
                try:
                    participant.after_finalized(done)
                except Exception as exc:  # one plug-in's side effect must not undo or block the others
                    logger.error("run finalization side effect failed", extra={
                        "eval_run_id": run.eval_run_id, "participant": participant.name,
                        "error_type": type(exc).__name__})
            return finalized
        raise DependencyUnavailable("The run could not be finalized right now; it is retried later.",
                                    code="finalization_pending")

    def finalize_quietly(self, run: EvalRun, *, usage: TokenUsage | None = None,
                         facts: Mapping[str, Any] | None = None) -> EvalRun:
        """`finalize` for call sites whose own write already succeeded (the response must not fail):
        a failure is logged and left to the next reader or the sweep."""
        try:
            return self.finalize(run, usage=usage, facts=facts)
        except DomainError as exc:
            logger.warning("eval run finalization deferred", extra={
                "eval_run_id": run.eval_run_id, "error_code": exc.code})
            return run

    # -- when a terminal run is due ------------------------------------------------------------------
    def finalization_due(self, run: EvalRun, now: datetime) -> bool:
        """Terminal and not finalized, and nobody else is about to finalize it: a cancelled server run
        that was running is the worker's to finalize (with its last usage) until the worker must be
        gone (deadline + grace)."""
        if not run.is_terminal or run.finalized_at is not None:
            return False
        if run.runner == "server" and run.status == "cancelled" and run.started_at is not None:
            return now > parse_iso(run.deadline_at) + self.stale_after
        return True

    def overdue(self, run: EvalRun, now: datetime) -> bool:
        if run.is_terminal:
            return False
        if run.runner == "daemon":
            return now >= parse_iso(run.deadline_at)
        return now > parse_iso(run.deadline_at) + self.stale_after

    # -- reconciliation (readers and the sweep) ------------------------------------------------------
    def reconcile(self, run: EvalRun) -> EvalRun:
        """What a reader should see: an overdue run ended `timed_out`, a due run finalized."""
        now = self._clock.now()
        if self.overdue(run, now):
            if run.runner == "daemon":
                if self._daemon_deadlines is None:  # pragma: no cover - wiring always provides it
                    return run
                return self._daemon_deadlines().reconcile_run(run)
            return self._expire_server_run(run, now)
        if self.finalization_due(run, now):
            return self.finalize_quietly(run)
        return run

    def _expire_server_run(self, run: EvalRun, now: datetime) -> EvalRun:
        """The worker vanished (crash, lost message): the run ends `timed_out` and is finalized."""
        marked = [QuestionOutcome(question_id=o.question_id, category=o.category, status="timed_out",
                                  usage=o.usage, usage_reported=o.usage_reported, attempts=o.attempts,
                                  failure_reason=FailureReason(kind="timed_out",
                                                               message="The run's deadline passed."))
                  for o in (run.outcome(q.question_id) for q in run.questions) if not o.is_terminal]
        try:
            ended = self._runs.finish(
                run.tenant, run.eval_run_id, status="timed_out", now=iso(now), usage=run.usage, outcomes=marked,
                from_statuses=("queued", "running"),
                error=RunError(code="deadline_exceeded",
                               message="The worker did not finish this run before its deadline; "
                                       "rerun the failed questions or raise RunTimeoutSeconds."))
        except RunStateConflict:
            current = self._runs.get(run.tenant, run.eval_run_id)
            if current is None:
                return run
            return self.finalize_quietly(current) if self.finalization_due(current, now) else current
        logger.info("overdue server run timed out", extra={"eval_run_id": run.eval_run_id})
        emit_run_status("timed_out", runner=run.runner, vendor=run.vendor)
        return self.finalize_quietly(ended)

    def sweep(self, *, max_runs: int = SWEEP_MAX_RUNS) -> SweepReport:
        """The scheduled maintenance pass: every admitted run past its deadline (plus grace) that no
        reader looked at is ended and finalized, so quota slots and budget reservations never leak."""
        if self._registry is None:
            return SweepReport()
        now = self._clock.now()
        tenants = open_runs = timed_out = finalized = errors = 0
        for tenant in self._registry.tenants_with_open_runs():
            tenants += 1
            try:
                entries = self._registry.open_runs(tenant)
            except DomainError:
                errors += 1
                continue
            open_runs += len(entries)
            cutoff = (now - self.stale_after).timestamp()
            for run_id, deadline_epoch in sorted(entries.items(), key=lambda kv: kv[1]):
                if deadline_epoch > cutoff:
                    continue
                if timed_out + finalized + errors >= max_runs:
                    break
                try:
                    run = self._runs.get(tenant, run_id)
                    if run is None:
                        raise NotFound(f"run {run_id} vanished", code="eval_run_not_found")
                    was_terminal = run.is_terminal
                    after = self.reconcile(run)
                except DomainError as exc:
                    errors += 1
                    logger.warning("sweep could not reconcile a run", extra={
                        "tenant": tenant, "eval_run_id": run_id, "error_code": exc.code})
                    continue
                if after.finalized_at is not None:
                    if was_terminal:
                        finalized += 1
                    else:
                        timed_out += 1
        report = SweepReport(tenants=tenants, open_runs=open_runs, timed_out=timed_out, finalized=finalized,
                             errors=errors)
        logger.info("run lifecycle sweep", extra={"tenants": tenants, "open_runs": open_runs,
                                                   "timed_out": timed_out, "finalized": finalized,
                                                   "errors": errors})
        return report
