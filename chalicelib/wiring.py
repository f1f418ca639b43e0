"""Composition root: builds AWS clients, adapters and services lazily, once per cold start.

Only this module imports both services and adapters. Nothing is built at import time; the first
request (or worker record) calls `container()`. Tests call `use_container(...)` with a container
pointed at moto, and `reset_container()` between tests.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from chalicelib.config import RuntimeConfig, load_runtime_config
from chalicelib.domain.clock import Clock, SystemClock
from chalicelib.domain.errors import Unauthenticated
from chalicelib.domain.principal import Principal

if TYPE_CHECKING:
    import boto3
    from chalice.app import Request


class Container:
    def __init__(self, config: RuntimeConfig, *, clock: Clock | None = None,
                 session: boto3.Session | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._session = session

    # -- AWS clients -------------------------------------------------------------------------
    @cached_property
    def session(self) -> boto3.Session:
        import boto3

        return self._session or boto3.Session(region_name=self.config.region)

    def client(self, service: str) -> Any:
        from botocore.config import Config

        cfg = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10,
                     tcp_keepalive=True)
        return self.session.client(service, endpoint_url=self.config.aws_endpoint_url,  # type: ignore[call-overload]
                                   region_name=self.config.region, config=cfg)

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @cached_property
    def secretsmanager(self) -> Any:
        return self.client("secretsmanager")

    @cached_property
    def sqs(self) -> Any:
        return self.client("sqs")

    @cached_property
    def s3(self) -> Any:
        return self.client("s3")

    @cached_property
    def events(self) -> Any:
        return self.client("events")

    # -- auth --------------------------------------------------------------------------------
    @cached_property
    def token_verifier(self) -> Any:
        from chalicelib.adapters.jwt_tokens import HS256TokenVerifier, JWKSTokenVerifier

        cfg = self.config
        if cfg.auth_mode == "jwks":
            if not (cfg.jwks_url and cfg.jwt_issuer and cfg.jwt_audience):
                raise RuntimeError("AUTH_MODE=jwks needs JWKS_URL, JWT_ISSUER and JWT_AUDIENCE")
            from jwt import PyJWKClient

            return JWKSTokenVerifier(PyJWKClient(cfg.jwks_url, cache_keys=True, lifespan=3600, timeout=5),
                                     issuer=cfg.jwt_issuer, audience=cfg.jwt_audience)
        if not cfg.dev_jwt_secret:
            raise RuntimeError("AUTH_MODE=hs256 needs DEV_JWT_SECRET")
        return HS256TokenVerifier(cfg.dev_jwt_secret, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience)

    def authenticate(self, request: Request) -> Principal:
        from chalicelib.api.http import bearer_token

        principal: Principal = self.token_verifier.verify(bearer_token(request))
        return principal

    def authenticate_token(self, token: str) -> Principal:
        if not token:
            raise Unauthenticated("A bearer token is required.", code="missing_token")
        principal: Principal = self.token_verifier.verify(token)
        return principal


_container: Container | None = None


def container() -> Container:
    global _container
    if _container is None:
        _container = Container(load_runtime_config())
    return _container


def use_container(new: Container) -> None:
    global _container
    _container = new


def reset_container() -> None:
    global _container
    _container = None
