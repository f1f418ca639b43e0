"""The vendor base_url policy: public HTTPS gateways only, unless the stage allow-lists a host."""

from __future__ import annotations

import pytest

from chalicelib.domain.base_url import (
    BaseUrlPolicy,
    BaseUrlRefused,
    check_connect_target,
    normalize_base_url,
    refusal_in_chain,
)

STRICT = BaseUrlPolicy()
DEV = BaseUrlPolicy(allowed_hosts=("127.0.0.1", "localhost", "[::1]"), allow_http=True)
GATEWAY_PORTS = BaseUrlPolicy(allowed_ports=(443, 8443))
INTERNAL_GATEWAY = BaseUrlPolicy(allowed_hosts=("llm-gateway.corp.example.com",))


@pytest.mark.parametrize(("url", "expected"), [
    ("https://api.anthropic.com", "https://api.anthropic.com"),
    ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
    ("HTTPS://Gateway.Example.COM:443/anthropic", "https://gateway.example.com:443/anthropic"),
    ("https://gateway.example.com.", "https://gateway.example.com"),
    ("https://8.8.8.8/v1", "https://8.8.8.8/v1"),
    ("https://[2606:4700:4700::1111]/v1", "https://[2606:4700:4700::1111]/v1"),
    ("https://xn--bcher-kva.example/v1", "https://xn--bcher-kva.example/v1"),
])
def test_public_https_urls_are_accepted_and_normalised(url: str, expected: str) -> None:
    assert normalize_base_url(url, STRICT) == expected


@pytest.mark.parametrize(("url", "reason"), [
    ("http://gateway.example.com", "insecure_scheme"),
    ("ftp://gateway.example.com", "insecure_scheme"),
    ("gateway.example.com", "insecure_scheme"),
    ("https://localhost", "private_host"),
    ("https://localhost:8443/v1", "private_host"),
    ("https://api.localhost", "private_host"),
    ("https://metadata.google.internal", "private_host"),
    ("https://db.corp.internal/v1", "private_host"),
    ("https://printer.local", "private_host"),
    ("https://gateway", "private_host"),
    ("https://instance-data", "private_host"),
    ("https://127.0.0.1", "private_host"),
    ("https://127.8.9.10:443", "private_host"),
    ("https://10.0.0.1", "private_host"),
    ("https://172.16.5.4", "private_host"),
    ("https://192.168.1.10:8443/v1", "private_host"),
    ("https://169.254.169.254/latest/meta-data", "private_host"),
    ("https://100.64.0.1", "private_host"),
    ("https://0.0.0.0", "private_host"),
    ("https://224.0.0.1", "private_host"),
    ("https://[::1]", "private_host"),
    ("https://[::]", "private_host"),
    ("https://[fe80::1]", "private_host"),
    ("https://[fe80::1%25eth0]", "private_host"),
    ("https://[fd00::1]", "private_host"),
    ("https://[::ffff:10.0.0.1]", "private_host"),
    ("https://[::ffff:169.254.169.254]", "private_host"),
    ("https://[::ffff:127.0.0.1]", "private_host"),
    ("https://[64:ff9b::a9fe:a9fe]", "private_host"),
    ("https://[2002:a9fe:a9fe::1]", "private_host"),
    ("https://2130706433", "invalid_host"),
    ("https://0x7f.1", "invalid_host"),
    ("https://127.1", "invalid_host"),
    ("https://under_score.example.com", "invalid_host"),
    ("https://user:pw@gateway.example.com", "credentials_in_url"),
    ("https://token@gateway.example.com", "credentials_in_url"),
    ("https://gateway.example.com/v1?key=1", "invalid_url"),
    ("https://gateway.example.com/#frag", "invalid_url"),
    ("https://gateway.example.com:99999", "invalid_url"),
    ("https://gateway.example.com:0", "invalid_url"),
    ("https://", "invalid_url"),
    ("https://gate way.example.com", "invalid_url"),
    ("https://gateway.example.com\\@evil.example", "invalid_url"),
    ("", "invalid_url"),
    ("https://" + "a" * 2100 + ".com", "invalid_url"),
])
def test_unsafe_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(BaseUrlRefused) as info:
        normalize_base_url(url, STRICT)
    assert info.value.reason == reason
    assert info.value.message


def test_allow_listed_hosts_may_be_private_and_use_http_when_the_stage_allows_it() -> None:
    assert normalize_base_url("http://127.0.0.1:5100", DEV) == "http://127.0.0.1:5100"
    assert normalize_base_url("https://localhost:5100/v1/", DEV) == "https://localhost:5100/v1"
    assert normalize_base_url("http://[::1]:5100", DEV) == "http://[::1]:5100"


def test_http_needs_both_the_stage_flag_and_an_allow_listed_host() -> None:
    listed_without_http = BaseUrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=False)
    with pytest.raises(BaseUrlRefused) as info:
        normalize_base_url("http://127.0.0.1:5100", listed_without_http)
    assert info.value.reason == "insecure_scheme"
    with pytest.raises(BaseUrlRefused) as info:
        normalize_base_url("http://gateway.example.com", DEV)
    assert info.value.reason == "insecure_scheme"


def test_allow_list_does_not_extend_to_other_private_hosts() -> None:
    with pytest.raises(BaseUrlRefused):
        normalize_base_url("https://10.0.0.1", DEV)
    with pytest.raises(BaseUrlRefused):
        normalize_base_url("https://169.254.169.254", DEV)


def test_a_configured_port_is_accepted_and_any_other_port_refused() -> None:
    assert normalize_base_url("HTTPS://Gateway.Example.COM:8443/anthropic", GATEWAY_PORTS) == \
        "https://gateway.example.com:8443/anthropic"
    for url, policy in (("https://gateway.example.com:8443", STRICT), ("https://gateway.example.com:22", GATEWAY_PORTS),
                        ("https://gateway.example.com:6379/v1", STRICT),
                        ("https://llm-gateway.corp.example.com:8080", INTERNAL_GATEWAY)):
        with pytest.raises(BaseUrlRefused) as info:
            normalize_base_url(url, policy)
        assert info.value.reason == "port_not_allowed"


# ------------------------------------------------------------------ connect time: resolved addresses


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.20.0.5", "192.168.0.1", "169.254.169.254", "100.100.100.200", "0.0.0.0",
    "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
    "224.0.0.251",
])
def test_a_public_name_resolving_to_an_internal_address_gets_no_connection(address: str) -> None:
    # e.g. 127.0.0.1.nip.io or 169.254.169.254.nip.io: the text passed the save-time check.
    assert normalize_base_url("https://127.0.0.1.nip.io", STRICT) == "https://127.0.0.1.nip.io"
    with pytest.raises(BaseUrlRefused) as info:
        check_connect_target("127.0.0.1.nip.io", address, 443, STRICT)
    assert info.value.reason == "private_host"


def test_a_public_address_on_an_allowed_port_is_accepted() -> None:
    check_connect_target("api.anthropic.com", "160.79.104.10", 443, STRICT)
    check_connect_target("api.openai.com", "2606:4700::6812:1", 443, STRICT)
    check_connect_target("gateway.example.com", "93.184.216.34", 8443, GATEWAY_PORTS)


def test_connect_time_ports_follow_the_policy() -> None:
    with pytest.raises(BaseUrlRefused) as info:
        check_connect_target("gateway.example.com", "93.184.216.34", 8443, STRICT)
    assert info.value.reason == "port_not_allowed"
    check_connect_target("127.0.0.1", "127.0.0.1", 5100, DEV)  # the local fake vendor, any port


def test_an_allow_listed_host_may_be_private_but_never_metadata_or_link_local() -> None:
    check_connect_target("llm-gateway.corp.example.com", "10.20.30.40", 443, INTERNAL_GATEWAY)
    check_connect_target("localhost", "::1", 5100, DEV)
    for address in ("169.254.169.254", "fd00:ec2::254", "fe80::1", "::ffff:169.254.169.254", "224.0.0.1", "0.0.0.0"):
        with pytest.raises(BaseUrlRefused) as info:
            check_connect_target("llm-gateway.corp.example.com", address, 443, INTERNAL_GATEWAY)
        assert info.value.reason == "private_host"


def test_a_non_address_answer_is_refused() -> None:
    with pytest.raises(BaseUrlRefused) as info:
        check_connect_target("gateway.example.com", "not-an-ip", 443, STRICT)
    assert info.value.reason == "invalid_host"


def test_the_refusal_is_found_under_the_clients_wrapping_errors() -> None:
    refusal = BaseUrlRefused("private_host", "no")
    try:
        try:
            try:
                raise refusal
            except BaseUrlRefused as inner:
                raise ConnectionError("connect failed") from inner
        except ConnectionError as middle:
            raise RuntimeError("sdk error") from middle
    except RuntimeError as outer:
        assert refusal_in_chain(outer) is refusal
    assert refusal_in_chain(RuntimeError("unrelated")) is None


def test_the_stage_configures_ports_and_the_container_hands_the_same_policy_to_the_wire() -> None:
    from chalicelib.config import runtime_config_from_env
    from chalicelib.wiring import Container

    env = {"EVAL_TABLE_NAME": "t", "EVAL_BUCKET_NAME": "b", "EVAL_QUEUE_URL": "q", "EVAL_KMS_KEY_ID": "k",
           "EVAL_SECRET_PREFIX": "p/", "ALLOWED_BASE_URL_HOSTS": "llm-gateway.corp.example.com",
           "ALLOWED_BASE_URL_PORTS": "443, 8443"}
    container = Container(runtime_config_from_env(env))
    policy = container.base_url_policy
    assert policy.allowed_ports == (443, 8443)
    assert policy.allowed_hosts == ("llm-gateway.corp.example.com",)
    assert container.outbound_guard.policy is policy
    assert runtime_config_from_env({k: v for k, v in env.items() if k != "ALLOWED_BASE_URL_PORTS"}
                                   ).allowed_base_url_ports == (443,)
