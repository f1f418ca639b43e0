"""Eval-runner settings use cases: read (masked), update and rotate keys, remove a vendor, audit, and the
runner's read side (settings, vendor credentials, suspension).

Write protocol (so a crash or a lost race never leaves DynamoDB pointing at a missing key):
1. validate the request against the stored record (pure; nothing is written on a 4xx);
2. write each new key as a new secret version and keep its version id;
3. conditionally write the settings item (guarded on the revision read in 1) together with the audit
   record in one transaction;
4. only after that commit, delete secrets of removed keys (if the item still does not reference them).
If step 3 loses a race, the secret version from step 2 is not rolled back: a newer version may belong
to the winner, and readers ask for the version id the item records, so an orphan version is never
read. Without If-Match the service re-reads and retries (no lost update); with If-Match a config
change by someone else is a 412.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from chalicelib.domain.base_url import BaseUrlPolicy
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.context_limits import LearnedContextLimit
from chalicelib.domain.errors import Conflict, DomainError
from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.judging import sanitize_vendor_message
from chalicelib.domain.principal import Principal
from chalicelib.domain.settings import (
    VENDORS,
    ContextLimitsCleared,
    EvalRunnerSettings,
    EvalRunnerSettingsUpdate,
    EvalRunnerSettingsView,
    SecretRef,
    SettingsAction,
    SettingsAuditPage,
    SettingsAuditRecord,
    SettingsRecord,
    SettingsWriteConflict,
    VendorStatus,
    key_hint,
    runner_settings,
    settings_view,
)
from chalicelib.domain.settings_changes import (
    SettingsPlan,
    plan_settings_update,
    plan_status_change,
    plan_vendor_removal,
    version_mismatch,
)
from chalicelib.observability import logger

MAX_WRITE_ATTEMPTS = 5
SYSTEM_ACTOR = "system"


class SettingsRepository(Protocol):
    def get(self, tenant: str, *, fresh: bool = False) -> SettingsRecord: ...

    def save(self, tenant: str, record: SettingsRecord, *, expected_revision: int,
             audit: SettingsAuditRecord) -> None: ...

    def list_audit(self, tenant: str, limit: int) -> list[SettingsAuditRecord]: ...

    def invalidate(self, tenant: str) -> None: ...


class LearnedLimits(Protocol):
    """The context limits vendors stated (`chalicelib.adapters.context_limit_store`)."""

    def learned(self, tenant: str, vendor: str | None = None) -> list[LearnedContextLimit]: ...

    def forget(self, tenant: str, vendor: str, *, model: str | None = None) -> list[LearnedContextLimit]: ...


class VendorKeyStore(Protocol):
    def put_vendor_key(self, tenant: str, vendor: VendorName, api_key: str) -> SecretRef: ...

    def get_vendor_key(self, tenant: str, vendor: VendorName, *, version_id: str | None = None,
                       secret_id: str | None = None) -> str: ...

    def delete_vendor_key(self, tenant: str, vendor: VendorName) -> None: ...

    def invalidate(self, tenant: str, vendor: VendorName) -> None: ...


@dataclass(frozen=True)
class VendorCredentials:
    """Everything a judge call needs for one vendor. `api_key` is excluded from repr (never logged)."""

    vendor: VendorName
    model: str
    base_url: str | None
    status: VendorStatus
    secret_version_id: str
    api_key: str = field(repr=False)


class AdminSettingsService:
    def __init__(self, *, settings: SettingsRepository, secrets: VendorKeyStore, clock: Clock,
                 base_url_policy: BaseUrlPolicy, max_run_timeout_seconds: int,
                 context_limits: LearnedLimits | None = None) -> None:
        self._settings = settings
        self._context_limits = context_limits
        self._secrets = secrets
        self._clock = clock
        self._policy = base_url_policy
        self._max_timeout = max_run_timeout_seconds

    # -- admin API ----------------------------------------------------------------------------
    def get_eval_runner_settings(self, principal: Principal) -> EvalRunnerSettingsView:
        principal.require_admin()
        return self._view(principal.tenant, self._settings.get(principal.tenant, fresh=True))

    def update_eval_runner_settings(self, principal: Principal, update: EvalRunnerSettingsUpdate,
                                    if_match: int | None = None, *,
                                    action: SettingsAction = "update") -> EvalRunnerSettingsView:
        """Apply any subset of the settings. A new `api_key` is a key rotation (new secret version)."""
        principal.require_admin()

        def plan(current: SettingsRecord, now: str) -> SettingsPlan:
            return plan_settings_update(current, update, actor=principal.user, now=now, policy=self._policy,
                                        max_run_timeout_seconds=self._max_timeout,
                                        unchanged_keys=self._resent_keys(principal.tenant, current, update))

        record, _ = self._write(principal.tenant, plan, if_match=if_match, action=action, actor=principal.user)
        return self._view(principal.tenant, record)

    rotate_vendor_key = update_eval_runner_settings

    def remove_vendor(self, principal: Principal, vendor: VendorName,
                      if_match: int | None = None) -> EvalRunnerSettingsView:
        """Delete the vendor's key (the secret itself) and clear its block."""
        principal.require_admin()

        def plan(current: SettingsRecord, now: str) -> SettingsPlan:
            return plan_vendor_removal(current, vendor, actor=principal.user, now=now)

        record, _ = self._write(principal.tenant, plan, if_match=if_match, action="remove_vendor",
                                actor=principal.user)
        return self._view(principal.tenant, record)

    def forget_context_limits(self, principal: Principal, vendor: VendorName,
                              model: str | None = None) -> ContextLimitsCleared:
        """Clear the context limits the vendor stated (one model's, or all): the next runs fit to the model
        table again and learn anew if the vendor still refuses."""
        principal.require_admin()
        if self._context_limits is None:
            return ContextLimitsCleared(vendor=vendor, cleared=[])
        cleared = self._context_limits.forget(principal.tenant, vendor, model=model)
        logger.info("learned context limits cleared", extra={
            "tenant": principal.tenant, "vendor": vendor, "model": model, "cleared": len(cleared),
            "actor": principal.user})
        return ContextLimitsCleared(vendor=vendor, cleared=cleared)

    def list_settings_audit(self, principal: Principal, limit: int = 100) -> SettingsAuditPage:
        principal.require_admin()
        return SettingsAuditPage(items=self._settings.list_audit(principal.tenant, max(1, min(limit, 100))))

    # -- runner side --------------------------------------------------------------------------
    def load_runner_settings(self, tenant: str, *, fresh: bool = False) -> EvalRunnerSettings:
        """The tenant's settings as the runner sees them (short read cache unless `fresh`)."""
        return runner_settings(tenant, self._settings.get(tenant, fresh=fresh))

    def resolve_vendor_credentials(self, tenant: str, vendor: VendorName, *,
                                   fresh: bool = False) -> VendorCredentials:
        """Model, base_url and the key of the version the settings reference. Does not refuse a suspended
        vendor (callers check `status`); raises 409 `vendor_not_configured` without a key or model."""
        runtime = self.load_runner_settings(tenant, fresh=fresh).vendor(vendor)
        if not runtime.enabled or runtime.model is None or runtime.secret_version_id is None:
            raise Conflict(f"The {vendor} vendor is not configured; an admin must set its API key and model "
                           "under /admin/settings/eval-runner.", code="vendor_not_configured",
                           details={"vendor": vendor})
        api_key = self._secrets.get_vendor_key(tenant, vendor, version_id=runtime.secret_version_id,
                                               secret_id=runtime.secret_arn)
        return VendorCredentials(vendor=vendor, model=runtime.model, base_url=runtime.base_url,
                                 status=runtime.status, secret_version_id=runtime.secret_version_id,
                                 api_key=api_key)

    def invalidate_vendor_credentials(self, tenant: str, vendor: VendorName) -> None:
        """Drop cached settings and key for this vendor (the worker calls it on a vendor 401 before
        re-resolving once: the key may have been rotated since the cache was filled)."""
        self._settings.invalidate(tenant)
        self._secrets.invalidate(tenant, vendor)

    def mark_vendor_suspended(self, tenant: str, vendor: VendorName, reason: str, *,
                              secret_version_id: str | None = None, actor: str = SYSTEM_ACTOR) -> bool:
        """Suspend the vendor after the vendor refused its key (401/403). Pass the `secret_version_id`
        the failing call used: if the key was replaced meanwhile, nothing happens. True if suspended now."""
        # The reason is shown to admins in GET: strip anything key-shaped a vendor message may carry.
        return self._set_suspended(tenant, vendor, True, sanitize_vendor_message(reason), secret_version_id, actor)

    def mark_vendor_ok(self, tenant: str, vendor: VendorName, *, secret_version_id: str | None = None,
                       actor: str = SYSTEM_ACTOR) -> bool:
        """Lift a suspension after a successful call with that key version. True if it changed."""
        return self._set_suspended(tenant, vendor, False, None, secret_version_id, actor)

    # -- internals ----------------------------------------------------------------------------
    def _set_suspended(self, tenant: str, vendor: VendorName, suspended: bool, reason: str | None,
                       secret_version_id: str | None, actor: str) -> bool:
        def plan(current: SettingsRecord, now: str) -> SettingsPlan | None:
            return plan_status_change(current, vendor, suspended=suspended, reason=reason,
                                      secret_version_id=secret_version_id, actor=actor, now=now)

        _, changed = self._write(tenant, plan, if_match=None, action="suspend" if suspended else "reinstate",
                                 actor=actor)
        if changed:
            logger.info("vendor status changed", extra={"tenant": tenant, "vendor": vendor,
                                                        "status": "suspended" if suspended else "ok"})
        return changed

    def _resent_keys(self, tenant: str, current: SettingsRecord,
                     update: EvalRunnerSettingsUpdate) -> frozenset[VendorName]:
        """Vendors whose sent key is the one already stored, so re-saving a form (or re-running an import)
        is not a rotation. Only read when the last four match; an unreadable stored key counts as
        different, which makes re-sending the key repair a missing secret."""
        same: set[VendorName] = set()
        for vendor in VENDORS:
            block = update.vendor(vendor)
            stored = current.vendor(vendor)
            if block is None or block.api_key is None or not stored.has_key:
                continue
            sent = block.api_key.get_secret_value()
            if stored.key_hint != key_hint(sent):
                continue
            try:
                existing = self._secrets.get_vendor_key(tenant, vendor, version_id=stored.secret_version_id,
                                                        secret_id=stored.secret_arn)
            except DomainError:
                continue
            if hmac.compare_digest(existing.encode(), sent.encode()):
                same.add(vendor)
        return frozenset(same)

    def _view(self, tenant: str, record: SettingsRecord) -> EvalRunnerSettingsView:
        learned = self._context_limits.learned(tenant) if self._context_limits is not None else []
        return settings_view(record, max_run_timeout_seconds=self._max_timeout, learned=learned)

    def _write(self, tenant: str, make_plan: Callable[[SettingsRecord, str], SettingsPlan | None], *,
               if_match: int | None, action: SettingsAction, actor: str) -> tuple[SettingsRecord, bool]:
        refs: dict[VendorName, SecretRef] = {}
        for _attempt in range(MAX_WRITE_ATTEMPTS):
            current = self._settings.get(tenant, fresh=True)
            if if_match is not None and current.version != if_match:
                raise version_mismatch(current, if_match)
            now = iso(self._clock.now())
            plan = make_plan(current, now)
            if plan is None or plan.is_noop:
                return current, False
            for vendor, api_key in plan.new_keys.items():
                # Written once per request even across retries; the retry references the same version.
                if vendor not in refs:
                    refs[vendor] = self._secrets.put_vendor_key(tenant, vendor, api_key)
            record = plan.finalize(refs)
            audit = SettingsAuditRecord(at=now, by=actor, action=action, version=record.version,
                                        changes=plan.changes)
            try:
                self._settings.save(tenant, record, expected_revision=current.revision, audit=audit)
            except SettingsWriteConflict:
                continue
            for vendor in {*plan.new_keys, *plan.removed_keys}:
                self._secrets.invalidate(tenant, vendor)
            for vendor in plan.removed_keys:
                self._delete_unreferenced_secret(tenant, vendor)
            logger.info("eval-runner settings changed", extra={
                "tenant": tenant, "action": action, "version": record.version, "fields": list(plan.changes)})
            return record, True
        raise Conflict("The settings are being changed by several requests at once; retry in a moment.",
                       code="settings_busy")

    def _delete_unreferenced_secret(self, tenant: str, vendor: VendorName) -> None:
        # Re-check after the commit: a concurrent request may already have stored a new key under the
        # same secret name, and deleting it would leave the settings pointing at nothing.
        try:
            if self._settings.get(tenant, fresh=True).vendor(vendor).has_key:
                return
            self._secrets.delete_vendor_key(tenant, vendor)
        except DomainError as exc:
            # The settings no longer reference the secret, so it is unreachable; report, don't fail the
            # admin's (already committed) removal.
            logger.warning("could not delete removed vendor secret",
                           extra={"tenant": tenant, "vendor": vendor, "error_code": exc.code})
