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
        try:
            resp = self._sqs.send_message(
                QueueUrl=self._queue_url,
                MessageBody=message.model_dump_json(),
                # Attributes let an operator filter the DLQ by tenant/run without parsing bodies.
                MessageAttributes={
                    "tenant": {"DataType": "String", "StringValue": message.tenant},
                    "eval_run_id": {"DataType": "String", "StringValue": message.eval_run_id},
                    "kind": {"DataType": "String", "StringValue": message.kind},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
            logger.warning("job queue send failed", extra={"aws_error": code, "eval_run_id": message.eval_run_id})
            raise DependencyUnavailable("The job queue is unavailable; retry shortly.",
                                        code="job_queue_unavailable") from None
        return str(resp.get("MessageId", ""))

    def send_session_upload(self, message: SessionUploadJob) -> None:
        """Hand a large uploaded session file to the worker (ids only; the file stays in S3)."""
        try:
            self._sqs.send_message(
                QueueUrl=self._queue_url, MessageBody=message.model_dump_json(),
                MessageAttributes={"tenant": {"DataType": "String", "StringValue": message.tenant},
                                   "kind": {"DataType": "String", "StringValue": message.job}})
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
            logger.warning("job queue send failed", extra={"aws_error": code, "upload_id": message.upload_id})
            raise DependencyUnavailable("The job queue is unavailable; retry shortly.",
                                        code="job_queue_unavailable") from None

    def send_session_stored(self, notice: SessionStoredNotice) -> None:
        """Tell the worker a session revision was stored (the rules are matched there, not in the upload)."""
        try:
            self._sqs.send_message(
                QueueUrl=self._queue_url, MessageBody=notice.model_dump_json(),
                MessageAttributes={"tenant": {"DataType": "String", "StringValue": notice.tenant},
                                   "kind": {"DataType": "String", "StringValue": notice.job}})
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
            logger.warning("job queue send failed", extra={"aws_error": code, "session_id": notice.session_id})
            raise DependencyUnavailable("The job queue is unavailable; retry shortly.",
                                        code="job_queue_unavailable") from None
