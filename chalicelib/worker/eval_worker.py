"""The SQS worker Lambda: one eval-run job per record, partial batch failures reported.

`eval_worker` is what AWS invokes through the event source mapping, and what the local stack's
worker loop calls too: its Lambda handler path is this module (`chalicelib.worker.eval_worker.
eval_worker`), which never imports `app.py`, so it carries its own logging and metrics
(`lambda_entry`). `handle_sqs_batch` is the undecorated batch logic.
"""

from __future__ import annotations

import os
from typing import Any

from chalice import Blueprint

from chalicelib.observability import lambda_entry

worker_bp = Blueprint(__name__)

# Chalice needs the queue *name* when it reads the app. The packaged template re-points the event
# source at the stack's queue itself (devstack/package/template.py); `chalice deploy` takes it from here, so
# this is the one import-time environment read in the code: `make infra` writes the data stack's
# queue name into the stage's environment, which chalice loads before it imports the app.
QUEUE_NAME = os.environ.get("EVAL_JOBS_QUEUE_NAME") or "eval-runner-jobs"
# At most this many worker Lambdas poll the queue at once (the SQS event source's
# ScalingConfig.MaximumConcurrency, 2-1000): one member's burst of dispatches queues up instead of
# taking the account's Lambda concurrency, and the vendor sees a bounded fan-out.
WORKER_MAX_CONCURRENCY = 20


def handle_sqs_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from chalicelib.worker.jobs import process_job_record

    processor = BatchProcessor(event_type=EventType.SQS)
    result = process_partial_response(
        event=event, record_handler=lambda record: process_job_record(record, context),
        processor=processor, context=context)
    return dict(result)


@worker_bp.on_sqs_message(queue=QUEUE_NAME, batch_size=1, name="eval_worker",
                          maximum_concurrency=WORKER_MAX_CONCURRENCY)
@lambda_entry
def eval_worker(event: Any) -> dict[str, Any]:
    return handle_sqs_batch(event.to_dict(), event.context)
