"""The tenant's spend ledger on DynamoDB: one counter item per tenant holding everything a dispatch
must check together, and the open-run registry the lifecycle sweep walks.

Item `pk=TENANT#<t>, sk=BUDGET#LEDGER`:
- `runs`: map run id → `{"u": user, "d": deadline epoch}`, every run admitted and not finalized
  (a quota slot each; the sweep's work list);
- `ua`: map user → number of the user's open runs.

Dispatch adds its run to the ledger with one `Update` inside the dispatch transaction (so the
dispatch transaction grows by exactly one item); the finalizer removes it inside the finalization
transaction. Each write carries its conditions and asks for the item's old image when a condition
fails, so the caller learns why without a read. A marker item `sk=BUDGET#SWEEP` (written once per
tenant, in `gsi1` under `SPEND#TENANTS`) lets the sweep list the tenants that have a ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_value
from chalicelib.domain.errors import DependencyUnavailable

LEDGER_SK = "BUDGET#LEDGER"
SWEEP_MARKER_SK = "BUDGET#SWEEP"
SWEEP_GSI_PK = "SPEND#TENANTS"

TransactItem = dict[str, Any]


def _unavailable(exc: Exception) -> DependencyUnavailable:
    return DependencyUnavailable("The spend ledger is unavailable; nothing was started. Retry shortly.",
                                 code="budget_unavailable")


class DynamoBudgetLedger:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def _key(self, tenant: str) -> dict[str, Any]:
        return {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": LEDGER_SK}}

    # -- writes that ride in other transactions ---------------------------------------------------
    def admit_write(self, tenant: str, user: str, runs: Sequence[tuple[str, int]]) -> TransactItem:
        """Register `runs` (id, deadline epoch) of `user` as open. Refused (with the old item) when the
        ledger is not initialised yet."""
        names: dict[str, str] = {"#runs": "runs", "#ua": "ua", "#u": user}
        values: dict[str, Any] = {":zero": {"N": "0"}, ":n": {"N": str(len(runs))}}
        sets = ["#ua.#u = if_not_exists(#ua.#u, :zero) + :n"]
        for i, (run_id, deadline) in enumerate(runs):
            names[f"#r{i}"] = run_id
            values[f":e{i}"] = to_value({"u": user, "d": int(deadline)})
            sets.append(f"#runs.#r{i} = :e{i}")
        return {"Update": {
            "TableName": self._table, "Key": self._key(tenant),
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "attribute_exists(#runs) AND attribute_exists(#ua)",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    def release_write(self, tenant: str, user: str, run_id: str) -> TransactItem:
        """Close a run's slot. Refused when the run is not open in the ledger (never admitted there)."""
        return {"Update": {
            "TableName": self._table, "Key": self._key(tenant),
            "UpdateExpression": "REMOVE #runs.#r SET #ua.#u = #ua.#u - :one",
            "ConditionExpression": "attribute_exists(#runs.#r) AND attribute_exists(#ua.#u)",
            "ExpressionAttributeNames": {"#runs": "runs", "#r": run_id, "#ua": "ua", "#u": user},
            "ExpressionAttributeValues": {":one": {"N": "1"}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    # -- direct writes ----------------------------------------------------------------------------
    def ensure_ledger(self, tenant: str) -> None:
        """Create the ledger's maps if missing (idempotent) and the tenant's sweep marker."""
        try:
            self._ddb.update_item(
                TableName=self._table, Key=self._key(tenant),
                UpdateExpression="SET #runs = if_not_exists(#runs, :empty), #ua = if_not_exists(#ua, :empty)",
                ExpressionAttributeNames={"#runs": "runs", "#ua": "ua"},
                ExpressionAttributeValues={":empty": {"M": {}}})
            self._ddb.put_item(TableName=self._table, Item={
                "pk": {"S": tenant_pk(tenant)}, "sk": {"S": SWEEP_MARKER_SK}, "entity": {"S": "spend_sweep"},
                "gsi1pk": {"S": SWEEP_GSI_PK}, "gsi1sk": {"S": tenant}, "tenant": {"S": tenant}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc

    # -- reads ------------------------------------------------------------------------------------
    def read(self, tenant: str) -> dict[str, Any] | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, Key=self._key(tenant), ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
        item = resp.get("Item")
        return from_item(item) if item else None

    def open_runs(self, tenant: str) -> Mapping[str, int]:
        item = self.read(tenant) or {}
        runs = item.get("runs") or {}
        return {run_id: int(entry.get("d", 0)) for run_id, entry in runs.items() if isinstance(entry, dict)}

    def tenants_with_open_runs(self) -> Sequence[str]:
        tenants: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table, "IndexName": "gsi1", "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": SWEEP_GSI_PK}}, "ProjectionExpression": "gsi1sk"}
        try:
            while True:
                resp = self._ddb.query(**kwargs)
                tenants.extend(str(i["gsi1sk"]["S"]) for i in resp.get("Items", []))
                last = resp.get("LastEvaluatedKey")
                if not last:
                    return tenants
                kwargs["ExclusiveStartKey"] = last
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
