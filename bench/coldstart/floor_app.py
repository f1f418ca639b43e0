"""The cold-start floor: a minimal Chalice app that does the same work as the API handler's measured routes.

Written the way a minimal Lambda API is: chalice, boto3, PyJWT and pydantic imported at the top (the
issue's floor is "chalice + boto3 + pydantic": a request body is validated by a model, as every edge of
ours is), clients built on first use, no structured logging or metrics, no error mapping. Its routes do
exactly what the app's do against AWS: the same HS256 check of the bearer token (PyJWT, the same
options) and the AWS calls the app's route made on a cold container, replayed with boto3: the bench
records them (service, operation, parameters) and hands them over in the file `FLOOR_CALLS` names;
the recorded run id and Idempotency-Key are replaced by fresh ones so a replayed dispatch writes a new
run like the app's does. Shipped into the extracted deployment package next to app.py (with its
bytecode) and run by the same harness, so both sides load chalice, boto3 and PyJWT from the same place.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import boto3
import jwt
from botocore import xform_name
from botocore.exceptions import ClientError
from chalice import Chalice, Response
from pydantic import BaseModel, ConfigDict

app = Chalice(app_name="cold-start-floor", configure_logs=False)


class _DispatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    threshold: int = 2000
    quote: str | None = None
_clients: dict[str, Any] = {}


def _client(service: str) -> Any:
    if service not in _clients:
        _clients[service] = boto3.client(service)
    return _clients[service]


def _decode(value: Any) -> Any:
    """The recorded parameters as boto3 takes them (bytes were written as {"__bytes__": latin-1 text})."""
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return value["__bytes__"].encode("latin-1")
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _replay(route: str) -> int:
    """Makes the route's recorded AWS calls; returns how many AWS refused (a replayed condition)."""
    with open(os.environ["FLOOR_CALLS"]) as f:
        text = f.read()
    text = text.replace("{RUN_ID}", uuid.uuid4().hex).replace("{IDEMPOTENCY_KEY}", uuid.uuid4().hex)
    refused = 0
    for service, operation, params in json.loads(text)[route]:
        try:
            getattr(_client(service), xform_name(operation))(**_decode(params))
        except ClientError:
            refused += 1
    return refused


def _caller() -> dict[str, Any]:
    header = str(app.current_request.headers.get("authorization") or "")
    token = header.partition(" ")[2].strip()
    try:
        claims: dict[str, Any] = jwt.decode(token, os.environ["DEV_JWT_SECRET"], algorithms=["HS256"], issuer=None,
                                            audience=None, options={"require": ["exp", "sub"], "verify_aud": False})
    except jwt.PyJWTError:
        raise _Refused(401) from None
    return claims


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    return Response(body=json.dumps(body), status_code=status, headers={"Content-Type": "application/json"})


@app.route("/health")
def health() -> Response:
    return _answer({"status": "ok", "stage": os.environ.get("STAGE", "")})


@app.route("/admin/settings/eval-runner")
def get_settings() -> Response:
    try:
        claims = _caller()
    except _Refused as refused:
        return _answer({"error": "unauthorized"}, refused.status)
    if "admin" not in claims.get("roles", []):
        return _answer({"error": "forbidden"}, 403)
    refused = _replay("GET settings")
    return _answer({"tenant": claims["tenant"], "refused_replays": refused})


@app.route("/sessions/{session_id}/eval-runs", methods=["POST"], content_types=["application/json"])
def dispatch(session_id: str) -> Response:
    try:
        claims = _caller()
    except _Refused as refused:
        return _answer({"error": "unauthorized"}, refused.status)
    request = _DispatchBody.model_validate_json(app.current_request.raw_body or b"{}")
    refused = _replay("dispatch with quote" if request.quote else "dispatch")
    return _answer({"session_id": session_id, "tenant": claims["tenant"], "threshold": request.threshold,
                    "refused_replays": refused}, 202)
