"""Online and bulk evaluation records on DynamoDB: rules, their hit markers and stats, eval batches,
the line of runs waiting for an active-run slot, and open vendor batches.

Items (single table, `pk=TENANT#<t>`):
- `RULE#<rule_id>` the rule; `RULE#<rule_id>#STATS` what it did (counters, last matches).
- `RULEHIT#<rule_id>#<session_id>#<sha256>` one per (rule, session content): written with
  `attribute_not_exists`, in the same transaction as the run it created, so a re-upload of identical
  bytes or a redelivered notice creates nothing. TTL one year.
- `BATCH#<batch_id>` an eval batch: its plan, run ids and per-run entries.
- `BATCH#WAIT#<created_at>#<run_id>` a run waiting for a slot (`delayed`), oldest first; also in
  `gsi1` under `AUTOMATION#WAITING` so the scheduled poller finds every tenant's waiting runs.
- `VBATCH#<run_id>` the vendor batch of a batch-mode run's current attempt; in `gsi1` under
  `VBATCH#OPEN` while the vendor works on it (a sparse listing: closing removes the keys).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item, to_value
from chalicelib.domain.automation import RECENT_MATCHES, EvalRule, RuleMatch, RuleStats
from chalicelib.domain.errors import DependencyUnavailable, PreconditionFailed
from chalicelib.domain.eval_batches import BatchRunEntry, EvalBatch
from chalicelib.domain.vendor_batches import VendorBatchRecord
from chalicelib.observability import logger

TransactItem = dict[str, Any]

RULE_PREFIX = "RULE#"
RULEHIT_PREFIX = "RULEHIT#"
BATCH_PREFIX = "BATCH#"
BATCH_ID_PREFIX = "BATCH#ebt_"
WAIT_PREFIX = "BATCH#WAIT#"
VBATCH_PREFIX = "VBATCH#"
WAITING_GSI_PK = "AUTOMATION#WAITING"
OPEN_VBATCH_GSI_PK = "VBATCH#OPEN"
CREATING_GSI_PK = "AUTOMATION#CREATING"
MARKER_TTL_SECONDS = 365 * 24 * 3600


def _unavailable(action: str, exc: Exception) -> DependencyUnavailable:
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("automation store call failed", extra={"action": action, "aws_error": code})
    return DependencyUnavailable("The automation store is unavailable; retry shortly.", code="automation_unavailable")


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def rule_sk(rule_id: str) -> str:
    return f"{RULE_PREFIX}{rule_id}"


def stats_sk(rule_id: str) -> str:
    return f"{RULE_PREFIX}{rule_id}#STATS"


def marker_sk(rule_id: str, session_id: str, sha256: str) -> str:
    return f"{RULEHIT_PREFIX}{rule_id}#{session_id}#{sha256[:64]}"


def batch_sk(batch_id: str) -> str:
    return f"{BATCH_PREFIX}{batch_id}"


def wait_sk(created_at: str, run_id: str) -> str:
    return f"{WAIT_PREFIX}{created_at}#{run_id}"


def vbatch_sk(run_id: str) -> str:
    return f"{VBATCH_PREFIX}{run_id}"


@dataclass(frozen=True)
class WaitingRun:
    """A run in the waiting line (delayed until an active-run slot frees)."""

    tenant: str
    eval_run_id: str
    created_at: str
    user: str

    @property
    def sk(self) -> str:
        return wait_sk(self.created_at, self.eval_run_id)


class DynamoAutomationStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def _key(self, tenant: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": sk}}

    def _query_all(self, action: str, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        try:
            while True:
                resp = self._ddb.query(TableName=self._table, **kwargs)
                items.extend(from_item(i) for i in resp.get("Items", []))
                last = resp.get("LastEvaluatedKey")
                if not last:
                    return items
                kwargs["ExclusiveStartKey"] = last
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(action, exc) from exc

    # -- rules ------------------------------------------------------------------------------------
    def list_rules(self, tenant: str) -> list[tuple[EvalRule, RuleStats | None]]:
        items = self._query_all("list_rules", KeyConditionExpression="pk = :p AND begins_with(sk, :r)",
                                ExpressionAttributeValues={":p": {"S": tenant_pk(tenant)},
                                                           ":r": {"S": RULE_PREFIX}},
                                ConsistentRead=True)
        rules: dict[str, EvalRule] = {}
        stats: dict[str, RuleStats] = {}
        for item in items:
            if item.get("entity") == "eval_rule":
                rule = EvalRule.model_validate(item)
                rules[rule.rule_id] = rule
            elif item.get("entity") == "eval_rule_stats":
                stats[str(item["rule_id"])] = RuleStats.model_validate(item)
        return [(rule, stats.get(rule_id)) for rule_id, rule in rules.items()]

    def has_enabled_rules(self, tenant: str) -> bool:
        """Whether any rule of the tenant is enabled (keys and two attributes only: what an upload asks)."""
        items = self._query_all("has_enabled_rules", KeyConditionExpression="pk = :p AND begins_with(sk, :r)",
                                ProjectionExpression="#e, #en", ExpressionAttributeNames={"#e": "entity",
                                                                                          "#en": "enabled"},
                                ExpressionAttributeValues={":p": {"S": tenant_pk(tenant)},
                                                           ":r": {"S": RULE_PREFIX}})
        return any(i.get("entity") == "eval_rule" and i.get("enabled") for i in items)

    def get_rule(self, tenant: str, rule_id: str) -> tuple[EvalRule, RuleStats | None] | None:
        try:
            resp = self._ddb.batch_get_item(RequestItems={self._table: {
                "Keys": [self._key(tenant, rule_sk(rule_id)), self._key(tenant, stats_sk(rule_id))],
                "ConsistentRead": True}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("get_rule", exc) from exc
        rule: EvalRule | None = None
        stats: RuleStats | None = None
        for raw in resp.get("Responses", {}).get(self._table, []):
            item = from_item(raw)
            if item.get("entity") == "eval_rule":
                rule = EvalRule.model_validate(item)
            elif item.get("entity") == "eval_rule_stats":
                stats = RuleStats.model_validate(item)
        return (rule, stats) if rule is not None else None

    def put_rule(self, rule: EvalRule, *, expected_version: int | None) -> None:
        """Create (`expected_version` None: the id must be new) or replace the rule at that version."""
        item = {**rule.model_dump(mode="json"), "pk": tenant_pk(rule.tenant), "sk": rule_sk(rule.rule_id),
                "entity": "eval_rule"}
        kwargs: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if expected_version is not None:
            kwargs = {"ConditionExpression": "attribute_exists(pk) AND version = :v",
                      "ExpressionAttributeValues": {":v": {"N": str(expected_version)}}}
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item), **kwargs)
        except ClientError as exc:
            if _conditional_failed(exc):
                raise PreconditionFailed("The rule changed since you read it; read it again and retry.",
                                         code="version_mismatch", details={"rule_id": rule.rule_id}) from exc
            raise _unavailable("put_rule", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("put_rule", exc) from exc

    def delete_rule(self, tenant: str, rule_id: str) -> bool:
        try:
            resp = self._ddb.delete_item(TableName=self._table, Key=self._key(tenant, rule_sk(rule_id)),
                                         ReturnValues="ALL_OLD")
            self._ddb.delete_item(TableName=self._table, Key=self._key(tenant, stats_sk(rule_id)))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("delete_rule", exc) from exc
        return bool(resp.get("Attributes"))

    # -- rule hits and stats ---------------------------------------------------------------------------
    def marker_write(self, tenant: str, rule_id: str, session_id: str, sha256: str, *,
                     outcome: Mapping[str, Any], expires_at: int) -> TransactItem:
        """The (rule, session content) marker as a transaction item; refused when it exists."""
        item = {"pk": tenant_pk(tenant), "sk": marker_sk(rule_id, session_id, sha256), "entity": "eval_rule_hit",
                "rule_id": rule_id, "session_id": session_id, "expires_at": expires_at, **outcome}
        return {"Put": {"TableName": self._table, "Item": to_item(item),
                        "ConditionExpression": "attribute_not_exists(pk)"}}

    def put_marker(self, tenant: str, rule_id: str, session_id: str, sha256: str, *,
                   outcome: Mapping[str, Any], expires_at: int) -> bool:
        """Write the marker alone (a skip); False when this content was already decided."""
        put = self.marker_write(tenant, rule_id, session_id, sha256, outcome=outcome, expires_at=expires_at)["Put"]
        try:
            self._ddb.put_item(**put)
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise _unavailable("put_marker", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("put_marker", exc) from exc
        return True

    def record_rule_stats(self, tenant: str, rule_id: str, *, matched: int = 0, sampled_out: int = 0,
                          runs: int = 0, skipped_reason: str | None = None, match: RuleMatch | None = None) -> None:
        """Count one decision of a rule (one UpdateItem; the recent list is trimmed once it doubles)."""
        names: dict[str, str] = {"#m": "matched", "#so": "sampled_out", "#r": "runs", "#e": "entity",
                                 "#rid": "rule_id"}
        values: dict[str, Any] = {":m": {"N": str(matched)}, ":so": {"N": str(sampled_out)},
                                  ":r": {"N": str(runs)}, ":e": {"S": "eval_rule_stats"}, ":rid": {"S": rule_id}}
        sets = ["#e = :e", "#rid = :rid"]
        adds = ["#m :m", "#so :so", "#r :r"]
        if skipped_reason is not None:
            names.update({"#sk": "skipped", "#why": skipped_reason})
            values[":zero"] = {"N": "0"}
            values[":one"] = {"N": "1"}
            # A map entry cannot be ADDed under a missing map: create the map first (one expression can't
            # both create `skipped` and write into it), then count.
            self._update(tenant, stats_sk(rule_id), "SET #sk = if_not_exists(#sk, :empty)",
                         {"#sk": "skipped"}, {":empty": {"M": {}}})
            sets.append("#sk.#why = if_not_exists(#sk.#why, :zero) + :one")
        if match is not None:
            names.update({"#lm": "last_matches", "#at": "last_matched_at"})
            values.update({":new": {"L": [to_value(match.model_dump(mode="json"))]}, ":none": {"L": []},
                           ":at": {"S": match.at}})
            sets.append("#lm = list_append(:new, if_not_exists(#lm, :none))")
            sets.append("#at = :at")
        expression = "SET " + ", ".join(sets) + " ADD " + ", ".join(adds)
        attributes = self._update(tenant, stats_sk(rule_id), expression, names, values, returns="UPDATED_NEW")
        recent = attributes.get("last_matches") if attributes else None
        if isinstance(recent, list) and len(recent) > 2 * RECENT_MATCHES:
            drop = ", ".join(f"#lm[{i}]" for i in range(RECENT_MATCHES, len(recent)))
            # Trimming is housekeeping: if it fails, the next decision trims again.
            with contextlib.suppress(DependencyUnavailable):
                self._update(tenant, stats_sk(rule_id), f"REMOVE {drop}", {"#lm": "last_matches"}, {})

    def delete_markers(self, tenant: str, rule_id: str, session_id: str) -> int:
        """Forget every decision of a rule on a session (all its contents): the session was deleted."""
        items = self._query_all("delete_markers", KeyConditionExpression="pk = :p AND begins_with(sk, :m)",
                                ProjectionExpression="pk, sk",
                                ExpressionAttributeValues={":p": {"S": tenant_pk(tenant)},
                                                           ":m": {"S": f"{RULEHIT_PREFIX}{rule_id}#{session_id}#"}})
        for start in range(0, len(items), 25):
            requests = [{"DeleteRequest": {"Key": {"pk": {"S": str(i["pk"])}, "sk": {"S": str(i["sk"])}}}}
                        for i in items[start:start + 25]]
            try:
                pending: dict[str, Any] = {self._table: requests}
                for _ in range(5):
                    resp = self._ddb.batch_write_item(RequestItems=pending)
                    pending = resp.get("UnprocessedItems") or {}
                    if not pending:
                        break
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable("delete_markers", exc) from exc
        return len(items)

    def replace_last_matches(self, tenant: str, rule_id: str, matches: list[RuleMatch], *,
                             seen_at: str | None) -> bool:
        """Write a rule's recent matches (a deletion dropped some), unless a new match came in since
        `seen_at` was read (the caller reads and tries again)."""
        values: dict[str, Any] = {":l": to_value([m.model_dump(mode="json") for m in matches])}
        condition = "attribute_not_exists(#at)"
        if seen_at is not None:
            values[":seen"] = {"S": seen_at}
            condition = "#at = :seen"
        try:
            self._update(tenant, stats_sk(rule_id), "SET #lm = :l", {"#lm": "last_matches", "#at": "last_matched_at"},
                         values, condition=f"attribute_exists(pk) AND {condition}")
        except ClientError:
            return False
        return True

    def _update(self, tenant: str, sk: str, expression: str, names: Mapping[str, str], values: Mapping[str, Any],
                *, returns: str = "NONE", condition: str | None = None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"TableName": self._table, "Key": self._key(tenant, sk),
                                  "UpdateExpression": expression, "ReturnValues": returns}
        if names:
            kwargs["ExpressionAttributeNames"] = dict(names)
        if values:
            kwargs["ExpressionAttributeValues"] = dict(values)
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            resp = self._ddb.update_item(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _conditional_failed(exc):
                raise
            raise _unavailable("update", exc) from exc
        attrs = resp.get("Attributes")
        return from_item(attrs) if attrs else None

    # -- eval batches --------------------------------------------------------------------------------
    def batch_write(self, batch: EvalBatch) -> TransactItem:
        # Listed under AUTOMATION#CREATING until its runs exist, so the poller can finish an interrupted one.
        item = {**batch.model_dump(mode="json"), "pk": tenant_pk(batch.tenant), "sk": batch_sk(batch.batch_id),
                "entity": "eval_batch", "gsi1pk": CREATING_GSI_PK, "gsi1sk": f"{batch.created_at}#{batch.tenant}"}
        return {"Put": {"TableName": self._table, "Item": to_item(item),
                        "ConditionExpression": "attribute_not_exists(pk)"}}

    def batch_idempotency_write(self, tenant: str, user: str, key: str, batch_id: str, *,
                                expires_at: int) -> TransactItem:
        """The Idempotency-Key of a `POST /eval-batches` (its own sub-prefix of the dispatch records)."""
        item = {"pk": tenant_pk(tenant), "sk": f"IDEMPOTENCY#{user}#batch:{key}", "batch_id": batch_id,
                "expires_at": expires_at, "entity": "idempotency"}
        return {"Put": {"TableName": self._table, "Item": to_item(item),
                        "ConditionExpression": "attribute_not_exists(pk)"}}

    def find_idempotent_batch(self, tenant: str, user: str, key: str) -> str | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                      Key=self._key(tenant, f"IDEMPOTENCY#{user}#batch:{key}"))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("find_idempotent_batch", exc) from exc
        item = resp.get("Item")
        return str(item["batch_id"]["S"]) if item else None

    def create_batch(self, batch: EvalBatch, extra_writes: Sequence[TransactItem] = ()) -> bool:
        """The batch record with its idempotency record (and any ledger write) in one transaction;
        False when the idempotency record exists (a repeated request)."""
        items = [self.batch_write(batch), *extra_writes]
        try:
            self._ddb.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    return False
            raise _unavailable("create_batch", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("create_batch", exc) from exc
        return True

    def get_batch(self, tenant: str, batch_id: str) -> EvalBatch | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, Key=self._key(tenant, batch_sk(batch_id)),
                                      ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("get_batch", exc) from exc
        item = resp.get("Item")
        return EvalBatch.model_validate(from_item(item)) if item else None

    def list_batches(self, tenant: str, *, limit: int) -> list[EvalBatch]:
        try:
            resp = self._ddb.query(TableName=self._table, ScanIndexForward=False, Limit=limit,
                                   KeyConditionExpression="pk = :p AND begins_with(sk, :b)",
                                   ExpressionAttributeValues={":p": {"S": tenant_pk(tenant)},
                                                              ":b": {"S": BATCH_ID_PREFIX}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("list_batches", exc) from exc
        return [EvalBatch.model_validate(from_item(i)) for i in resp.get("Items", [])]

    def creating_batches(self, *, limit: int) -> list[tuple[str, str]]:
        """(tenant, batch id) of batches whose runs are not all created yet, oldest first."""
        try:
            resp = self._ddb.query(TableName=self._table, IndexName="gsi1", Limit=limit,
                                   KeyConditionExpression="gsi1pk = :p",
                                   ExpressionAttributeValues={":p": {"S": CREATING_GSI_PK}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("creating_batches", exc) from exc
        found = []
        for raw in resp.get("Items", []):
            item = from_item(raw)
            found.append((str(item["pk"]).removeprefix("TENANT#"), str(item["sk"]).removeprefix(BATCH_PREFIX)))
        return found

    def set_batch_fields(self, tenant: str, batch_id: str, fields: Mapping[str, Any], *,
                         only_if_status: Sequence[str] | None = None, removes: Sequence[str] = ()) -> bool:
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": to_value(v) for i, v in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))) + " ADD #ver :one"
        if removes:
            for i, attr in enumerate(removes):
                names[f"#x{i}"] = attr
            expression += " REMOVE " + ", ".join(f"#x{i}" for i in range(len(removes)))
        names["#ver"] = "version"
        values[":one"] = {"N": "1"}
        condition = "attribute_exists(pk)"
        if only_if_status:
            names["#st"] = "status"
            placeholders = []
            for i, status in enumerate(only_if_status):
                values[f":st{i}"] = {"S": status}
                placeholders.append(f":st{i}")
            condition += f" AND #st IN ({', '.join(placeholders)})"
        try:
            self._update(tenant, batch_sk(batch_id), expression, names, values, condition=condition)
        except ClientError:
            return False
        return True

    def set_batch_entries(self, tenant: str, batch_id: str, entries: Mapping[str, BatchRunEntry]) -> None:
        """Record where runs of the batch are (idempotent SETs of map entries)."""
        if not entries:
            return
        names: dict[str, str] = {"#runs": "runs"}
        values: dict[str, Any] = {}
        sets = []
        for i, (run_id, entry) in enumerate(entries.items()):
            names[f"#r{i}"] = run_id
            values[f":e{i}"] = to_value(entry.model_dump(mode="json"))
            sets.append(f"#runs.#r{i} = :e{i}")
        try:
            self._update(tenant, batch_sk(batch_id), "SET " + ", ".join(sets), names, values,
                         condition="attribute_exists(pk)")
        except ClientError as exc:
            logger.warning("batch entry update refused (batch gone?)", extra={
                "tenant": tenant, "batch_id": batch_id, "aws_error": exc.response.get("Error", {}).get("Code")})

    # -- the waiting line ---------------------------------------------------------------------------
    def wait_write(self, waiting: WaitingRun) -> TransactItem:
        item = {"pk": tenant_pk(waiting.tenant), "sk": waiting.sk, "entity": "waiting_run",
                "eval_run_id": waiting.eval_run_id, "created_at": waiting.created_at, "user": waiting.user,
                "tenant": waiting.tenant, "gsi1pk": WAITING_GSI_PK,
                "gsi1sk": f"{waiting.created_at}#{waiting.tenant}#{waiting.eval_run_id}"}
        return {"Put": {"TableName": self._table, "Item": to_item(item)}}

    def unwait_write(self, waiting: WaitingRun) -> TransactItem:
        return {"Delete": {"TableName": self._table, "Key": self._key(waiting.tenant, waiting.sk)}}

    def remove_waiting(self, waiting: WaitingRun) -> None:
        try:
            self._ddb.delete_item(**self.unwait_write(waiting)["Delete"])
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("remove_waiting", exc) from exc

    def waiting(self, tenant: str, *, limit: int) -> list[WaitingRun]:
        """The tenant's waiting runs, oldest first."""
        try:
            resp = self._ddb.query(TableName=self._table, Limit=limit, ConsistentRead=True,
                                   KeyConditionExpression="pk = :p AND begins_with(sk, :w)",
                                   ExpressionAttributeValues={":p": {"S": tenant_pk(tenant)},
                                                              ":w": {"S": WAIT_PREFIX}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("waiting", exc) from exc
        return [_waiting(from_item(i)) for i in resp.get("Items", [])]

    def waiting_anywhere(self, *, limit: int) -> list[WaitingRun]:
        """Waiting runs of every tenant, oldest first (the poller's safety net)."""
        try:
            resp = self._ddb.query(TableName=self._table, IndexName="gsi1", Limit=limit,
                                   KeyConditionExpression="gsi1pk = :p",
                                   ExpressionAttributeValues={":p": {"S": WAITING_GSI_PK}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("waiting_anywhere", exc) from exc
        return [_waiting(from_item(i)) for i in resp.get("Items", [])]

    # -- vendor batches ------------------------------------------------------------------------------
    def claim_vendor_batch(self, record: VendorBatchRecord) -> bool:
        """Record that this attempt of the run is being submitted; False when it already was (a
        redelivered job must not submit, and bill, the same questions twice)."""
        item = {**record.model_dump(mode="json"), "pk": tenant_pk(record.tenant), "sk": vbatch_sk(record.eval_run_id),
                "entity": "vendor_batch"}
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item),
                               ConditionExpression="attribute_not_exists(pk) OR attempt <> :a",
                               ExpressionAttributeValues={":a": {"S": record.attempt}})
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise _unavailable("claim_vendor_batch", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("claim_vendor_batch", exc) from exc
        return True

    def open_vendor_batch(self, record: VendorBatchRecord) -> None:
        """The vendor accepted the batch: store its id and list it for the poller."""
        fields = record.model_dump(mode="json")
        fields.update({"gsi1pk": OPEN_VBATCH_GSI_PK,
                       "gsi1sk": f"{record.submitted_at}#{record.tenant}#{record.eval_run_id}"})
        self._set(record.tenant, vbatch_sk(record.eval_run_id), fields, attempt=record.attempt)

    def release_vendor_batch_claim(self, record: VendorBatchRecord) -> None:
        """Submission failed before the vendor took anything: the next delivery may try again."""
        try:
            self._ddb.delete_item(TableName=self._table, Key=self._key(record.tenant, vbatch_sk(record.eval_run_id)),
                                  ConditionExpression="attempt = :a AND attribute_not_exists(vendor_batch_id)",
                                  ExpressionAttributeValues={":a": {"S": record.attempt}})
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise _unavailable("release_vendor_batch_claim", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("release_vendor_batch_claim", exc) from exc

    def update_vendor_batch(self, record: VendorBatchRecord, fields: Mapping[str, Any]) -> None:
        self._set(record.tenant, vbatch_sk(record.eval_run_id), fields, attempt=record.attempt)

    def close_vendor_batch(self, record: VendorBatchRecord, fields: Mapping[str, Any]) -> None:
        """Done with it (results written, or given up): off the poller's list."""
        self._set(record.tenant, vbatch_sk(record.eval_run_id), {**fields, "status": "closed"},
                  attempt=record.attempt, removes=("gsi1pk", "gsi1sk"))

    def get_vendor_batch(self, tenant: str, run_id: str) -> VendorBatchRecord | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, Key=self._key(tenant, vbatch_sk(run_id)),
                                      ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("get_vendor_batch", exc) from exc
        item = resp.get("Item")
        return VendorBatchRecord.model_validate(from_item(item)) if item else None

    def open_vendor_batches(self, *, limit: int) -> list[VendorBatchRecord]:
        """Vendor batches the vendor is still working on, oldest submission first (every tenant)."""
        try:
            resp = self._ddb.query(TableName=self._table, IndexName="gsi1", Limit=limit,
                                   KeyConditionExpression="gsi1pk = :p",
                                   ExpressionAttributeValues={":p": {"S": OPEN_VBATCH_GSI_PK}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("open_vendor_batches", exc) from exc
        keys = [{"pk": i["pk"], "sk": i["sk"]} for i in resp.get("Items", [])]
        records: list[VendorBatchRecord] = []
        # The index projects keys (and whatever the table's index keeps); read the records themselves.
        for start in range(0, len(keys), 100):
            try:
                got = self._ddb.batch_get_item(RequestItems={self._table: {"Keys": keys[start:start + 100],
                                                                            "ConsistentRead": True}})
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable("open_vendor_batches", exc) from exc
            records.extend(VendorBatchRecord.model_validate(from_item(i))
                           for i in got.get("Responses", {}).get(self._table, []))
        records.sort(key=lambda r: r.submitted_at or "")
        return records

    def _set(self, tenant: str, sk: str, fields: Mapping[str, Any], *, attempt: str,
             removes: Sequence[str] = ()) -> None:
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values: dict[str, Any] = {f":v{i}": to_value(v) for i, v in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        if removes:
            for i, attr in enumerate(removes):
                names[f"#x{i}"] = attr
            expression += " REMOVE " + ", ".join(f"#x{i}" for i in range(len(removes)))
        names["#att"] = "attempt"
        values[":att"] = {"S": attempt}
        try:
            self._update(tenant, sk, expression, names, values, condition="#att = :att")
        except ClientError as exc:
            # A newer attempt (a rerun) replaced the record: this one has nothing left to say.
            logger.info("vendor batch record moved on to a newer attempt", extra={"tenant": tenant, "sk": sk,
                                                                                 "aws_error": exc.response.get(
                                                                                     "Error", {}).get("Code")})


def _waiting(item: Mapping[str, Any]) -> WaitingRun:
    return WaitingRun(tenant=str(item["tenant"]), eval_run_id=str(item["eval_run_id"]),
                      created_at=str(item["created_at"]), user=str(item.get("user", "")))
