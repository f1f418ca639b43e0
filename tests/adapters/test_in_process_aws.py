"""The in-process AWS the tests run on keeps DynamoDB's per-item guarantees under threads.

The worker runs its DynamoDB calls in `asyncio.to_thread` while the test thread calls the API (a
cancel, a settings change), so the tests' moto backend is hit from several threads at once. Unpatched,
moto lets two conditional writers of one item both win (a lost update real DynamoDB never allows)
and can raise "dictionary changed size during iteration" mid-request: the cause of the flaky
`test_cancel_mid_run_aborts_in_flight_calls`. `tests/conftest.py` serialises moto's DynamoDB requests
(`devstack.moto_server.serialize_in_process_dynamodb`); this checks the guarantee it restores.
"""

from __future__ import annotations

import threading
from typing import Any

WRITERS = 4
INCREMENTS = 150


def test_conditional_increments_from_threads_never_lose_an_update(aws: Any) -> None:
    session, resources = aws
    ddb = session.client("dynamodb")
    table = resources.table_name
    key = {"pk": {"S": "TENANT#race"}, "sk": {"S": "COUNTER"}}
    ddb.put_item(TableName=table, Item={**key, "n": {"N": "0"}})
    wins = [0]
    tally = threading.Lock()
    errors: list[str] = []

    def increment() -> None:
        for _ in range(INCREMENTS):
            while True:
                try:
                    current = int(ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]["n"]["N"])
                    ddb.transact_write_items(TransactItems=[{"Put": {
                        "TableName": table, "Item": {**key, "n": {"N": str(current + 1)}},
                        "ConditionExpression": "n = :n", "ExpressionAttributeValues": {":n": {"N": str(current)}}}}])
                except ddb.exceptions.TransactionCanceledException:
                    continue  # lost the race fairly: read again
                except Exception as exc:  # moto's own race ("dictionary changed size…")
                    errors.append(repr(exc))
                    return
                with tally:
                    wins[0] += 1
                break

    threads = [threading.Thread(target=increment) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stored = int(ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]["n"]["N"])
    assert errors == []
    assert wins[0] == WRITERS * INCREMENTS
    assert stored == wins[0], "two conditional writers both won: an update was lost"
