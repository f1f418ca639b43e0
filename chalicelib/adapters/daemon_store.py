"""DaemonStore over DynamoDB: daemon registrations (presence TTL), jobs offered to daemons, WebSocket connections.

Layout (single table, `expires_at` is the table's TTL attribute):
- daemon      `pk=TENANT#<t>`                 `sk=DAEMON#<user>#<daemon_id>`  (expires_at = presence)
- job         `pk=DAEMONJOBS#<t>#<daemon_id>` `sk=JOB#<run_id>`               (one per run on that daemon)
- connection  `pk=WSCONN#<connection_id>`     `sk=META`                       (expires_at = connect + 2 h)
- conn index  `pk=DAEMONCONNS#<t>#<daemon_id>` `sk=CONN#<connection_id>`     (same TTL; push fan-out)

The user is part of the daemon key, so another user's daemon id simply does not exist for the
caller (404, no ownership branch to get wrong). TTL deletion lags by up to days, so every read
filters `expires_at > now` itself. Claims and cancel deliveries are conditional writes: a job is
handed out exactly once however many polls race.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo import from_item, remove_clause, set_clause, tenant_pk, to_item, to_value
from chalicelib.domain.daemons import ConnectionRecord, DaemonRecord, JobRecord
from chalicelib.domain.errors import DependencyUnavailable


def _unavailable(exc: Exception) -> DependencyUnavailable:
    return DependencyUnavailable("The daemon store is unavailable; retry shortly.")


def _is_conditional_failure(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] in ("ConditionalCheckFailedException", "TransactionCanceledException")


def daemon_sk(user: str, daemon_id: str) -> str:
    return f"DAEMON#{user}#{daemon_id}"


def jobs_pk(tenant: str, daemon_id: str) -> str:
    return f"DAEMONJOBS#{tenant}#{daemon_id}"


def conns_pk(tenant: str, daemon_id: str) -> str:
    return f"DAEMONCONNS#{tenant}#{daemon_id}"


class DynamoDaemonStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    # -- low level ---------------------------------------------------------------------------
    def _update(self, key: dict[str, str], sets: dict[str, Any], condition: str,
                cond_values: dict[str, Any] | None = None, removes: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """SET the given attributes under a condition; None when the condition failed."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        expr = "SET " + set_clause(sets, names, values)
        if removes:
            expr += " REMOVE " + remove_clause(removes, names)
        for placeholder, raw in (cond_values or {}).items():
            values[placeholder] = to_value(raw)
        # Condition attribute names are written literally (status, expires_at, ...): alias them.
        for attr in ("status", "expires_at", "cancel_requested", "cancel_delivered_at", "attempt"):
            token = f"#{attr}"
            if token in condition:
                names[token] = attr
        try:
            resp = self._ddb.update_item(
                TableName=self._table, Key={k: {"S": v} for k, v in key.items()}, UpdateExpression=expr,
                ConditionExpression=condition, ExpressionAttributeNames=names,
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return None
            raise _unavailable(exc) from exc
        return from_item(resp["Attributes"])

    def _get(self, key: dict[str, str]) -> dict[str, Any] | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                      Key={k: {"S": v} for k, v in key.items()})
        except ClientError as exc:
            raise _unavailable(exc) from exc
        item = resp.get("Item")
        return from_item(item) if item else None

    def _query(self, pk: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
            "ExpressionAttributeValues": {":p": {"S": pk}, ":s": {"S": prefix}},
        }
        try:
            while True:
                resp = self._ddb.query(**kwargs)
                items.extend(from_item(i) for i in resp.get("Items", []))
                last = resp.get("LastEvaluatedKey")
                if not last:
                    return items
                kwargs["ExclusiveStartKey"] = last
        except ClientError as exc:
            raise _unavailable(exc) from exc

    # -- daemons -----------------------------------------------------------------------------
    def put_daemon(self, daemon: DaemonRecord) -> None:
        item = daemon.model_dump(mode="json")
        item.update({"pk": tenant_pk(daemon.tenant), "sk": daemon_sk(daemon.user, daemon.daemon_id),
                     "entity": "daemon"})
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item),
                               ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            raise _unavailable(exc) from exc

    def get_daemon(self, tenant: str, user: str, daemon_id: str, *, now_epoch: int) -> DaemonRecord | None:
        """The daemon if it exists, belongs to `user` and its presence has not expired."""
        item = self._get({"pk": tenant_pk(tenant), "sk": daemon_sk(user, daemon_id)})
        if item is None:
            return None
        record = DaemonRecord.model_validate(item)
        return record if record.available(now_epoch) else None

    def touch_daemon(self, tenant: str, user: str, daemon_id: str, *, now: str, now_epoch: int,
                     expires_at: int) -> DaemonRecord | None:
        """Heartbeat: extend presence. None when the daemon is unknown or already expired (it must
        register again; reviving an expired item would depend on when TTL deletion happened)."""
        item = self._update({"pk": tenant_pk(tenant), "sk": daemon_sk(user, daemon_id)},
                            {"last_seen_at": now, "expires_at": expires_at},
                            "attribute_exists(pk) AND #expires_at > :now", {":now": now_epoch})
        return DaemonRecord.model_validate(item) if item else None

    def list_daemons(self, tenant: str, user: str) -> list[DaemonRecord]:
        """All of the user's daemon items still stored, expired ones included (callers filter)."""
        return [DaemonRecord.model_validate(i) for i in self._query(tenant_pk(tenant), f"DAEMON#{user}#")]

    # -- jobs --------------------------------------------------------------------------------
    def put_job(self, job: JobRecord, *, expires_at: int) -> None:
        """Store (or, for a rerun, replace) the run's job on that daemon."""
        item = job.model_dump(mode="json")
        item.update({"pk": jobs_pk(job.tenant, job.daemon_id), "sk": f"JOB#{job.eval_run_id}",
                     "entity": "daemon_job", "expires_at": expires_at})
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item))
        except ClientError as exc:
            raise _unavailable(exc) from exc

    def get_job(self, tenant: str, daemon_id: str, run_id: str) -> JobRecord | None:
        item = self._get({"pk": jobs_pk(tenant, daemon_id), "sk": f"JOB#{run_id}"})
        return JobRecord.model_validate(item) if item else None

    def jobs_needing_attention(self, tenant: str, daemon_id: str) -> list[JobRecord]:
        """Offered jobs and held jobs with an undelivered cancel, oldest first."""
        try:
            resp = self._ddb.query(
                TableName=self._table, ConsistentRead=True,
                KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
                FilterExpression="#status = :offered OR (#cancel_requested = :t AND "
                                 "attribute_not_exists(#cancel_delivered_at) AND #status = :claimed)",
                ExpressionAttributeNames={"#status": "status", "#cancel_requested": "cancel_requested",
                                          "#cancel_delivered_at": "cancel_delivered_at"},
                ExpressionAttributeValues={":p": {"S": jobs_pk(tenant, daemon_id)}, ":s": {"S": "JOB#"},
                                           ":offered": {"S": "offered"}, ":claimed": {"S": "claimed"},
                                           ":t": {"BOOL": True}})
        except ClientError as exc:
            raise _unavailable(exc) from exc
        jobs = [JobRecord.model_validate(from_item(i)) for i in resp.get("Items", [])]
        return sorted(jobs, key=lambda j: j.created_at)

    def jobs_in_flight(self, tenant: str, daemon_id: str) -> list[JobRecord]:
        """Offered or claimed jobs (the ones a deadline can still end)."""
        return [j for j in (JobRecord.model_validate(i) for i in self._query(jobs_pk(tenant, daemon_id), "JOB#"))
                if j.status in ("offered", "claimed")]

    def _job_key(self, tenant: str, daemon_id: str, run_id: str) -> dict[str, str]:
        return {"pk": jobs_pk(tenant, daemon_id), "sk": f"JOB#{run_id}"}

    def claim_job(self, tenant: str, daemon_id: str, run_id: str, *, now: str, attempt: int) -> JobRecord | None:
        """offered → claimed, exactly once per offer (None when someone else got there first)."""
        item = self._update(self._job_key(tenant, daemon_id, run_id), {"status": "claimed", "claimed_at": now},
                            "#status = :offered AND #attempt = :attempt",
                            {":offered": "offered", ":attempt": attempt})
        return JobRecord.model_validate(item) if item else None

    def end_job(self, tenant: str, daemon_id: str, run_id: str, *, status: str, now: str,
                expires_at: int) -> None:
        """Mark the job finished/expired/cancelled (idempotent; a missing job is fine)."""
        self._update(self._job_key(tenant, daemon_id, run_id),
                     {"status": status, "ended_at": now, "expires_at": expires_at},
                     "attribute_exists(pk) AND #status IN (:o, :c)", {":o": "offered", ":c": "claimed"})

    def request_cancel(self, tenant: str, daemon_id: str, run_id: str, *, now: str) -> JobRecord | None:
        """Flag the job for cancellation; an offered job becomes cancelled at once (never claimable)."""
        key = self._job_key(tenant, daemon_id, run_id)
        item = self._update(key, {"status": "cancelled", "cancel_requested": True, "ended_at": now},
                            "#status = :offered", {":offered": "offered"})
        if item is None:
            item = self._update(key, {"cancel_requested": True, "cancel_requested_at": now},
                                "#status = :claimed", {":claimed": "claimed"})
        return JobRecord.model_validate(item) if item else None

    def mark_cancel_delivered(self, tenant: str, daemon_id: str, run_id: str, *, now: str) -> bool:
        item = self._update(self._job_key(tenant, daemon_id, run_id), {"cancel_delivered_at": now},
                            "#cancel_requested = :t AND attribute_not_exists(#cancel_delivered_at)",
                            {":t": True})
        return item is not None

    def record_question_started(self, tenant: str, daemon_id: str, run_id: str, question_id: str,
                                *, now: str) -> None:
        self._update(self._job_key(tenant, daemon_id, run_id), {f"question_started_at.{question_id}": now},
                     "attribute_exists(pk)")

    # -- WebSocket connections ---------------------------------------------------------------
    def put_connection(self, conn: ConnectionRecord) -> None:
        meta = conn.model_dump(mode="json")
        meta.update({"pk": f"WSCONN#{conn.connection_id}", "sk": "META", "entity": "ws_connection"})
        index = {"pk": conns_pk(conn.tenant, conn.daemon_id), "sk": f"CONN#{conn.connection_id}",
                 "entity": "ws_connection_index", "connection_id": conn.connection_id,
                 "user": conn.user, "connected_at": conn.connected_at, "expires_at": conn.expires_at}
        try:
            self._ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": self._table, "Item": to_item(meta)}},
                {"Put": {"TableName": self._table, "Item": to_item(index)}},
            ])
        except ClientError as exc:
            raise _unavailable(exc) from exc

    def get_connection(self, connection_id: str, *, now_epoch: int) -> ConnectionRecord | None:
        item = self._get({"pk": f"WSCONN#{connection_id}", "sk": "META"})
        if item is None:
            return None
        conn = ConnectionRecord.model_validate(item)
        return conn if conn.expires_at > now_epoch else None

    def delete_connection(self, connection_id: str) -> ConnectionRecord | None:
        """Remove both items; returns what was stored (None if it was already gone)."""
        try:
            resp = self._ddb.delete_item(TableName=self._table, ReturnValues="ALL_OLD",
                                         Key={"pk": {"S": f"WSCONN#{connection_id}"}, "sk": {"S": "META"}})
        except ClientError as exc:
            raise _unavailable(exc) from exc
        old = resp.get("Attributes")
        if not old:
            return None
        conn = ConnectionRecord.model_validate(from_item(old))
        try:
            self._ddb.delete_item(TableName=self._table, Key={
                "pk": {"S": conns_pk(conn.tenant, conn.daemon_id)}, "sk": {"S": f"CONN#{connection_id}"}})
        except ClientError as exc:
            raise _unavailable(exc) from exc
        return conn

    def daemon_connections(self, tenant: str, daemon_id: str, *, now_epoch: int) -> list[str]:
        """Live connection ids of a daemon, newest first."""
        items = [i for i in self._query(conns_pk(tenant, daemon_id), "CONN#") if int(i["expires_at"]) > now_epoch]
        items.sort(key=lambda i: str(i["connected_at"]), reverse=True)
        return [str(i["connection_id"]) for i in items]
