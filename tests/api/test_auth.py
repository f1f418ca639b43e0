"""Auth matrix on the admin settings routes: 401 for every token problem, 403 for members, and tenant
isolation (the tenant comes from the token only)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from chalicelib.adapters.jwt_tokens import HS256TokenVerifier
from tests.conftest import DEV_SECRET, mint, register_secret

PATH = "/admin/settings/eval-runner"
ADMIN_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", PATH, None),
    ("PUT", PATH, {"run_timeout_seconds": 120}),
    ("GET", PATH + "/audit", None),
    ("DELETE", PATH + "/vendors/anthropic", None),
    ("POST", PATH + "/vendors/anthropic/test", None),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in ADMIN_ROUTES]


def _unsigned(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "tenant": "acme", "roles": ["admin"], "iat": now, "exp": now + 600, **over}


BAD_AUTHORIZATION: list[tuple[str, dict[str, str], str]] = [
    ("no header", {}, "missing_token"),
    ("empty bearer", {"Authorization": "Bearer "}, "missing_token"),
    ("wrong scheme", {"Authorization": "Basic YWxpY2U6cHc="}, "missing_token"),
    ("token without scheme", {"Authorization": "abc.def.ghi"}, "missing_token"),
    ("not a jwt", {"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
    ("bad signature", {"Authorization": "Bearer " + jwt.encode(_claims(), "another-secret-0123456789abcdef0123",
                                                               algorithm="HS256")}, "invalid_token"),
    ("alg none", {"Authorization": "Bearer " + _unsigned(_claims())}, "invalid_token"),
    ("expired", {"Authorization": "Bearer " + mint(ttl_seconds=-30)}, "invalid_token"),
    ("no exp", {"Authorization": "Bearer " + jwt.encode({k: v for k, v in _claims().items() if k != "exp"},
                                                        DEV_SECRET, algorithm="HS256")}, "invalid_token"),
    ("no tenant", {"Authorization": "Bearer " + jwt.encode({k: v for k, v in _claims().items() if k != "tenant"},
                                                           DEV_SECRET, algorithm="HS256")}, "invalid_token"),
    ("unsafe tenant", {"Authorization": "Bearer " + jwt.encode(_claims(tenant="acme#SETTINGS"), DEV_SECRET,
                                                               algorithm="HS256")}, "invalid_token"),
    ("roles not a list", {"Authorization": "Bearer " + jwt.encode(_claims(roles={"admin": True}), DEV_SECRET,
                                                                  algorithm="HS256")}, "invalid_token"),
]


@pytest.mark.parametrize(("case", "headers", "code"), BAD_AUTHORIZATION, ids=[c[0] for c in BAD_AUTHORIZATION])
def test_every_token_problem_is_401(client: Any, case: str, headers: dict[str, str], code: str) -> None:
    resp = client.get(PATH, headers=headers)
    assert resp.status_code == 401, resp.json
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["message"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=ROUTE_IDS)
def test_every_admin_route_refuses_bad_tokens(client: Any, method: str, path: str, body: Any) -> None:
    # One stack per route (cheaper than route x case), every token problem against it.
    for case, headers, code in BAD_AUTHORIZATION:
        resp = client.request(method, path, json_body=body, headers=headers)
        assert (resp.status_code, resp.json["error"]["code"]) == (401, code), case


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=ROUTE_IDS)
def test_members_get_403_on_admin_routes(client: Any, member_token: str, method: str, path: str,
                                         body: Any) -> None:
    resp = client.request(method, path, token=member_token, json_body=body)
    assert resp.status_code == 403
    assert resp.json["error"]["code"] == "admin_required"


def test_member_403_comes_before_body_validation(client: Any, member_token: str, container: Any) -> None:
    resp = client.put(PATH, token=member_token, body=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 403
    assert container.admin_settings.load_runner_settings("acme").version == 0


def test_roles_may_arrive_as_a_space_separated_string(client: Any) -> None:
    token = jwt.encode(_claims(roles="reader admin"), DEV_SECRET, algorithm="HS256")
    assert client.get(PATH, token=token).status_code == 200


def test_another_tenants_admin_sees_only_its_own_settings(client: Any, admin_token: str,
                                                          other_tenant_admin: str, container: Any) -> None:
    key = register_secret("sk-ant-acme-only-key-9876")
    resp = client.put(PATH, token=admin_token, json_body={"anthropic": {"api_key": key, "model": "claude-sonnet-4-6"},
                                                          "run_timeout_seconds": 500})
    assert resp.status_code == 200
    theirs = client.get(PATH, token=other_tenant_admin)
    assert theirs.status_code == 200
    assert theirs.json["version"] == 0
    assert theirs.json["anthropic"]["enabled"] is False and theirs.json["anthropic"]["api_key_hint"] is None
    assert theirs.json["run_timeout_seconds"] == 300
    assert client.get(PATH + "/audit", token=other_tenant_admin).json == {"items": []}
    probe = client.post(PATH + "/vendors/anthropic/test", token=other_tenant_admin)
    assert probe.status_code == 409 and probe.json["error"]["code"] == "vendor_not_configured"
    # Their writes land in their own tenant and never touch acme's.
    client.put(PATH, token=other_tenant_admin, json_body={"run_timeout_seconds": 60})
    client.delete(PATH + "/vendors/anthropic", token=other_tenant_admin)
    ours = client.get(PATH, token=admin_token).json
    assert ours["anthropic"]["api_key_hint"] == "…9876" and ours["run_timeout_seconds"] == 500
    assert container.admin_settings.resolve_vendor_credentials("acme", "anthropic").api_key == key


def test_tenant_in_the_body_is_not_accepted(client: Any, admin_token: str) -> None:
    resp = client.put(PATH, token=admin_token, json_body={"tenant": "globex", "run_timeout_seconds": 60})
    assert resp.status_code == 400
    assert resp.json["error"]["details"]["fields"][0]["field"] == "tenant"


@pytest.fixture
def audience_client(runtime_env: dict[str, str], aws: Any) -> Iterator[Any]:
    """A stack configured with an issuer and audience, as prod is (with HS256 for the test)."""
    from chalice.test import Client

    from app import app
    from chalicelib.config import runtime_config_from_env
    from chalicelib.wiring import Container, reset_container, use_container
    from tests.conftest import GuardedClient

    session, _ = aws
    env = {**runtime_env, "JWT_AUDIENCE": "eval-runner", "JWT_ISSUER": "https://idp.example.com"}
    use_container(Container(runtime_config_from_env(env), session=session))
    with Client(app, stage_name="dev") as inner:
        yield GuardedClient(inner)
    reset_container()


def test_wrong_audience_or_issuer_is_401_when_configured(audience_client: Any) -> None:
    good = HS256TokenVerifier(DEV_SECRET, issuer="https://idp.example.com", audience="eval-runner")
    other_aud = HS256TokenVerifier(DEV_SECRET, issuer="https://idp.example.com", audience="another-app")
    other_iss = HS256TokenVerifier(DEV_SECRET, issuer="https://evil.example.com", audience="eval-runner")
    claims = {"tenant": "acme", "user": "alice", "roles": ["admin"]}
    assert audience_client.get(PATH, token=good.mint(**claims)).status_code == 200
    for token in (other_aud.mint(**claims), other_iss.mint(**claims), mint()):
        resp = audience_client.get(PATH, token=token)
        assert resp.status_code == 401
        assert resp.json["error"]["code"] == "invalid_token"


def test_public_routes_need_no_token(client: Any) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200


# ------------------------------------------------------------------ JWKS (prod): algorithm tied to the key


class StaticJWKClient(jwt.PyJWKClient):
    """PyJWKClient over a fixed JWKS document instead of an HTTP fetch."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        super().__init__("https://idp.invalid/.well-known/jwks.json", cache_keys=True)
        self._document = jwks

    def fetch_data(self) -> Any:
        return self._document


@pytest.fixture(scope="module")
def idp_keys() -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    keys = {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()), "p384": ec.generate_private_key(ec.SECP384R1()),
            "attacker_ec": ec.generate_private_key(ec.SECP256R1())}
    jwks = [{**json.loads(RSAAlgorithm.to_jwk(keys["rsa"].public_key())), "kid": "rsa-1", "use": "sig"},
            {**json.loads(ECAlgorithm.to_jwk(keys["ec"].public_key())), "kid": "ec-1", "use": "sig"},
            {**json.loads(ECAlgorithm.to_jwk(keys["p384"].public_key())), "kid": "p384-1", "use": "sig"}]
    return {**keys, "jwks": {"keys": jwks}}


@pytest.fixture
def jwks_client(client: Any, container: Any, idp_keys: dict[str, Any]) -> Any:
    from chalicelib.adapters.jwt_tokens import JWKSTokenVerifier

    container.token_verifier = JWKSTokenVerifier(StaticJWKClient(idp_keys["jwks"]), issuer="https://idp.example.com",
                                                 audience="eval-runner")
    return client


def _idp_claims() -> dict[str, Any]:
    return _claims(iss="https://idp.example.com", aud="eval-runner")


def test_jwks_tokens_signed_by_the_named_key_with_its_algorithm_pass(jwks_client: Any,
                                                                     idp_keys: dict[str, Any]) -> None:
    for key, alg, kid in (("rsa", "RS256", "rsa-1"), ("ec", "ES256", "ec-1")):
        token = jwt.encode(_idp_claims(), idp_keys[key], algorithm=alg, headers={"kid": kid})
        assert jwks_client.get(PATH, token=token).status_code == 200, (alg, kid)


def _pem_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("case", ["ec signature naming the rsa kid", "rs256 naming the ec kid",
                                  "rs384 with the rsa key", "hs256 keyed with the rsa public key",
                                  "p-384 key", "unknown kid", "alg none naming the rsa kid"])
def test_jwks_token_whose_algorithm_does_not_match_the_named_key_is_401_not_500(
        jwks_client: Any, idp_keys: dict[str, Any], case: str) -> None:
    claims = _idp_claims()
    token = {
        "ec signature naming the rsa kid": lambda: jwt.encode(claims, idp_keys["attacker_ec"], algorithm="ES256",
                                                              headers={"kid": "rsa-1"}),
        "rs256 naming the ec kid": lambda: jwt.encode(claims, idp_keys["rsa"], algorithm="RS256",
                                                      headers={"kid": "ec-1"}),
        "rs384 with the rsa key": lambda: jwt.encode(claims, idp_keys["rsa"], algorithm="RS384",
                                                     headers={"kid": "rsa-1"}),
        "hs256 keyed with the rsa public key": lambda: _hmac_with(_pem_public(idp_keys["rsa"]), claims, "rsa-1"),
        "p-384 key": lambda: jwt.encode(claims, idp_keys["p384"], algorithm="ES384", headers={"kid": "p384-1"}),
        "unknown kid": lambda: jwt.encode(claims, idp_keys["rsa"], algorithm="RS256", headers={"kid": "nope"}),
        "alg none naming the rsa kid": lambda: _unsigned_with_kid(claims, "rsa-1"),
    }[case]()
    resp = jwks_client.get(PATH, token=token)
    assert resp.status_code == 401, resp.json
    assert resp.json["error"]["code"] == "invalid_token"


def _hmac_with(secret: bytes, claims: dict[str, Any], kid: str) -> str:
    import hashlib
    import hmac

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    sig = base64.urlsafe_b64encode(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=")
    return f"{signing_input}.{sig.decode()}"


def _unsigned_with_kid(claims: dict[str, Any], kid: str) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


# ------------------------------------------------------------------ a stage without its token configuration


@pytest.mark.parametrize("missing", [{"DEV_JWT_SECRET": None},
                                     {"AUTH_MODE": "jwks", "JWKS_URL": None, "JWT_ISSUER": None}])
def test_a_stage_without_token_configuration_answers_401_to_every_token(runtime_env: dict[str, str], aws: Any,
                                                                         missing: dict[str, str | None]) -> None:
    # A deployed `dev` stack carries no DEV_JWT_SECRET: it must still reject every token, with a 401.
    from chalice.test import Client

    from app import app
    from chalicelib.api.ws_handlers import daemon_ws_connect
    from chalicelib.config import runtime_config_from_env
    from chalicelib.wiring import Container, reset_container, use_container
    from tests.conftest import GuardedClient

    env = {k: v for k, v in {**runtime_env, **missing}.items() if v is not None}
    session, _ = aws
    use_container(Container(runtime_config_from_env(env), session=session))
    try:
        with Client(app, stage_name="dev") as inner:
            client = GuardedClient(inner)
            for token in (mint(), jwt.encode(_claims(), "any-other-secret-0123456789abcdef", algorithm="HS256"),
                          _unsigned(_claims())):
                resp = client.get(PATH, token=token)
                assert resp.status_code == 401, resp.json
                assert resp.json["error"]["code"] == "invalid_token"
            assert client.get("/health").status_code == 200
        refused = daemon_ws_connect({"requestContext": {"connectionId": "c1", "routeKey": "$connect"},
                                     "headers": {"Authorization": f"Bearer {mint()}"},
                                     "queryStringParameters": {"daemon_id": "d"}}, None)
        assert refused["statusCode"] == 401
    finally:
        reset_container()
