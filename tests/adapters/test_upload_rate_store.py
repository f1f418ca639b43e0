"""The per-user upload counter under moto: the limit holds per user and window, also under concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.adapters.upload_rate_store import DynamoUploadCounter


@pytest.fixture
def counter(aws: Any) -> DynamoUploadCounter:
    session, resources = aws
    return DynamoUploadCounter(session.client("dynamodb"), table_name=resources.table_name)


def take(counter: DynamoUploadCounter, user: str = "bob", window_start: int = 1_800_000_000) -> bool:
    return counter.take("acme", user, window_start=window_start, window_seconds=60, limit=3)


def test_the_window_fills_at_the_limit_per_user_and_window(counter: DynamoUploadCounter) -> None:
    assert [take(counter) for _ in range(5)] == [True, True, True, False, False]
    assert take(counter, user="alice")
    assert take(counter, window_start=1_800_000_060)


def test_concurrent_uploads_never_pass_the_limit_together(counter: DynamoUploadCounter) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: take(counter), range(16)))

    assert results.count(True) == 3


def test_the_item_expires_after_its_window(aws: Any, counter: DynamoUploadCounter) -> None:
    session, resources = aws
    take(counter)
    item = session.client("dynamodb").get_item(
        TableName=resources.table_name,
        Key={"pk": {"S": "TENANT#acme"}, "sk": {"S": "UPLOADRATE#bob#1800000000"}})["Item"]
    assert item["count"] == {"N": "1"} and item["expires_at"] == {"N": "1800000120"}
