"""The history indexes and retention rules in `infra/eval-runner.json` against the code that uses
them, and DynamoDB's and S3's own limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chalicelib.adapters.run_index import DIMENSIONS, LIST_PROJECTION, RUN_ORDER
from chalicelib.domain.retention import RETENTION_LADDER_DAYS, RETENTION_TAG_KEY

TEMPLATE = json.loads((Path(__file__).resolve().parents[2] / "infra" / "eval-runner.json").read_text())


def _resource(rtype: str) -> dict[str, Any]:
    (props,) = [r["Properties"] for r in TEMPLATE["Resources"].values() if r["Type"] == rtype]
    return props


def test_every_history_dimension_has_its_index_with_the_list_projection() -> None:
    table = _resource("AWS::DynamoDB::Table")
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    defined = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    for dim in DIMENSIONS:
        index = indexes[dim.index]
        assert index["KeySchema"] == [{"AttributeName": dim.attribute, "KeyType": "HASH"},
                                      {"AttributeName": RUN_ORDER, "KeyType": "RANGE"}]
        assert index["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(LIST_PROJECTION)}
        assert defined[dim.attribute] == "S"
    assert defined[RUN_ORDER] == "S"


def test_dynamodb_limits_hold() -> None:
    table = _resource("AWS::DynamoDB::Table")
    gsis = table["GlobalSecondaryIndexes"]
    assert len(gsis) <= 20
    projected = sum(len(i["Projection"].get("NonKeyAttributes", [])) for i in gsis)
    assert projected <= 100, "DynamoDB projects at most 100 INCLUDE attributes over all indexes"


def test_the_bucket_has_one_retention_rule_per_ladder_rung() -> None:
    rules = _resource("AWS::S3::Bucket")["LifecycleConfiguration"]["Rules"]
    retention = {r["TagFilters"][0]["Value"]: r for r in rules if r.get("TagFilters")}
    assert sorted(int(v) for v in retention) == list(RETENTION_LADDER_DAYS)
    for days, rule in retention.items():
        assert rule["TagFilters"] == [{"Key": RETENTION_TAG_KEY, "Value": days}]
        assert rule["ExpirationInDays"] == int(days) and rule["Prefix"] == "sessions/"
        assert rule["Status"] == "Enabled"
    assert len(rules) <= 1000 and len({r["Id"] for r in rules}) == len(rules)


def test_exports_expire_after_a_day() -> None:
    rules = _resource("AWS::S3::Bucket")["LifecycleConfiguration"]["Rules"]
    (exports,) = [r for r in rules if r.get("Prefix") == "exports/"]
    assert exports["ExpirationInDays"] == 1 and exports["Status"] == "Enabled"
