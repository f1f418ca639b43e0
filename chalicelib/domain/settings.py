"""Eval-runner settings: the admin update model, the stored record, the public view, the runner's view
and the audit records. The rules that apply an update to a record live in `domain/settings_changes.py`.

Records and views carry secret references and last-4 hints only, never key material."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    field_validator,
)
from pydantic_core import PydanticCustomError

from chalicelib.domain.context_limits import LearnedContextLimit
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.domain.evaluation import VendorName

VENDORS: tuple[VendorName, ...] = ("anthropic", "openai")
VendorStatus = Literal["unconfigured", "ok", "suspended"]
# "limits": a change of the spend limits (budgets, quotas, alert threshold and webhook, retention).
SettingsAction = Literal["update", "remove_vendor", "suspend", "reinstate", "import", "limits"]

DEFAULT_RUN_TIMEOUT_SECONDS = 300
MIN_RUN_TIMEOUT_SECONDS = 30
MAX_MODEL_LENGTH = 128
MIN_API_KEY_LENGTH = 8
MAX_API_KEY_LENGTH = 512
MAX_SETTINGS_BODY_BYTES = 64 * 1024
MAX_STATUS_REASON_CHARS = 200

# Model ids seen in the wild: `claude-sonnet-4-6`, `gpt-4o`, `ft:gpt-4o-mini:org::id`,
# `anthropic.claude-3-5-sonnet-20241022-v2:0` (Bedrock), `openai/gpt-4o` (gateways).
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,127}$")
_API_KEY = re.compile(r"^[\x21-\x7e]+$")
_IF_MATCH = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def parse_vendor(value: str) -> VendorName:
    for vendor in VENDORS:
        if value == vendor:
            return vendor
    raise NotFound(f"Unknown vendor {value[:40]!r}; use one of: {', '.join(VENDORS)}.", code="unknown_vendor",
                   details={"vendors": list(VENDORS)})


def key_hint(api_key: str) -> str:
    """What an admin sees of a stored key: an ellipsis and its last four characters."""
    return "…" + api_key[-4:]


def parse_if_match(header: str | None) -> int | None:
    """`If-Match: 7`, `"7"` or `W/"7"` → 7; absent or `*` → no precondition."""
    if header is None or not header.strip() or header.strip() == "*":
        return None
    match = _IF_MATCH.match(header.strip())
    if match is None:
        raise InvalidRequest("If-Match must be the settings version from GET, e.g. 'If-Match: 3'.",
                             code="invalid_if_match")
    return int(match.group(1))


# ------------------------------------------------------------------------------------------ input


def _not_null(name: str, hint: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("null_not_allowed", "{name} cannot be null; {hint}",
                                      {"name": name, "hint": hint})
        return value

    return check


def _not_nullable_in_schema(**extra: Any) -> Callable[[dict[str, Any]], None]:
    """JSON-schema hook for `X | None = None` fields whose validators refuse an explicit null (omitting
    the field is how a client keeps the stored value): the document shows X only, plus `extra`."""

    def edit(schema: dict[str, Any]) -> None:
        options = [o for o in schema.pop("anyOf", []) if o != {"type": "null"}]
        if len(options) == 1:
            schema.update(options[0])
        elif options:
            schema["anyOf"] = options
        schema.pop("default", None)
        schema.update(extra)

    return edit


# The admin API's models (updates, views, audit, context-limit queries) are built on first use (`defer_build`):
# dispatch and the worker import this module for the stored and runtime settings only (bench/coldstart).


class VendorSettingsUpdate(BaseModel):
    """One vendor block of a PUT. Omitted fields keep their stored value; `api_key: null` removes the key."""

    model_config = ConfigDict(defer_build=True, extra="forbid", hide_input_in_errors=True)

    # json_schema_extra: the OpenAPI document states the same shapes the validators below enforce.
    api_key: SecretStr | None = Field(
        default=None, description="Write-only. 8-512 printable ASCII characters; null removes the stored key.",
        json_schema_extra={"minLength": MIN_API_KEY_LENGTH, "maxLength": MAX_API_KEY_LENGTH,
                           "pattern": _API_KEY.pattern})
    model: str | None = Field(
        default=None, description="Judge model id, e.g. claude-sonnet-4-6 or gpt-4o.",
        json_schema_extra=_not_nullable_in_schema(pattern=_MODEL_NAME.pattern))
    base_url: str | None = Field(default=None, description="Optional HTTPS gateway; null restores the vendor's "
                                                           "default endpoint. Changing it requires api_key.")

    @field_validator("api_key", mode="before")
    @classmethod
    def _api_key_is_string(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise PydanticCustomError("api_key_type", "api_key must be a string or null")
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        raw = value.get_secret_value()
        if not (MIN_API_KEY_LENGTH <= len(raw) <= MAX_API_KEY_LENGTH) or not _API_KEY.match(raw):
            raise PydanticCustomError(
                "api_key_format", "api_key must be {min} to {max} printable ASCII characters without spaces",
                {"min": MIN_API_KEY_LENGTH, "max": MAX_API_KEY_LENGTH})
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> Any:
        _not_null("model", "omit it to keep the stored model")(value)
        if not isinstance(value, str) or not _MODEL_NAME.match(value):
            raise PydanticCustomError(
                "model_name", "model must be 1 to {max} characters: letters, digits and . _ - : / @ +, "
                              "starting with a letter or digit", {"max": MAX_MODEL_LENGTH})
        return value

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url_type(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise PydanticCustomError("base_url_type", "base_url must be a string or null")
        return value

    @property
    def api_key_given(self) -> bool:
        return "api_key" in self.model_fields_set

    @property
    def model_given(self) -> bool:
        return "model" in self.model_fields_set

    @property
    def base_url_given(self) -> bool:
        return "base_url" in self.model_fields_set


class EvalRunnerSettingsUpdate(BaseModel):
    """PUT body: any subset of the vendor blocks, the run timeout and whether judges get retained facts."""

    model_config = ConfigDict(defer_build=True, extra="forbid", hide_input_in_errors=True)

    # Omitted means "keep"; an explicit null is rejected, so the OpenAPI document leaves null out.
    anthropic: VendorSettingsUpdate | None = Field(default=None, json_schema_extra=_not_nullable_in_schema())
    openai: VendorSettingsUpdate | None = Field(default=None, json_schema_extra=_not_nullable_in_schema())
    run_timeout_seconds: int | None = Field(
        default=None, description="Per-evaluation timeout in whole seconds; min 30, max max_run_timeout_seconds.",
        json_schema_extra=_not_nullable_in_schema(minimum=MIN_RUN_TIMEOUT_SECONDS))
    judge_facts_in_prompts: StrictBool | None = Field(
        default=None, description="Give judges the repository's retained judge facts as prior context (default "
                                  "false: facts are kept and listed, not fed back).",
        json_schema_extra=_not_nullable_in_schema())

    @field_validator("judge_facts_in_prompts", mode="before")
    @classmethod
    def _facts_flag_not_null(cls, value: Any) -> Any:
        return _not_null("judge_facts_in_prompts", "send true or false")(value)

    @field_validator("anthropic", "openai", mode="before")
    @classmethod
    def _block_not_null(cls, value: Any) -> Any:
        return _not_null("a vendor block", "use DELETE /admin/settings/eval-runner/vendors/{vendor} to remove "
                                           "a vendor")(value)

    @field_validator("run_timeout_seconds", mode="before")
    @classmethod
    def _strict_seconds(cls, value: Any) -> Any:
        # Strict on purpose: 30.5, "300" and true are client bugs, not values to coerce.
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError(
                "run_timeout_type", "run_timeout_seconds must be a whole number of seconds (at least {min}; "
                                    "the maximum is max_run_timeout_seconds in GET)",
                {"min": MIN_RUN_TIMEOUT_SECONDS})
        return value

    def vendor(self, vendor: VendorName) -> VendorSettingsUpdate | None:
        block: VendorSettingsUpdate | None = getattr(self, vendor)
        return block


# ------------------------------------------------------------------------------------------ storage


class VendorRecord(BaseModel):
    """A vendor block as stored: configuration and a reference to the secret version, never the key."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = None
    base_url: str | None = None
    key_hint: str | None = None
    secret_arn: str | None = None
    secret_version_id: str | None = None
    key_updated_at: str | None = None
    suspended: bool = False
    status_reason: str | None = None
    status_changed_at: str | None = None
    updated_at: str | None = None
    updated_by: str | None = None

    @property
    def has_key(self) -> bool:
        return self.secret_version_id is not None

    @property
    def status(self) -> VendorStatus:
        if not self.has_key:
            return "unconfigured"
        return "suspended" if self.suspended else "ok"


class SettingsRecord(BaseModel):
    """The tenant's settings item. `version` counts configuration changes (what If-Match compares);
    `revision` counts every write including status flips and is what conditional writes guard on."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 0
    revision: int = 0
    run_timeout_seconds: int = DEFAULT_RUN_TIMEOUT_SECONDS
    judge_facts_in_prompts: bool = False
    anthropic: VendorRecord = VendorRecord()
    openai: VendorRecord = VendorRecord()
    created_at: str | None = None
    updated_at: str | None = None
    updated_by: str | None = None
    changed_fields: tuple[str, ...] = ()

    def vendor(self, vendor: VendorName) -> VendorRecord:
        record: VendorRecord = getattr(self, vendor)
        return record


@dataclass(frozen=True)
class SecretRef:
    """Where one stored key version lives in the secret store."""

    arn: str
    version_id: str


# ------------------------------------------------------------------------------------------ views


class VendorBlock(BaseModel):
    model_config = ConfigDict(defer_build=True)

    enabled: bool
    model: str | None
    api_key_hint: str | None
    base_url: str | None
    status: VendorStatus
    status_reason: str | None = None
    updated_at: str | None
    updated_by: str | None
    # Context limits this vendor stated (per base URL and model) that runs fit to; an admin can clear them.
    learned_context_limits: list[LearnedContextLimit] = []


class EvalRunnerSettingsView(BaseModel):
    """GET /admin/settings/eval-runner: the masked settings."""

    model_config = ConfigDict(defer_build=True)

    anthropic: VendorBlock
    openai: VendorBlock
    run_timeout_seconds: int
    max_run_timeout_seconds: int
    version: int
    judge_facts_in_prompts: bool = Field(
        default=False, description="Judges get the repository's retained judge facts as prior context.")


def _block(record: VendorRecord, learned: list[LearnedContextLimit]) -> VendorBlock:
    return VendorBlock(enabled=record.has_key, model=record.model, api_key_hint=record.key_hint,
                       base_url=record.base_url, status=record.status, status_reason=record.status_reason,
                       updated_at=record.updated_at, updated_by=record.updated_by, learned_context_limits=learned)


def settings_view(record: SettingsRecord, *, max_run_timeout_seconds: int,
                  learned: Sequence[LearnedContextLimit] = ()) -> EvalRunnerSettingsView:
    def of(vendor: VendorName) -> list[LearnedContextLimit]:
        return sorted((limit for limit in learned if limit.vendor == vendor), key=lambda limit: limit.learned_at,
                      reverse=True)

    return EvalRunnerSettingsView(anthropic=_block(record.anthropic, of("anthropic")),
                                  openai=_block(record.openai, of("openai")),
                                  run_timeout_seconds=record.run_timeout_seconds,
                                  max_run_timeout_seconds=max_run_timeout_seconds, version=record.version,
                                  judge_facts_in_prompts=record.judge_facts_in_prompts)


class ContextLimitQuery(BaseModel):
    """`DELETE …/vendors/{vendor}/context-limits?model=…`: one model's learned limits, or all of the vendor's."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    model: str | None = Field(default=None, pattern=_MODEL_NAME.pattern)


class ContextLimitsCleared(BaseModel):
    model_config = ConfigDict(defer_build=True)

    vendor: VendorName
    cleared: list[LearnedContextLimit]


class VendorRuntime(BaseModel):
    """What the runner needs to know about one vendor (the key itself comes from the SecretStore)."""

    model_config = ConfigDict(frozen=True)

    vendor: VendorName
    enabled: bool
    model: str | None
    base_url: str | None
    status: VendorStatus
    secret_arn: str | None
    secret_version_id: str | None

    @property
    def usable(self) -> bool:
        """Enabled, has a model and is not suspended: eval dispatch may use it."""
        return self.enabled and self.model is not None and self.status == "ok"


class EvalRunnerSettings(BaseModel):
    """The runner's read model of a tenant's settings (see `AdminSettingsService.load_runner_settings`)."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    version: int
    run_timeout_seconds: int
    anthropic: VendorRuntime
    openai: VendorRuntime
    judge_facts_in_prompts: bool = False

    def vendor(self, vendor: VendorName) -> VendorRuntime:
        runtime: VendorRuntime = getattr(self, vendor)
        return runtime

    @property
    def enabled_vendors(self) -> tuple[VendorName, ...]:
        """Vendors with a stored key (including suspended ones), in the canonical order."""
        return tuple(v for v in VENDORS if self.vendor(v).enabled)

    @property
    def usable_vendors(self) -> tuple[VendorName, ...]:
        """Vendors eval dispatch may use now: a key, a model, not suspended."""
        return tuple(v for v in VENDORS if self.vendor(v).usable)


def runner_settings(tenant: str, record: SettingsRecord) -> EvalRunnerSettings:
    def runtime(vendor: VendorName) -> VendorRuntime:
        r = record.vendor(vendor)
        return VendorRuntime(vendor=vendor, enabled=r.has_key, model=r.model, base_url=r.base_url,
                             status=r.status, secret_arn=r.secret_arn, secret_version_id=r.secret_version_id)

    return EvalRunnerSettings(tenant=tenant, version=record.version,
                              run_timeout_seconds=record.run_timeout_seconds,
                              anthropic=runtime("anthropic"), openai=runtime("openai"),
                              judge_facts_in_prompts=record.judge_facts_in_prompts)


# ------------------------------------------------------------------------------------------ audit

AuditValue = str | int | bool | None


class FieldChange(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True, populate_by_name=True, serialize_by_alias=True)

    from_: AuditValue = Field(alias="from")
    to: AuditValue


class SettingsAuditRecord(BaseModel):
    """One change to the settings: who, when, which fields (keys as hints only)."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="ignore")

    at: str
    by: str
    action: SettingsAction = "update"
    version: int
    changes: dict[str, FieldChange]


class SettingsAuditPage(BaseModel):
    model_config = ConfigDict(defer_build=True)

    items: list[SettingsAuditRecord]


class AuditQuery(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    limit: int = Field(default=100, ge=1, le=100)


# ------------------------------------------------------------------------------------------ errors


class SettingsWriteConflict(Conflict):
    """The conditional write lost a race (the stored revision moved). Services retry or report 412."""

    code = "settings_write_conflict"
