"""Deletion: who may delete a session or a run, and the audit entry a deletion leaves (ids and
counts only, never content)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.errors import Conflict, Forbidden
from chalicelib.domain.principal import Principal

DeletedKind = Literal["session", "eval_run"]


class DeletionRecord(BaseModel):
    """One audited deletion."""

    model_config = ConfigDict(extra="ignore")

    audit_id: str
    at: str
    by: str
    by_admin: bool
    kind: DeletedKind
    session_id: str
    eval_run_ids: list[str] = Field(default_factory=list)
    trace_deleted: bool = False


class DeletionAuditPage(BaseModel):
    """`GET /admin/audit/deletions`: newest first."""

    items: list[DeletionRecord]


def require_session_owner(principal: Principal, uploaded_by: str | None) -> None:
    if principal.is_admin or (uploaded_by is not None and uploaded_by == principal.user):
        return
    raise Forbidden("Only the user who uploaded this session or a tenant admin may delete it.",
                    code="not_session_owner")


def require_run_owner(principal: Principal, created_by: str) -> None:
    if principal.is_admin or created_by == principal.user:
        return
    raise Forbidden("Only the user who started this eval run or a tenant admin may delete it.",
                    code="not_run_owner")


def still_active(run_ids: list[str]) -> Conflict:
    return Conflict("Cancel the session's active eval runs before deleting it "
                    "(POST /eval-runs/{eval_run_id}/cancel), then retry once they have ended.",
                    code="runs_still_active", details={"eval_run_ids": run_ids})
