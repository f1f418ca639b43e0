"""Runtime configuration: one typed object read from the environment once, failing fast.

Infra passes resource *names* as environment variables (`.chalice/config.json` and the merge
template in `infra/`); secrets are never environment variables. Nothing here runs at import:
`load_runtime_config()` is called by the composition root on first use.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str = "dev"
    region: str = "us-east-1"
    table_name: str
    bucket_name: str
    queue_url: str
    kms_key_id: str
    secret_prefix: str = Field(description="Secrets Manager name prefix, e.g. eval-runner/dev/tenant/")
    event_bus_name: str = "default"
    aws_endpoint_url: str | None = None

    auth_mode: Literal["hs256", "jwks"] = "hs256"
    dev_jwt_secret: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    # Hosts a tenant may point a vendor base_url at even though they are private/loopback.
    allowed_base_url_hosts: tuple[str, ...] = ()
    # Plain http is only acceptable for allow-listed dev hosts (the local fake vendor).
    allow_http_base_urls: bool = False
    # Ports a vendor base_url (any outbound URL) may use; allow-listed hosts on an allow-http stage may
    # use any port (the local stack's fake vendor listens on a free port).
    allowed_base_url_ports: tuple[int, ...] = (443,)

    max_run_timeout_seconds: int = 840
    worker_grace_seconds: int = 60
    # Session uploads per user per window (chalicelib/services/upload_limits.py).
    upload_rate_limit: int = Field(default=60, ge=1)
    upload_rate_window_seconds: int = Field(default=60, ge=1)
    settings_cache_seconds: float = 5.0
    secret_cache_seconds: float = 300.0

    websocket_api_id: str | None = None
    websocket_stage: str = "api"
    websocket_endpoint_url: str | None = None

    # How the worker copes with a vendor's per-key rate limit (README "Vendor rate limits"):
    # "shared": the fleet-wide limiter on DynamoDB (paced by the vendor's advertised budget before any
    # 429; one 429 pauses every worker and teaches a pace) and 429s waited out until the run's deadline;
    # "reactive": the same but paced only after 429s; "retry": only the waiting, each run on its own;
    # "off": the SDK's few retries only (the last three are benchmark baselines).
    vendor_rate_limiter: Literal["shared", "reactive", "retry", "off"] = "shared"

    # Dashboard origins allowed to call the API from a browser (chalicelib/api/cors.py).
    cors_allowed_origins: tuple[str, ...] = ()

    @property
    def worker_timeout_seconds(self) -> int:
        """The worker Lambda's timeout: the run ceiling plus time to persist the result."""
        return self.max_run_timeout_seconds + self.worker_grace_seconds


_ENV_MAP: dict[str, str] = {
    "stage": "STAGE",
    "region": "AWS_REGION",
    "table_name": "EVAL_TABLE_NAME",
    "bucket_name": "EVAL_BUCKET_NAME",
    "queue_url": "EVAL_QUEUE_URL",
    "kms_key_id": "EVAL_KMS_KEY_ID",
    "secret_prefix": "EVAL_SECRET_PREFIX",
    "event_bus_name": "EVAL_EVENT_BUS_NAME",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "auth_mode": "AUTH_MODE",
    "dev_jwt_secret": "DEV_JWT_SECRET",
    "jwks_url": "JWKS_URL",
    "jwt_issuer": "JWT_ISSUER",
    "jwt_audience": "JWT_AUDIENCE",
    "allowed_base_url_hosts": "ALLOWED_BASE_URL_HOSTS",
    "allow_http_base_urls": "ALLOW_HTTP_BASE_URLS",
    "allowed_base_url_ports": "ALLOWED_BASE_URL_PORTS",
    "max_run_timeout_seconds": "MAX_RUN_TIMEOUT_SECONDS",
    "worker_grace_seconds": "WORKER_GRACE_SECONDS",
    "upload_rate_limit": "UPLOAD_RATE_LIMIT",
    "upload_rate_window_seconds": "UPLOAD_RATE_WINDOW_SECONDS",
    "settings_cache_seconds": "SETTINGS_CACHE_SECONDS",
    "secret_cache_seconds": "SECRET_CACHE_SECONDS",
    "websocket_api_id": "WEBSOCKET_API_ID",
    "websocket_stage": "WEBSOCKET_STAGE",
    "websocket_endpoint_url": "WEBSOCKET_ENDPOINT_URL",
    "vendor_rate_limiter": "VENDOR_RATE_LIMITER",
    "cors_allowed_origins": "CORS_ALLOWED_ORIGINS",
}


def parse_origins(raw: str) -> tuple[str, ...]:
    """`CORS_ALLOWED_ORIGINS` → origins. Each must be `scheme://host[:port]` exactly as a browser
    sends it in `Origin` (no path, no trailing slash, no wildcard): a typo fails the cold start
    instead of silently locking the dashboard out."""
    origins: list[str] = []
    for part in raw.split(","):
        origin = part.strip()
        if not origin:
            continue
        scheme, sep, rest = origin.partition("://")
        if (not sep or scheme not in ("https", "http") or not rest or "/" in rest or "*" in rest
                or origin != origin.lower() or any(c.isspace() for c in rest)):
            raise ValueError(f"CORS_ALLOWED_ORIGINS: {origin!r} is not an origin like https://dash.example.com "
                             "(lower case, scheme and host, optional port, nothing after it)")
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def runtime_config_from_env(env: dict[str, str] | None = None) -> RuntimeConfig:
    source = os.environ if env is None else env
    values: dict[str, object] = {}
    for field, var in _ENV_MAP.items():
        raw = source.get(var)
        if raw is None or raw == "":
            continue
        if field == "allowed_base_url_hosts":
            values[field] = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
        elif field == "cors_allowed_origins":
            try:
                values[field] = parse_origins(raw)
            except ValueError as exc:
                raise RuntimeError(f"eval-runner is misconfigured: {exc}") from exc
        elif field == "allowed_base_url_ports":
            values[field] = tuple(p.strip() for p in raw.split(",") if p.strip())
        elif field == "allow_http_base_urls":
            values[field] = raw.lower() in {"1", "true", "yes"}
        else:
            values[field] = raw
    if "region" not in values and source.get("AWS_DEFAULT_REGION"):
        values["region"] = source["AWS_DEFAULT_REGION"]
    try:
        return RuntimeConfig.model_validate(values)
    except ValidationError as exc:
        missing = sorted(_ENV_MAP[str(e["loc"][0])] for e in exc.errors() if e["loc"])
        raise RuntimeError(f"eval-runner is misconfigured; check environment variables {missing}") from exc


@lru_cache(maxsize=1)
def load_runtime_config() -> RuntimeConfig:
    return runtime_config_from_env()
