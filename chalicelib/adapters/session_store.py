"""Session storage adapters: normalised traces and upload objects in S3, session metadata in DynamoDB.

S3 layout (one bucket, SSE-KMS with the stage key on every write):
- `sessions/<tenant>/<session_id>/trace.jsonl.gz` — the normalised trace, one entry per line, gzip.
- `uploads/<tenant>/<upload_id>` — a raw file PUT through a presigned URL; deleted once completed
  (the bucket's lifecycle rule expires abandoned ones after a day).

DynamoDB items (single table, see `adapters/dynamo.py`):
- `pk=TENANT#<t>`, `sk=SESSION#<id>` — the session record; `gsi1pk=SESSIONS#<t>`,
  `gsi1sk=<uploaded_at>#<id>` gives the tenant's sessions newest first.
- `pk=TENANT#<t>`, `sk=UPLOAD#<upload_id>` — a pending presigned upload, TTL `expires_at`.
- `pk=TENANT#<t>`, `sk=SESSIONLEAF#<uuid>` — which session ends with a Claude Code line uuid, so
  a later transcript's `summary.leafUuid` finds its parent.

Vendor errors become `chalicelib.domain.errors` here; no AWS error text leaves this module.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item, to_value
from chalicelib.domain.errors import DependencyUnavailable, InvalidRequest
from chalicelib.domain.json_depth import loads_bounded
from chalicelib.observability import logger

_S3_MISSING = {"NoSuchKey", "404", "NotFound"}


def _unavailable(action: str, exc: Exception) -> DependencyUnavailable:
    # The AWS error code is logged for operators; the client only learns that storage failed.
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("session storage call failed", extra={"action": action, "aws_error": code})
    return DependencyUnavailable(f"Session storage is unavailable ({action}); retry shortly.",
                                 code="storage_unavailable")


def _client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class StoredObject:
    key: str
    etag: str
    version_id: str | None
    size: int


@dataclass(frozen=True)
class PresignedPut:
    url: str
    headers: dict[str, str]


class S3ObjectStream:
    """A readable S3 object body whose transport failures surface as `DependencyUnavailable`."""

    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self.size = size

    def read(self, amt: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read(None if amt is None or amt < 0 else amt)
        except (BotoCoreError, OSError) as exc:
            raise _unavailable("read", exc) from None
        return data

    def close(self) -> None:
        self._body.close()


class S3SessionObjects:
    """Trace and upload objects in the session bucket, always written with SSE-KMS."""

    def __init__(self, s3: Any, *, bucket: str, kms_key_id: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._kms_key_id = kms_key_id

    @staticmethod
    def trace_key(tenant: str, session_id: str) -> str:
        return f"sessions/{tenant}/{session_id}/trace.jsonl.gz"

    @staticmethod
    def upload_key(tenant: str, upload_id: str) -> str:
        return f"uploads/{tenant}/{upload_id}"

    def _sse(self) -> dict[str, str]:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key_id}

    def put_trace(self, key: str, body: IO[bytes], size: int, *,
                  tags: Mapping[str, str] | None = None) -> StoredObject:
        """One PUT from a seekable file (a single request up to 5 GB; botocore streams it). `tags`
        become the object's tags (the retention tag the bucket's lifecycle rules expire it by)."""
        extra: dict[str, Any] = {"Tagging": urlencode(dict(tags))} if tags else {}
        try:
            resp = self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentLength=size,
                                       ContentType="application/x-ndjson", ContentEncoding="gzip",
                                       **self._sse(), **extra)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("put_trace", exc) from None
        return StoredObject(key=key, etag=str(resp.get("ETag", "")).strip('"'),
                            version_id=resp.get("VersionId"), size=size)

    def open(self, key: str) -> S3ObjectStream | None:
        """A streaming reader over the object, or None when it does not exist."""
        try:
            resp = self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _client_error_code(exc) in _S3_MISSING:
                return None
            raise _unavailable("get_object", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("get_object", exc) from None
        return S3ObjectStream(resp["Body"], int(resp.get("ContentLength", 0)))

    def size(self, key: str) -> int | None:
        try:
            resp = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _client_error_code(exc) in _S3_MISSING:
                return None
            raise _unavailable("head_object", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("head_object", exc) from None
        return int(resp["ContentLength"])

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("delete_object", exc) from None

    def presign_put(self, key: str, *, expires_in: int, content_type: str,
                    content_length: int | None = None) -> PresignedPut:
        """A presigned S3 PUT; the returned headers are signed, so the client must send them all."""
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "ContentType": content_type,
                                  **self._sse()}
        headers = {"Content-Type": content_type, "x-amz-server-side-encryption": "aws:kms",
                   "x-amz-server-side-encryption-aws-kms-key-id": self._kms_key_id}
        if content_length is not None:
            # Signed, so S3 itself rejects a body of any other size.
            params["ContentLength"] = content_length
            headers["Content-Length"] = str(content_length)
        try:
            url = self._s3.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_in,
                                                  HttpMethod="PUT")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("presign", exc) from None
        return PresignedPut(url=str(url), headers=headers)


# -- DynamoDB --------------------------------------------------------------------------------------

_KEY_ATTRS = ("pk", "sk", "gsi1pk", "gsi1sk", "expires_at")


def _session_sk(session_id: str) -> str:
    return f"SESSION#{session_id}"


def _sessions_gsi_pk(tenant: str) -> str:
    return f"SESSIONS#{tenant}"


def _strip_keys(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _KEY_ATTRS}


def encode_cursor(gsi1sk: str) -> str:
    raw = json.dumps({"k": gsi1sk}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = loads_bounded(base64.urlsafe_b64decode(padded.encode()))
        value = data["k"]
        if not isinstance(value, str) or "#" not in value:
            raise ValueError("bad cursor")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidRequest("The cursor is not valid; pass next_cursor from the previous page unchanged.",
                             code="invalid_cursor") from None
    return value


class DynamoSessionIndex:
    """Session records, pending uploads and continuation links in the single table."""

    def __init__(self, dynamodb: Any, *, table_name: str) -> None:
        self._ddb = dynamodb
        self._table = table_name

    # -- sessions --------------------------------------------------------------------------
    def get_session(self, tenant: str, session_id: str, *, keep: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The record; `keep` names key attributes to return too (`expires_at`, the retention TTL)."""
        return self._get(tenant, _session_sk(session_id), keep=keep)

    def get_sessions(self, tenant: str, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Many session records at once (BatchGetItem, 100 per call): id → record, missing ids absent."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(session_ids), 100):
            chunk = list(dict.fromkeys(session_ids[start:start + 100]))
            request: dict[str, Any] = {self._table: {"ConsistentRead": True, "Keys": [
                {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": _session_sk(s)}} for s in chunk]}}
            for _ in range(5):  # unprocessed keys (throttling) are asked again a few times
                try:
                    resp = self._ddb.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise _unavailable("get_sessions", exc) from None
                for raw in resp.get("Responses", {}).get(self._table, []):
                    record = _strip_keys(from_item(raw))
                    found[str(record["session_id"])] = record
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
            if request:
                raise _unavailable("get_sessions", RuntimeError("unprocessed keys"))
        return found

    def put_session(self, tenant: str, session_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """Write (create or replace) the record; returns the replaced record, if any."""
        item = {**record, "pk": tenant_pk(tenant), "sk": _session_sk(session_id),
                "gsi1pk": _sessions_gsi_pk(tenant),
                "gsi1sk": f"{record['uploaded_at']}#{session_id}"}
        try:
            resp = self._ddb.put_item(TableName=self._table, Item=to_item(item), ReturnValues="ALL_OLD")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("put_session", exc) from None
        old = resp.get("Attributes")
        return _strip_keys(from_item(old)) if old else None

    def delete_session(self, tenant: str, session_id: str) -> None:
        self._delete(tenant, _session_sk(session_id))

    def list_sessions(self, tenant: str, *, limit: int, cursor: str | None = None
                      ) -> tuple[list[dict[str, Any]], str | None]:
        """The tenant's sessions, most recently uploaded first, and the cursor of the next page."""
        kwargs: dict[str, Any] = {
            "TableName": self._table, "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": _sessions_gsi_pk(tenant)}},
            "ScanIndexForward": False, "Limit": limit,
        }
        if cursor is not None:
            # The cursor carries only the sort position; every key attribute that decides whose
            # data is read is rebuilt from the caller's tenant, so a forged cursor cannot cross.
            gsi1sk = decode_cursor(cursor)
            session_id = gsi1sk.split("#", 1)[1]
            kwargs["ExclusiveStartKey"] = {
                "gsi1pk": {"S": _sessions_gsi_pk(tenant)}, "gsi1sk": {"S": gsi1sk},
                "pk": {"S": tenant_pk(tenant)}, "sk": {"S": _session_sk(session_id)},
            }
        try:
            resp = self._ddb.query(**kwargs)
        except ClientError as exc:
            if _client_error_code(exc) == "ValidationException" and cursor is not None:
                raise InvalidRequest("The cursor is not valid; start again without it.",
                                     code="invalid_cursor") from None
            raise _unavailable("list_sessions", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("list_sessions", exc) from None
        items = [_strip_keys(from_item(i)) for i in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        next_cursor = encode_cursor(last["gsi1sk"]["S"]) if last else None
        return items, next_cursor

    # -- pending presigned uploads ---------------------------------------------------------
    def put_upload(self, tenant: str, upload_id: str, record: dict[str, Any], *, expires_at: int) -> None:
        item = {**record, "pk": tenant_pk(tenant), "sk": f"UPLOAD#{upload_id}", "expires_at": expires_at}
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("put_upload", exc) from None

    def get_upload(self, tenant: str, upload_id: str, *, now_epoch: int) -> dict[str, Any] | None:
        item = self._get(tenant, f"UPLOAD#{upload_id}", keep=("expires_at",))
        # TTL deletion lags by up to days, so an expired ticket is treated as gone here.
        if item is None or int(item.get("expires_at", 0)) <= now_epoch:
            return None
        item.pop("expires_at", None)
        return item

    def delete_upload(self, tenant: str, upload_id: str) -> None:
        self._delete(tenant, f"UPLOAD#{upload_id}")

    def claim_upload(self, tenant: str, upload_id: str) -> bool:
        """pending → processing, once: False when another completion already claimed it (or it is gone)."""
        try:
            self._ddb.update_item(
                TableName=self._table, Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": f"UPLOAD#{upload_id}"}},
                UpdateExpression="SET #status = :processing",
                ConditionExpression="attribute_exists(sk) AND (attribute_not_exists(#status) OR #status = :pending)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":processing": {"S": "processing"}, ":pending": {"S": "pending"}})
        except ClientError as exc:
            if _client_error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise _unavailable("claim_upload", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("claim_upload", exc) from None
        return True

    def finish_upload(self, tenant: str, upload_id: str, outcome: dict[str, Any]) -> None:
        """Record a background completion's outcome (`status` and `session` or `error`) on its ticket."""
        names = {f"#f{i}": name for i, name in enumerate(outcome)}
        values = {f":v{i}": to_value(value) for i, value in enumerate(outcome.values())}
        try:
            self._ddb.update_item(
                TableName=self._table, Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": f"UPLOAD#{upload_id}"}},
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(outcome))),
                ConditionExpression="attribute_exists(sk)",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as exc:
            if _client_error_code(exc) == "ConditionalCheckFailedException":
                return  # the ticket expired meanwhile: nobody can poll it any more
            raise _unavailable("finish_upload", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("finish_upload", exc) from None

    # -- continuation links ----------------------------------------------------------------
    def put_leaf(self, tenant: str, leaf_uuid: str, session_id: str) -> None:
        item = {"pk": tenant_pk(tenant), "sk": f"SESSIONLEAF#{leaf_uuid}", "session_id": session_id}
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("put_leaf", exc) from None

    def get_leaf(self, tenant: str, leaf_uuid: str) -> str | None:
        item = self._get(tenant, f"SESSIONLEAF#{leaf_uuid}")
        value = item.get("session_id") if item else None
        return value if isinstance(value, str) else None

    def delete_leaf(self, tenant: str, leaf_uuid: str, session_id: str) -> None:
        """Remove a continuation link, unless a later upload re-pointed it at another session."""
        try:
            self._ddb.delete_item(TableName=self._table, ConditionExpression="session_id = :s",
                                  ExpressionAttributeValues={":s": {"S": session_id}},
                                  Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": f"SESSIONLEAF#{leaf_uuid}"}})
        except ClientError as exc:
            if _client_error_code(exc) != "ConditionalCheckFailedException":
                raise _unavailable("delete_leaf", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("delete_leaf", exc) from None

    # -- helpers ---------------------------------------------------------------------------
    def _get(self, tenant: str, sk: str, keep: tuple[str, ...] = ()) -> dict[str, Any] | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                      Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": sk}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("get_item", exc) from None
        item = resp.get("Item")
        if not item:
            return None
        data = from_item(item)
        return {k: v for k, v in data.items() if k not in _KEY_ATTRS or k in keep}

    def _delete(self, tenant: str, sk: str) -> None:
        try:
            self._ddb.delete_item(TableName=self._table, Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": sk}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("delete_item", exc) from None


__all__ = ["DynamoSessionIndex", "PresignedPut", "S3ObjectStream", "S3SessionObjects",
           "StoredObject", "decode_cursor", "encode_cursor"]
