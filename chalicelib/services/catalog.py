"""Judge catalog use cases: the admin catalog (read, versioned save with If-Match, audit, old versions),
the enabled catalog dispatch selects from, the questions a run judges (its recorded version, or the
question it carries), and the editor's prompt preview and "try it on a session" run.

Runs never read "the catalog", only a version: dispatch records the head's number on the run, and
the worker and the daemon job read that immutable version, so a rerun judges what the first run
judged however the catalog changed since. A try-it run goes through ordinary dispatch (the worker,
the tenant's vendor key, its limits and budgets, no 29 s API Gateway limit) with its one question,
saved or not, enabled or not, stored on the run itself (`trial_questions`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from chalicelib.domain.catalog import (
    CatalogAuditPage,
    CatalogAuditRecord,
    CatalogUpdate,
    CatalogVersion,
    CatalogVersionView,
    CatalogView,
    DraftQuestion,
    QuestionCatalog,
    ResolvedCatalog,
    catalog_version_mismatch,
    catalog_view,
    check_draft,
    default_catalog,
    diff_catalog,
    enabled_view,
    plan_catalog,
    version_view,
)
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.errors import DomainError, InvalidRequest, NotFound
from chalicelib.domain.evaluation import RunnerKind, VendorName
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun
from chalicelib.judges.catalog import Question, get_question
from chalicelib.observability import logger
from chalicelib.services.eval_runners import EvalRunRequest
from chalicelib.services.eval_runs import EvalRunAccepted

MAX_WRITE_ATTEMPTS = 5
# A preview with a session embeds its whole trace; it must fit one Lambda response (6 MB) as JSON.
MAX_PREVIEW_BYTES = 5_000_000
PREVIEW_RUN_ID = "<assigned when the run is dispatched>"
PREVIEW_SESSION_ID = "<the session's id>"
PREVIEW_TRACE = "<the session's eval context: GET /sessions/{session_id}/eval-context, as JSON>"


# ----------------------------------------------------------------------------------------- ports


class CatalogRepository(Protocol):
    def head(self, tenant: str, *, fresh: bool = False) -> CatalogVersion | None: ...

    def version(self, tenant: str, version: int) -> CatalogVersion | None: ...

    def save(self, tenant: str, new: CatalogVersion, *, expected_version: int) -> None: ...

    def list_audit(self, tenant: str, limit: int) -> list[CatalogAuditRecord]: ...


class EvalContextSource(Protocol):
    def load_eval_context(self, tenant: str, session_id: str, threshold: int | str | None = ...,
                          chain: bool = ...) -> Any: ...


class RunDispatcher(Protocol):
    """Dispatch (`EvalRunService`): a try-it run is an ordinary run that carries its question."""

    def dispatch_eval_run(self, principal: Principal, session_id: str, request: EvalRunRequest, *,
                          idempotency_key: str | None = None,
                          trial: Question | None = None) -> EvalRunAccepted: ...


class PreviewTooLarge(DomainError):
    status = 422
    code = "preview_too_large"


# ---------------------------------------------------------------------------------------- models


class _QuestionChoice(BaseModel):
    """Exactly one of a draft (unsaved) question or the id of a question of the current catalog."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    question: DraftQuestion | None = Field(default=None, description="An unsaved tenant question.")
    question_id: str | None = Field(default=None, max_length=200,
                                    description="A question of the current catalog (built-in or tenant).")


class PromptPreviewRequest(_QuestionChoice):
    """POST /admin/eval-questions/preview."""

    model_config = ConfigDict(defer_build=True)

    session_id: str | None = Field(default=None, min_length=1, max_length=256,
                                   description="Render with this session's trace; without it the trace is a "
                                               "placeholder.")
    threshold: StrictInt | None = Field(default=None, description="Tool-output threshold for the session's trace.")
    chain: StrictBool = False


class PromptPreview(BaseModel):
    """What one judge call of the question sends: `shared_context` (identical for every question of a
    run, sent as the cached block) then `question_prompt`; CLI judges get them joined by `separator`."""

    model_config = ConfigDict(defer_build=True)

    question_id: str
    category: str
    needs_tools: bool
    shared_context: str
    separator: str
    question_prompt: str
    session_id: str | None
    trace_included: bool
    prompt_chars: int


class QuestionTrialRequest(_QuestionChoice):
    """POST /admin/eval-questions/try: judge one question on a session, saved or not."""

    model_config = ConfigDict(defer_build=True)

    session_id: str = Field(min_length=1, max_length=256)
    vendor: VendorName | None = None
    runner: RunnerKind | None = None
    threshold: StrictInt | None = None
    chain: StrictBool = False


# --------------------------------------------------------------------------------------- service


class CatalogService:
    def __init__(self, *, store: CatalogRepository, clock: Clock, sessions: EvalContextSource,
                 runs: Callable[[], RunDispatcher]) -> None:
        self._store = store
        self._clock = clock
        self._sessions = sessions
        # A thunk: dispatch depends on this service (the enabled catalog), and try-it on dispatch.
        self._runs = runs

    # -- admin ---------------------------------------------------------------------------------
    def _head(self, tenant: str, *, fresh: bool = False) -> CatalogVersion:
        return self._store.head(tenant, fresh=fresh) or default_catalog()

    def get_catalog(self, principal: Principal) -> CatalogView:
        principal.require_admin()
        return catalog_view(self._head(principal.tenant, fresh=True))

    def update_catalog(self, principal: Principal, update: CatalogUpdate, if_match: int | None = None) -> CatalogView:
        """Save the whole catalog as a new version (nothing changed → the current one, no new version)."""
        principal.require_admin()
        entries = plan_catalog(update)
        for _ in range(MAX_WRITE_ATTEMPTS):
            current = self._head(principal.tenant, fresh=True)
            if if_match is not None and if_match != current.version:
                raise catalog_version_mismatch(current, if_match)
            changes = diff_catalog(current.entries, entries)
            if not changes:
                return catalog_view(current)
            new = CatalogVersion(version=current.version + 1, entries=entries, created_at=iso(self._clock.now()),
                                 created_by=principal.user, changes=changes)
            try:
                self._store.save(principal.tenant, new, expected_version=current.version)
            except DomainError as exc:
                if exc.code != "catalog_write_conflict":
                    raise
                continue  # someone saved meanwhile: If-Match turns that into a 412 on the re-read
            logger.info("judge catalog saved", extra={"catalog_version": new.version, "changes": len(changes),
                                                      "questions": len(entries)})
            return catalog_view(new)
        raise catalog_version_mismatch(self._head(principal.tenant, fresh=True), if_match or 0)

    def list_catalog_audit(self, principal: Principal, limit: int = 50) -> CatalogAuditPage:
        principal.require_admin()
        return CatalogAuditPage(items=self._store.list_audit(principal.tenant, max(1, min(limit, 100))))

    def get_catalog_version(self, principal: Principal, version: int) -> CatalogVersionView:
        principal.require_admin()
        found = default_catalog() if version == 0 else self._store.version(principal.tenant, version)
        if found is None:
            raise NotFound(f"The judge catalog has no version {version}.", code="catalog_version_not_found")
        return version_view(found)

    # -- dispatch and runners ------------------------------------------------------------------
    def current(self, tenant: str, *, fresh: bool = False) -> ResolvedCatalog:
        """The enabled questions dispatch selects from, and the version number a run records."""
        return self._head(tenant, fresh=fresh).resolved()

    def enabled_questions(self, principal: Principal) -> QuestionCatalog:
        return enabled_view(self.current(principal.tenant))

    def questions_for_run(self, run: EvalRun) -> dict[str, Question]:
        """Every question the run may judge, by id, exactly as when it was dispatched."""
        if run.trial_questions:
            return {q.id: q for q in run.trial_questions}
        if run.catalog_version == 0:
            return default_catalog().questions_by_id()
        version = self._store.version(run.tenant, run.catalog_version)
        if version is None:
            logger.error("a run's catalog version is missing", extra={"eval_run_id": run.eval_run_id,
                                                                      "catalog_version": run.catalog_version})
            return {}
        return version.questions_by_id()

    # -- editor --------------------------------------------------------------------------------
    def _chosen(self, principal: Principal, choice: _QuestionChoice) -> Question:
        """The question to preview or try: a checked draft, or a question of the current catalog
        (enabled or not: trying a disabled question before enabling it is the point)."""
        if (choice.question is None) == (choice.question_id is None):
            raise InvalidRequest("Send either 'question' (a draft) or 'question_id' (a saved question).",
                                 code="question_or_question_id",
                                 details={"fields": [{"field": "question", "type": "exactly_one",
                                                      "message": "give question or question_id"}]})
        if choice.question is not None:
            return check_draft(choice.question)
        assert choice.question_id is not None
        found = self._head(principal.tenant, fresh=True).questions_by_id().get(choice.question_id) \
            or get_question(choice.question_id)
        if found is None:
            raise NotFound(f"No question '{choice.question_id[:64]}' in the judge catalog.",
                           code="question_not_found")
        return found

    def preview_question(self, principal: Principal, request: PromptPreviewRequest) -> PromptPreview:
        """The exact text one judge call of this question sends (before any context fit shortens the
        trace): with `session_id` the session's real eval context, else a placeholder for it."""
        # The prompt builders load here, not at import: dispatch imports this module on every cold start.
        from chalicelib.judges.evidence import number_entries
        from chalicelib.judges.prompts import PROMPT_SEPARATOR, build_question_prompt, build_shared_context
        from chalicelib.services.context_fit import context_json

        principal.require_admin()
        question = self._chosen(principal, request)
        if request.session_id is not None:
            context = self._sessions.load_eval_context(principal.tenant, request.session_id,
                                                       request.threshold if request.threshold is not None else 2000,
                                                       request.chain)
            shared = build_shared_context(context.session_id, PREVIEW_RUN_ID,
                                          context_json(number_entries(context.model_dump(mode="json"))))
        else:
            shared = build_shared_context(PREVIEW_SESSION_ID, PREVIEW_RUN_ID, PREVIEW_TRACE)
        suffix = build_question_prompt(question)
        size = len(json.dumps(shared)) + len(json.dumps(suffix))
        if size > MAX_PREVIEW_BYTES:
            raise PreviewTooLarge(f"The prompt is about {size} bytes, too large to preview in one response; "
                                  "preview without a session or with a lower threshold.",
                                  details={"bytes": size, "limit_bytes": MAX_PREVIEW_BYTES})
        return PromptPreview(question_id=question.id, category=question.category, needs_tools=question.needs_tools,
                             shared_context=shared, separator=PROMPT_SEPARATOR, question_prompt=suffix,
                             session_id=request.session_id, trace_included=request.session_id is not None,
                             prompt_chars=len(shared) + len(PROMPT_SEPARATOR) + len(suffix))

    def try_question(self, principal: Principal, request: QuestionTrialRequest, *,
                     idempotency_key: str | None = None) -> EvalRunAccepted:
        """A one-question run on a session through ordinary dispatch; the console polls the run."""
        principal.require_admin()
        question = self._chosen(principal, request)
        run_request = EvalRunRequest(vendor=request.vendor, runner=request.runner, threshold=request.threshold,
                                     chain=request.chain)
        accepted = self._runs().dispatch_eval_run(principal, request.session_id, run_request,
                                                  idempotency_key=idempotency_key, trial=question)
        logger.info("catalog question tried", extra={"eval_run_id": accepted.eval_run_id,
                                                     "question_id": question.id, "draft": request.question is not None})
        return accepted
