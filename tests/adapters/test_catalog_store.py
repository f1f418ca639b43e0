"""DynamoCatalogStore under moto: head + immutable version items written together, conditional on the
version read, the audit listed newest first, and the read caches (head with a TTL, versions for good)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.adapters.catalog_store import HEAD_SK, CatalogWriteConflict, DynamoCatalogStore, version_sk
from chalicelib.domain.catalog import CatalogChange, CatalogEntry, CatalogVersion
from chalicelib.judges.catalog import QUESTIONS


class ManualClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def version(n: int, text: str = "Did the agent update the CHANGELOG?") -> CatalogVersion:
    entries = [CatalogEntry(id=q.id, builtin=True, enabled=q.id != "redundant_calls") for q in QUESTIONS]
    entries.append(CatalogEntry(id="changelog_updated", builtin=False, category="docs", text=text,
                                rubric="5: yes\n1: no", needs_tools=True))
    return CatalogVersion(version=n, entries=entries, created_at=f"2026-12-04T10:00:0{n}.000Z", created_by="alice",
                          changes=[CatalogChange(action="edited", question_id="changelog_updated", fields=["text"])])


def test_round_trip_of_head_and_versions(ddb: Any, table: str) -> None:
    store = DynamoCatalogStore(ddb, table, cache_seconds=0)
    assert store.head("acme") is None and store.version("acme", 1) is None
    store.save("acme", version(1), expected_version=0)
    store.save("acme", version(2, "Changed?"), expected_version=1)
    fresh = DynamoCatalogStore(ddb, table, cache_seconds=0)
    assert fresh.head("acme") == version(2, "Changed?")
    assert fresh.version("acme", 1) == version(1)
    assert fresh.version("acme", 2) == version(2, "Changed?")
    audit = fresh.list_audit("acme", 10)
    assert [(a.version, a.by, a.at) for a in audit] == [(2, "alice", "2026-12-04T10:00:02.000Z"),
                                                        (1, "alice", "2026-12-04T10:00:01.000Z")]
    assert audit[0].changes[0].fields == ["text"]
    assert fresh.head("globex") is None  # per tenant
    keys = {i["sk"]["S"] for i in ddb.scan(TableName=table)["Items"] if i["pk"]["S"] == "TENANT#acme"}
    assert keys == {HEAD_SK, version_sk(1), version_sk(2)}


def test_a_stale_writer_loses_and_nothing_is_written(ddb: Any, table: str) -> None:
    store = DynamoCatalogStore(ddb, table, cache_seconds=0)
    store.save("acme", version(1), expected_version=0)
    with pytest.raises(CatalogWriteConflict):
        store.save("acme", version(2), expected_version=0)  # first-save race lost
    store.save("acme", version(2), expected_version=1)
    with pytest.raises(CatalogWriteConflict):
        store.save("acme", version(3), expected_version=1)  # head moved on
    with pytest.raises(CatalogWriteConflict):
        store.save("acme", version(2, "overwrite?"), expected_version=2)  # a version is never rewritten
    assert store.head("acme") == version(2)
    assert store.version("acme", 3) is None
    assert [a.version for a in store.list_audit("acme", 10)] == [2, 1]


def test_head_is_cached_for_its_ttl_and_versions_for_good(ddb: Any, table: str) -> None:
    clock = ManualClock()
    mine = DynamoCatalogStore(ddb, table, cache_seconds=5, monotonic=clock)
    other = DynamoCatalogStore(ddb, table, cache_seconds=0)
    assert mine.head("acme") is None  # cached: no head
    other.save("acme", version(1), expected_version=0)
    assert mine.head("acme") is None
    assert mine.head("acme", fresh=True) == version(1)
    other.save("acme", version(2), expected_version=1)
    clock.t += 4
    assert mine.head("acme") == version(1)
    clock.t += 2
    assert mine.head("acme") == version(2)
    # The writer's own cache follows its save at once.
    mine.save("acme", version(3), expected_version=2)
    assert mine.head("acme") == version(3)
    # Versions never change: once read, they are served without DynamoDB.
    assert mine.version("acme", 1) == version(1)
    ddb.delete_item(TableName=table, Key={"pk": {"S": "TENANT#acme"}, "sk": {"S": version_sk(1)}})
    assert mine.version("acme", 1) == version(1)
    mine.reset()
    assert mine.version("acme", 1) is None
