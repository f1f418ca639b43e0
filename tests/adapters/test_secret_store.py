"""SecretStore under moto: CMK encryption, tags, versions, reads by version id, cache and invalidation."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.adapters.secret_store import SecretStore
from chalicelib.domain.errors import Conflict
from tests.conftest import register_secret

PREFIX = "eval-runner/test/tenant/"


class CountingSecretsClient:
    """A real (moto) client that counts GetSecretValue calls; everything else passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.reads = 0

    def get_secret_value(self, **kw: Any) -> Any:
        self.reads += 1
        return self._inner.get_secret_value(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def sm(aws: Any) -> CountingSecretsClient:
    session, _ = aws
    return CountingSecretsClient(session.client("secretsmanager", region_name="us-east-1"))


@pytest.fixture
def kms_key(aws: Any) -> str:
    _, resources = aws
    key: str = resources.kms_key_id
    return key


def test_first_key_creates_an_encrypted_tagged_secret(sm: CountingSecretsClient, kms_key: str) -> None:
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key)
    key = register_secret("sk-ant-api03-first-key-0001")
    ref = store.put_vendor_key("acme", "anthropic", key)
    described = sm.describe_secret(SecretId=PREFIX + "acme/anthropic")
    assert described["ARN"] == ref.arn
    assert described["KmsKeyId"] == kms_key
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert (tags["tenant"], tags["vendor"]) == ("acme", "anthropic")
    assert store.get_vendor_key("acme", "anthropic", version_id=ref.version_id) == key


def test_rotation_adds_a_version_and_old_versions_stay_readable_by_id(sm: CountingSecretsClient,
                                                                      kms_key: str) -> None:
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key)
    old_key, new_key = register_secret("sk-old-key-aaaa1111"), register_secret("sk-new-key-bbbb2222")
    old = store.put_vendor_key("acme", "openai", old_key)
    new = store.put_vendor_key("acme", "openai", new_key)
    assert new.arn == old.arn and new.version_id != old.version_id
    versions = sm.list_secret_version_ids(SecretId=old.arn)["Versions"]
    assert {v["VersionId"] for v in versions} == {old.version_id, new.version_id}
    assert store.get_vendor_key("acme", "openai", version_id=old.version_id) == old_key
    assert store.get_vendor_key("acme", "openai", version_id=new.version_id, secret_id=new.arn) == new_key
    assert store.get_vendor_key("acme", "openai") == new_key


def test_reads_are_cached_per_version_and_invalidate_forces_a_refresh(sm: CountingSecretsClient,
                                                                      kms_key: str) -> None:
    clock = ManualClock()
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key, cache_seconds=300, monotonic=clock)
    k1, k2 = register_secret("sk-cache-key-1111"), register_secret("sk-cache-key-2222")
    v1 = store.put_vendor_key("acme", "anthropic", k1)
    for _ in range(3):
        assert store.get_vendor_key("acme", "anthropic", version_id=v1.version_id) == k1
        assert store.get_vendor_key("acme", "anthropic") == k1
    assert sm.reads == 2
    # A rotation is a new version id: a reader following the settings gets it without a flush ...
    v2 = store.put_vendor_key("acme", "anthropic", k2)
    assert store.get_vendor_key("acme", "anthropic", version_id=v2.version_id) == k2
    # ... while an AWSCURRENT reader is stale until its TTL or an invalidate (refresh-on-401).
    assert store.get_vendor_key("acme", "anthropic") == k1
    store.invalidate("acme", "anthropic")
    assert store.get_vendor_key("acme", "anthropic") == k2
    reads = sm.reads
    clock.t += 301
    assert store.get_vendor_key("acme", "anthropic", version_id=v2.version_id) == k2
    assert sm.reads == reads + 1
    store.reset()
    store.get_vendor_key("acme", "anthropic", version_id=v2.version_id)
    assert sm.reads == reads + 2


def test_tenants_and_vendors_are_separate_secrets(sm: CountingSecretsClient, kms_key: str) -> None:
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key)
    a = store.put_vendor_key("acme", "anthropic", register_secret("sk-acme-anthropic-1"))
    b = store.put_vendor_key("globex", "anthropic", register_secret("sk-globex-anthropic-1"))
    assert a.arn != b.arn
    names = sorted(s["Name"] for s in sm.list_secrets()["SecretList"])
    assert names == [PREFIX + "acme/anthropic", PREFIX + "globex/anthropic"]


def test_delete_is_immediate_idempotent_and_the_name_is_reusable(sm: CountingSecretsClient, kms_key: str) -> None:
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key)
    ref = store.put_vendor_key("acme", "openai", register_secret("sk-doomed-key-0001"))
    store.delete_vendor_key("acme", "openai")
    store.delete_vendor_key("acme", "openai")
    assert sm.list_secrets()["SecretList"] == []
    with pytest.raises(Conflict) as info:
        store.get_vendor_key("acme", "openai", version_id=ref.version_id, secret_id=ref.arn)
    assert info.value.code == "vendor_key_missing"
    again = store.put_vendor_key("acme", "openai", register_secret("sk-reborn-key-0002"))
    assert store.get_vendor_key("acme", "openai", version_id=again.version_id) == "sk-reborn-key-0002"


def test_a_secret_pending_deletion_is_restored_on_the_next_key(sm: CountingSecretsClient, kms_key: str) -> None:
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key)
    store.put_vendor_key("acme", "openai", register_secret("sk-window-key-0001"))
    sm.delete_secret(SecretId=PREFIX + "acme/openai", RecoveryWindowInDays=7)
    ref = store.put_vendor_key("acme", "openai", register_secret("sk-window-key-0002"))
    assert store.get_vendor_key("acme", "openai", version_id=ref.version_id) == "sk-window-key-0002"


def test_a_changed_stage_key_encrypts_new_versions_with_it(sm: CountingSecretsClient, kms_key: str,
                                                           aws: Any) -> None:
    session, _ = aws
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key)
    store.put_vendor_key("acme", "openai", register_secret("sk-first-cmk-0001"))
    new_cmk = session.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    moved = SecretStore(sm, prefix=PREFIX, kms_key_id=new_cmk)
    ref = moved.put_vendor_key("acme", "openai", register_secret("sk-second-cmk-0002"))
    assert sm.describe_secret(SecretId=ref.arn)["KmsKeyId"] == new_cmk
    assert moved.get_vendor_key("acme", "openai", version_id=ref.version_id) == "sk-second-cmk-0002"


def test_missing_secret_is_a_domain_error_without_aws_text(sm: CountingSecretsClient, kms_key: str) -> None:
    store = SecretStore(sm, prefix=PREFIX, kms_key_id=kms_key)
    with pytest.raises(Conflict) as info:
        store.get_vendor_key("acme", "anthropic")
    assert info.value.code == "vendor_key_missing"
    assert "ResourceNotFound" not in info.value.message and "Secrets Manager can" not in info.value.message
