"""The packaged CloudFormation/SAM template (`make package`) and its security-relevant properties.

One package per stage per session: `build/<stage>/` when it was built from the current sources,
otherwise `chalice package` (devstack/package/) into a temp dir from one snapshot of the tree. That
takes a few seconds per stage once the Lambda's wheels are cached in .chalice/deployments/, and
20-50 s for the first download. Only when the wheels are not cached and the package index is
unreachable does it fall back to the template alone (`--template-only`): the template does not
depend on the wheels.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.adapters.event_publisher import EVENT_SOURCE
from chalicelib.config import _ENV_MAP, RuntimeConfig, runtime_config_from_env
from devstack import package as pkg

STAGES = ("dev", "prod")
DATA_SERVICES = ("secretsmanager", "kms", "dynamodb", "s3", "sqs")
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.fixture(scope="session")
def snapshot() -> Iterator[Path]:
    # One state of the tree for both stages (others may be editing it), and one dependency download.
    with pkg.project_snapshot() as project:
        yield project


@pytest.fixture(scope="session", params=STAGES)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    stage: str = request.param
    fresh = pkg.fresh_build(stage)
    if fresh is not None:
        return stage, fresh
    out = tmp_path_factory.mktemp(f"package-{stage}")
    try:
        pkg.package(stage, out, source=request.getfixturevalue("snapshot"), lint=False, check=False)
    except pkg.PackagingError:
        if pkg.package_index_reachable():
            raise
        pkg.package(stage, out, lint=False, check=False, template_only=True)
    return stage, out / "sam.json"


@pytest.fixture(scope="session")
def template(built: tuple[str, Path]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(built[1].read_text())
    return data


@pytest.fixture(scope="session")
def stage(built: tuple[str, Path]) -> str:
    return built[0]


def _resources(template: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == rtype}


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _resources(template, "AWS::Serverless::Function")


def _workers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: f for n, f in _functions(template).items()
            if any(e["Type"] == "SQS" for e in f["Properties"].get("Events", {}).values())}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allow_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, document in pkg.iam_policy_documents(template):
        found += [(name, s) for s in _list(document["Statement"]) if s["Effect"] == "Allow"]
    return found


def _role_actions(template: dict[str, Any], function: str) -> set[str]:
    role = _functions(template)[function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return {a for name, s in _allow_statements(template) if name.startswith(f"{role}/")
            for a in _list(s["Action"])}


def _references(resource: Any) -> set[str]:
    """Logical ids a resource expression points at (Ref, GetAtt, ${X} / ${X.Arn} in Fn::Sub)."""
    if isinstance(resource, dict):
        if "Ref" in resource:
            return {resource["Ref"]}
        if "Fn::GetAtt" in resource:
            return {resource["Fn::GetAtt"][0]}
        if "Fn::Sub" in resource:
            return {m.split(".")[0] for m in re.findall(r"\$\{([^}]+)\}", resource["Fn::Sub"])
                    if not m.startswith("AWS::")}
    return set()


# -- IAM: least privilege ---------------------------------------------------------------------------

def test_no_data_action_is_allowed_on_every_resource(template: dict[str, Any]) -> None:
    statements = _allow_statements(template)
    assert statements
    for name, statement in statements:
        actions = _list(statement["Action"])
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), (name, actions)
        assert "NotResource" not in statement and "NotAction" not in statement, name
        if any(a.split(":")[0] in DATA_SERVICES for a in actions):
            for resource in _list(statement["Resource"]):
                assert resource != "*", (name, actions)
                assert not isinstance(resource, str), f"{name}: {resource} is not tied to this stack"


def test_each_data_service_is_scoped_to_this_stacks_resource(template: dict[str, Any], stage: str) -> None:
    expected = {"dynamodb": {"EvalTable"}, "s3": {"SessionBucket"}, "kms": {"EvalKey"}, "sqs": {"EvalJobs"}}
    secret_arn = ("arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
                  f"eval-runner/{stage}/tenant/*")
    seen = set()
    for name, statement in _allow_statements(template):
        services = {a.split(":")[0] for a in _list(statement["Action"])}
        assert len(services) == 1, f"{name}: one service per statement keeps scoping reviewable"
        (service,) = services
        seen.add(service)
        resources = _list(statement["Resource"])
        if service == "secretsmanager":
            assert resources == [{"Fn::Sub": secret_arn}], name
        elif service in expected:
            refs = set().union(*(_references(r) for r in resources))
            assert refs == expected[service], (name, resources)
    assert {"secretsmanager", "kms", "dynamodb", "s3", "sqs"} <= seen


def test_kms_use_is_only_through_the_encrypting_services(template: dict[str, Any]) -> None:
    for name, statement in _allow_statements(template):
        if any(a.startswith("kms:") for a in _list(statement["Action"])):
            assert set(_list(statement["Action"])) <= {"kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"}
            assert "kms:ViaService" in statement["Condition"]["StringEquals"], name


def test_only_the_api_writes_vendor_keys_and_only_the_worker_consumes_jobs(template: dict[str, Any]) -> None:
    writes = {"secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:DeleteSecret"}
    consume = {"sqs:ReceiveMessage", "sqs:DeleteMessage"}
    workers = _workers(template)
    for function in _functions(template):
        actions = _role_actions(template, function)
        assert (writes <= actions) == (function == "APIHandler"), function
        assert (consume <= actions) == (function in workers), function
        if function.startswith("Websocket"):
            assert not any(a.startswith("secretsmanager:") for a in actions), function


def test_event_publishing_is_limited_to_the_default_bus_and_our_source(template: dict[str, Any]) -> None:
    statements = [s for _, s in _allow_statements(template) if "events:PutEvents" in _list(s["Action"])]
    assert statements
    for statement in statements:
        assert statement["Resource"]["Fn::Sub"].endswith(":event-bus/default")
        assert statement["Condition"] == {"StringEquals": {"events:source": EVENT_SOURCE}}


def test_websocket_push_is_scoped_to_this_stacks_websocket_api(template: dict[str, Any]) -> None:
    statements = [s for _, s in _allow_statements(template)
                  if "execute-api:ManageConnections" in _list(s["Action"])]
    if "WebsocketAPI" not in template["Resources"]:
        assert not statements
        return
    assert statements
    for statement in statements:
        assert _references(statement["Resource"]) == {"WebsocketAPI"}
        assert statement["Resource"]["Fn::Sub"].endswith("/@connections/*")


def test_every_function_has_its_own_managed_role(template: dict[str, Any]) -> None:
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in _functions(template).values()]
    assert len(roles) == len(set(roles))
    for role in roles:
        assert template["Resources"][role]["Type"] == "AWS::IAM::Role"


def test_key_rotates_and_its_policy_delegates_to_iam(template: dict[str, Any]) -> None:
    (key,) = _resources(template, "AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    (statement,) = key["Properties"]["KeyPolicy"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}


# -- data at rest and in transit ---------------------------------------------------------------------

def test_table_is_encrypted_with_the_key_and_has_pitr_and_ttl(template: dict[str, Any]) -> None:
    (table,) = _resources(template, "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "EvalKey"}}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_bucket_is_kms_encrypted_private_and_tls_only(template: dict[str, Any]) -> None:
    (name, bucket), = _resources(template, "AWS::S3::Bucket").items()
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "EvalKey"}}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    (policy,) = (p for p in _resources(template, "AWS::S3::BucketPolicy").values()
                 if p["Properties"]["Bucket"] == {"Ref": name})
    deny_tls = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
                if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert deny_tls and deny_tls[0]["Principal"] == "*" and deny_tls[0]["Action"] == "s3:*"
    assert {json.dumps(r, sort_keys=True) for r in deny_tls[0]["Resource"]} == {
        json.dumps({"Fn::GetAtt": [name, "Arn"]}, sort_keys=True),
        json.dumps({"Fn::Sub": "${" + name + ".Arn}/*"}, sort_keys=True)}


def test_queues_are_encrypted_and_jobs_dead_letter(template: dict[str, Any]) -> None:
    queues = _resources(template, "AWS::SQS::Queue")
    assert len(queues) == 2
    for name, queue in queues.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name
    redrive = queues["EvalJobs"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["EvalJobsDLQ", "Arn"]}
    assert 1 <= redrive["maxReceiveCount"] <= 5


# -- the worker ----------------------------------------------------------------------------------------

def test_worker_reports_batch_item_failures_from_the_stack_queue(template: dict[str, Any]) -> None:
    workers = _workers(template)
    assert workers, "no SQS worker in the template: is the worker blueprint registered in app.py?"
    for function in workers.values():
        for event in function["Properties"]["Events"].values():
            assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            assert event["Properties"]["Queue"] == {"Fn::Sub": "${EvalJobs.Arn}"}
            assert event["Properties"]["BatchSize"] == 1


def test_worker_timeout_relation_holds_in_the_template(template: dict[str, Any]) -> None:
    visibility = template["Resources"]["EvalJobs"]["Properties"]["VisibilityTimeout"]
    for name, function in _workers(template).items():
        props = function["Properties"]
        env = props["Environment"]["Variables"]
        assert props["Timeout"] == int(env["MAX_RUN_TIMEOUT_SECONDS"]) + int(env["WORKER_GRACE_SECONDS"]), name
        assert props["Timeout"] <= 900
        assert visibility >= 6 * props["Timeout"]
    for name, function in _functions(template).items():
        if name not in _workers(template):
            assert function["Properties"]["Timeout"] <= 29, name


# -- runtime wiring ------------------------------------------------------------------------------------

def test_every_function_gets_a_valid_runtime_config(template: dict[str, Any], stage: str) -> None:
    required = {_ENV_MAP[f] for f, info in RuntimeConfig.model_fields.items() if info.is_required()}
    for name, function in _functions(template).items():
        env = function["Properties"]["Environment"]["Variables"]
        assert required <= set(env), (name, sorted(required - set(env)))
        assert env["EVAL_TABLE_NAME"] == {"Ref": "EvalTable"}
        assert env["EVAL_QUEUE_URL"] == {"Ref": "EvalJobs"}
        assert env["EVAL_KMS_KEY_ID"] == {"Fn::GetAtt": ["EvalKey", "Arn"]}
        if "WebsocketAPI" in template["Resources"]:
            assert env["WEBSOCKET_API_ID"] == {"Ref": "WebsocketAPI"}
        # Intrinsics resolve at deploy time; stand-ins show the rest of the environment parses.
        resolved = {k: (v if isinstance(v, str) else f"resolved-{k.lower()}") for k, v in env.items()}
        runtime = runtime_config_from_env(resolved)
        assert runtime.stage == stage
        assert runtime.secret_prefix == f"eval-runner/{stage}/tenant/"


def test_prod_requires_the_oidc_parameters_and_keeps_its_data(template: dict[str, Any], stage: str) -> None:
    retained = ("EvalKey", "EvalTable", "SessionBucket")
    if stage != "prod":
        assert not any("DeletionPolicy" in template["Resources"][name] for name in retained)
        return
    params = template["Parameters"]
    for name in ("JwksUrl", "JwtIssuer", "JwtAudience"):
        assert "Default" not in params[name], name
    for name in retained:
        assert template["Resources"][name]["DeletionPolicy"] == "Retain", name
        assert template["Resources"][name]["UpdateReplacePolicy"] == "Retain", name


def test_every_function_logs_to_its_own_group_with_retention_and_may_write_only_there(
        template: dict[str, Any]) -> None:
    groups = _resources(template, "AWS::Logs::LogGroup")
    for name, function in _functions(template).items():
        group = groups[f"{name}LogGroup"]["Properties"]
        assert group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${AWS::StackName}-" + name}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
        assert function["Properties"]["LoggingConfig"] == {"LogGroup": {"Ref": f"{name}LogGroup"}}
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        log_statements = [s for policy, s in _allow_statements(template) if policy.startswith(f"{role}/")
                          and any(a.startswith("logs:") for a in _list(s["Action"]))]
        assert [s["Resource"] for s in log_statements] == [{"Fn::GetAtt": [f"{name}LogGroup", "Arn"]}], name


def test_each_function_holds_exactly_the_grants_of_its_access_profile(template: dict[str, Any]) -> None:
    from devstack.access import FUNCTION_ACCESS

    expected_sids = {"table": {"EvalTable"}, "sessions_read": {"SessionObjects", "SessionBucketList"},
                     "sessions_write": {"SessionObjects"}, "vendor_keys_read": {"ReadVendorKeys"},
                     "vendor_keys_manage": {"ManageVendorKeys"}, "jobs_send": {"EnqueueEvalJobs"},
                     "jobs_consume": {"ConsumeEvalJobs"}, "events": {"PublishEvalEvents"},
                     "push": {"PushToDaemons"}}
    assert set(_functions(template)) == set(FUNCTION_ACCESS)
    for name, function in _functions(template).items():
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        sids = {s["Sid"] for policy, s in _allow_statements(template) if policy.startswith(f"{role}/")}
        wanted = {"WriteOwnLogs"}.union(*(expected_sids[g] for g in FUNCTION_ACCESS[name]))
        if FUNCTION_ACCESS[name] & {"table", "sessions_read", "sessions_write", "vendor_keys_read"}:
            wanted.add("EvalKeyViaServices")
        assert sids == wanted, name
    # The daemon connection handlers never see vendor keys, sessions or the job queue.
    for name in ("WebsocketConnect", "WebsocketMessage", "WebsocketDisconnect"):
        actions = _role_actions(template, name)
        assert not any(a.split(":")[0] in ("secretsmanager", "s3", "sqs") for a in actions), name


def test_a_function_without_an_access_profile_fails_the_build(template: dict[str, Any], stage: str) -> None:
    generated = copy.deepcopy(template)
    generated["Resources"]["MaintenanceSweeper"] = copy.deepcopy(generated["Resources"]["APIHandler"])
    with pytest.raises(pkg.PackagingError, match="MaintenanceSweeper has no entry in FUNCTION_ACCESS"):
        pkg.build_functions_merge(generated, stage)


def test_api_stages_are_throttled_logged_and_single(template: dict[str, Any]) -> None:
    api = template["Resources"]["RestAPI"]["Properties"]
    assert api["OpenApiVersion"] == "3.0.1"  # no second stage named "Stage"
    (settings,) = api["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    assert api["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["RestApiAccessLogs", "Arn"]}
    assert "Authorization" not in api["AccessLogSetting"]["Format"]
    if "WebsocketAPI" in template["Resources"]:
        stage = template["Resources"]["WebsocketAPIStage"]["Properties"]
        assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "WebsocketThrottlingRateLimit"}
        assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["WebsocketApiAccessLogs", "Arn"]}


def test_worker_concurrency_is_capped_and_tracing_is_a_parameter(template: dict[str, Any]) -> None:
    for function in _workers(template).values():
        for event in function["Properties"]["Events"].values():
            assert 2 <= event["Properties"]["ScalingConfig"]["MaximumConcurrency"] <= 50
    assert template["Parameters"]["Tracing"]["AllowedValues"] == ["Active", "PassThrough"]
    for function in _functions(template).values():
        assert function["Properties"]["Tracing"] == {"Ref": "Tracing"}


def test_api_gateway_errors_use_the_contract_error_shape(template: dict[str, Any]) -> None:
    responses = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"][
        "x-amazon-apigateway-gateway-responses"]
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "MISSING_AUTHENTICATION_TOKEN"} <= set(responses)
    for response_type, response in responses.items():
        body = response["responseTemplates"]["application/json"]
        body = body.replace("$context.error.messageString", '"stand-in message"')
        body = body.replace("$context.requestId", "req-1")
        error = json.loads(body)["error"]
        assert SNAKE.match(error["code"]), response_type
        assert isinstance(error["message"], str) and error["message"], response_type
        assert "statusCode" not in response or isinstance(response["statusCode"], str)


def test_cfn_lint_reports_no_errors(built: tuple[str, Path]) -> None:
    code, output = pkg.run_cfn_lint(built[1])
    assert code & 3 == 0, output


# -- the checker `make package` runs refuses what these tests look for ---------------------------------

def test_package_check_rejects_wildcards_and_a_missing_batch_failure_flag(template: dict[str, Any]) -> None:
    assert pkg.check_template(template) == []
    broken = copy.deepcopy(template)
    role = next(iter(_resources(broken, "AWS::IAM::Role").values()))
    role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "dynamodb:Scan", "Resource": "*"})
    for function in _workers(broken).values():
        for event in function["Properties"]["Events"].values():
            del event["Properties"]["FunctionResponseTypes"]
    broken["Resources"]["EvalJobs"]["Properties"]["VisibilityTimeout"] = 60
    problems = "\n".join(pkg.check_template(broken))
    assert "allowed on every resource" in problems
    assert "ReportBatchItemFailures" in problems
    assert "VisibilityTimeout" in problems
