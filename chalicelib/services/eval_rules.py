"""Online evaluation rules: the admin CRUD, and judging stored sessions that match an enabled rule.

A stored session revision (`PUT /sessions/{id}`, a completed presigned upload) sends one small job
message (`SessionStoredNotice`) on the job queue; the worker calls `on_session_stored`, so the upload
itself never reads or matches a rule. For each enabled rule whose filter matches and whose sample
rate takes the session, one run is created (`services/automation_dispatch.py`), at most one per
(rule, session content): the run and a `RULEHIT` marker commit in one transaction, so a re-upload of
identical bytes or a redelivered message creates nothing. Every decision (run, skipped and why,
sampled out) is counted on the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from chalicelib.adapters.automation_store import MARKER_TTL_SECONDS, DynamoAutomationStore
from chalicelib.adapters.run_store import ExtraWriteRefused
from chalicelib.domain.automation import (
    MAX_RULES_PER_TENANT,
    EvalRule,
    EvalRuleInput,
    EvalRuleList,
    EvalRuleView,
    RuleMatch,
    RuleTrigger,
    SessionFacts,
    SessionStoredNotice,
    is_sampled,
    rule_of,
    rule_view,
)
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.errors import Conflict, DomainError, InvalidRequest, NotFound
from chalicelib.domain.ids import new_id
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun
from chalicelib.domain.settings import EvalRunnerSettings
from chalicelib.judges.catalog import select_questions
from chalicelib.observability import logger
from chalicelib.services.automation_budget import Bounds
from chalicelib.services.automation_dispatch import AutomatedDispatch, AutomatedPlan
from chalicelib.services.eval_runners import EvalRunRequest
from chalicelib.services.eval_runs import CatalogSource, RunnerSettingsSource

_RULE_ID_CHARS = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghijklmnopqrstuvwxyz_")


class RuleBudget(Protocol):
    """A run's bounds and the budgets' room for it (`services/automation_budget.AutomationBudget`)."""

    def bounds(self, runs: Sequence[EvalRun]) -> Bounds | None: ...

    def check(self, tenant: str, user: str, bounds: Bounds) -> None: ...


class SessionLookup(Protocol):
    def get_session(self, tenant: str, session_id: str) -> dict[str, Any] | None: ...


def _not_found(rule_id: str) -> NotFound:
    return NotFound(f"No eval rule '{rule_id[:64]}' in this tenant.", code="eval_rule_not_found")


def _checked_rule_id(rule_id: str) -> str:
    if not rule_id or len(rule_id) > 64 or not set(rule_id) <= _RULE_ID_CHARS:
        raise _not_found(rule_id)
    return rule_id


def _field_error(exc: InvalidRequest, field: str) -> InvalidRequest:
    details = dict(exc.details or {})
    return InvalidRequest(exc.message, code=exc.code,
                          details={**details, "fields": [{"field": field, "message": exc.message, "type": exc.code}]})


class RulePresence:
    """Whether a tenant has an enabled rule, as an upload asks it: one small query per tenant, cached for
    `ttl_seconds` in the container (a rule saved elsewhere applies to uploads after at most that long;
    this container's own rule changes apply at once). Tenants without rules send no notice at all."""

    def __init__(self, store: DynamoAutomationStore, *, ttl_seconds: float, monotonic: Callable[[], float]) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._known: dict[str, tuple[float, bool]] = {}

    def has_enabled_rules(self, tenant: str) -> bool:
        now = self._monotonic()
        cached = self._known.get(tenant)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        present = self._store.has_enabled_rules(tenant)
        self._known[tenant] = (now, present)
        return present

    def forget(self, tenant: str) -> None:
        self._known.pop(tenant, None)


class EvalRuleService:
    def __init__(self, *, store: DynamoAutomationStore, settings: RunnerSettingsSource, catalog: CatalogSource,
                 dispatch: AutomatedDispatch, sessions: SessionLookup, clock: Clock,
                 presence: RulePresence | None = None, budget: RuleBudget | None = None) -> None:
        self._presence = presence
        self._budget = budget
        self._store = store
        self._settings = settings
        self._catalog = catalog
        self._dispatch = dispatch
        self._sessions = sessions
        self._clock = clock

    # -- admin CRUD ------------------------------------------------------------------------------------
    def list_rules(self, principal: Principal) -> EvalRuleList:
        principal.require_admin()
        pairs = self._store.list_rules(principal.tenant)
        return EvalRuleList(items=[rule_view(rule, stats) for rule, stats in sorted(pairs, key=lambda p: p[0].rule_id)])

    def get_rule(self, principal: Principal, rule_id: str) -> EvalRuleView:
        principal.require_admin()
        found = self._store.get_rule(principal.tenant, _checked_rule_id(rule_id))
        if found is None:
            raise _not_found(rule_id)
        return rule_view(*found)

    def create_rule(self, principal: Principal, body: EvalRuleInput) -> EvalRuleView:
        principal.require_admin()
        self._validate(principal.tenant, body)
        if len(self._store.list_rules(principal.tenant)) >= MAX_RULES_PER_TENANT:
            raise Conflict(f"This tenant has {MAX_RULES_PER_TENANT} eval rules, the most it may have; delete or "
                           "reuse one.", code="too_many_rules", details={"max_rules": MAX_RULES_PER_TENANT})
        now = iso(self._clock.now())
        rule = EvalRule(**body.model_dump(), rule_id=new_id("rul"), tenant=principal.tenant, created_at=now,
                        created_by=principal.user, updated_at=now, updated_by=principal.user, version=1)
        self._store.put_rule(rule, expected_version=None)
        self._changed(principal.tenant)
        logger.info("eval rule created", extra={"rule_id": rule.rule_id, "mode": rule.mode,
                                                "sample_rate": rule.sample_rate, "enabled": rule.enabled})
        return rule_view(rule, None)

    def replace_rule(self, principal: Principal, rule_id: str, body: EvalRuleInput,
                     if_match: int | None) -> EvalRuleView:
        principal.require_admin()
        found = self._store.get_rule(principal.tenant, _checked_rule_id(rule_id))
        if found is None:
            raise _not_found(rule_id)
        current, stats = found
        if if_match is not None and if_match != current.version:
            from chalicelib.domain.errors import PreconditionFailed

            raise PreconditionFailed(f"The rule is at version {current.version}, not {if_match}; read it again.",
                                     code="version_mismatch", details={"current_version": current.version})
        self._validate(principal.tenant, body)
        rule = EvalRule(**body.model_dump(), rule_id=current.rule_id, tenant=current.tenant,
                        created_at=current.created_at, created_by=current.created_by,
                        updated_at=iso(self._clock.now()), updated_by=principal.user, version=current.version + 1)
        self._store.put_rule(rule, expected_version=current.version)
        self._changed(principal.tenant)
        logger.info("eval rule replaced", extra={"rule_id": rule.rule_id, "version": rule.version})
        return rule_view(rule, stats)

    def delete_rule(self, principal: Principal, rule_id: str) -> dict[str, Any]:
        principal.require_admin()
        if not self._store.delete_rule(principal.tenant, _checked_rule_id(rule_id)):
            raise _not_found(rule_id)
        self._changed(principal.tenant)
        logger.info("eval rule deleted", extra={"rule_id": rule_id})
        return {"rule_id": rule_id, "deleted": True}

    def _changed(self, tenant: str) -> None:
        if self._presence is not None:
            self._presence.forget(tenant)

    def _validate(self, tenant: str, body: EvalRuleInput) -> None:
        """Questions against the tenant's enabled judge catalog, the vendor against the enabled vendors."""
        catalog = self._catalog.current(tenant)
        try:
            select_questions(body.questions, None, catalog.questions, catalog.disabled_ids)
        except InvalidRequest as exc:
            fresh = self._catalog.current(tenant, fresh=True)
            if fresh.version == catalog.version:
                raise _field_error(exc, "questions") from None
            try:
                select_questions(body.questions, None, fresh.questions, fresh.disabled_ids)
            except InvalidRequest as again:
                raise _field_error(again, "questions") from None
        settings = self._settings.load_runner_settings(tenant)
        usable = list(settings.usable_vendors)
        if body.vendor is not None and body.vendor not in usable:
            raise InvalidRequest(f"{body.vendor} is not enabled for this tenant's server runner"
                                 + (f"; use one of: {', '.join(usable)}." if usable else "."),
                                 code="vendor_not_enabled",
                                 details={"enabled_vendors": usable, "fields": [
                                     {"field": "vendor", "message": "not an enabled vendor", "type": "vendor"}]})
        if body.vendor is None and len(usable) != 1:
            message = ("Both vendors are enabled; name the one this rule judges with in 'vendor'." if usable
                       else "No vendor is enabled for the server runner; configure one in the Eval runner settings.")
            raise InvalidRequest(message, code="vendor_required" if usable else "vendor_not_enabled",
                                 details={"enabled_vendors": usable, "fields": [
                                     {"field": "vendor", "message": message, "type": "vendor"}]})

    # -- matching --------------------------------------------------------------------------------------
    def on_session_stored(self, notice: SessionStoredNotice) -> dict[str, int]:
        """Apply the tenant's enabled rules to one stored session revision (the worker's job)."""
        tenant = notice.tenant
        rules = [rule for rule, _ in self._store.list_rules(tenant) if rule.enabled]
        report = {"rules": len(rules), "runs": 0, "skipped": 0, "sampled_out": 0, "duplicates": 0}
        if not rules:
            return report
        record = self._sessions.get_session(tenant, notice.session_id)
        if record is None or record.get("sha256") != notice.sha256:
            # Deleted, or replaced again since: the newer revision's own notice decides.
            logger.info("stale session notice ignored", extra={"tenant": tenant, "session_id": notice.session_id})
            return report
        facts = SessionFacts(session_id=notice.session_id, repository=record.get("repository"),
                             format=str(record.get("format")), uploaded_by=str(record.get("uploaded_by")),
                             entries=int(record.get("entries") or 0), revision=int(record.get("revision") or 1),
                             sha256=notice.sha256)
        context = _MatchContext(self, tenant)
        for rule in rules:
            outcome = self._apply(rule, facts, context)
            report[outcome] = report.get(outcome, 0) + 1
        if report["runs"]:
            self._dispatch.promote_quietly(tenant)
        return report

    def _apply(self, rule: EvalRule, facts: SessionFacts, context: _MatchContext) -> str:
        if not rule.filter.matches(facts):
            return "unmatched"
        tenant = context.tenant
        now = self._clock.now()
        expires = int((now + timedelta(seconds=MARKER_TTL_SECONDS)).timestamp())
        at = iso(now)
        if not is_sampled(rule.sample_rate, tenant, facts.session_id):
            if self._store.put_marker(tenant, rule.rule_id, facts.session_id, facts.sha256,
                                      outcome={"outcome": "sampled_out", "at": at}, expires_at=expires):
                self._store.record_rule_stats(tenant, rule.rule_id, matched=1, sampled_out=1)
                return "sampled_out"
            return "duplicates"
        try:
            planned = context.plan(rule)
        except DomainError as exc:
            return self._skip(rule, facts, exc.code, at=at, expires=expires)
        run = self._dispatch.new_run(tenant, facts.session_id, rule.run_user, planned.shape,
                                     trigger=RuleTrigger(rule_id=rule.rule_id), now=now)
        try:
            context.check_budget(rule, run)
        except DomainError as exc:
            if exc.status != 402:
                raise
            return self._skip(rule, facts, exc.code, at=at, expires=expires)  # a run that would not fit: none
        marker = self._store.marker_write(tenant, rule.rule_id, facts.session_id, facts.sha256,
                                          outcome={"outcome": "run", "eval_run_id": run.eval_run_id, "at": at},
                                          expires_at=expires)
        try:
            self._dispatch.create_with(run, [marker])
        except ExtraWriteRefused:
            return "duplicates"  # this (rule, content) was decided already
        except NotFound:
            return "duplicates"  # the session was deleted since the notice
        self._store.record_rule_stats(tenant, rule.rule_id, matched=1, runs=1, match=RuleMatch(
            session_id=facts.session_id, revision=facts.revision, at=at, outcome="run", eval_run_id=run.eval_run_id))
        return "runs"

    def _skip(self, rule: EvalRule, facts: SessionFacts, code: str, *, at: str, expires: int) -> str:
        tenant = rule.tenant
        if not self._store.put_marker(tenant, rule.rule_id, facts.session_id, facts.sha256,
                                      outcome={"outcome": "skipped", "reason": code, "at": at}, expires_at=expires):
            return "duplicates"
        logger.info("eval rule skipped a session", extra={"tenant": tenant, "rule_id": rule.rule_id,
                                                          "session_id": facts.session_id, "reason": code})
        self._store.record_rule_stats(tenant, rule.rule_id, matched=1, skipped_reason=code, match=RuleMatch(
            session_id=facts.session_id, revision=facts.revision, at=at, outcome="skipped", reason=code))
        return "skipped"

    def run_refused(self, run: EvalRun, code: str) -> None:
        """A rule's run the ledger refused when it was about to start (a budget): counted as skipped."""
        rule_id = rule_of(run.trigger)
        if rule_id is None:
            return
        try:
            self._store.record_rule_stats(run.tenant, rule_id, skipped_reason=code, match=RuleMatch(
                session_id=run.session_id, revision=0, at=iso(self._clock.now()), outcome="skipped", reason=code,
                eval_run_id=run.eval_run_id))
        except DomainError as exc:
            logger.warning("rule stats not updated", extra={"rule_id": rule_id, "error_code": exc.code})


class RuleHitCleaner:
    """The deletion use case's cleaner (`services/deletion.DerivedDataCleaner`): a deleted session is
    forgotten by every rule — its markers go (so an upload under that id later is judged afresh) and so
    do its entries among the rules' last matches; a deleted run leaves the last matches too."""

    def __init__(self, store: DynamoAutomationStore) -> None:
        self._store = store

    def forget_session(self, tenant: str, session_id: str) -> None:
        for rule, stats in self._store.list_rules(tenant):
            self._store.delete_markers(tenant, rule.rule_id, session_id)
            if stats is not None and any(m.session_id == session_id for m in stats.last_matches):
                self._drop(tenant, rule.rule_id, lambda m: m.session_id != session_id)

    def forget_run(self, tenant: str, run: EvalRun) -> None:
        rule_id = rule_of(run.trigger)
        if rule_id is not None:
            self._drop(tenant, rule_id, lambda m: m.eval_run_id != run.eval_run_id)

    def _drop(self, tenant: str, rule_id: str, keep: Callable[[RuleMatch], bool]) -> None:
        for _ in range(5):  # a new match racing the rewrite: read again
            found = self._store.get_rule(tenant, rule_id)
            stats = found[1] if found is not None else None
            if stats is None:
                return
            kept = [m for m in stats.last_matches if keep(m)]
            if len(kept) == len(stats.last_matches):
                return
            if self._store.replace_last_matches(tenant, rule_id, kept, seen_at=stats.last_matched_at):
                return


class _MatchContext:
    """What one notice reads at most once however many rules match: settings, and a plan per rule shape."""

    def __init__(self, service: EvalRuleService, tenant: str) -> None:
        self._service = service
        self.tenant = tenant
        self._settings: EvalRunnerSettings | None = None
        self._plans: dict[tuple[Any, ...], AutomatedPlan | DomainError] = {}
        self._bounds: dict[tuple[Any, ...], Bounds | None] = {}

    def check_budget(self, rule: EvalRule, run: EvalRun) -> None:
        """402 when the run's upper bound does not fit what the rule's budgets have left (the bound is
        estimated once per plan shape: every rule with the same shape reserves the same)."""
        budget = self._service._budget
        if budget is None:
            return
        key = (rule.vendor, tuple(rule.questions or ()), rule.mode)
        if key not in self._bounds:
            self._bounds[key] = budget.bounds([run])
        bound = self._bounds[key]
        if bound is not None:
            budget.check(self.tenant, run.created_by, bound)

    def plan(self, rule: EvalRule) -> AutomatedPlan:
        key = (rule.vendor, tuple(rule.questions or ()), rule.mode)
        cached = self._plans.get(key)
        if cached is None:
            service = self._service
            if self._settings is None:
                self._settings = service._settings.load_runner_settings(self.tenant)
            try:
                request = EvalRunRequest(vendor=rule.vendor, questions=rule.questions)
                cached = service._dispatch.plan(self.tenant, request, mode=rule.mode, settings=self._settings)
            except DomainError as exc:
                cached = exc
            self._plans[key] = cached
        if isinstance(cached, DomainError):
            raise cached
        return cached

