"""Bearer-token verification with PyJWT: HS256 with a dev secret, or RS256/ES256 against an OIDC JWKS.

The accepted algorithm follows from the key the token's `kid` names, never from the token: an RSA key
verifies RS256 only, a P-256 EC key ES256 only. Letting the header pick among several algorithms for
one key is how a token signed with an EC key but naming the IdP's RSA `kid` used to reach PyJWT's EC
code with an RSA key (a TypeError, i.e. a 500) instead of being rejected.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import jwt

from chalicelib.domain.errors import Unauthenticated
from chalicelib.domain.principal import SAFE_ID, Principal

if TYPE_CHECKING:
    from jwt import PyJWKClient


_INVALID = "The bearer token is invalid or expired; sign in again to get a fresh token."


def algorithm_for_key(public_key: object) -> str | None:
    """The one algorithm a JWKS public key verifies (RSA → RS256, P-256 → ES256), else None (refused)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return "ES256"
    return None


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    sub, tenant, roles = claims.get("sub"), claims.get("tenant"), claims.get("roles", [])
    if not isinstance(sub, str) or not isinstance(tenant, str):
        raise Unauthenticated("The bearer token lacks the 'sub' or 'tenant' claim.", code="invalid_token")
    if not SAFE_ID.match(sub) or not SAFE_ID.match(tenant):
        raise Unauthenticated("The token's 'sub' or 'tenant' claim has unsupported characters.",
                              code="invalid_token")
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise Unauthenticated("The token's 'roles' claim must be a list of strings.", code="invalid_token")
    exp = claims.get("exp")
    return Principal(tenant=tenant, user=sub, roles=tuple(roles),
                     expires_at=int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None)


class HS256TokenVerifier:
    """Dev/local stage: tokens signed with a shared secret (`make token`)."""

    def __init__(self, secret: str, *, issuer: str | None = None, audience: str | None = None) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], issuer=self._issuer, audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(_INVALID, code="invalid_token") from exc
        return _principal_from_claims(claims)

    def mint(self, *, tenant: str, user: str, roles: list[str], ttl_seconds: int = 12 * 3600) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user, "tenant": tenant, "roles": roles, "iat": now,
                                  "exp": now + ttl_seconds}
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm="HS256")


class RejectingTokenVerifier:
    """A stage whose token configuration is missing (a deployed `dev` stack has no signing secret):
    every token is refused with a 401, never a 500 and never accepted. `reason` goes to the log once."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def verify(self, token: str) -> Principal:
        raise Unauthenticated("This deployment cannot verify bearer tokens (its token configuration is missing); "
                              "no token is accepted here.", code="invalid_token")


class JWKSTokenVerifier:
    """Prod stage: RS256/ES256 tokens from any OIDC IdP (e.g. a Cognito user pool)."""

    def __init__(self, jwks_client: PyJWKClient, *, issuer: str, audience: str) -> None:
        self._jwks = jwks_client
        self._issuer = issuer
        self._audience = audience

    def verify(self, token: str) -> Principal:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            algorithm = algorithm_for_key(key.key)
            if algorithm is None:
                raise jwt.InvalidKeyError("the JWKS key named by the token is of an unsupported type")
            claims = jwt.decode(token, key.key, algorithms=[algorithm], issuer=self._issuer,
                                audience=self._audience, options={"require": ["exp", "sub", "iss"]})
        except jwt.PyJWTError as exc:
            raise Unauthenticated(_INVALID, code="invalid_token") from exc
        return _principal_from_claims(claims)
