"""Fixtures of the adapter tests: a low-level DynamoDB client and the app table, both on the moto `aws` stack."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def ddb(aws: Any) -> Any:
    session, _ = aws
    return session.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def table(aws: Any) -> str:
    _, resources = aws
    name: str = resources.table_name
    return name
