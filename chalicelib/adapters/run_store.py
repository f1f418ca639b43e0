"""EvalRunStore over DynamoDB: runs, per-question outcomes and idempotent dispatch records.

Layout (single table): run `pk=TENANT#<t>, sk=RUN#<id>`, listed per session through
`gsi1pk=SESSIONRUNS#<t>#<session>, gsi1sk=<created_at>#<id>` and across the tenant through the
history indexes (`adapters/run_index.py`: their keys are written here, with every status change
and result); an idempotency record
`pk=TENANT#<t>, sk=IDEMPOTENCY#<user>#<key>` (TTL 24 h) points at the run it created.

Every state change is a conditional write on `status`, so a cancel, a deadline or a result that
races a worker can never be overwritten: the loser gets `RunStateConflict` and stops.

Dispatch, a rerun's reopen and a run's finalization take `extra_writes`: opaque transaction items
built by other adapters (the spend ledger's reservation and settlement, later aggregates) that
commit atomically with the run's own write. When one of them fails its condition the caller gets
`ExtraWriteRefused` with that item's old image, and decides (refuse, or fix and retry).
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo import from_item, remove_clause, set_clause, tenant_pk, to_item, to_value
from chalicelib.adapters.run_index import SCORE_ATTRIBUTES, index_attributes, score_attributes, status_attributes
from chalicelib.domain.errors import Conflict, DependencyUnavailable, InvalidRequest, NotFound
from chalicelib.domain.evaluation import QuestionOutcome, SessionEvalCompleted, TokenUsage
from chalicelib.domain.json_depth import loads_bounded
from chalicelib.domain.runs import EvalRun, RunError

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# DynamoDB cancels a transaction that touches an item another transaction is writing
# (`TransactionConflict`); hot items (a tenant's spend ledger) make that routine, so retry a few
# times with jittered backoff before reporting the store unavailable.
TRANSACTION_CONFLICT_RETRIES = 6
TRANSACTION_CONFLICT_BASE_SECONDS = 0.02

TransactItem = dict[str, Any]


class RunStateConflict(Conflict):
    """The run is no longer in the state the writer expected (cancelled, timed out, finished)."""

    code = "run_state_conflict"


class DuplicateDispatch(Exception):
    """An Idempotency-Key was already used: carries the run created the first time."""

    def __init__(self, eval_run_id: str) -> None:
        super().__init__(eval_run_id)
        self.eval_run_id = eval_run_id


class ExtraWriteRefused(Exception):
    """One of the caller's `extra_writes` failed its condition: `position` in the list given, and the
    item as it was (`ReturnValuesOnConditionCheckFailure=ALL_OLD`; None when it does not exist)."""

    def __init__(self, position: int, item: dict[str, Any] | None) -> None:
        super().__init__(f"extra write {position} refused")
        self.position = position
        self.item = item


class SessionChanged(Conflict):
    """The session was replaced (a new revision) after the estimate the dispatch relied on."""

    code = "session_changed"


class AlreadyFinalized(Exception):
    """The run was finalized already (or left the terminal state it was finalized for): nothing to do."""


def run_sk(run_id: str) -> str:
    return f"RUN#{run_id}"


def run_item(run: EvalRun) -> dict[str, Any]:
    """A run as stored: its fields, keys, the per-session list key and the history index attributes
    (a run stored with a result also gets its score attributes, as `finish` would set them)."""
    item = run.model_dump(mode="json")
    item.update({"pk": tenant_pk(run.tenant), "sk": run_sk(run.eval_run_id),
                 "gsi1pk": f"SESSIONRUNS#{run.tenant}#{run.session_id}",
                 "gsi1sk": f"{run.created_at}#{run.eval_run_id}", "entity": "eval_run"})
    item.update(index_attributes(item))
    if run.result is not None:
        item.update(score_attributes(run.tenant, run.result.overall_score,
                                     {c.name: c.score for c in run.result.categories}))
    return item


def _dump_outcome(outcome: QuestionOutcome) -> dict[str, Any]:
    return outcome.model_dump(mode="json")


def _with_status_index(tenant: str, sets: dict[str, Any]) -> dict[str, Any]:
    """The status index partition moves with the status, in the same write."""
    if "status" not in sets:
        return sets
    return {**sets, **status_attributes(tenant, str(sets["status"]))}


def _update_expression(sets: Mapping[str, Any], *, removes: tuple[str, ...] = (), add_version: bool = True,
                       cond_values: Mapping[str, Any] | None = None
                       ) -> tuple[str, dict[str, str], dict[str, Any]]:
    """SET (dotted paths into maps allowed) / ADD version / REMOVE, with every name a placeholder."""
    names: dict[str, str] = {"#status": "status"}
    values: dict[str, Any] = {}
    assignments = set_clause(sets, names, values)
    expr = "SET " + assignments if assignments else ""
    if add_version:
        names["#ver"] = "version"
        values[":one"] = {"N": "1"}
        expr += " ADD #ver :one"
    if removes:
        expr += " REMOVE " + remove_clause(removes, names)
    for placeholder, raw in (cond_values or {}).items():
        values[placeholder] = to_value(raw)
    return expr.strip(), names, values


def _only_transaction_conflicts(exc: ClientError) -> bool:
    if exc.response["Error"]["Code"] != "TransactionCanceledException":
        return False
    codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
    return "TransactionConflict" in codes and all(c in ("None", "TransactionConflict") for c in codes)


def _raise_extra_refusal(exc: ClientError, offset: int) -> None:
    """Raise ExtraWriteRefused for the first of the caller's items (from `offset`) whose condition failed."""
    reasons = exc.response.get("CancellationReasons", [])
    for position, reason in enumerate(reasons[offset:]):
        if reason.get("Code") == "ConditionalCheckFailed":
            old = reason.get("Item")
            raise ExtraWriteRefused(position, from_item(dict(old)) if old else None) from exc


class DynamoRunStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    # -- reads -------------------------------------------------------------------------------
    def get(self, tenant: str, run_id: str) -> EvalRun | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                      Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk(run_id)}})
        except ClientError as exc:
            raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
        item = resp.get("Item")
        return EvalRun.model_validate(from_item(item)) if item else None

    def results(self, tenant: str, run_ids: list[str]) -> dict[str, SessionEvalCompleted]:
        """The stored results of up to 100 runs in one BatchGetItem (plus retries of unprocessed keys)."""
        keys = [{"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk(r)}} for r in dict.fromkeys(run_ids)]
        found: dict[str, SessionEvalCompleted] = {}
        if not keys:
            return found
        request: dict[str, Any] = {self._table: {"Keys": keys, "ProjectionExpression": "sk, #r",
                                                 "ExpressionAttributeNames": {"#r": "result"}}}
        for attempt in range(8):
            if attempt:
                time.sleep(min(0.05 * 2 ** attempt, 1.0))  # unprocessed keys: DynamoDB asks for backoff
            try:
                resp = self._ddb.batch_get_item(RequestItems=request)
            except ClientError as exc:
                raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
            for item in resp.get("Responses", {}).get(self._table, []):
                data = from_item(item)
                if data.get("result"):
                    found[str(data["sk"]).removeprefix("RUN#")] = SessionEvalCompleted.model_validate(data["result"])
            request = resp.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise DependencyUnavailable("The run store is throttling reads; retry shortly.")

    def require(self, tenant: str, run_id: str) -> EvalRun:
        run = self.get(tenant, run_id)
        if run is None:
            raise NotFound(f"No eval run '{run_id}' in this tenant.", code="eval_run_not_found")
        return run

    def status_of(self, tenant: str, run_id: str) -> str | None:
        """Cheap poll used by the worker to notice a cancel while judges are in flight."""
        resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True, ProjectionExpression="#s",
                                  ExpressionAttributeNames={"#s": "status"},
                                  Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk(run_id)}})
        item = resp.get("Item")
        return str(item["status"]["S"]) if item else None

    def snapshots(self, tenant: str, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Status, delay, end time, cost and finalization of many runs (BatchGetItem, 100 at a time): what
        an eval batch's progress needs, without reading the runs' outcomes and results."""
        found: dict[str, dict[str, Any]] = {}
        names = {"#id": "eval_run_id", "#s": "status", "#d": "delayed", "#f": "finished_at", "#c": "cost",
                 "#z": "finalized_at"}
        for start in range(0, len(run_ids), 100):
            keys = [{"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk(r)}} for r in run_ids[start:start + 100]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True,
                                                     "ProjectionExpression": "#id, #s, #d, #f, #c, #z",
                                                     "ExpressionAttributeNames": names}}
            for _ in range(5):
                try:
                    resp = self._ddb.batch_get_item(RequestItems=request)
                except ClientError as exc:
                    raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
                for raw in resp.get("Responses", {}).get(self._table, []):
                    item = from_item(raw)
                    found[str(item["eval_run_id"])] = item
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
        return found

    def list_for_session(self, tenant: str, session_id: str, *, limit: int = 50,
                         cursor: str | None = None) -> tuple[list[EvalRun], str | None]:
        kwargs: dict[str, Any] = {
            "TableName": self._table, "IndexName": "gsi1", "ScanIndexForward": False, "Limit": limit,
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": f"SESSIONRUNS#{tenant}#{session_id}"}},
        }
        if cursor:
            try:
                kwargs["ExclusiveStartKey"] = loads_bounded(base64.urlsafe_b64decode(cursor.encode()))
            except ValueError as exc:
                raise InvalidRequest("The cursor is not valid; start again without it.",
                                     code="invalid_cursor") from exc
        resp = self._ddb.query(**kwargs)
        runs = [EvalRun.model_validate(from_item(i)) for i in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        next_cursor = base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None
        return runs, next_cursor

    # -- dispatch ----------------------------------------------------------------------------
    def create(self, run: EvalRun, *, session_key: dict[str, str] | None = None,
               session_revision: int | None = None, extra_writes: Sequence[TransactItem] = ()) -> None:
        """Store a new run in one transaction with its idempotency record and, when given, a
        check that the session exists (at `session_revision`, when given: the revision the run's
        cost was estimated on), so dispatch costs a single DynamoDB round trip."""
        item = run_item(run)
        items: list[dict[str, Any]] = []
        if session_key is not None:
            check: dict[str, Any] = {
                "TableName": self._table, "ConditionExpression": "attribute_exists(pk)",
                "Key": {"pk": {"S": session_key["pk"]}, "sk": {"S": session_key["sk"]}}}
            if session_revision is not None:
                check.update({"ConditionExpression": "attribute_exists(pk) AND #rev = :rev",
                              "ExpressionAttributeNames": {"#rev": "revision"},
                              "ExpressionAttributeValues": {":rev": {"N": str(session_revision)}},
                              "ReturnValuesOnConditionCheckFailure": "ALL_OLD"})
            items.append({"ConditionCheck": check})
        items.append({"Put": {"TableName": self._table, "Item": to_item(item),
                              "ConditionExpression": "attribute_not_exists(pk)"}})
        if run.idempotency_key:
            from chalicelib.domain.clock import parse_iso

            expires = int(parse_iso(run.created_at).timestamp()) + IDEMPOTENCY_TTL_SECONDS
            items.append({"Put": {"TableName": self._table, "ConditionExpression": "attribute_not_exists(pk)",
                                  "Item": to_item({"pk": tenant_pk(run.tenant),
                                                   "sk": self._idem_sk(run.created_by, run.idempotency_key),
                                                   "eval_run_id": run.eval_run_id, "expires_at": expires,
                                                   "entity": "idempotency"})}})
        own = len(items)
        items.extend(extra_writes)
        try:
            self._transact(items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            offset = 0
            if session_key is not None:
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    first: Any = (exc.response.get("CancellationReasons") or [{}])[0]
                    if session_revision is not None and first.get("Item"):
                        raise SessionChanged("The session was replaced after this estimate; estimate again.",
                                             details={"session_id": run.session_id}) from exc
                    raise NotFound(f"No session '{run.session_id}' in this tenant; upload it first.",
                                   code="session_not_found") from exc
                offset = 1
            if run.idempotency_key and len(reasons) > offset + 1 and reasons[offset + 1] == "ConditionalCheckFailed":
                existing = self.find_idempotent(run.tenant, run.created_by, run.idempotency_key)
                if existing:
                    raise DuplicateDispatch(existing) from exc
            _raise_extra_refusal(exc, own)
            raise Conflict("The run could not be created; retry with a new request.",
                           code="dispatch_conflict") from exc

    def create_many(self, runs: Sequence[EvalRun], *,
                    companions: Mapping[str, Sequence[TransactItem]] | None = None) -> list[str]:
        """Store an eval batch's runs, each only if it does not exist yet, each right after its
        `companions` (unconditional puts of items that belong to it, e.g. its place in the waiting line).

        Single writes, not one transaction: a batch's runs are independent, and a large transaction
        costs far more than the writes it holds. Idempotent for a retried batch: a run that exists is
        left alone; a companion written before a crash is written again (harmless: it only ever points
        at its run). Returns the ids stored by this call."""
        from concurrent.futures import ThreadPoolExecutor

        companions = companions or {}

        def store(run: EvalRun) -> str | None:
            try:
                for item in companions.get(run.eval_run_id, ()):
                    self._ddb.put_item(**item["Put"])
                self._ddb.put_item(TableName=self._table, Item=to_item(run_item(run)),
                                   ConditionExpression="attribute_not_exists(pk)")
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    return None  # stored by an earlier attempt
                raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
            return run.eval_run_id

        if len(runs) <= 1:
            return [r for r in map(store, runs) if r is not None]
        with ThreadPoolExecutor(max_workers=min(8, len(runs))) as pool:
            return [r for r in pool.map(store, runs) if r is not None]

    def promote_delayed(self, tenant: str, run_id: str, *, deadline_at: str, fields: Mapping[str, Any],
                        extra_writes: Sequence[TransactItem] = ()) -> EvalRun:
        """A delayed (queued, waiting for a slot) run takes its slot: no longer delayed, its deadline
        counted from now, with `extra_writes` (the spend ledger's admission) in the same transaction."""
        sets: dict[str, Any] = {"delayed": False, "deadline_at": deadline_at, **fields}
        condition = "#status = :q AND delayed = :yes"
        values = {":q": "queued", ":yes": True}
        if not extra_writes:
            return self._update(tenant, run_id, sets=sets, condition=condition, cond_values=values)
        return self._update_in_transaction(tenant, run_id, sets=sets, condition=condition, cond_values=values,
                                           extra_writes=extra_writes)

    def _transact(self, items: list[TransactItem]) -> None:
        """TransactWriteItems, retrying cancellations caused only by concurrent transactions."""
        for attempt in range(TRANSACTION_CONFLICT_RETRIES + 1):
            try:
                self._ddb.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                if not _only_transaction_conflicts(exc) or attempt == TRANSACTION_CONFLICT_RETRIES:
                    if _only_transaction_conflicts(exc):
                        raise DependencyUnavailable("The run store is busy; retry shortly.",
                                                    code="store_busy") from exc
                    raise
                time.sleep(TRANSACTION_CONFLICT_BASE_SECONDS * (2 ** attempt) * (0.5 + random.random()))

    @staticmethod
    def _idem_sk(user: str, key: str) -> str:
        return f"IDEMPOTENCY#{user}#{key}"

    def find_idempotent(self, tenant: str, user: str, key: str) -> str | None:
        resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                  Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": self._idem_sk(user, key)}})
        item = resp.get("Item")
        return str(item["eval_run_id"]["S"]) if item else None

    # -- state changes -----------------------------------------------------------------------
    def _update(self, tenant: str, run_id: str, *, sets: dict[str, Any], condition: str,
                cond_values: dict[str, Any] | None = None, removes: tuple[str, ...] = (),
                add_version: bool = True) -> EvalRun:
        sets = _with_status_index(tenant, sets)
        expr, names, values = _update_expression(sets, removes=removes, add_version=add_version,
                                                 cond_values=cond_values)
        try:
            resp = self._ddb.update_item(
                TableName=self._table, Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk(run_id)}},
                UpdateExpression=expr, ConditionExpression=f"attribute_exists(pk) AND ({condition})",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                old: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
                status = from_item(old).get("status") if old else None
                if old is None:
                    raise NotFound(f"No eval run '{run_id}' in this tenant.", code="eval_run_not_found") from exc
                raise RunStateConflict(f"The eval run is {status}; this change no longer applies.",
                                       details={"status": status}) from exc
            raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
        return EvalRun.model_validate(from_item(resp["Attributes"]))

    def _update_in_transaction(self, tenant: str, run_id: str, *, sets: dict[str, Any], condition: str,
                               cond_values: dict[str, Any] | None = None, removes: tuple[str, ...] = (),
                               extra_writes: Sequence[TransactItem]) -> EvalRun:
        """`_update` together with other items in one transaction; the run is read back after."""
        sets = _with_status_index(tenant, sets)
        expr, names, values = _update_expression(sets, removes=removes, add_version=True, cond_values=cond_values)
        update: TransactItem = {"Update": {
            "TableName": self._table, "Key": {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk(run_id)}},
            "UpdateExpression": expr, "ConditionExpression": f"attribute_exists(pk) AND ({condition})",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
        try:
            self._transact([update, *extra_writes])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
            reasons = exc.response.get("CancellationReasons", [])
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                old = reasons[0].get("Item")
                if old is None:
                    raise NotFound(f"No eval run '{run_id}' in this tenant.", code="eval_run_not_found") from exc
                status = from_item(dict(old)).get("status")
                raise RunStateConflict(f"The eval run is {status}; this change no longer applies.",
                                       details={"status": status}) from exc
            _raise_extra_refusal(exc, 1)
            raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
        return self.require(tenant, run_id)

    def start(self, tenant: str, run_id: str, *, now: str, outcomes: list[QuestionOutcome],
              context: dict[str, Any] | None = None, lease_seconds: float | None = None,
              lease_id: str | None = None) -> EvalRun:
        """queued/running → running, marking the given questions running in the same write.

        With `lease_seconds` (the server worker) the write also takes a lease: SQS may deliver one
        message twice at once, and the second worker must not judge (and bill) the run again.
        `lease_id` names this delivery's claim: the same claim sent again (the client retrying a write
        whose answer timed out although DynamoDB applied it) still succeeds, instead of finding the
        lease held and leaving the run `running` with nobody judging it until its deadline.
        """
        sets: dict[str, Any] = {"status": "running", "started_at": now}
        for o in outcomes:
            sets[f"outcomes.{o.question_id}"] = _dump_outcome(o)
        if context is not None:
            sets["context"] = context
        condition = "#status IN (:q, :r)"
        values: dict[str, Any] = {":q": "queued", ":r": "running"}
        if lease_seconds is not None:
            from chalicelib.domain.clock import parse_iso

            now_epoch = int(parse_iso(now).timestamp())
            sets["lease_until"] = now_epoch + int(lease_seconds) + 1
            free = "attribute_not_exists(lease_until) OR lease_until < :now_epoch"
            if lease_id is not None:
                sets["lease_id"] = lease_id
                free += " OR lease_id = :lease_id"
                values[":lease_id"] = lease_id
            condition += f" AND ({free})"
            values[":now_epoch"] = now_epoch
        return self._update(tenant, run_id, sets=sets, condition=condition, cond_values=values)

    def claim_for_worker(self, tenant: str, run_id: str, *, now: str) -> EvalRun:
        """Counts a delivery attempt; fails if the run is already terminal."""
        names_cond = "#status IN (:q, :r)"
        run = self._update(tenant, run_id, sets={"last_claimed_at": now}, condition=names_cond,
                           cond_values={":q": "queued", ":r": "running"})
        return run

    def record_outcomes(self, tenant: str, run_id: str, outcomes: list[QuestionOutcome],
                        usage: TokenUsage, *, extra: dict[str, Any] | None = None) -> EvalRun:
        """Progress write: several finished questions and the run's usage total in one update."""
        sets: dict[str, Any] = {f"outcomes.{o.question_id}": _dump_outcome(o) for o in outcomes}
        sets["usage"] = usage.model_dump(mode="json")
        sets.update(extra or {})
        return self._update(tenant, run_id, sets=sets, condition="#status = :r", cond_values={":r": "running"})

    def finish(self, tenant: str, run_id: str, *, status: str, now: str, usage: TokenUsage,
               result: SessionEvalCompleted | None = None, error: RunError | None = None,
               outcomes: list[QuestionOutcome] = (),  # type: ignore[assignment]
               from_statuses: tuple[str, ...] = ("running",), extra: dict[str, Any] | None = None) -> EvalRun:
        sets: dict[str, Any] = {"status": status, "finished_at": now, "usage": usage.model_dump(mode="json")}
        for o in outcomes:
            sets[f"outcomes.{o.question_id}"] = _dump_outcome(o)
        if result is not None:
            sets["result"] = result.model_dump(mode="json")
            sets.update(score_attributes(tenant, result.overall_score,
                                         {c.name: c.score for c in result.categories}))
        if error is not None:
            sets["error"] = error.model_dump(mode="json")
        sets.update(extra or {})
        placeholders = {f":f{i}": s for i, s in enumerate(from_statuses)}
        condition = f"#status IN ({', '.join(placeholders)})"
        return self._update(tenant, run_id, sets=sets, condition=condition, cond_values=placeholders,
                            removes=("lease_until",))

    def cancel(self, tenant: str, run_id: str, *, now: str, message: str,
               outcomes: list[QuestionOutcome] = (),  # type: ignore[assignment]
               from_statuses: tuple[str, ...] = ("queued", "running")) -> EvalRun:
        """queued/running → cancelled; unfinished questions are marked cancelled in the same write.

        `from_statuses` narrows it to the status the caller saw, so it knows who finalizes the run
        (a queued run at once; a running server run when its worker has stopped)."""
        err = RunError(code="cancelled", message=message)
        sets: dict[str, Any] = {"status": "cancelled", "finished_at": now, "cancel_requested": True,
                                "error": err.model_dump()}
        for o in outcomes:
            sets[f"outcomes.{o.question_id}"] = _dump_outcome(o)
        placeholders = {f":f{i}": s for i, s in enumerate(from_statuses)}
        return self._update(tenant, run_id, sets=sets, condition=f"#status IN ({', '.join(placeholders)})",
                            cond_values=placeholders, removes=("lease_until",))

    def reopen_for_rerun(self, tenant: str, run_id: str, *, deadline_at: str, outcomes: list[QuestionOutcome],
                         expected_version: int, extra_fields: Mapping[str, Any] | None = None,
                         extra_writes: Sequence[TransactItem] = ()) -> EvalRun:
        """A finished and finalized run → queued again, keeping scored questions and resetting the rest.

        The finalized marker goes (the new attempt is finalized on its own); `extra_writes` (the spend
        ledger's reservation for the attempt) commit in the same transaction."""
        sets: dict[str, Any] = {"status": "queued", "deadline_at": deadline_at, "cancel_requested": False}
        for o in outcomes:
            sets[f"outcomes.{o.question_id}"] = _dump_outcome(o)
        sets.update(extra_fields or {})
        condition = "#status IN (:f, :t, :c, :s) AND version = :ver AND attribute_exists(finalized_at)"
        values = {":f": "failed", ":t": "timed_out", ":c": "cancelled", ":s": "succeeded", ":ver": expected_version}
        removes = ("result", "error", "finished_at", "lease_until", "finalized_at", *SCORE_ATTRIBUTES)
        if not extra_writes:
            return self._update(tenant, run_id, sets=sets, condition=condition, cond_values=values, removes=removes)
        return self._update_in_transaction(tenant, run_id, sets=sets, condition=condition, cond_values=values,
                                           removes=removes, extra_writes=extra_writes)

    def delete_finished(self, tenant: str, run_id: str) -> None:
        """Delete a run that has ended (its indexes follow); an active run is a RunStateConflict."""
        try:
            self._ddb.delete_item(
                TableName=self._table, Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": run_sk(run_id)}},
                ConditionExpression="attribute_exists(pk) AND #status IN (:s, :f, :t, :c)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":s": {"S": "succeeded"}, ":f": {"S": "failed"},
                                           ":t": {"S": "timed_out"}, ":c": {"S": "cancelled"}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                old: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
                if old is None:
                    raise NotFound(f"No eval run '{run_id}' in this tenant.", code="eval_run_not_found") from exc
                status = from_item(old).get("status")
                raise RunStateConflict(f"The eval run is {status}; cancel it before deleting it.",
                                       details={"status": status}) from exc
            raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc

    def set_fields(self, tenant: str, run_id: str, fields: dict[str, Any], *,
                   when_status: tuple[str, ...] = ("queued", "running")) -> EvalRun:
        placeholders = {f":s{i}": s for i, s in enumerate(when_status)}
        return self._update(tenant, run_id, sets=fields,
                            condition=f"#status IN ({', '.join(placeholders)})", cond_values=placeholders)

    # -- finalization ------------------------------------------------------------------------
    def commit_finalization(self, run: EvalRun, *, now: str, fields: Mapping[str, Any],
                            extra_writes: Sequence[TransactItem] = ()) -> None:
        """Mark a terminal run finalized (`finalized_at`), with `fields` on the run and `extra_writes`
        on other items, all in one transaction: exactly once per run attempt, whoever races.

        Raises AlreadyFinalized when the run is finalized already or no longer in `run.status`
        (a rerun reopened it), ExtraWriteRefused when one of the other items refused its condition."""
        sets = {"finalized_at": now, **fields}
        expr, names, values = _update_expression(sets, add_version=True, cond_values={":st": run.status})
        update: TransactItem = {"Update": {
            "TableName": self._table,
            "Key": {"pk": {"S": tenant_pk(run.tenant)}, "sk": {"S": run_sk(run.eval_run_id)}},
            "UpdateExpression": expr,
            "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(finalized_at) AND #status = :st",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}
        try:
            self._transact([update, *extra_writes])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
            reasons = exc.response.get("CancellationReasons", [])
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise AlreadyFinalized(run.eval_run_id) from exc
            _raise_extra_refusal(exc, 1)
            raise DependencyUnavailable("The run store is unavailable; retry shortly.") from exc
