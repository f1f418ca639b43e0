"""The tenant's spend ledger on DynamoDB: ONE counter item per tenant holding everything a dispatch
must check together (quota slots and both budgets), and the open-run registry the lifecycle sweep walks.

Item `pk=TENANT#<t>, sk=BUDGET#LEDGER` (money in integer micro-dollars):
- `runs`: map run id → `{"u": user, "d": deadline epoch, "r": reserved}`, every run admitted and
  not finalized yet: a quota slot each (`size(runs)` is the tenant's active count);
- `ua`: map user → the user's open runs;
- `day` (UTC `YYYY-MM-DD`), `ud`/`uds`: map user → committed (reserved + settled) / spent today;
- `month` (UTC `YYYY-MM`), `mc`/`ms`: the tenant's committed / spent this month;
- `lv`/`pv`: the versions of the limits and price items the ledger was last told about; an admission
  computed from an older (cached) version is refused, so a cached limit can never let a run through;
- `am` / `ad`: the month / per-user day a threshold alert was last sent (once per period).

An admission is ONE `Update` inside the dispatch transaction whose condition checks the period, the
versions, both quotas and both budgets, and whose update adds the run(s), the slot(s) and the
reservation: concurrent dispatches serialise on the item, so none can overshoot. A refusal returns the
item's old image (no read), from which the service tells which limit it was. Settlement is one
`Update` inside the finalization transaction; a period that rolled over since the admission gets the
refund only where it still counts. A marker item `sk=BUDGET#SWEEP` (written with the ledger, in
`gsi1` under `SPEND#TENANTS`) lets the sweep list the tenants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_value
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.domain.spend import AdmissionCheck, Settlement

LEDGER_SK = "BUDGET#LEDGER"
SWEEP_MARKER_SK = "BUDGET#SWEEP"
SWEEP_GSI_PK = "SPEND#TENANTS"

TransactItem = dict[str, Any]


def _used(names: Mapping[str, str], values: Mapping[str, Any], *expressions: str
          ) -> tuple[dict[str, str], dict[str, Any]]:
    """Only the placeholders the expressions use (DynamoDB refuses unused ones)."""
    text = " ".join(expressions)

    def used(placeholder: str) -> bool:
        return re.search(re.escape(placeholder) + r"(?![A-Za-z0-9_])", text) is not None

    return ({k: v for k, v in names.items() if used(k)}, {k: v for k, v in values.items() if used(k)})


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
    def admit_write(self, tenant: str, check: AdmissionCheck, runs: Sequence[tuple[str, int]]) -> TransactItem:
        """Admit `runs` (id, deadline epoch) of `check.user`, or be refused with the old item."""
        n = len(runs)
        reserve = check.reserve_micros
        names: dict[str, str] = {"#runs": "runs", "#ua": "ua", "#u": check.user, "#day": "day", "#month": "month",
                                 "#lv": "lv", "#pv": "pv", "#ud": "ud", "#mc": "mc"}
        values: dict[str, Any] = {
            ":zero": {"N": "0"}, ":n": {"N": str(n)}, ":res": {"N": str(reserve)}, ":d": {"S": check.day},
            ":m": {"S": check.month}, ":lv": {"N": str(check.limits_version)},
            ":pv": {"N": str(check.prices_version)},
            ":tmax": {"N": str(check.max_active_tenant - n)}, ":umax": {"N": str(check.max_active_user - n)}}
        conditions = ["attribute_exists(#runs)", "#day = :d", "#month = :m", "#lv = :lv", "#pv = :pv",
                      "size(#runs) <= :tmax", "(attribute_not_exists(#ua.#u) OR #ua.#u <= :umax)"]
        if check.month_cap_micros is not None:
            values[":mleft"] = {"N": str(check.month_cap_micros - reserve)}
            conditions.append("#mc <= :mleft")
        if check.day_cap_micros is not None:
            values[":uleft"] = {"N": str(check.day_cap_micros - reserve)}
            conditions.append("(attribute_not_exists(#ud.#u) OR #ud.#u <= :uleft)")
        sets = ["#ua.#u = if_not_exists(#ua.#u, :zero) + :n", "#ud.#u = if_not_exists(#ud.#u, :zero) + :res",
                "#mc = #mc + :res"]
        per_run = reserve // n if n else 0
        for i, (run_id, deadline) in enumerate(runs):
            names[f"#r{i}"] = run_id
            # The first run carries the remainder, so the entries add up to the reservation exactly.
            amount = per_run + (reserve - per_run * n if i == 0 else 0)
            values[f":e{i}"] = to_value({"u": check.user, "d": int(deadline), "r": amount})
            sets.append(f"#runs.#r{i} = :e{i}")
        return {"Update": {
            "TableName": self._table, "Key": self._key(tenant), "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    def settle_write(self, tenant: str, s: Settlement, scope: Literal["day", "month", "none"]) -> TransactItem:
        """Close the run's slot and replace its reservation by its actual cost, in the periods that
        still hold it: `day` (the ledger is still on the admission's day), `month` (a later day of
        the same month: only the month counts it), `none` (a later month)."""
        names: dict[str, str] = {"#runs": "runs", "#r": s.run_id, "#ua": "ua", "#u": s.user, "#day": "day",
                                 "#month": "month"}
        values: dict[str, Any] = {":one": {"N": "1"}, ":d": {"S": s.day}, ":m": {"S": s.month}}
        sets = ["#ua.#u = #ua.#u - :one"]
        delta = s.charged_micros - s.reserved_micros  # negative: the unused part comes back
        if scope == "day":
            condition = "#day = :d"
            names.update({"#ud": "ud", "#uds": "uds", "#mc": "mc", "#ms": "ms"})
            values.update({":delta": {"N": str(delta)}, ":spent": {"N": str(s.charged_micros)},
                           ":zero": {"N": "0"}})
            sets += ["#ud.#u = if_not_exists(#ud.#u, :zero) + :delta",
                     "#uds.#u = if_not_exists(#uds.#u, :zero) + :spent", "#mc = #mc + :delta", "#ms = #ms + :spent"]
        elif scope == "month":
            condition = "#month = :m AND #day <> :d"
            names.update({"#mc": "mc", "#ms": "ms"})
            values.update({":delta": {"N": str(delta)}, ":spent": {"N": str(s.charged_micros)}})
            sets += ["#mc = #mc + :delta", "#ms = #ms + :spent"]
        else:
            condition = "#month <> :m"
        update = "REMOVE #runs.#r SET " + ", ".join(sets)
        full_condition = f"attribute_exists(#runs.#r) AND attribute_exists(#ua.#u) AND {condition}"
        names, values = _used(names, values, update, full_condition)
        return {"Update": {
            "TableName": self._table, "Key": self._key(tenant), "UpdateExpression": update,
            "ConditionExpression": full_condition, "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    def versions_write(self, tenant: str, *, limits_version: int | None = None,
                       prices_version: int | None = None) -> TransactItem:
        """Tell the ledger the limits/prices changed (rides in the admin write's transaction)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets = []
        if limits_version is not None:
            names["#lv"] = "lv"
            values[":lv"] = {"N": str(limits_version)}
            sets.append("#lv = :lv")
        if prices_version is not None:
            names["#pv"] = "pv"
            values[":pv"] = {"N": str(prices_version)}
            sets.append("#pv = :pv")
        return {"Update": {"TableName": self._table, "Key": self._key(tenant),
                           "UpdateExpression": "SET " + ", ".join(sets),
                           "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}

    # -- direct writes ----------------------------------------------------------------------------
    def roll_period(self, tenant: str, *, day: str, month: str, observed: Mapping[str, Any] | None,
                    limits_version: int, prices_version: int) -> None:
        """Create the ledger, or move it to a new day/month (today's per-user budgets start at zero;
        a new month's tenant budget too). Conditional on what the caller observed: of concurrent
        rollers one wins and the others find the ledger current. Versions are only filled in when
        missing (the caller read them fresh): the admin writes own them."""
        observed = observed or {}
        names = {"#runs": "runs", "#ua": "ua", "#day": "day", "#ud": "ud", "#uds": "uds", "#ad": "ad",
                 "#month": "month", "#mc": "mc", "#ms": "ms", "#lv": "lv", "#pv": "pv"}
        values: dict[str, Any] = {":empty": {"M": {}}, ":d": {"S": day}, ":zero": {"N": "0"},
                                  ":lv": {"N": str(limits_version)}, ":pv": {"N": str(prices_version)}}
        sets = ["#runs = if_not_exists(#runs, :empty)", "#ua = if_not_exists(#ua, :empty)",
                "#lv = if_not_exists(#lv, :lv)", "#pv = if_not_exists(#pv, :pv)"]
        if observed.get("day") != day:
            sets += ["#day = :d", "#ud = :empty", "#uds = :empty", "#ad = :empty"]
        if observed.get("month") != month:
            values[":m"] = {"S": month}
            sets += ["#month = :m", "#mc = :zero", "#ms = :zero"]
        if "day" in observed:
            values[":od"] = {"S": str(observed["day"])}
            condition = "#day = :od"
        else:
            condition = "attribute_not_exists(#day)"
        update = "SET " + ", ".join(sets)
        names, values = _used(names, values, update, condition)
        try:
            self._ddb.update_item(TableName=self._table, Key=self._key(tenant), UpdateExpression=update,
                                  ConditionExpression=condition, ExpressionAttributeNames=names,
                                  ExpressionAttributeValues=values)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise _unavailable(exc) from exc
            return  # another dispatch rolled it first
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        if "runs" not in observed:
            self._mark_for_sweep(tenant)

    def _mark_for_sweep(self, tenant: str) -> None:
        try:
            self._ddb.put_item(TableName=self._table, Item={
                "pk": {"S": tenant_pk(tenant)}, "sk": {"S": SWEEP_MARKER_SK}, "entity": {"S": "spend_sweep"},
                "gsi1pk": {"S": SWEEP_GSI_PK}, "gsi1sk": {"S": tenant}, "tenant": {"S": tenant}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc

    def mark_alert(self, tenant: str, *, budget: Literal["tenant_monthly", "user_daily"], period: str,
                   threshold_micros: int, user: str | None = None) -> bool:
        """Record that `budget` crossed its alert threshold in `period`, once: True for the one caller
        that flips the flag (and so sends the alert), False when it is below or already alerted."""
        if budget == "tenant_monthly":
            names = {"#am": "am", "#ms": "ms", "#month": "month"}
            update = "SET #am = :p"
            condition = "#month = :p AND #ms >= :t AND (attribute_not_exists(#am) OR #am <> :p)"
        else:
            names = {"#ad": "ad", "#uds": "uds", "#u": user or "", "#day": "day"}
            update = "SET #ad.#u = :p"
            condition = "#day = :p AND #uds.#u >= :t AND (attribute_not_exists(#ad.#u) OR #ad.#u <> :p)"
        try:
            self._ddb.update_item(TableName=self._table, Key=self._key(tenant), UpdateExpression=update,
                                  ConditionExpression=condition, ExpressionAttributeNames=names,
                                  ExpressionAttributeValues={":p": {"S": period}, ":t": {"N": str(threshold_micros)}})
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        return True

    def clear_alert(self, tenant: str, *, budget: Literal["tenant_monthly", "user_daily"],
                    user: str | None = None) -> None:
        """Undo `mark_alert` when the alert could not be sent, so the next settlement tries again."""
        expr, names = ("REMOVE #am", {"#am": "am"}) if budget == "tenant_monthly" else \
            ("REMOVE #ad.#u", {"#ad": "ad", "#u": user or ""})
        try:
            self._ddb.update_item(TableName=self._table, Key=self._key(tenant), UpdateExpression=expr,
                                  ExpressionAttributeNames=names)
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
