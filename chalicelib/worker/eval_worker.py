"""The SQS worker Lambda: one eval-run job per record, partial batch failures reported.

`handle_sqs_batch` is the plain-Python entry (the local stack's worker loop calls it directly);
`eval_worker` is the Chalice registration that AWS invokes through the event source mapping.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

worker_bp = Blueprint(__name__)

# Chalice needs the queue *name* at import; the packaged template re-points the event source at
# the CloudFormation-managed queue (see infra/ and devstack/package.py).
QUEUE_NAME = "eval-runner-jobs"


def handle_sqs_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.worker.jobs import process_job_record

    processor = BatchProcessor(event_type=EventType.SQS)
    result = process_partial_response(
        event=event, record_handler=lambda record: process_job_record(record, context),
        processor=processor, context=context)
    return dict(result)


@worker_bp.on_sqs_message(queue=QUEUE_NAME, batch_size=1, name="eval_worker")
def eval_worker(event: Any) -> dict[str, Any]:
    return handle_sqs_batch(event.to_dict(), event.context)
