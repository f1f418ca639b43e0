"""The local stack's moto server keeps no copy of the table per transaction (`devstack.moto_server.
stop_tracking_model_instances`): unpatched, moto's BaseModel records every instance it creates and
TransactWriteItems deep-copies the whole table per item it writes, so each transaction kept the table
alive again, and the server grew to gigabytes during bench/ratelimit."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.core.common_models import BaseModel
from moto.dynamodb.models.dynamo_type import Item

from devstack.moto_server import stop_tracking_model_instances


@pytest.fixture
def untracked() -> Iterator[None]:
    original = BaseModel.__dict__["__new__"]
    stop_tracking_model_instances()
    try:
        yield
    finally:
        BaseModel.__new__ = original  # type: ignore[method-assign]  # the rest of the suite runs moto as shipped


def test_transactions_leave_no_copies_of_the_table_behind(untracked: None) -> None:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        for i in range(50):
            ddb.put_item(TableName="t", Item={"pk": {"S": f"item{i}"}})
        before = len(Item.instances_tracked)  # type: ignore[attr-defined]
        for n in range(10):
            ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": "t", "Item": {"pk": {"S": f"tx{n}-{k}"}}}} for k in range(3)])
        # Unpatched: 30 deep copies of a 50-item table, ~1,500 items kept for good.
        assert len(Item.instances_tracked) - before == 0  # type: ignore[attr-defined]
        assert ddb.scan(TableName="t", Select="COUNT")["Count"] == 80  # and moto still works
