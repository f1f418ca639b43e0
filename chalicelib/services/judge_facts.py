"""Judge facts: keeping what judges `retain_fact` per tenant and repository, listing and deleting them, forgetting
them with their session, and (when the tenant turns it on) handing them to the next run's judges.

- Keeping: `JudgeFactRetention` is a participant of the run lifecycle's finalizer
  (`services/run_lifecycle.py`), so every run — server worker or daemon, succeeded, failed, timed out or
  cancelled — contributes the facts of its scored questions exactly once, in the finalization transaction.
  The outcome of a scored question carries its judge's fact until then (`QuestionOutcome.retain_fact`).
  Try-it runs retain nothing (their question may be an unsaved draft).
- Forgetting: `JudgeFactService` is a `DerivedDataCleaner` of the session/run deletion use case
  (`forget_session`, `forget_run`): a fact goes once no run that retained it is left.
- Feeding back: off by default (the reference turned injection off after it biased judges, §4.4); with
  `judge_facts_in_prompts` on, `known_patterns` gives the run's judges the repository's newest facts (at most
  `MAX_INJECTED_FACTS`, read once per run, in a fixed order) for the shared, cached prompt prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from chalicelib.adapters.run_store import TransactItem
from chalicelib.domain.errors import NotFound
from chalicelib.domain.judge_facts import (
    MAX_FACT_SOURCES,
    MAX_FACTS_PER_RUN,
    JudgeFactList,
    JudgeFactQuery,
    RetainedFact,
    fact_fingerprint,
    fact_id,
    normalise_repository,
    repository_key,
    split_fact_id,
    view_of,
)
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun
from chalicelib.domain.settings import EvalRunnerSettings
from chalicelib.judges.prompts import MAX_INJECTED_FACTS
from chalicelib.observability import logger
from chalicelib.services.run_lifecycle import Contribution, Finalization

# Facts read for a prompt at most (the newest MAX_INJECTED_FACTS of them go in).
_INJECTION_READ_LIMIT = 500


class FactStore(Protocol):
    """`chalicelib.adapters.fact_store.DynamoFactStore`."""

    def get_facts(self, tenant: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]: ...

    def create_write(self, tenant: str, repository: str, fact: RetainedFact, fact_id: str, fingerprint: str, *,
                     now: str) -> TransactItem: ...

    def add_source_write(self, tenant: str, repository: str, fact: RetainedFact, fingerprint: str, *, now: str,
                         record_source: bool) -> TransactItem: ...

    def pointer_write(self, tenant: str, session_id: str, repository: str, fingerprint: str) -> TransactItem: ...

    def list_facts(self, tenant: str, repository: str, *, limit: int, cursor: str | None
                   ) -> tuple[list[dict[str, Any]], str | None]: ...

    def delete_fact(self, tenant: str, repo_key: str, fingerprint: str) -> bool: ...

    def session_facts(self, tenant: str, session_id: str) -> list[tuple[str, str]]: ...

    def forget_sources(self, tenant: str, repo_key: str, fingerprint: str, *, session_id: str,
                       run_ids: Iterable[str] | None = None) -> None: ...


class SessionRepositories(Protocol):
    def repository_of(self, tenant: str, session_id: str) -> str | None:
        """The repository the session names (None: none, or no such session)."""
        ...


class FactSettings(Protocol):
    def judge_facts_in_prompts(self, tenant: str) -> bool: ...


class SessionIndexReader(Protocol):
    def get_session(self, tenant: str, session_id: str) -> dict[str, Any] | None: ...


class RunnerSettingsReader(Protocol):
    def load_runner_settings(self, tenant: str, *, fresh: bool = False) -> EvalRunnerSettings: ...


class IndexedRepositories:
    """`SessionRepositories` over the session index (one read of the session record)."""

    def __init__(self, index: SessionIndexReader) -> None:
        self._index = index

    def repository_of(self, tenant: str, session_id: str) -> str | None:
        record = self._index.get_session(tenant, session_id)
        repository = record.get("repository") if record else None
        return repository if isinstance(repository, str) else None


class TenantFactSettings:
    """`FactSettings` from the tenant's eval-runner settings (cached like every settings read)."""

    def __init__(self, settings: RunnerSettingsReader) -> None:
        self._settings = settings

    def judge_facts_in_prompts(self, tenant: str) -> bool:
        return self._settings.load_runner_settings(tenant).judge_facts_in_prompts


def retained_facts(run: EvalRun) -> list[RetainedFact]:
    """The facts a run's scored questions retained, in question order, one per fact (first question wins)."""
    if run.trial_questions:
        return []
    found: dict[str, RetainedFact] = {}
    for ref in run.questions:
        outcome = run.outcome(ref.question_id)
        if outcome.status != "scored" or not outcome.retain_fact:
            continue
        fingerprint = fact_fingerprint(outcome.retain_fact)
        if fingerprint not in found and len(found) < MAX_FACTS_PER_RUN:
            found[fingerprint] = RetainedFact(text=outcome.retain_fact, question_id=ref.question_id,
                                              category=ref.category, eval_run_id=run.eval_run_id,
                                              session_id=run.session_id)
    return list(found.values())


class JudgeFactRetention:
    """The run lifecycle participant that stores a finalized run's retained facts."""

    name = "judge_facts"

    def __init__(self, store: FactStore, sessions: SessionRepositories) -> None:
        self._store = store
        self._sessions = sessions

    def contribute(self, final: Finalization, *, attempt: int, refused: Mapping[str, Any] | None) -> Contribution:
        run = final.run
        facts = retained_facts(run)
        if not facts:
            return Contribution()
        repository = normalise_repository(self._sessions.repository_of(run.tenant, run.session_id))
        if repository is None:
            return Contribution()  # like the reference: a session without a repository keeps no facts
        repo_key = repository_key(repository)
        # Read on every attempt: a refusal means another run created or deleted one of these facts meanwhile.
        stored = self._store.get_facts(run.tenant, [(repo_key, fact_fingerprint(f.text)) for f in facts])
        writes: list[TransactItem] = []
        for fact in facts:
            fingerprint = fact_fingerprint(fact.text)
            existing = stored.get((repo_key, fingerprint))
            if existing is None:
                writes.append(self._store.create_write(run.tenant, repository, fact, fact_id(repository, fact.text),
                                                       fingerprint, now=final.finalized_at))
            else:
                sources = existing.get("sources") or {}
                record = run.eval_run_id in sources or len(sources) < MAX_FACT_SOURCES
                writes.append(self._store.add_source_write(run.tenant, repository, fact, fingerprint,
                                                           now=final.finalized_at, record_source=record))
            writes.append(self._store.pointer_write(run.tenant, run.session_id, repository, fingerprint))
        return Contribution(writes=writes)

    def after_finalized(self, final: Finalization) -> None:
        count = len(retained_facts(final.run))
        if count:
            logger.info("judge facts retained", extra={"eval_run_id": final.run.eval_run_id, "facts": count})


class JudgeFactService:
    """Listing and deleting facts, forgetting them with their sessions and runs, and the prompt's known patterns."""

    def __init__(self, *, store: FactStore, sessions: SessionRepositories, settings: FactSettings) -> None:
        self._store = store
        self._sessions = sessions
        self._settings = settings

    def list_facts(self, principal: Principal, query: JudgeFactQuery) -> JudgeFactList:
        repository = normalise_repository(query.repository)
        if repository is None:
            return JudgeFactList(items=[])
        items, cursor = self._store.list_facts(principal.tenant, repository, limit=query.limit, cursor=query.cursor)
        views = sorted((view_of(item) for item in items), key=lambda v: (v.created_at, v.fact_id))
        return JudgeFactList(items=views, next_cursor=cursor)

    def delete_fact(self, principal: Principal, fact_id_value: str) -> None:
        repo_key, fingerprint = split_fact_id(fact_id_value)
        if not self._store.delete_fact(principal.tenant, repo_key, fingerprint):
            raise NotFound(f"No judge fact '{fact_id_value}' in this tenant.", code="judge_fact_not_found")
        logger.info("judge fact deleted", extra={"fact_id": fact_id_value, "by": principal.user})

    # -- the deletion use case's cleaner ---------------------------------------------------------------
    def forget_session(self, tenant: str, session_id: str) -> None:
        for repo_key, fingerprint in self._store.session_facts(tenant, session_id):
            self._store.forget_sources(tenant, repo_key, fingerprint, session_id=session_id)

    def forget_run(self, tenant: str, run: EvalRun) -> None:
        for repo_key, fingerprint in self._store.session_facts(tenant, run.session_id):
            self._store.forget_sources(tenant, repo_key, fingerprint, session_id=run.session_id,
                                       run_ids=[run.eval_run_id])

    # -- feeding facts back --------------------------------------------------------------------------
    def known_patterns(self, tenant: str, session_id: str) -> list[str] | None:
        """The facts a run of this session gives its judges, or None when the tenant does not inject them."""
        if not self._settings.judge_facts_in_prompts(tenant):
            return None
        repository = normalise_repository(self._sessions.repository_of(tenant, session_id))
        if repository is None:
            return []
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(items) < _INJECTION_READ_LIMIT:
            page, cursor = self._store.list_facts(tenant, repository, limit=_INJECTION_READ_LIMIT - len(items),
                                                  cursor=cursor)
            items += page
            if cursor is None:
                break
        views = sorted((view_of(item) for item in items), key=lambda v: (v.last_retained_at, v.fact_id))
        newest = sorted(views[-MAX_INJECTED_FACTS:], key=lambda v: (v.created_at, v.fact_id))
        return [v.text for v in newest]
