"""The outbound guard on the wire: names resolved and checked on every connection, connections pinned
to the checked address with TLS verified against the name, one origin per client, through both SDKs.

Resolvers are fakes (a dict), so `127.0.0.1.nip.io` and friends resolve without DNS; the servers are
real sockets on 127.0.0.1 that record whether anything reached them.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib.adapters.judge_models import build_judge_model
from chalicelib.adapters.outbound_http import OutboundGuard
from chalicelib.domain.base_url import BaseUrlPolicy, BaseUrlRefused, refusal_in_chain
from chalicelib.domain.judging import VendorCallError
from devstack.fake_vendor import FakeVendor
from tests.adapters.http_kit import recorder
from tests.fakevendor import GOOD_KEYS, Vendor, run, running_fake_vendor, verdict_call

VENDORS: list[Vendor] = ["anthropic", "openai"]


def fake_resolver(table: dict[str, Sequence[str]]) -> Any:
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError(f"{host} does not resolve (fake resolver)")
        return list(table[host])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@dataclass(frozen=True)
class Pki:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate for `vendor.test` only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbound test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vendor.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("vendor.test")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder: Path = tmp_path_factory.mktemp("pki")
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "server.pem", folder / "server.key")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Pki(server_context=server, client_context=client)


def _refusal(exc: BaseException) -> BaseUrlRefused:
    refusal = refusal_in_chain(exc)
    assert refusal is not None, f"not refused by the guard: {exc!r}"
    return refusal


# ------------------------------------------------------------------ through the vendor SDKs


async def _judge_error(vendor: Vendor, base_url: str, guard: OutboundGuard) -> VendorCallError:
    model = build_judge_model(vendor, api_key=GOOD_KEYS[vendor], base_url=base_url, max_retries=0,
                              timeout_seconds=5, outbound=guard)
    try:
        with pytest.raises(VendorCallError) as caught:
            await model.judge(verdict_call(vendor))
    finally:
        await model.aclose()
    return caught.value


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("name", ["127.0.0.1.nip.io", "169.254.169.254.nip.io", "rebind.example.com"])
def test_a_public_name_resolving_inside_gets_no_connection_through_either_sdk(vendor: Vendor, name: str) -> None:
    # The text passes the save-time check (a public-looking name); the fake vendor listens on the
    # address the name resolves to, and must see nothing.
    with running_fake_vendor() as fake:
        address = "169.254.169.254" if name.startswith("169") else "127.0.0.1"
        guard = OutboundGuard(BaseUrlPolicy(allowed_ports=(443, fake.port)),
                              resolver=fake_resolver({name: [address]}))
        path = "" if vendor == "anthropic" else "/v1"
        error = run(_judge_error(vendor, f"https://{name}:{fake.port}{path}", guard))
        assert error.kind == "network"
        assert _refusal(error).reason == "private_host"
        assert fake.requests == []


def test_every_answer_of_the_name_is_checked_not_just_the_first() -> None:
    guard = OutboundGuard(BaseUrlPolicy(), resolver=fake_resolver({"mixed.example.com": ["93.184.216.34", "10.0.0.7"]}))
    with pytest.raises(BaseUrlRefused) as info:
        guard.addresses("mixed.example.com", 443)
    assert info.value.reason == "private_host"


def test_each_new_connection_resolves_again_so_a_rebound_name_is_refused() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    guard = OutboundGuard(BaseUrlPolicy(), resolver=lambda host, port: next(answers))
    assert guard.addresses("rebind.example.com", 443) == ["93.184.216.34"]
    with pytest.raises(BaseUrlRefused):
        guard.addresses("rebind.example.com", 443)


def test_an_unresolvable_name_is_refused_with_our_reason() -> None:
    guard = OutboundGuard(BaseUrlPolicy(), resolver=fake_resolver({}))
    with guard.client("https://nowhere.example.com") as client, pytest.raises(httpx2.ConnectError) as info:
        client.get("https://nowhere.example.com/")
    assert _refusal(info.value).reason == "unresolvable_host"


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_port_outside_the_allowed_ones_is_refused_at_connect_time(vendor: Vendor) -> None:
    with running_fake_vendor() as fake:
        # A listed internal gateway, but on a port the stage did not allow (e.g. saved before the rule).
        guard = OutboundGuard(BaseUrlPolicy(allowed_hosts=("gateway.test",)),
                              resolver=fake_resolver({"gateway.test": ["127.0.0.1"]}))
        error = run(_judge_error(vendor, f"https://gateway.test:{fake.port}", guard))
        assert _refusal(error).reason == "port_not_allowed"
        assert fake.requests == []


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_redirect_to_another_origin_is_refused_and_never_reached(vendor: Vendor) -> None:
    with running_fake_vendor() as fake, recorder(redirect_to=f"{fake.base_url}/v1/messages") as hop:
        # Both origins are allow-listed on this dev policy: the refusal is about the origin, not the host.
        guard = OutboundGuard(BaseUrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True))
        path = "" if vendor == "anthropic" else "/v1"
        error = run(_judge_error(vendor, f"http://127.0.0.1:{hop.port}{path}", guard))
        assert error.kind == "network"
        assert _refusal(error).reason == "cross_origin_request"
        assert len(hop.paths) == 1  # the POST that was redirected
        assert fake.requests == []  # the key and the body never reached the redirect target


def test_a_redirect_within_the_origin_is_followed() -> None:
    with recorder() as server:
        server.redirect_to = f"http://127.0.0.1:{server.port}/landed"
        guard = OutboundGuard(BaseUrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True))
        with guard.client(f"http://127.0.0.1:{server.port}", follow_redirects=True) as client:
            response = client.post(f"http://127.0.0.1:{server.port}/start", content=b"{}")
    assert response.status_code == 200
    assert server.paths == ["/start", "/landed"]


# ------------------------------------------------------------------ pinning and TLS


def test_the_connection_goes_to_the_checked_address_and_tls_verifies_the_name(pki: Pki) -> None:
    # `vendor.test` exists only in the fake resolver: the request can only succeed if the socket was
    # opened to the address the guard checked, and TLS only if the certificate matched the name.
    with recorder(tls=pki.server_context) as server:
        resolver = fake_resolver({"vendor.test": ["127.0.0.1"]})
        guard = OutboundGuard(BaseUrlPolicy(allowed_hosts=("vendor.test",), allowed_ports=(server.port,)),
                              resolver=resolver, ssl_context=pki.client_context)
        url = f"https://vendor.test:{server.port}/v1/messages"
        with guard.client(url) as client:
            assert client.post(url, content=b"{}").status_code == 200
        assert resolver.calls == ["vendor.test"]

        async def via_async() -> int:
            async with guard.async_client(url) as client:
                return (await client.post(url, content=b"{}")).status_code

        assert run(via_async()) == 200
        assert server.paths == ["/v1/messages", "/v1/messages"]


def test_tls_is_verified_against_the_requested_name_not_the_address(pki: Pki) -> None:
    with recorder(tls=pki.server_context) as server:
        guard = OutboundGuard(BaseUrlPolicy(allowed_hosts=("impostor.test",), allowed_ports=(server.port,)),
                              resolver=fake_resolver({"impostor.test": ["127.0.0.1"]}), ssl_context=pki.client_context)
        url = f"https://impostor.test:{server.port}/"
        with guard.client(url) as client, pytest.raises(httpx2.ConnectError) as info:
            client.get(url)
        assert refusal_in_chain(info.value) is None
        assert "certificate" in str(info.value).lower() or "hostname" in str(info.value).lower()
        assert server.paths == []


def test_the_webhook_client_is_guarded_too() -> None:
    # The same guard serves any outbound URL (e.g. a spend alert webhook), synchronously.
    guard = OutboundGuard(BaseUrlPolicy(), resolver=fake_resolver({"hooks.example.com": ["169.254.169.254"]}))
    with guard.client("https://hooks.example.com/alert") as client, pytest.raises(httpx2.ConnectError) as info:
        client.post("https://hooks.example.com/alert", json={"x": 1})
    assert _refusal(info.value).reason == "private_host"
    with guard.client("https://hooks.example.com/alert") as client, pytest.raises(httpx2.ConnectError) as info:
        client.post("https://elsewhere.example.com/alert", json={"x": 1})
    assert _refusal(info.value).reason == "cross_origin_request"


def test_ip_literals_are_checked_without_asking_the_resolver() -> None:
    resolver = fake_resolver({})
    guard = OutboundGuard(BaseUrlPolicy(), resolver=resolver)
    with pytest.raises(BaseUrlRefused):
        guard.addresses("10.0.0.1", 443)
    assert guard.addresses("93.184.216.34", 443) == ["93.184.216.34"]
    assert guard.addresses(str(ipaddress.ip_address("2606:4700::6812:1")), 443) == ["2606:4700::6812:1"]
    assert resolver.calls == []


def test_the_local_stacks_fake_vendor_keeps_working_on_the_dev_policy(fake_vendor: FakeVendor) -> None:
    guard = OutboundGuard(BaseUrlPolicy(allowed_hosts=("127.0.0.1", "localhost"), allow_http=True))

    async def ok() -> str:
        model = build_judge_model("anthropic", api_key=GOOD_KEYS["anthropic"], base_url=fake_vendor.anthropic_base_url,
                                  max_retries=0, timeout_seconds=5, outbound=guard)
        try:
            return (await model.judge(verdict_call("anthropic"))).stop_reason or ""
        finally:
            await model.aclose()

    assert run(ok()) == "end_turn"


@pytest.fixture
def fake_vendor() -> Iterator[FakeVendor]:
    with running_fake_vendor() as fake:
        yield fake
