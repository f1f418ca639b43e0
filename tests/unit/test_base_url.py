"""The vendor base_url policy: public HTTPS gateways only, unless the stage allow-lists a host."""

from __future__ import annotations

import pytest

from chalicelib.domain.base_url import BaseUrlPolicy, BaseUrlRefused, normalize_base_url

STRICT = BaseUrlPolicy()
DEV = BaseUrlPolicy(allowed_hosts=("127.0.0.1", "localhost", "[::1]"), allow_http=True)


@pytest.mark.parametrize(("url", "expected"), [
    ("https://api.anthropic.com", "https://api.anthropic.com"),
    ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
    ("HTTPS://Gateway.Example.COM:8443/anthropic", "https://gateway.example.com:8443/anthropic"),
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
