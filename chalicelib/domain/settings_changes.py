"""Settings changes: the pure rules that turn (stored record, admin update) into the record to store plus
its audit changes (`SettingsPlan`), for a PUT, a vendor removal and a key's suspension or reinstatement,
and the field errors and version precondition they raise.

Nothing here holds key *material* except the transient `SettingsPlan.new_keys` (what the service must
write to the secret store).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.base_url import BaseUrlPolicy, BaseUrlRefused, normalize_base_url
from chalicelib.domain.errors import InvalidRequest, PreconditionFailed
from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.settings import (
    MAX_STATUS_REASON_CHARS,
    MIN_RUN_TIMEOUT_SECONDS,
    VENDORS,
    EvalRunnerSettingsUpdate,
    FieldChange,
    SecretRef,
    SettingsRecord,
    VendorRecord,
    key_hint,
)


def version_mismatch(current: SettingsRecord, expected: int) -> PreconditionFailed:
    who = f" by {current.updated_by}" if current.updated_by else ""
    when = f" at {current.updated_at}" if current.updated_at else ""
    return PreconditionFailed(
        f"The settings changed since you read them (you sent version {expected}; it is now version "
        f"{current.version}{who}{when}). GET them again and re-apply your change.",
        code="version_mismatch",
        details={"expected_version": expected, "current_version": current.version,
                 "updated_by": current.updated_by, "updated_at": current.updated_at,
                 "changed_fields": list(current.changed_fields)})


def _field_error(field_name: str, message: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"field": field_name, "message": message, "type": kind, **extra}


def _raise_field_errors(errors: list[dict[str, Any]]) -> None:
    if not errors:
        return
    only_base_url_rule = all(e["type"] == "api_key_required_for_base_url" for e in errors)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    raise InvalidRequest(summary if summary.endswith(".") else summary + ".",
                         code="api_key_required_for_base_url" if only_base_url_rule else "validation_failed",
                         details={"fields": errors})


# ------------------------------------------------------------------------------------------ rules


@dataclass
class SettingsPlan:
    """The outcome of applying an update to a record, before key material is written.

    `finalize(refs)` yields the record to store once the service has written each key in `new_keys`
    and knows its secret version. `new_keys` is excluded from repr so it never reaches a log line.
    """

    base: SettingsRecord
    draft: SettingsRecord
    changes: dict[str, FieldChange]
    config_changed: bool
    removed_keys: tuple[VendorName, ...] = ()
    new_keys: dict[VendorName, str] = field(default_factory=dict, repr=False)

    @property
    def is_noop(self) -> bool:
        return not self.changes

    def finalize(self, refs: Mapping[VendorName, SecretRef]) -> SettingsRecord:
        missing = set(self.new_keys) - set(refs)
        if missing:
            raise ValueError(f"no secret reference for {sorted(missing)}")
        updates: dict[str, Any] = {}
        for vendor, ref in refs.items():
            if vendor in self.new_keys:
                updates[vendor] = self.draft.vendor(vendor).model_copy(
                    update={"secret_arn": ref.arn, "secret_version_id": ref.version_id})
        return self.draft.model_copy(update=updates)


def _static_checks(update: EvalRunnerSettingsUpdate, *, policy: BaseUrlPolicy, max_run_timeout_seconds: int
                   ) -> tuple[dict[VendorName, str | None], list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    timeout = update.run_timeout_seconds
    if timeout is not None and not (MIN_RUN_TIMEOUT_SECONDS <= timeout <= max_run_timeout_seconds):
        errors.append(_field_error(
            "run_timeout_seconds",
            f"must be between {MIN_RUN_TIMEOUT_SECONDS} and {max_run_timeout_seconds} seconds",
            "out_of_range", min=MIN_RUN_TIMEOUT_SECONDS, max=max_run_timeout_seconds))
    base_urls: dict[VendorName, str | None] = {}
    for vendor in VENDORS:
        block = update.vendor(vendor)
        if block is None or not block.base_url_given:
            continue
        if block.base_url is None:
            base_urls[vendor] = None
            continue
        try:
            base_urls[vendor] = normalize_base_url(block.base_url, policy)
        except BaseUrlRefused as exc:
            errors.append(_field_error(f"{vendor}.base_url", exc.message, exc.reason))
    return base_urls, errors


def plan_settings_update(current: SettingsRecord, update: EvalRunnerSettingsUpdate, *, actor: str, now: str,
                         policy: BaseUrlPolicy, max_run_timeout_seconds: int,
                         unchanged_keys: frozenset[VendorName] = frozenset()) -> SettingsPlan:
    """Apply a PUT to the stored record. Raises field errors; never touches key material beyond copying it
    into `new_keys`. `unchanged_keys` names vendors whose sent key equals the stored one (the caller
    compared them): re-sending a key is then not a rotation, though it still counts as sent for the
    base_url rule."""
    # Every problem is reported at once, stateless and stateful alike.
    base_urls, errors = _static_checks(update, policy=policy, max_run_timeout_seconds=max_run_timeout_seconds)
    changes: dict[str, FieldChange] = {}
    vendors: dict[str, VendorRecord] = {}
    new_keys: dict[VendorName, str] = {}
    removed: list[VendorName] = []

    for vendor in VENDORS:
        block = update.vendor(vendor)
        old = current.vendor(vendor)
        if block is None:
            continue
        new = old.model_dump()
        vendor_changes: dict[str, FieldChange] = {}
        key_sent = block.api_key_given and block.api_key is not None
        if block.model_given and block.model != old.model:
            vendor_changes[f"{vendor}.model"] = FieldChange(from_=old.model, to=block.model)
            new["model"] = block.model
        if block.base_url_given:
            target = base_urls.get(vendor)
            if target != old.base_url:
                if old.has_key and not block.api_key_given:
                    errors.append(_field_error(
                        f"{vendor}.api_key",
                        "send the API key again together with a new base_url, so a stored key is never "
                        "redirected to another host", "api_key_required_for_base_url"))
                vendor_changes[f"{vendor}.base_url"] = FieldChange(from_=old.base_url, to=target)
                new["base_url"] = target
        if block.api_key_given:
            if block.api_key is None:
                if old.has_key:
                    vendor_changes[f"{vendor}.api_key"] = FieldChange(from_=old.key_hint, to=None)
                    new.update(key_hint=None, secret_arn=None, secret_version_id=None, key_updated_at=None,
                               suspended=False, status_reason=None, status_changed_at=now)
                    removed.append(vendor)
            elif vendor not in unchanged_keys or not old.has_key:
                raw = block.api_key.get_secret_value()
                hint = key_hint(raw)
                vendor_changes[f"{vendor}.api_key"] = FieldChange(from_=old.key_hint, to=hint)
                new_keys[vendor] = raw
                # A replaced key lifts a suspension: the suspension was about the old key.
                new.update(key_hint=hint, secret_arn=old.secret_arn, secret_version_id="pending",
                           key_updated_at=now, suspended=False, status_reason=None,
                           status_changed_at=now if old.status != "ok" else old.status_changed_at)
        if key_sent and not new.get("model"):
            errors.append(_field_error(f"{vendor}.model", "a model is required when an API key is set",
                                       "missing"))
        if vendor_changes:
            new.update(updated_at=now, updated_by=actor)
            candidate = VendorRecord.model_validate(new)
            if candidate.status != old.status:
                vendor_changes[f"{vendor}.status"] = FieldChange(from_=old.status, to=candidate.status)
            changes.update(vendor_changes)
            vendors[vendor] = candidate

    timeout = update.run_timeout_seconds
    if timeout is not None and timeout != current.run_timeout_seconds:
        changes["run_timeout_seconds"] = FieldChange(from_=current.run_timeout_seconds, to=timeout)
    facts = update.judge_facts_in_prompts
    if facts is not None and facts != current.judge_facts_in_prompts:
        changes["judge_facts_in_prompts"] = FieldChange(from_=current.judge_facts_in_prompts, to=facts)

    _raise_field_errors(errors)
    draft = current
    if changes:
        draft = current.model_copy(update={
            **vendors,
            "run_timeout_seconds": timeout if timeout is not None else current.run_timeout_seconds,
            "judge_facts_in_prompts": facts if facts is not None else current.judge_facts_in_prompts,
            "version": current.version + 1,
            "revision": current.revision + 1,
            "created_at": current.created_at or now,
            "updated_at": now,
            "updated_by": actor,
            "changed_fields": tuple(changes),
        })
    return SettingsPlan(base=current, draft=draft, changes=changes, config_changed=bool(changes),
                        removed_keys=tuple(removed), new_keys=new_keys)


def plan_vendor_removal(current: SettingsRecord, vendor: VendorName, *, actor: str, now: str) -> SettingsPlan:
    """DELETE …/vendors/{vendor}: drop the key and the whole block (model, base_url)."""
    old = current.vendor(vendor)
    changes: dict[str, FieldChange] = {}
    if old.has_key:
        changes[f"{vendor}.api_key"] = FieldChange(from_=old.key_hint, to=None)
    if old.model is not None:
        changes[f"{vendor}.model"] = FieldChange(from_=old.model, to=None)
    if old.base_url is not None:
        changes[f"{vendor}.base_url"] = FieldChange(from_=old.base_url, to=None)
    if old.status != "unconfigured":
        changes[f"{vendor}.status"] = FieldChange(from_=old.status, to="unconfigured")
    if not changes:
        return SettingsPlan(base=current, draft=current, changes={}, config_changed=False)
    draft = current.model_copy(update={
        vendor: VendorRecord(updated_at=now, updated_by=actor, status_changed_at=now),
        "version": current.version + 1, "revision": current.revision + 1,
        "created_at": current.created_at or now, "updated_at": now, "updated_by": actor,
        "changed_fields": tuple(changes)})
    return SettingsPlan(base=current, draft=draft, changes=changes, config_changed=True,
                        removed_keys=(vendor,) if old.has_key else ())


def plan_status_change(current: SettingsRecord, vendor: VendorName, *, suspended: bool, reason: str | None,
                       secret_version_id: str | None, actor: str, now: str) -> SettingsPlan | None:
    """Suspend or reinstate a vendor's *current* key. None when there is nothing to do: no key, already
    in that state, or the key was replaced since the caller read it (a 401 on an old key must not
    suspend its replacement)."""
    old = current.vendor(vendor)
    if not old.has_key or old.suspended == suspended:
        return None
    if secret_version_id is not None and secret_version_id != old.secret_version_id:
        return None
    clean_reason = (reason or "")[:MAX_STATUS_REASON_CHARS] or None
    new = old.model_copy(update={"suspended": suspended, "status_reason": clean_reason if suspended else None,
                                 "status_changed_at": now})
    changes = {f"{vendor}.status": FieldChange(from_=old.status, to=new.status)}
    # Status is operational state, not configuration: the revision moves, the If-Match version does not,
    # so an admin's pending edit is not refused just because a judge call or a connection test ran.
    draft = current.model_copy(update={vendor: new, "revision": current.revision + 1})
    return SettingsPlan(base=current, draft=draft, changes=changes, config_changed=False)
