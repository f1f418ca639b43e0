"""A presigned upload completed in the background: the worker's job message and the upload's status."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

UploadState = Literal["pending", "processing", "succeeded", "failed"]


class SessionUploadJob(BaseModel):
    """The SQS message that hands a large uploaded file to the worker (ids only, never content)."""

    # Built on first use (`defer_build`), like UploadError: uploads only, never dispatch (bench/coldstart).
    model_config = ConfigDict(defer_build=True, extra="forbid")

    job: Literal["session_upload"] = "session_upload"
    tenant: str
    user: str
    roles: tuple[str, ...] = ()
    session_id: str
    upload_id: str


class UploadError(BaseModel):
    model_config = ConfigDict(defer_build=True)

    code: str
    message: str
    details: dict[str, Any] | None = None
