"""Creates the stage's data-plane resources on an AWS endpoint (moto) from `infra/eval-runner.json`.

The local stack and the test suite both call `provision(...)`, so the resources they use are the
ones the CloudFormation merge template declares, not a second hand-written list. Only the
properties that change behaviour locally are translated (keys, indexes, TTL, encryption key,
queue attributes, redrive, the bucket's lifecycle rules); account-level intrinsics are resolved with local values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "eval-runner.json"


@dataclass(frozen=True)
class StackResources:
    table_name: str
    bucket_name: str
    queue_url: str
    dlq_url: str
    kms_key_id: str
    region: str

    def env(self, *, stage: str) -> dict[str, str]:
        """The environment variables the Lambda functions get from the merge template."""
        return {
            "EVAL_TABLE_NAME": self.table_name,
            "EVAL_BUCKET_NAME": self.bucket_name,
            "EVAL_QUEUE_URL": self.queue_url,
            "EVAL_KMS_KEY_ID": self.kms_key_id,
            "EVAL_SECRET_PREFIX": f"eval-runner/{stage}/tenant/",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }


def load_template() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return data


def _resources_of(template: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {name: r.get("Properties", {}) for name, r in template["Resources"].items() if r["Type"] == rtype}


def lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """One `AWS::S3::Bucket` lifecycle rule (CloudFormation's shape) in the S3 API's shape."""
    prefix = rule.get("Prefix", "")
    tags = list(rule.get("TagFilters", []))
    if tags and (prefix or len(tags) > 1):
        rule_filter: dict[str, Any] = {"And": {"Prefix": prefix, "Tags": tags}}
    elif tags:
        rule_filter = {"Tag": tags[0]}
    else:
        rule_filter = {"Prefix": prefix}
    out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": rule_filter}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return out


def provision(session: Any, *, stack_name: str, endpoint_url: str | None = None,
              region: str = "us-east-1") -> StackResources:
    """Create every table, key, bucket and queue declared in the template. Idempotent per name."""
    template = load_template()

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url, region_name=region)

    kms = client("kms")
    keys = _resources_of(template, "AWS::KMS::Key")
    (key_name, key_props), = keys.items()
    key = kms.create_key(Description=key_props.get("Description", key_name))
    key_id = key["KeyMetadata"]["KeyId"]
    if key_props.get("EnableKeyRotation"):
        kms.enable_key_rotation(KeyId=key_id)
    key_arn = key["KeyMetadata"]["Arn"]

    ddb = client("dynamodb")
    (table_logical, tprops), = _resources_of(template, "AWS::DynamoDB::Table").items()
    table_name = f"{stack_name}-{table_logical}"
    existing = ddb.list_tables().get("TableNames", [])
    if table_name not in existing:
        kwargs: dict[str, Any] = {
            "TableName": table_name,
            "BillingMode": tprops["BillingMode"],
            "AttributeDefinitions": tprops["AttributeDefinitions"],
            "KeySchema": tprops["KeySchema"],
        }
        if tprops.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = tprops["GlobalSecondaryIndexes"]
        sse = tprops.get("SSESpecification")
        if sse:
            kwargs["SSESpecification"] = {"Enabled": True, "SSEType": sse["SSEType"], "KMSMasterKeyId": key_arn}
        ddb.create_table(**kwargs)
        ttl = tprops.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)
        if tprops.get("PointInTimeRecoverySpecification"):
            ddb.update_continuous_backups(TableName=table_name, PointInTimeRecoverySpecification=tprops[
                "PointInTimeRecoverySpecification"])

    s3 = client("s3")
    (bucket_logical, bprops), = _resources_of(template, "AWS::S3::Bucket").items()
    bucket = f"{stack_name}-{bucket_logical}".lower()
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    enc = bprops.get("BucketEncryption")
    if enc:
        rules = []
        for rule in enc["ServerSideEncryptionConfiguration"]:
            default = dict(rule["ServerSideEncryptionByDefault"])
            if "KMSMasterKeyID" in default:
                default["KMSMasterKeyID"] = key_arn
            rules.append({"ApplyServerSideEncryptionByDefault": default,
                          "BucketKeyEnabled": rule.get("BucketKeyEnabled", False)})
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
    pab = bprops.get("PublicAccessBlockConfiguration")
    if pab:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=pab)
    lifecycle = bprops.get("LifecycleConfiguration")
    if lifecycle:
        # Stored so the local stack can be asked which rule expires an object (moto never expires one).
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [lifecycle_rule(r) for r in lifecycle["Rules"]]})

    sqs = client("sqs")
    queues = _resources_of(template, "AWS::SQS::Queue")
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    # Dead-letter queues first, so redrive policies can point at them.
    for logical in sorted(queues, key=lambda n: "RedrivePolicy" in queues[n]):
        props = queues[logical]
        attrs: dict[str, str] = {}
        for prop, attr in (("VisibilityTimeout", "VisibilityTimeout"),
                           ("MessageRetentionPeriod", "MessageRetentionPeriod"),
                           ("SqsManagedSseEnabled", "SqsManagedSseEnabled")):
            if prop in props:
                value = props[prop]
                attrs[attr] = str(value).lower() if isinstance(value, bool) else str(value)
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arns[target],
                                                 "maxReceiveCount": str(redrive["maxReceiveCount"])})
        url = sqs.create_queue(QueueName=f"{stack_name}-{logical}", Attributes=attrs)["QueueUrl"]
        urls[logical] = url
        arns[logical] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]

    dlq = next(n for n in queues if "RedrivePolicy" not in queues[n])
    main = next(n for n in queues if "RedrivePolicy" in queues[n])
    return StackResources(table_name=table_name, bucket_name=bucket, queue_url=urls[main], dlq_url=urls[dlq],
                          kms_key_id=key_arn, region=region)
