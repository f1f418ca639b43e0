"""Session storage adapters under moto: SSE-KMS objects, presigned PUTs, records, listing, uploads, leaves."""

from __future__ import annotations

import io
import tempfile
from typing import Any

import pytest
import requests

from chalicelib.adapters.session_store import DynamoSessionIndex, S3SessionObjects, encode_cursor
from chalicelib.domain.errors import DependencyUnavailable, InvalidRequest


@pytest.fixture
def objects(aws: Any) -> S3SessionObjects:
    session, resources = aws
    return S3SessionObjects(session.client("s3"), bucket=resources.bucket_name, kms_key_id=resources.kms_key_id)


@pytest.fixture
def index(aws: Any) -> DynamoSessionIndex:
    session, resources = aws
    return DynamoSessionIndex(session.client("dynamodb"), table_name=resources.table_name)


def record(session_id: str, uploaded_at: str, **extra: Any) -> dict[str, Any]:
    return {"session_id": session_id, "uploaded_at": uploaded_at, "entries": 1, "skipped": {"unknown": {}},
            **extra}


def test_trace_is_written_with_the_stage_key_and_read_back(aws: Any, objects: S3SessionObjects) -> None:
    session, resources = aws
    key = objects.trace_key("acme", "s1")

    stored = objects.put_trace(key, io.BytesIO(b"hello"), 5)

    assert key == "sessions/acme/s1/trace.jsonl.gz"
    head = session.client("s3").head_object(Bucket=resources.bucket_name, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(resources.kms_key_id)
    assert stored.etag == head["ETag"].strip('"')
    assert stored.size == 5
    stream = objects.open(key)
    assert stream is not None
    assert (stream.size, stream.read(2), stream.read()) == (5, b"he", b"llo")
    stream.close()
    objects.delete(key)
    assert objects.open(key) is None
    assert objects.size(key) is None


def test_a_spool_rolled_to_disk_uploads_intact(aws: Any, objects: S3SessionObjects) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with tempfile.SpooledTemporaryFile(max_size=1024) as spool:
        spool.write(payload)
        assert spool._rolled  # type: ignore[attr-defined]  # the /tmp path the service uses for big traces
        spool.seek(0)
        stored = objects.put_trace("sessions/acme/big/trace.jsonl.gz", spool, len(payload))

    stream = objects.open(stored.key)
    assert stream is not None and stream.read() == payload


def test_presigned_put_requires_and_applies_sse_kms(aws: Any, objects: S3SessionObjects) -> None:
    session, resources = aws
    key = objects.upload_key("acme", "0" * 32)

    presigned = objects.presign_put(key, expires_in=900, content_type="application/x-ndjson", content_length=4)

    assert "x-amz-server-side-encryption" in presigned.url.lower()  # signed into the URL
    assert presigned.headers["x-amz-server-side-encryption-aws-kms-key-id"] == resources.kms_key_id
    assert presigned.headers["Content-Length"] == "4"
    resp = requests.put(presigned.url, data=b"{}\n\n", headers=presigned.headers, timeout=10)
    assert resp.status_code == 200
    head = session.client("s3").head_object(Bucket=resources.bucket_name, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert objects.size(key) == 4


def test_storage_failures_are_domain_errors_without_aws_text(aws: Any) -> None:
    session, resources = aws
    broken = S3SessionObjects(session.client("s3"), bucket="no-such-bucket-here", kms_key_id=resources.kms_key_id)

    with pytest.raises(DependencyUnavailable) as err:
        broken.put_trace("k", io.BytesIO(b"x"), 1)

    assert err.value.code == "storage_unavailable"
    assert "NoSuchBucket" not in err.value.message
    broken_index = DynamoSessionIndex(session.client("dynamodb"), table_name="missing-table")
    with pytest.raises(DependencyUnavailable):
        broken_index.get_session("acme", "s1")


def test_put_session_returns_the_replaced_record(index: DynamoSessionIndex) -> None:
    assert index.put_session("acme", "s1", record("s1", "2026-01-01T00:00:01.000Z", revision=1)) is None

    old = index.put_session("acme", "s1", record("s1", "2026-01-01T00:00:02.000Z", revision=2))

    assert old is not None and old["revision"] == 1
    assert "pk" not in old and "gsi1sk" not in old
    current = index.get_session("acme", "s1")
    assert current is not None and current["revision"] == 2
    assert index.get_session("globex", "s1") is None
    index.delete_session("acme", "s1")
    assert index.get_session("acme", "s1") is None


def test_list_is_newest_first_per_tenant_with_cursor(index: DynamoSessionIndex) -> None:
    for n, sid in enumerate(["a", "b", "c", "d"]):
        index.put_session("acme", sid, record(sid, f"2026-01-01T00:00:0{n}.000Z"))
    index.put_session("globex", "z", record("z", "2026-01-01T00:00:09.000Z"))

    first, cursor = index.list_sessions("acme", limit=3)
    assert [i["session_id"] for i in first] == ["d", "c", "b"]
    assert cursor is not None
    rest, end = index.list_sessions("acme", limit=3, cursor=cursor)
    assert [i["session_id"] for i in rest] == ["a"]
    assert end is None

    # The cursor only carries a sort position: replayed by another tenant it reads that tenant's
    # data after that position (nothing here, as globex's only session is newer), never acme's.
    foreign, _ = index.list_sessions("globex", limit=10, cursor=cursor)
    assert foreign == []


@pytest.mark.parametrize("cursor", ["!!!", "e30", encode_cursor("no-hash-sign")])
def test_malformed_cursors_are_invalid_requests(index: DynamoSessionIndex, cursor: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        index.list_sessions("acme", limit=1, cursor=cursor)
    assert err.value.code == "invalid_cursor"


def test_upload_tickets_expire_and_are_deleted(index: DynamoSessionIndex) -> None:
    index.put_upload("acme", "u1", {"session_id": "s1", "format": "codex", "title": None}, expires_at=1000)

    ticket = index.get_upload("acme", "u1", now_epoch=999)
    assert ticket == {"session_id": "s1", "format": "codex"}
    assert index.get_upload("acme", "u1", now_epoch=1000) is None
    assert index.get_upload("globex", "u1", now_epoch=0) is None
    index.delete_upload("acme", "u1")
    assert index.get_upload("acme", "u1", now_epoch=0) is None


def test_continuation_leaves(index: DynamoSessionIndex) -> None:
    index.put_leaf("acme", "uuid-1", "s1")

    assert index.get_leaf("acme", "uuid-1") == "s1"
    assert index.get_leaf("acme", "uuid-2") is None
    assert index.get_leaf("globex", "uuid-1") is None
