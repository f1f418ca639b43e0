"""Test connection through the real anthropic/openai SDKs against the local fake vendor (via base_url):
ok, auth → suspended, unknown model, rate limit, malformed output, network; plus cold-start hygiene."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.fake_vendor import FakeVendor, key_fingerprint
from tests.conftest import register_secret

PATH = "/admin/settings/eval-runner"
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_vendor: FakeVendor) -> FakeVendor:
    fake_vendor.reset()
    return fake_vendor


def base_url(fake: FakeVendor, vendor: str) -> str:
    return fake.anthropic_base_url if vendor == "anthropic" else fake.openai_base_url


def configure(client: Any, token: str, vendor: str, key: str, *, model: str | None = None,
              url: str | None = None) -> Any:
    resp = client.put(PATH, token=token, json_body={vendor: {"api_key": register_secret(key),
                                                             "model": model or MODELS[vendor], "base_url": url}})
    assert resp.status_code == 200, resp.json
    return resp.json


def probe(client: Any, token: str, vendor: str) -> Any:
    return client.post(f"{PATH}/vendors/{vendor}/test", token=token)


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
def test_ok_through_the_real_sdk_on_the_judges_request_path(client: Any, admin_token: str, fake: FakeVendor,
                                                            vendor: str) -> None:
    key = f"sk-{vendor}-good-key-0001"
    configure(client, admin_token, vendor, key, url=base_url(fake, vendor))
    resp = probe(client, admin_token, vendor)
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["ok"] is True and body["error"] is None
    assert isinstance(body["latency_ms"], int) and body["latency_ms"] >= 0
    assert (body["vendor"], body["model"], body["status"]) == (vendor, MODELS[vendor], "ok")
    [request] = fake.requests
    assert request["model"] == MODELS[vendor]
    assert request["structured_output"] is True
    assert request["key_fingerprint"] == key_fingerprint(key)
    assert request["retry_count"] in (None, 0)
    if vendor == "openai":
        assert request["schema_name"] == "judge_verdict"


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
def test_revoked_key_is_auth_and_suspends_the_vendor_until_replaced(client: Any, admin_token: str,
                                                                    container: Any, fake: FakeVendor,
                                                                    vendor: str) -> None:
    before = configure(client, admin_token, vendor, f"sk-{vendor}-revoked-key-0002", url=base_url(fake, vendor))
    resp = probe(client, admin_token, vendor)
    assert resp.status_code == 200
    assert resp.json["ok"] is False
    assert resp.json["error"]["kind"] == "auth"
    assert resp.json["status"] == "suspended"
    view = client.get(PATH, token=admin_token).json
    assert view[vendor]["status"] == "suspended" and view[vendor]["enabled"] is True
    assert view[vendor]["status_reason"]
    # Status is operational state: an admin's If-Match from before the test still applies.
    assert view["version"] == before["version"]
    assert vendor not in container.admin_settings.load_runner_settings("acme").usable_vendors
    audit = client.get(PATH + "/audit", token=admin_token).json["items"]
    assert audit[0]["action"] == "suspend"
    assert audit[0]["changes"] == {f"{vendor}.status": {"from": "ok", "to": "suspended"}}

    replaced = configure(client, admin_token, vendor, f"sk-{vendor}-fresh-key-0003", url=base_url(fake, vendor))
    assert replaced[vendor]["status"] == "ok"
    assert probe(client, admin_token, vendor).json["ok"] is True


def test_forbidden_key_also_suspends(client: Any, admin_token: str, fake: FakeVendor) -> None:
    configure(client, admin_token, "anthropic", "sk-ant-good-key-0004", url=fake.anthropic_base_url)
    fake.script("*", status=403)
    resp = probe(client, admin_token, "anthropic")
    assert resp.json["error"]["kind"] == "auth"
    assert client.get(PATH, token=admin_token).json["anthropic"]["status"] == "suspended"


def test_a_successful_test_lifts_a_suspension_of_the_same_key(client: Any, admin_token: str, container: Any,
                                                              fake: FakeVendor) -> None:
    configure(client, admin_token, "openai", "sk-openai-good-key-0005", url=fake.openai_base_url)
    assert container.admin_settings.mark_vendor_suspended("acme", "openai", "billing issue (HTTP 403)")
    assert client.get(PATH, token=admin_token).json["openai"]["status"] == "suspended"
    resp = probe(client, admin_token, "openai")
    assert resp.json["ok"] is True and resp.json["status"] == "ok"
    assert client.get(PATH, token=admin_token).json["openai"]["status"] == "ok"


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
def test_unknown_model_is_model_not_found_and_does_not_suspend(client: Any, admin_token: str,
                                                                fake: FakeVendor, vendor: str) -> None:
    configure(client, admin_token, vendor, f"sk-{vendor}-good-key-0006", model=f"{MODELS[vendor]}-unknown",
              url=base_url(fake, vendor))
    resp = probe(client, admin_token, vendor)
    assert resp.json["ok"] is False
    assert resp.json["error"]["kind"] == "model_not_found"
    assert resp.json["status"] == "ok"


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
def test_rate_limit_is_rate_limited_without_retrying(client: Any, admin_token: str, fake: FakeVendor,
                                                     vendor: str) -> None:
    configure(client, admin_token, vendor, f"sk-{vendor}-good-key-0007", url=base_url(fake, vendor))
    fake.script("*", status=429, retry_after=30, times=None)
    resp = probe(client, admin_token, vendor)
    assert resp.json["ok"] is False
    assert resp.json["error"]["kind"] == "rate_limited"
    assert len(fake.requests) == 1  # no SDK retry: the admin gets the answer at once


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
def test_malformed_output_is_invalid_output(client: Any, admin_token: str, fake: FakeVendor, vendor: str) -> None:
    configure(client, admin_token, vendor, f"sk-{vendor}-good-key-0008", url=base_url(fake, vendor))
    fake.script("*", malformed=True)
    resp = probe(client, admin_token, vendor)
    assert resp.json["ok"] is False
    assert resp.json["error"]["kind"] == "invalid_output"
    assert resp.json["status"] == "ok"


def test_vendor_server_errors_fold_into_the_contract_kinds(client: Any, admin_token: str, fake: FakeVendor) -> None:
    configure(client, admin_token, "anthropic", "sk-ant-good-key-0009", url=fake.anthropic_base_url)
    fake.script("*", status=529)
    assert probe(client, admin_token, "anthropic").json["error"]["kind"] == "rate_limited"  # overloaded
    fake.script("*", status=500)
    assert probe(client, admin_token, "anthropic").json["error"]["kind"] == "network"  # server error


def test_unreachable_vendor_is_network(client: Any, admin_token: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configure(client, admin_token, "openai", "sk-openai-good-key-0010", url=f"http://127.0.0.1:{port}/v1")
    resp = probe(client, admin_token, "openai")
    assert resp.json["ok"] is False
    assert resp.json["error"]["kind"] == "network"
    assert resp.json["status"] == "ok"


def test_vendor_error_text_never_carries_the_key(client: Any, admin_token: str, fake: FakeVendor) -> None:
    fake.configure(echo_key_in_errors=True)
    configure(client, admin_token, "anthropic", "sk-ant-revoked-echoed-0011", url=fake.anthropic_base_url)
    resp = probe(client, admin_token, "anthropic")  # GuardedClient fails the test if the key is echoed
    assert resp.json["error"]["kind"] == "auth"
    assert "sk-ant-revoked" not in client.get(PATH, token=admin_token).json["anthropic"]["status_reason"]


MARKER = "INTERNAL-ONLY-root-password-hunter2"


@pytest.fixture
def hostile_target() -> Iterator[dict[str, Any]]:
    """An internal-looking HTTP service that answers every request with `state["status"]` and a body
    (in both vendors' error shapes and as plain text) full of things an admin must not read back."""
    state: dict[str, Any] = {"status": 404, "port": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"type": "error", "error": {"type": "not_found_error", "message": MARKER,
                                                          "code": MARKER}, "message": MARKER, "detail": MARKER})
            raw = body.encode() if state["status"] != 502 else f"<html>{MARKER}</html>".encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json" if state["status"] != 502 else "text/html")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["port"] = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 429, 500, 502])
def test_the_answer_is_our_kind_and_message_never_the_targets_body(client: Any, admin_token: str, vendor: str,
                                                                    hostile_target: dict[str, Any],
                                                                    status: int) -> None:
    hostile_target["status"] = status
    path = "" if vendor == "anthropic" else "/v1"
    configure(client, admin_token, vendor, f"sk-{vendor}-good-key-0012",
              url=f"http://127.0.0.1:{hostile_target['port']}{path}")
    resp = probe(client, admin_token, vendor)
    assert resp.status_code == 200
    error = resp.json["error"]
    assert error["kind"] in ("auth", "model_not_found", "rate_limited", "network", "invalid_output")
    assert MARKER not in json.dumps(resp.json)
    assert f"(HTTP {status})" in error["message"]
    view = client.get(PATH, token=admin_token).json[vendor]
    assert MARKER not in json.dumps(view)  # nor in a suspension reason


def test_a_base_url_refused_at_connect_time_says_why_in_our_words(client: Any, admin_token: str,
                                                                   container: Any) -> None:
    from chalicelib.adapters.outbound_http import OutboundGuard

    # The stored URL names a public-looking host that resolves to the metadata address at call time.
    container.outbound_guard = OutboundGuard(container.base_url_policy,
                                             resolver=lambda host, port: ["169.254.169.254"])
    configure(client, admin_token, "anthropic", "sk-ant-good-key-0013", url="https://169.254.169.254.nip.io")
    resp = probe(client, admin_token, "anthropic")
    assert resp.json["ok"] is False
    assert resp.json["error"]["kind"] == "network"
    assert resp.json["error"]["message"].startswith("The base URL was refused: 169.254.169.254 is a private")


def test_unconfigured_vendor_is_409(client: Any, admin_token: str) -> None:
    resp = probe(client, admin_token, "openai")
    assert resp.status_code == 409
    assert resp.json["error"]["code"] == "vendor_not_configured"
    client.put(PATH, token=admin_token, json_body={"openai": {"model": "gpt-4o"}})
    assert probe(client, admin_token, "openai").json["error"]["code"] == "vendor_not_configured"


def test_unknown_vendor_is_404(client: Any, admin_token: str) -> None:
    resp = probe(client, admin_token, "gemini")
    assert resp.status_code == 404
    assert resp.json["error"]["code"] == "unknown_vendor"


def test_api_handler_import_does_not_load_vendor_sdks() -> None:
    code = ("import sys, app, chalicelib.api.admin_routes, chalicelib.services.connection_test; "
            "loaded = [m for m in ('anthropic', 'openai') if m in sys.modules]; "
            "sys.exit(1 if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
