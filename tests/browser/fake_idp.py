"""A minimal OpenID Connect provider for the console's sign-in test (tests only, 127.0.0.1 only).

Authorization code flow with PKCE (S256 required): discovery, /authorize (no login page: it
issues a code for the configured user at once), /token (checks the code verifier against the
challenge, single-use codes) and /jwks. Tokens are RS256; the access token carries the service's
claims (`sub`, `tenant`, `roles`) for the configured audience.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass
class FakeIdp:
    client_id: str
    audience: str
    user: str
    tenant: str
    roles: list[str]
    kid: str = "test-key-1"
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeIdp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        data.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return data

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def _issue(self, grant: dict[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        access = self._sign({"iss": self.issuer, "aud": self.audience, "sub": self.user, "tenant": self.tenant,
                             "roles": self.roles, "iat": now, "exp": now + 600, "scope": grant["scope"]})
        id_claims = {"iss": self.issuer, "aud": self.client_id, "sub": self.user, "iat": now, "exp": now + 600,
                     "auth_time": now}
        if grant.get("nonce"):
            id_claims["nonce"] = grant["nonce"]
        id_token = self._sign(id_claims)
        self.issued.extend([access, id_token])
        return {"access_token": access, "id_token": id_token, "token_type": "Bearer",
                "expires_in": 600, "scope": grant["scope"]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_OPTIONS(self) -> None:
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET, POST")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
                self.end_headers()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, {
                        "issuer": idp.issuer, "authorization_endpoint": f"{idp.issuer}/authorize",
                        "token_endpoint": f"{idp.issuer}/token", "jwks_uri": f"{idp.issuer}/jwks",
                        "response_types_supported": ["code"], "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "code_challenge_methods_supported": ["S256"],
                        "grant_types_supported": ["authorization_code"]})
                elif url.path == "/jwks":
                    self._json(200, {"keys": [idp._jwk()]})
                elif url.path == "/authorize":
                    ok = (query.get("client_id") == idp.client_id and query.get("response_type") == "code"
                          and query.get("code_challenge_method") == "S256" and query.get("code_challenge")
                          and query.get("redirect_uri") and query.get("state"))
                    if not ok:
                        self._json(400, {"error": "invalid_request", "query": query})
                        return
                    code = secrets.token_urlsafe(24)
                    idp.codes[code] = {"challenge": query["code_challenge"], "redirect_uri": query["redirect_uri"],
                                       "scope": query.get("scope", "openid"), "nonce": query.get("nonce")}
                    location = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                idp.token_requests.append(form)
                grant = idp.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if (grant is None or form.get("grant_type") != "authorization_code"
                        or form.get("redirect_uri") != grant["redirect_uri"] or digest != grant["challenge"]
                        or form.get("client_id") != idp.client_id):
                    self._json(400, {"error": "invalid_grant"})
                    return
                self._json(200, idp._issue(grant))

        return Handler
