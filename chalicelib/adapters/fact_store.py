"""DynamoDB store of judge facts (the `FACT#…` sort keys of the single table).

Item layout:
  pk=TENANT#<t>  sk=FACT#R#<repo key>#<fingerprint>               the fact: repository, text, `sources`
                                                                (run id → session, question, category, at),
                                                                `last_retained_at`, `revision`
  pk=TENANT#<t>  sk=FACT#S#<session key>#<repo key>#<fingerprint> a session's pointer to a fact it retained,
                                                                so deleting the session finds its facts

Facts are written only inside the run lifecycle's finalization transaction (`*_write` methods return its
items): a new fact is a Put conditioned on absence, a known one an Update of its `sources` conditioned on
presence, so two runs retaining the same fact at once cannot both create it (the loser's finalization is
retried and adds itself as a source). Deletions are conditioned on `revision`, so a fact a finalizer just
re-retained is never deleted from under it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item, to_value
from chalicelib.adapters.run_store import TransactItem
from chalicelib.domain.errors import DependencyUnavailable, InvalidRequest
from chalicelib.domain.judge_facts import RetainedFact, repository_key

FACT_PREFIX = "FACT#R#"
POINTER_PREFIX = "FACT#S#"
_DELETE_ATTEMPTS = 4


def fact_sk(repo_key: str, fingerprint: str) -> str:
    return f"{FACT_PREFIX}{repo_key}#{fingerprint}"


def session_key(session_id: str) -> str:
    # Hashed: a session id could otherwise be a prefix of another in a begins_with query.
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:24]


def pointer_sk(session_id: str, repo_key: str, fingerprint: str) -> str:
    return f"{POINTER_PREFIX}{session_key(session_id)}#{repo_key}#{fingerprint}"


class DynamoFactStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    # -- finalization writes (items of the lifecycle's transaction) ---------------------------------
    def get_facts(self, tenant: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored facts among `keys` ((repo key, fingerprint) pairs; at most 100)."""
        if not keys:
            return {}
        request = {self._table: {"Keys": [self._key(tenant, fact_sk(*k)) for k in dict.fromkeys(keys)],
                                 "ConsistentRead": True}}
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for _ in range(5):
            try:
                answer = self._client.batch_get_item(RequestItems=request)
            except ClientError as exc:
                raise DependencyUnavailable("Judge facts are unavailable right now; retry shortly.") from exc
            for raw in answer.get("Responses", {}).get(self._table, []):
                item = from_item(raw)
                found[(str(item["repository_key"]), str(item["fingerprint"]))] = item
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise DependencyUnavailable("Judge facts are unavailable right now; retry shortly.")

    def create_write(self, tenant: str, repository: str, fact: RetainedFact, fact_id: str, fingerprint: str, *,
                     now: str) -> TransactItem:
        repo_key = repository_key(repository)
        item = {"pk": tenant_pk(tenant), "sk": fact_sk(repo_key, fingerprint), "entity": "judge_fact",
                "fact_id": fact_id, "repository": repository, "repository_key": repo_key,
                "fingerprint": fingerprint, "text": fact.text, "category": fact.category, "created_at": now,
                "last_retained_at": now, "revision": 1,
                "sources": {fact.eval_run_id: self._source(fact, now)}}
        return {"Put": {"TableName": self._table, "Item": to_item(item),
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    def add_source_write(self, tenant: str, repository: str, fact: RetainedFact, fingerprint: str, *, now: str,
                         record_source: bool) -> TransactItem:
        """The known fact retained once more: this run as one more source (unless the fact has all the
        sources it keeps) and the time it was last retained."""
        sets = ["last_retained_at = :now", "revision = revision + :one"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {":now": to_value(now), ":one": to_value(1)}
        if record_source:
            sets.append("sources.#run = :source")
            names["#run"] = fact.eval_run_id
            values[":source"] = to_value(self._source(fact, now))
        update: dict[str, Any] = {
            "TableName": self._table, "Key": self._key(tenant, fact_sk(repository_key(repository), fingerprint)),
            "UpdateExpression": "SET " + ", ".join(sets), "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": values, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if names:
            update["ExpressionAttributeNames"] = names
        return {"Update": update}

    def pointer_write(self, tenant: str, session_id: str, repository: str, fingerprint: str) -> TransactItem:
        repo_key = repository_key(repository)
        item = {"pk": tenant_pk(tenant), "sk": pointer_sk(session_id, repo_key, fingerprint),
                "entity": "judge_fact_pointer", "session_id": session_id, "repository_key": repo_key,
                "fingerprint": fingerprint}
        return {"Put": {"TableName": self._table, "Item": to_item(item)}}

    @staticmethod
    def _source(fact: RetainedFact, now: str) -> dict[str, Any]:
        return {"session_id": fact.session_id, "question_id": fact.question_id, "category": fact.category,
                "at": now}

    # -- reads ---------------------------------------------------------------------------------------
    def list_facts(self, tenant: str, repository: str, *, limit: int, cursor: str | None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        prefix = f"{FACT_PREFIX}{repository_key(repository)}#"
        kwargs: dict[str, Any] = {
            "TableName": self._table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "FilterExpression": "repository = :repository",
            "ExpressionAttributeValues": {":pk": {"S": tenant_pk(tenant)}, ":prefix": {"S": prefix},
                                          ":repository": {"S": repository}},
            "Limit": limit}
        if cursor:
            kwargs["ExclusiveStartKey"] = self._key(tenant, _decode_cursor(cursor, prefix))
        try:
            answer = self._client.query(**kwargs)
        except ClientError as exc:
            raise DependencyUnavailable("Judge facts are unavailable right now; retry shortly.") from exc
        items = [from_item(raw) for raw in answer.get("Items", [])]
        last = answer.get("LastEvaluatedKey")
        next_cursor = base64.urlsafe_b64encode(last["sk"]["S"].encode()).decode() if last else None
        return items, next_cursor

    def get_fact(self, tenant: str, repo_key: str, fingerprint: str) -> dict[str, Any] | None:
        try:
            answer = self._client.get_item(TableName=self._table, Key=self._key(tenant, fact_sk(repo_key, fingerprint)),
                                           ConsistentRead=True)
        except ClientError as exc:
            raise DependencyUnavailable("Judge facts are unavailable right now; retry shortly.") from exc
        raw = answer.get("Item")
        return from_item(raw) if raw else None

    def session_facts(self, tenant: str, session_id: str) -> list[tuple[str, str]]:
        """(repo key, fingerprint) of every fact the session's runs retained."""
        prefix = f"{POINTER_PREFIX}{session_key(session_id)}#"
        found: list[tuple[str, str]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": tenant_pk(tenant)}, ":prefix": {"S": prefix}},
            "ProjectionExpression": "repository_key, fingerprint"}
        while True:
            try:
                answer = self._client.query(**kwargs)
            except ClientError as exc:
                raise DependencyUnavailable("Judge facts are unavailable right now; retry shortly.") from exc
            found += [(str(i["repository_key"]), str(i["fingerprint"])) for i in map(from_item, answer["Items"])]
            if "LastEvaluatedKey" not in answer:
                return found
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # -- deletions -----------------------------------------------------------------------------------
    def delete_fact(self, tenant: str, repo_key: str, fingerprint: str) -> bool:
        """Delete the fact and its sessions' pointers; False when there is no such fact."""
        item = self.get_fact(tenant, repo_key, fingerprint)
        if item is None:
            return False
        sessions = {str(s.get("session_id")) for s in (item.get("sources") or {}).values()}
        self._delete(tenant, fact_sk(repo_key, fingerprint))
        for session_id in sessions:
            self._delete(tenant, pointer_sk(session_id, repo_key, fingerprint))
        return True

    def forget_sources(self, tenant: str, repo_key: str, fingerprint: str, *, session_id: str,
                       run_ids: Iterable[str] | None = None) -> None:
        """Remove the session's runs (or only `run_ids` of it) from the fact's sources; the fact goes when
        no source is left, the session's pointer when none of its runs is."""
        key = fact_sk(repo_key, fingerprint)
        wanted = set(run_ids) if run_ids is not None else None
        for _ in range(_DELETE_ATTEMPTS):
            item = self.get_fact(tenant, repo_key, fingerprint)
            if item is None:
                break
            sources: dict[str, Any] = item.get("sources") or {}
            gone = [run for run, src in sources.items() if src.get("session_id") == session_id
                    and (wanted is None or run in wanted)]
            left = {run: src for run, src in sources.items() if run not in gone}
            if not gone:
                break
            try:
                if not left:
                    self._client.delete_item(
                        TableName=self._table, Key=self._key(tenant, key),
                        ConditionExpression="revision = :rev",
                        ExpressionAttributeValues={":rev": to_value(item.get("revision", 0))})
                else:
                    names = {f"#r{i}": run for i, run in enumerate(gone)}
                    self._client.update_item(
                        TableName=self._table, Key=self._key(tenant, key),
                        UpdateExpression="REMOVE " + ", ".join(f"sources.{n}" for n in names)
                                         + " SET revision = revision + :one",
                        ConditionExpression="revision = :rev", ExpressionAttributeNames=names,
                        ExpressionAttributeValues={":rev": to_value(item.get("revision", 0)), ":one": to_value(1)})
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    continue  # a finalizer retained it again meanwhile: read again
                raise DependencyUnavailable("Judge facts are unavailable right now; retry shortly.") from exc
            if not any(src.get("session_id") == session_id for src in left.values()):
                self._delete(tenant, pointer_sk(session_id, repo_key, fingerprint))
            return
        else:
            raise DependencyUnavailable("A judge fact kept changing while it was being deleted; retry.",
                                        code="judge_fact_busy")
        self._delete(tenant, pointer_sk(session_id, repo_key, fingerprint))

    def _delete(self, tenant: str, sk: str) -> None:
        try:
            self._client.delete_item(TableName=self._table, Key=self._key(tenant, sk))
        except ClientError as exc:
            raise DependencyUnavailable("Judge facts are unavailable right now; retry shortly.") from exc

    def _key(self, tenant: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": sk}}


def _decode_cursor(cursor: str, prefix: str) -> str:
    try:
        sk = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        sk = ""
    if not sk.startswith(prefix):
        raise InvalidRequest("The cursor is not valid for this repository; start again without it.",
                             code="invalid_cursor")
    return sk
