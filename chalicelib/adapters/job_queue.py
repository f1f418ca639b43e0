"""SqsJobQueue: hands an eval run, a large uploaded session file, or a stored session revision (for the
online evaluation rules) to the worker as one small SQS message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.automation import SessionStoredNotice
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger

if TYPE_CHECKING:
    from chalicelib.domain.runs import EvalJobMessage
    from chalicelib.domain.session_uploads import SessionUploadJob


class SqsJobQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs = client
        self._queue_url = queue_url

    def send(self, message: EvalJobMessage) -> str:
        """Enqueue one job; returns the SQS message id. Any failure is `DependencyUnavailable`."""
        return self._send(message.model_dump_json(), {
            "tenant": message.tenant, "eval_run_id": message.eval_run_id, "kind": message.kind,
        }, {"eval_run_id": message.eval_run_id})

    def send_session_upload(self, message: SessionUploadJob) -> None:
        """Hand a large uploaded session file to the worker (ids only; the file stays in S3)."""
        self._send(message.model_dump_json(), {"tenant": message.tenant, "kind": message.job},
                   {"upload_id": message.upload_id})

    def send_session_stored(self, notice: SessionStoredNotice) -> None:
        """Tell the worker a session revision was stored (the rules are matched there, not in the upload)."""
        self._send(notice.model_dump_json(), {"tenant": notice.tenant, "kind": notice.job},
                   {"session_id": notice.session_id})

    def _send(self, body: str, attributes: dict[str, str], log_ids: dict[str, str]) -> str:
        try:
            resp = self._sqs.send_message(
                QueueUrl=self._queue_url, MessageBody=body,
                # Attributes let an operator filter the DLQ by tenant/run without parsing bodies.
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()})
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
            logger.warning("job queue send failed", extra={"aws_error": code, **log_ids})
            raise DependencyUnavailable("The job queue is unavailable; retry shortly.",
                                        code="job_queue_unavailable") from None
        return str(resp.get("MessageId", ""))
