"""Secrets Manager store of vendor API keys: one secret per tenant and vendor, read by version id, cached.

Name `{prefix}{tenant}/{vendor}`, encrypted with the stage's CMK, tagged tenant/vendor. A new key is a
new secret version (`PutSecretValue`); the settings item records that version's id and every read asks
for exactly that version, so a version written by a request that then lost its conditional DynamoDB
write is never read, and a rotation needs no cache flush (a new id misses the cache). The cache is
in-process, per (secret name, version id), bounded by `cache_seconds`, so a warm worker container
makes at most one GetSecretValue per key version per TTL.

Botocore errors become domain errors; AWS error text never leaves this module (only the error code
is logged).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain.errors import Conflict, DependencyUnavailable
from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.settings import SecretRef
from chalicelib.observability import logger

_CURRENT = "AWSCURRENT"
_MISSING = frozenset({"ResourceNotFoundException"})
_RETRYABLE = frozenset({"ThrottlingException", "InternalServiceError", "InternalServiceErrorException",
                        "LimitExceededException", "ServiceUnavailable"})


class SecretStore:
    def __init__(self, client: Any, *, prefix: str, kms_key_id: str, cache_seconds: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic, max_entries: int = 1024) -> None:
        self._client = client
        self._prefix = prefix
        self._kms_key_id = kms_key_id
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._max_entries = max_entries
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def secret_name(self, tenant: str, vendor: VendorName) -> str:
        return f"{self._prefix}{tenant}/{vendor}"

    # -- writes -------------------------------------------------------------------------------
    def put_vendor_key(self, tenant: str, vendor: VendorName, api_key: str) -> SecretRef:
        """Store `api_key` as a new version of the tenant's vendor secret (creating it on first use)."""
        name = self.secret_name(tenant, vendor)
        payload = json.dumps({"api_key": api_key})
        try:
            try:
                described = self._client.describe_secret(SecretId=name)
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException":
                    raise
                resp = self._create(name, tenant, vendor, payload)
            else:
                if described.get("DeletedDate"):
                    # Scheduled for deletion (e.g. deleted out of band with a recovery window): bring the
                    # name back rather than failing the admin's write.
                    self._client.restore_secret(SecretId=name)
                if described.get("KmsKeyId") not in (None, self._kms_key_id):
                    # The stage's CMK changed: new versions are encrypted with the configured key.
                    resp = self._client.update_secret(SecretId=name, KmsKeyId=self._kms_key_id,
                                                      SecretString=payload)
                else:
                    resp = self._client.put_secret_value(SecretId=name, SecretString=payload)
        except ClientError as exc:
            raise _translate(exc, "put_vendor_key") from exc
        return SecretRef(arn=str(resp["ARN"]), version_id=str(resp["VersionId"]))

    def _create(self, name: str, tenant: str, vendor: VendorName, payload: str) -> Any:
        try:
            return self._client.create_secret(
                Name=name, KmsKeyId=self._kms_key_id, SecretString=payload,
                Description=f"eval-runner {vendor} API key for tenant {tenant}",
                Tags=[{"Key": "tenant", "Value": tenant}, {"Key": "vendor", "Value": vendor},
                      {"Key": "app", "Value": "eval-runner"}])
        except ClientError as exc:
            if _code(exc) != "ResourceExistsException":
                raise
            # Created concurrently by another request: add our version to it.
            return self._client.put_secret_value(SecretId=name, SecretString=payload)

    def delete_vendor_key(self, tenant: str, vendor: VendorName) -> None:
        """Delete the secret immediately (no recovery window); idempotent.

        Removal is a security action (a leaked or revoked key), so the material should not linger for
        7-30 days, and the fixed per-tenant name must be reusable at once when the admin enters a new
        key. Recovery is re-entering the key, which the vendor console is the source of.
        """
        name = self.secret_name(tenant, vendor)
        try:
            self._client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise _translate(exc, "delete_vendor_key") from exc
        self.invalidate(tenant, vendor)

    # -- reads --------------------------------------------------------------------------------
    def get_vendor_key(self, tenant: str, vendor: VendorName, *, version_id: str | None = None,
                       secret_id: str | None = None) -> str:
        """The key stored as `version_id` (the one the settings item references), or the current one.

        `secret_id` (the ARN recorded in the settings) pins the exact secret; the name is the fallback.
        """
        name = self.secret_name(tenant, vendor)
        cache_key = (name, version_id or _CURRENT)
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        selector = {"VersionId": version_id} if version_id else {"VersionStage": _CURRENT}
        try:
            resp = self._client.get_secret_value(SecretId=secret_id or name, **selector)
        except ClientError as exc:
            raise _translate(exc, "get_vendor_key", vendor=vendor) from exc
        key = _parse_key(str(resp.get("SecretString") or ""))
        if self._cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= self._max_entries:
                    oldest = min(self._cache, key=lambda k: self._cache[k][0])
                    self._cache.pop(oldest, None)
                self._cache[cache_key] = (now + self._cache_seconds, key)
        return key

    # -- cache --------------------------------------------------------------------------------
    def invalidate(self, tenant: str, vendor: VendorName) -> None:
        """Forget every cached version of this tenant's vendor key (refresh after a vendor 401)."""
        name = self.secret_name(tenant, vendor)
        with self._lock:
            for cache_key in [k for k in self._cache if k[0] == name]:
                self._cache.pop(cache_key, None)

    def reset(self) -> None:
        with self._lock:
            self._cache.clear()


def _parse_key(secret_string: str) -> str:
    try:
        data = json.loads(secret_string)
    except ValueError:
        return secret_string  # a plain-string secret created by hand
    if isinstance(data, dict) and isinstance(data.get("api_key"), str):
        return str(data["api_key"])
    if isinstance(data, str):
        return data
    raise Conflict("The stored API key has an unexpected format; an admin must enter it again.",
                   code="vendor_key_missing")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _translate(exc: ClientError, operation: str, *, vendor: str | None = None) -> Exception:
    code = _code(exc)
    logger.warning("secret store error", extra={"aws_error_code": code, "operation": operation})
    if code in _MISSING or (operation == "get_vendor_key" and code == "InvalidRequestException"):
        who = f"the {vendor} API key" if vendor else "the API key"
        return Conflict(f"The stored secret for {who} is no longer available; an admin must enter the key again.",
                        code="vendor_key_missing")
    if code in _RETRYABLE:
        return DependencyUnavailable("The secret store is busy; retry in a moment.", code="secret_store_unavailable")
    return DependencyUnavailable("The secret store refused the request; check the stage's KMS key and IAM "
                                 "permissions, or contact support.", code="secret_store_unavailable")
