"""SettingsStore under moto: round trip, conditional writes on the revision, atomic audit, read cache."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.adapters.settings_store import SETTINGS_SK, SettingsStore
from chalicelib.domain.settings import (
    FieldChange,
    SettingsAuditRecord,
    SettingsRecord,
    SettingsWriteConflict,
    VendorRecord,
)


class ManualClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def record(version: int, revision: int, model: str = "claude-sonnet-4-6") -> SettingsRecord:
    return SettingsRecord(version=version, revision=revision, run_timeout_seconds=600,
                          anthropic=VendorRecord(model=model, key_hint="…ab12", secret_arn="arn:x",
                                                 secret_version_id="v1", updated_by="alice"),
                          updated_by="alice", changed_fields=("anthropic.model",))


def audit(at: str, version: int, to: str = "m") -> SettingsAuditRecord:
    return SettingsAuditRecord(at=at, by="alice", version=version,
                               changes={"anthropic.model": FieldChange(from_=None, to=to)})


def test_missing_settings_read_as_defaults(ddb: Any, table: str) -> None:
    store = SettingsStore(ddb, table, cache_seconds=0)
    got = store.get("acme")
    assert (got.version, got.revision, got.run_timeout_seconds) == (0, 0, 300)
    assert got.anthropic.status == "unconfigured"


def test_save_round_trips_and_writes_audit_atomically(ddb: Any, table: str) -> None:
    store = SettingsStore(ddb, table, cache_seconds=0)
    store.save("acme", record(1, 1), expected_revision=0, audit=audit("2026-01-01T00:00:00.000Z", 1))
    got = store.get("acme", fresh=True)
    assert got == record(1, 1)
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "TENANT#acme"}, "sk": {"S": SETTINGS_SK}})["Item"]
    assert item["anthropic"]["M"]["secret_version_id"] == {"S": "v1"}
    assert item["revision"] == {"N": "1"}
    [entry] = store.list_audit("acme", 10)
    assert entry.changes["anthropic.model"].model_dump() == {"from": None, "to": "m"}


def test_stale_revision_is_a_conflict_and_writes_nothing(ddb: Any, table: str) -> None:
    store = SettingsStore(ddb, table, cache_seconds=0)
    store.save("acme", record(1, 1), expected_revision=0, audit=audit("2026-01-01T00:00:00.000Z", 1))
    with pytest.raises(SettingsWriteConflict):
        store.save("acme", record(1, 1, model="other"), expected_revision=0,
                   audit=audit("2026-01-01T00:00:01.000Z", 1))
    store.save("acme", record(2, 2, model="second"), expected_revision=1,
               audit=audit("2026-01-01T00:00:02.000Z", 2))
    with pytest.raises(SettingsWriteConflict):
        store.save("acme", record(2, 2, model="lost"), expected_revision=1,
                   audit=audit("2026-01-01T00:00:03.000Z", 2))
    assert store.get("acme").anthropic.model == "second"
    # The losing writes left no audit records behind.
    assert [a.at for a in store.list_audit("acme", 10)] == ["2026-01-01T00:00:02.000Z",
                                                           "2026-01-01T00:00:00.000Z"]


def test_audit_is_newest_first_limited_and_per_tenant(ddb: Any, table: str) -> None:
    store = SettingsStore(ddb, table, cache_seconds=0)
    for n in range(1, 6):
        store.save("acme", record(n, n), expected_revision=n - 1,
                   audit=audit(f"2026-01-01T00:00:0{n}.000Z", n, to=f"m{n}"))
    items = store.list_audit("acme", 3)
    assert [i.version for i in items] == [5, 4, 3]
    assert store.list_audit("globex", 10) == []
    assert store.get("globex").version == 0


def test_read_cache_serves_within_ttl_and_fresh_bypasses_it(ddb: Any, table: str) -> None:
    clock = ManualClock()
    store = SettingsStore(ddb, table, cache_seconds=5, monotonic=clock)
    writer = SettingsStore(ddb, table, cache_seconds=0)
    assert store.get("acme").version == 0
    writer.save("acme", record(1, 1), expected_revision=0, audit=audit("2026-01-01T00:00:00.000Z", 1))
    assert store.get("acme").version == 0  # cached
    assert store.get("acme", fresh=True).version == 1
    writer.save("acme", record(2, 2), expected_revision=1, audit=audit("2026-01-01T00:00:01.000Z", 2))
    assert store.get("acme").version == 1
    clock.t += 6
    assert store.get("acme").version == 2
    writer.save("acme", record(3, 3), expected_revision=2, audit=audit("2026-01-01T00:00:02.000Z", 3))
    store.invalidate("acme")
    assert store.get("acme").version == 3


def test_aws_errors_become_domain_errors_without_aws_text(aws: Any) -> None:
    from chalicelib.domain.errors import DependencyUnavailable

    session, _ = aws
    store = SettingsStore(session.client("dynamodb", region_name="us-east-1"), "no-such-table", cache_seconds=0)
    with pytest.raises(DependencyUnavailable) as info:
        store.get("acme")
    assert info.value.code == "settings_store_unavailable"
    assert "no-such-table" not in info.value.message and "Requested resource" not in info.value.message
