"""Local stand-in for the SQS → Lambda event source mapping: polls the queue and invokes the
worker handler with Lambda-shaped batches, honouring partial batch failures like AWS does; and for
the EventBridge schedules of the `run_maintenance` Lambda (the run lifecycle's sweep) and the
`automation_poller` Lambda (vendor batches, runs waiting for a slot)."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

from devstack.lambda_context import LocalLambdaContext

log = logging.getLogger("devstack.worker")


def to_lambda_record(msg: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "messageId": msg["MessageId"],
        "receiptHandle": msg["ReceiptHandle"],
        "body": msg["Body"],
        "attributes": msg.get("Attributes", {}),
        "messageAttributes": msg.get("MessageAttributes", {}),
        "md5OfBody": msg.get("MD5OfBody") or hashlib.md5(msg["Body"].encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", "8")))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--maintenance-seconds", type=float,
                        default=float(os.environ.get("MAINTENANCE_INTERVAL_SECONDS", "300")),
                        help="how often to run the scheduled maintenance sweep (deployed: every 5 minutes)")
    parser.add_argument("--automation-seconds", type=float,
                        default=float(os.environ.get("AUTOMATION_POLL_SECONDS", "3")),
                        help="how often to run the automation poller (deployed: every minute)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from chalicelib.config import load_runtime_config

    # The deployed handler itself (what the function's handler path resolves to), with the logging
    # and metrics it carries in AWS.
    from chalicelib.worker.eval_worker import eval_worker as handle_sqs_batch

    config = load_runtime_config()
    sqs = boto3.client("sqs", endpoint_url=config.aws_endpoint_url, region_name=config.region)
    queue_arn = sqs.get_queue_attributes(QueueUrl=config.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    slots = threading.Semaphore(args.concurrency)

    def maintenance() -> None:
        # The deployed handler, with the event EventBridge's schedule sends it.
        from chalicelib.worker.maintenance import run_maintenance

        while not stop.wait(args.maintenance_seconds):
            event = {"version": "0", "id": "local-schedule", "detail-type": "Scheduled Event",
                     "source": "aws.events", "account": "000000000000", "region": config.region,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "resources": [], "detail": {}}
            try:
                run_maintenance(event, LocalLambdaContext("run_maintenance", 300))
            except Exception:
                log.exception("maintenance sweep failed; it runs again at the next interval")

    threading.Thread(target=maintenance, name="maintenance", daemon=True).start()

    def automation() -> None:
        # The automation poller's deployed handler (vendor batches, runs waiting for a slot), every few
        # seconds here instead of every minute, so batch-mode runs finish promptly on the local stack.
        from chalicelib.worker.automation_poller import automation_poller

        while not stop.wait(args.automation_seconds):
            event = {"version": "0", "id": "local-schedule", "detail-type": "Scheduled Event",
                     "source": "aws.events", "account": "000000000000", "region": config.region,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "resources": [], "detail": {}}
            try:
                automation_poller(event, LocalLambdaContext("automation_poller", 60))
            except Exception:
                log.exception("automation poll failed; it runs again at the next interval")

    threading.Thread(target=automation, name="automation", daemon=True).start()

    def invoke(messages: list[dict[str, Any]]) -> None:
        try:
            event = {"Records": [to_lambda_record(m, queue_arn, config.region) for m in messages]}
            ctx = LocalLambdaContext("eval_worker", config.worker_timeout_seconds)
            result = handle_sqs_batch(event, ctx) or {}
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            for m in messages:
                if m["MessageId"] in failed:
                    # Locally a failed record becomes visible again after a short pause instead of
                    # the deployed queue's long visibility timeout, so retries are observable.
                    sqs.change_message_visibility(QueueUrl=config.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                                  VisibilityTimeout=5)
                else:
                    sqs.delete_message(QueueUrl=config.queue_url, ReceiptHandle=m["ReceiptHandle"])
        except Exception:
            log.exception("worker invocation failed; messages will be redelivered")
        finally:
            slots.release()

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        while not stop.is_set():
            if not slots.acquire(timeout=0.5):
                continue
            # Like the event source mapping's pollers, one ReceiveMessage (up to 10 messages) fetches work
            # for every idle slot, and each batch of `batch_size` records is its own invocation: when
            # several runs end at once, their slots refill in one round trip instead of one each.
            free = 1
            while (free + 1) * args.batch_size <= 10 and slots.acquire(blocking=False):
                free += 1
            try:
                resp = sqs.receive_message(QueueUrl=config.queue_url, MaxNumberOfMessages=free * args.batch_size,
                                           WaitTimeSeconds=1, AttributeNames=["All"],
                                           MessageAttributeNames=["All"])
            except Exception:
                for _ in range(free):
                    slots.release()
                if stop.wait(1):
                    break
                continue
            messages = resp.get("Messages", [])
            size = args.batch_size
            batches: list[list[Any]] = [messages[i:i + size] for i in range(0, len(messages), size)]
            for _ in range(free - len(batches)):
                slots.release()
            for batch in batches:
                pool.submit(invoke, batch)


if __name__ == "__main__":
    main()
