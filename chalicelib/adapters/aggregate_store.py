"""Daily score aggregates and each run's recorded contribution to them, on DynamoDB.

Items (single table, `pk=TENANT#<t>`):
- `sk=AGG#DAY#<dimension>#<yyyy-mm-dd>#<key>`: counters `runs`, `score_sum`, `score_count`,
  `pass`, `warn`, `fail` (+ `dimension`, `day`, `key` as written). A trend query is one Query on
  the `AGG#DAY#<dimension>#` range between two days: it reads days x keys items, never runs.
- `sk=AGG#RUN#<eval_run_id>`: what that run added (`deltas`), under which `stamp` (the run's
  `finished_at`), and how many of its chunks are applied. It carries the run's TTL: a run that
  expires leaves its contribution in the aggregates (they hold no content), a deleted one takes
  it back out exactly.

Applying is exactly-once: each chunk of at most 98 counter updates goes in one transaction with a
condition on the contribution record (`applied = i`) and a check that the run still exists, so a
redelivered finalizer, a crash between chunks or a deletion racing the finalizer can neither
double-count nor leave a deleted run's scores behind.
"""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item
from chalicelib.domain.analytics import AggregateDelta, AggregateRow, Contribution, merge_deltas
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger

_MAX_SK_KEY_BYTES = 400  # sort keys are at most 1024 bytes; long keys are stored by hash


def _key_token(key: str) -> str:
    if len(key.encode()) <= _MAX_SK_KEY_BYTES:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def aggregate_sk(dimension: str, day: str, key: str) -> str:
    return f"AGG#DAY#{dimension}#{day}#{_key_token(key)}"


def contribution_sk(run_id: str) -> str:
    return f"AGG#RUN#{run_id}"


def _unavailable(action: str, exc: Exception) -> DependencyUnavailable:
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("aggregate store call failed", extra={"action": action, "aws_error": code})
    return DependencyUnavailable("Score analytics are unavailable; retry shortly.", code="analytics_unavailable")


def _cancelled(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "TransactionCanceledException"


def _delta_to_json(d: AggregateDelta) -> dict[str, Any]:
    return {"d": d.dimension, "day": d.day, "k": d.key, "r": d.runs, "s": d.score_sum, "n": d.score_count,
            "p": d.passed, "w": d.warned, "f": d.failed}


def _delta_from_json(raw: dict[str, Any]) -> AggregateDelta:
    return AggregateDelta(str(raw["d"]), str(raw["day"]), str(raw["k"]), int(raw["r"]), int(raw["s"]),
                          int(raw["n"]), int(raw["p"]), int(raw["w"]), int(raw["f"]))


class DynamoAggregateStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    # -- contributions --------------------------------------------------------------------------------
    def contribution(self, tenant: str, run_id: str) -> Contribution | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                      Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": contribution_sk(run_id)}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("get_contribution", exc) from None
        item = resp.get("Item")
        if not item:
            return None
        data = from_item(item)
        return Contribution(run_id=run_id, stamp=str(data.get("stamp", "")),
                            deltas=[_delta_from_json(d) for d in data.get("deltas", [])],
                            applied=int(data.get("applied", 0)))

    def apply(self, tenant: str, run_sk: str, contribution: Contribution, *, expires_at: int | None) -> bool:
        """Apply the contribution's remaining chunks; False when the run is gone or another writer
        moved the record on (nothing more is applied then)."""
        key = {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": contribution_sk(contribution.run_id)}}
        total = max(contribution.chunks, 1)
        for i in range(contribution.applied, total):
            record: dict[str, Any]
            if i == 0:
                item = {"pk": tenant_pk(tenant), "sk": contribution_sk(contribution.run_id),
                        "stamp": contribution.stamp, "applied": 1, "chunks": total,
                        "deltas": [_delta_to_json(d) for d in contribution.deltas], "expires_at": expires_at,
                        "entity": "aggregate_contribution"}
                record = {"Put": {"TableName": self._table, "Item": to_item(item),
                                  "ConditionExpression": "attribute_not_exists(pk)"}}
            else:
                record = {"Update": {"TableName": self._table, "Key": key,
                                     "UpdateExpression": "SET applied = :next",
                                     "ConditionExpression": "applied = :i AND stamp = :stamp",
                                     "ExpressionAttributeValues": {":i": {"N": str(i)}, ":next": {"N": str(i + 1)},
                                                                   ":stamp": {"S": contribution.stamp}}}}
            run_check = {"ConditionCheck": {"TableName": self._table, "ConditionExpression": "attribute_exists(pk)",
                                            "Key": {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk}}}}
            updates = [self._counter_update(tenant, d) for d in contribution.chunk(i)]
            if not self._transact([record, run_check, *updates], "apply_contribution"):
                return False
        return True

    def replacement_writes(self, tenant: str, old: Contribution | None, new: Contribution, *,
                           expires_at: int | None) -> list[dict[str, Any]]:
        """The writes that make `new` the run's recorded contribution, for the run lifecycle's
        finalization transaction: the record (conditioned on the `old` one still being what was read)
        and one counter update per aggregate whose net change (new minus what old applied) is not 0."""
        item = {"pk": tenant_pk(tenant), "sk": contribution_sk(new.run_id), "stamp": new.stamp,
                "applied": new.chunks, "chunks": new.chunks, "deltas": [_delta_to_json(d) for d in new.deltas],
                "expires_at": expires_at, "entity": "aggregate_contribution"}
        record: dict[str, Any] = {"Put": {"TableName": self._table, "Item": to_item(item),
                                          "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
        if old is None:
            record["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            record["Put"].update({"ConditionExpression": "stamp = :stamp AND applied = :applied",
                                  "ExpressionAttributeValues": {":stamp": {"S": old.stamp},
                                                                ":applied": {"N": str(old.applied)}}})
        undone = [d.negated() for i in range(old.applied) for d in old.chunk(i)] if old else []
        net = [d for d in merge_deltas([*undone, *new.deltas]) if not d.is_zero]
        return [record, *(self._counter_update(tenant, d) for d in net)]

    def remove(self, tenant: str, contribution: Contribution, *, delete_run: bool = False) -> bool:
        """Subtract what the record says was applied, then delete it; False if it changed meanwhile.

        With `delete_run`, the last transaction also deletes the run item (if it has ended), so a
        deletion takes the run and its scores out together or not at all."""
        key = {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": contribution_sk(contribution.run_id)}}
        stamp = {":stamp": {"S": contribution.stamp}}
        for i in reversed(range(contribution.applied)):
            if i == 0:
                record: dict[str, Any] = {"Delete": {
                    "TableName": self._table, "Key": key, "ConditionExpression": "applied = :one AND stamp = :stamp",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, **stamp}}}
            else:
                record = {"Update": {"TableName": self._table, "Key": key, "UpdateExpression": "SET applied = :i",
                                     "ConditionExpression": "applied = :next AND stamp = :stamp",
                                     "ExpressionAttributeValues": {":i": {"N": str(i)}, ":next": {"N": str(i + 1)},
                                                                   **stamp}}}
            updates = [self._counter_update(tenant, d.negated()) for d in contribution.chunk(i)]
            if i == 0 and delete_run:
                updates.append(self._run_deletion(tenant, contribution.run_id))
            if not self._transact([record, *updates], "remove_contribution"):
                return False
        return True

    def _run_deletion(self, tenant: str, run_id: str) -> dict[str, Any]:
        return {"Delete": {
            "TableName": self._table, "Key": {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": f"RUN#{run_id}"}},
            "ConditionExpression": "attribute_exists(pk) AND #status IN (:s, :f, :t, :c)",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":s": {"S": "succeeded"}, ":f": {"S": "failed"},
                                          ":t": {"S": "timed_out"}, ":c": {"S": "cancelled"}}}}

    def _counter_update(self, tenant: str, d: AggregateDelta) -> dict[str, Any]:
        return {"Update": {
            "TableName": self._table,
            "Key": {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": aggregate_sk(d.dimension, d.day, d.key)}},
            "UpdateExpression": "SET #dim = :dim, #day = :day, #key = :key, entity = :entity "
                                "ADD #runs :r, #sum :s, #n :n, #p :p, #w :w, #f :f",
            "ExpressionAttributeNames": {"#dim": "dimension", "#day": "day", "#key": "key", "#runs": "runs",
                                         "#sum": "score_sum", "#n": "score_count", "#p": "pass", "#w": "warn",
                                         "#f": "fail"},
            "ExpressionAttributeValues": {
                ":dim": {"S": d.dimension}, ":day": {"S": d.day}, ":key": {"S": d.key},
                ":entity": {"S": "score_aggregate"}, ":r": {"N": str(d.runs)}, ":s": {"N": str(d.score_sum)},
                ":n": {"N": str(d.score_count)}, ":p": {"N": str(d.passed)}, ":w": {"N": str(d.warned)},
                ":f": {"N": str(d.failed)}}}}

    def _transact(self, items: list[dict[str, Any]], action: str) -> bool:
        try:
            self._ddb.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if _cancelled(exc):
                return False
            raise _unavailable(action, exc) from None
        except BotoCoreError as exc:
            raise _unavailable(action, exc) from None
        return True

    # -- reads ------------------------------------------------------------------------------------------
    def rows(self, tenant: str, dimension: str, first_day: str, last_day: str) -> tuple[list[AggregateRow], int]:
        """Every aggregate of a dimension between two days (inclusive), and how many items were read."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": tenant_pk(tenant)},
                ":lo": {"S": f"AGG#DAY#{dimension}#{first_day}#"},
                # '$' sorts after '#': the last day's every key, nothing of the day after.
                ":hi": {"S": f"AGG#DAY#{dimension}#{last_day}$"}},
        }
        rows: list[AggregateRow] = []
        read = 0
        while True:
            try:
                resp = self._ddb.query(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable("query_aggregates", exc) from None
            read += int(resp.get("ScannedCount", 0))
            for raw in resp.get("Items", []):
                d = from_item(raw)
                rows.append(AggregateRow(day=str(d["day"]), key=str(d["key"]), runs=int(d.get("runs", 0)),
                                         score_sum=int(d.get("score_sum", 0)), score_count=int(d.get("score_count", 0)),
                                         passed=int(d.get("pass", 0)), warned=int(d.get("warn", 0)),
                                         failed=int(d.get("fail", 0))))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return rows, read
            kwargs["ExclusiveStartKey"] = last
