"""What each deployed function may touch and which environment it gets, for both deploy paths.

One table (`FUNCTION_ACCESS`) says which grants each function needs; `role_statements` turns grants
into least-privilege IAM statements over a `Targets` (how the stack's resources are named: intrinsics
in the packaged template, concrete ARNs from the data stack for `chalice deploy`), and
`function_environment` gives the runtime environment from the same resource references. So the
packaged template (`devstack/package/template.py`) and the `chalice deploy` path (`devstack/infra.py`) cannot
drift apart: both are built from here, and `tests/unit/test_deploy_paths.py` compares them.

A function is known by its logical id in the packaged template (Chalice's CloudFormation name of the
function: `APIHandler`, `EvalWorker`, `WebsocketConnect`, …); `logical_id` maps the names
`chalice deploy` uses (`api_handler`, `eval_worker`, `websocket_connect`, …) onto it. A function
missing from the table fails the build with its name: say what it reads and writes before it ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The grants a function can hold (each becomes one IAM statement, scoped to this stack's resource).
TABLE = "table"                          # DynamoDB items of the stage's table and its indexes
SESSIONS_READ = "sessions_read"          # S3 objects of the session bucket: get (+ list, so a miss is a 404)
SESSIONS_WRITE = "sessions_write"        # S3 objects of the session bucket: put (with tags), delete
VENDOR_KEYS_READ = "vendor_keys_read"    # Secrets Manager: read the stage's tenant vendor keys
VENDOR_KEYS_MANAGE = "vendor_keys_manage"  # Secrets Manager: create, rotate, delete them
JOBS_SEND = "jobs_send"                  # SQS: enqueue eval jobs
JOBS_CONSUME = "jobs_consume"            # SQS: the worker's event source
EVENTS = "events"                        # EventBridge: SessionEvalCompleted on the default bus
PUSH = "push"                            # API Gateway: post to daemons' WebSocket connections
GRANTS = frozenset({TABLE, SESSIONS_READ, SESSIONS_WRITE, VENDOR_KEYS_READ, VENDOR_KEYS_MANAGE, JOBS_SEND,
                    JOBS_CONSUME, EVENTS, PUSH})

FUNCTION_ACCESS: dict[str, frozenset[str]] = {
    # Every route: settings and keys (admin), session upload/read, dispatch, daemon protocol over HTTPS
    # (a result ends a run: the completion event), cancel pushed to a connected daemon.
    "APIHandler": frozenset({TABLE, SESSIONS_READ, SESSIONS_WRITE, VENDOR_KEYS_READ, VENDOR_KEYS_MANAGE,
                             JOBS_SEND, EVENTS, PUSH}),
    # One run: reads the session trace and the tenant's key, judges, stores results, publishes.
    # SESSIONS_WRITE: the worker stores large presigned uploads (completed in the background) and deletes the upload.
    # JOBS_SEND: a stored session's rule notice creates rule runs, and a finished run's freed slot starts
    # a run that waited for it: both hand runs to the queue.
    "EvalWorker": frozenset({TABLE, SESSIONS_READ, SESSIONS_WRITE, VENDOR_KEYS_READ, JOBS_CONSUME, JOBS_SEND,
                             EVENTS}),
    # Daemon connections: the connection item; connect and messages answer on the socket; a result
    # sent over the socket ends a run like the HTTPS one. Never vendor keys, sessions or the queue.
    "WebsocketConnect": frozenset({TABLE, PUSH}),
    "WebsocketMessage": frozenset({TABLE, EVENTS, PUSH}),
    "WebsocketDisconnect": frozenset({TABLE}),
    # The run lifecycle's scheduled sweep (chalicelib/worker/maintenance.py): ends overdue runs and
    # finalizes them (run items, the spend ledger), and publishes budget threshold events; a freed slot
    # starts a waiting rule/batch run (the queue).
    "RunMaintenance": frozenset({TABLE, EVENTS, JOBS_SEND}),
    # Online and bulk evaluation's scheduled poll (chalicelib/worker/automation_poller.py): reads the
    # tenant's vendor key to ask the vendor about its batches, writes verdicts and finishes runs (run
    # items, the spend ledger, SessionEvalCompleted), and hands runs that waited for a slot to the queue.
    "AutomationPoller": frozenset({TABLE, VENDOR_KEYS_READ, JOBS_SEND, EVENTS}),
}

API_HANDLER = "APIHandler"
# Chalice's fixed CloudFormation names for the WebSocket handlers and the API handler.
_FIXED_LOGICAL_IDS = {"api_handler": API_HANDLER, "websocket_connect": "WebsocketConnect",
                      "websocket_message": "WebsocketMessage", "websocket_disconnect": "WebsocketDisconnect"}

# The EventBridge source the service publishes SessionEvalCompleted under.
EVENT_SOURCE = "eval-runner"


class UnconfiguredFunction(LookupError):
    """A function has no entry in FUNCTION_ACCESS."""


def logical_id(chalice_name: str) -> str:
    """The packaged template's logical id of the function `chalice deploy` calls `chalice_name`."""
    from chalice.utils import to_cfn_resource_name

    return _FIXED_LOGICAL_IDS.get(chalice_name) or to_cfn_resource_name(chalice_name)


def access_of(function: str) -> frozenset[str]:
    try:
        grants = FUNCTION_ACCESS[function]
    except KeyError:
        raise UnconfiguredFunction(
            f"function {function} has no entry in FUNCTION_ACCESS (devstack/access.py): add one naming "
            f"what it may touch ({', '.join(sorted(GRANTS))}); it gets its own role, log group and "
            "environment from that") from None
    unknown = grants - GRANTS
    if unknown:
        raise UnconfiguredFunction(f"function {function}: unknown grants {sorted(unknown)}")
    return grants


@dataclass(frozen=True)
class Targets:
    """How the stack's resources are referenced in a policy: CloudFormation intrinsics or plain ARNs."""

    table: Any
    table_indexes: Any
    bucket: Any
    bucket_objects: Any
    key: Any
    queue: Any
    secrets: Any
    event_bus: Any
    # None until the WebSocket API exists (the first `chalice deploy` creates it).
    connections: Any
    log_group: Any
    # kms:ViaService values per service that encrypts with the key.
    via: dict[str, Any]


def role_statements(grants: frozenset[str], targets: Targets, *, xray: bool = False) -> list[dict[str, Any]]:
    """Least-privilege statements for one function. No data action has a `*` resource; the log
    statement names the function's own log group only."""
    statements: list[dict[str, Any]] = [
        # The group is created by the stack with its retention, so no logs:CreateLogGroup.
        {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": targets.log_group},
    ]
    kms_via: list[Any] = []
    if TABLE in grants:
        statements.append(
            {"Sid": "EvalTable", "Effect": "Allow",
             "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
                        "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
                        "dynamodb:ConditionCheckItem"],
             "Resource": [targets.table, targets.table_indexes]})
        kms_via.append(targets.via["dynamodb"])
    if grants & {SESSIONS_READ, SESSIONS_WRITE}:
        actions = (["s3:GetObject"] if SESSIONS_READ in grants else []) + (
            # A PUT that carries tags (the retention tag the bucket's lifecycle rules expire traces by)
            # also needs s3:PutObjectTagging, or S3 refuses the whole upload with 403; an export's
            # multipart upload is aborted when the export fails.
            ["s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload", "s3:DeleteObject"]
            if SESSIONS_WRITE in grants else [])
        statements.append({"Sid": "SessionObjects", "Effect": "Allow", "Action": actions,
                           "Resource": targets.bucket_objects})
        if SESSIONS_READ in grants:
            # Lets a missing object read as 404 (NoSuchKey) instead of 403.
            statements.append({"Sid": "SessionBucketList", "Effect": "Allow", "Action": "s3:ListBucket",
                               "Resource": targets.bucket})
        kms_via.append(targets.via["s3"])
    if grants & {VENDOR_KEYS_READ, VENDOR_KEYS_MANAGE}:
        if VENDOR_KEYS_READ in grants:
            statements.append({"Sid": "ReadVendorKeys", "Effect": "Allow",
                               "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                               "Resource": targets.secrets})
        if VENDOR_KEYS_MANAGE in grants:
            statements.append({"Sid": "ManageVendorKeys", "Effect": "Allow",
                               "Action": ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue",
                                          "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret",
                                          "secretsmanager:RestoreSecret", "secretsmanager:TagResource"],
                               "Resource": targets.secrets})
        kms_via.append(targets.via["secretsmanager"])
    if kms_via:
        # The key only through the services this function uses it with.
        statements.append({"Sid": "EvalKeyViaServices", "Effect": "Allow",
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                           "Resource": targets.key,
                           "Condition": {"StringEquals": {"kms:ViaService": kms_via}}})
    if JOBS_SEND in grants:
        statements.append({"Sid": "EnqueueEvalJobs", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                           "Resource": targets.queue})
    if JOBS_CONSUME in grants:
        statements.append({"Sid": "ConsumeEvalJobs", "Effect": "Allow",
                           "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                                      "sqs:GetQueueAttributes"],
                           "Resource": targets.queue})
    if EVENTS in grants:
        statements.append({"Sid": "PublishEvalEvents", "Effect": "Allow", "Action": "events:PutEvents",
                           "Resource": targets.event_bus,
                           "Condition": {"StringEquals": {"events:source": EVENT_SOURCE}}})
    if PUSH in grants and targets.connections is not None:
        statements.append({"Sid": "PushToDaemons", "Effect": "Allow", "Action": "execute-api:ManageConnections",
                           "Resource": targets.connections})
    if xray:
        # X-Ray takes no resource-level permissions.
        statements.append({"Sid": "WriteTraces", "Effect": "Allow",
                           "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"})
    return statements


# Environment variables that name a resource of the data plane: the intrinsic in the packaged
# template, and the data stack's output `chalice deploy`'s stage environment copies.
RESOURCE_ENV: dict[str, tuple[Any, str]] = {
    "EVAL_TABLE_NAME": ({"Ref": "EvalTable"}, "EvalTableName"),
    "EVAL_BUCKET_NAME": ({"Ref": "SessionBucket"}, "SessionBucketName"),
    "EVAL_QUEUE_URL": ({"Ref": "EvalJobs"}, "EvalJobsQueueUrl"),
    "EVAL_JOBS_QUEUE_NAME": ({"Fn::GetAtt": ["EvalJobs", "QueueName"]}, "EvalJobsQueueName"),
    "EVAL_KMS_KEY_ID": ({"Fn::GetAtt": ["EvalKey", "Arn"]}, "EvalKeyArn"),
}
# Stack parameter -> environment variable. Deployed stacks take these only from the parameters (the
# dev stage's loopback allowlist in .chalice/config.json is for the local stack, not for a Lambda).
PARAMETER_ENV = {
    "JwksUrl": "JWKS_URL",
    "JwtIssuer": "JWT_ISSUER",
    "JwtAudience": "JWT_AUDIENCE",
    "AllowedBaseUrlHosts": "ALLOWED_BASE_URL_HOSTS",
}
STATIC_ENV = {"EVAL_EVENT_BUS_NAME": "default"}
