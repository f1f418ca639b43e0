"""Vendor `base_url` policy: which gateway URLs a stored API key may be sent to (SSRF and key-exfiltration guard).

A tenant admin may point a vendor at an HTTPS gateway or proxy. The key travels to that host on every
judge call, from inside our network, so the URL must not reach loopback, private, link-local or cloud
metadata addresses, and must not smuggle credentials. A stage can allow-list hosts (the local fake
vendor on 127.0.0.1 in dev); plain http is accepted only for allow-listed hosts on stages that opt in.

Two checks, both here and both pure: `normalize_base_url` checks the URL text when an admin saves it,
and `check_connect_target` checks one resolved address when a connection is about to be opened. The
text alone cannot see what a public name resolves to (`127.0.0.1.nip.io`, DNS rebinding), so the
outbound HTTP adapter (`chalicelib.adapters.outbound_http`) resolves the host itself on every new
connection, passes every address through `check_connect_target`, and connects to the address it
checked. Ports: 443 plus the stage's `allowed_ports`; allow-listed hosts on a stage that allows plain
http (the local stack's fake vendor) may use any port.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_BASE_URL_LENGTH = 2048

# Names that resolve to the machine itself or to an internal network by convention.
_BLOCKED_SUFFIXES: tuple[str, ...] = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa",
                                      ".lan", ".intranet", ".corp", ".arpa")
_BLOCKED_NAMES: frozenset[str] = frozenset({"localhost", "localhost.localdomain", "instance-data",
                                            "metadata", "metadata.google.internal"})
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# A last label that is numeric or hex means an IP address in some legacy form (`127.1`, `0x7f.1`,
# `2130706433`): the resolver would accept it even though it is not a canonical literal.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
# NAT64 well-known prefix: the last 32 bits are an IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Cloud instance metadata (AWS IMDS on IPv4 link-local and its IPv6 ULA twin): never reachable, not
# even through an allow-listed host name, because its answers carry the function's own credentials.
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
DEFAULT_ALLOWED_PORTS: tuple[int, ...] = (443,)


class BaseUrlRefused(ValueError):
    """The URL is not acceptable; `reason` is a short machine-readable kind, the message is for humans."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class BaseUrlPolicy:
    """Where a stored key may travel. `allowed_hosts`: names (or literals) the operator trusts although
    they may be private; `allow_http`: the local-development switch (plain http, any port, for those
    hosts only); `allowed_ports`: the ports any other URL may use (443 by default)."""

    allowed_hosts: tuple[str, ...] = ()
    allow_http: bool = False
    allowed_ports: tuple[int, ...] = DEFAULT_ALLOWED_PORTS

    def is_allow_listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        listed = {h.strip().lower().rstrip(".") for h in self.allowed_hosts}
        return host in listed or bare in listed or f"[{bare}]" in listed

    def port_allowed(self, host: str, port: int) -> bool:
        if self.allow_http and self.is_allow_listed(host):
            return True
        return port in self.allowed_ports


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refuse_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            _refuse_ip(inner)
    if not ip.is_global or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        raise BaseUrlRefused("private_host", f"{ip} is a private, loopback, link-local or reserved address; "
                                             "use a public HTTPS gateway.")


def _check_host(host: str) -> None:
    if host.startswith("["):
        literal = host[1:-1]
        if "%" in literal:
            raise BaseUrlRefused("private_host", "IPv6 zone identifiers are not allowed in base_url.")
        try:
            _refuse_ip(ipaddress.IPv6Address(literal))
        except ipaddress.AddressValueError as exc:
            raise BaseUrlRefused("invalid_host", "base_url has a malformed IPv6 address.") from exc
        return
    try:
        _refuse_ip(ipaddress.IPv4Address(host))
        return
    except ipaddress.AddressValueError:
        pass  # not a dotted IPv4 literal: the host-name checks below apply
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise BaseUrlRefused("invalid_host", "base_url uses a non-canonical IP address form.")
    if not all(_LABEL.match(label) for label in labels):
        raise BaseUrlRefused("invalid_host", "base_url's host is not a valid DNS name.")
    if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES):
        raise BaseUrlRefused("private_host", f"{host} is a local or internal name; use a public HTTPS gateway.")
    if len(labels) < 2:
        # A single-label name is resolved through the search domain, i.e. inside the network.
        raise BaseUrlRefused("private_host", f"{host} is not a fully qualified domain name.")


def normalize_base_url(url: str, policy: BaseUrlPolicy) -> str:
    """The canonical form of an acceptable base URL, or `BaseUrlRefused` saying why not.

    Canonical: lower-case scheme and host, explicit port kept, path kept without its trailing slash,
    so two spellings of one gateway compare equal (the "base_url changed" rule depends on it).
    """
    raw = url.strip()
    if not raw or len(raw) > MAX_BASE_URL_LENGTH:
        raise BaseUrlRefused("invalid_url", f"base_url must be 1 to {MAX_BASE_URL_LENGTH} characters.")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in raw):
        raise BaseUrlRefused("invalid_url", "base_url must be printable ASCII without spaces.")
    if "\\" in raw:
        raise BaseUrlRefused("invalid_url", "base_url must not contain backslashes.")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise BaseUrlRefused("invalid_url", "base_url is not a valid URL.") from exc
    if port == 0:
        raise BaseUrlRefused("invalid_url", "base_url has an invalid port.")
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise BaseUrlRefused("insecure_scheme", "base_url must start with https://.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise BaseUrlRefused("credentials_in_url", "base_url must not contain credentials; the API key is "
                                                   "sent in headers.")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise BaseUrlRefused("invalid_url", "base_url must not have a query string or fragment.")
    hostname = parts.hostname or ""
    if not hostname:
        raise BaseUrlRefused("invalid_url", "base_url has no host.")
    host = hostname.lower().rstrip(".")
    is_ipv6 = ":" in host
    display_host = f"[{host}]" if is_ipv6 else host
    allow_listed = policy.is_allow_listed(host) or policy.is_allow_listed(display_host)
    if scheme == "http" and not (policy.allow_http and allow_listed):
        raise BaseUrlRefused("insecure_scheme", "base_url must use https://.")
    if not allow_listed:
        _check_host(display_host)
    effective_port = port if port is not None else (443 if scheme == "https" else 80)
    if not policy.port_allowed(host, effective_port):
        allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
        raise BaseUrlRefused("port_not_allowed", f"base_url may only use port {allowed}.")
    netloc = display_host if port is None else f"{display_host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


def check_connect_target(host: str, address: str, port: int, policy: BaseUrlPolicy) -> None:
    """Refuse (`BaseUrlRefused`) a connection to `address`:`port` that `host` resolved to.

    Called for every address of every new connection, redirects included, so a name that resolves to
    an internal address (at save time or only later: DNS rebinding) never gets a connection. An
    allow-listed host may resolve to private addresses (an internal gateway), never to cloud metadata
    or link-local, unspecified or multicast ones.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError as exc:
        raise BaseUrlRefused("invalid_host", "The base URL's host resolved to something that is not an IP "
                                             "address.") from exc
    if not policy.port_allowed(host, port):
        allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
        raise BaseUrlRefused("port_not_allowed", f"Connections may only use port {allowed}.")
    if not policy.is_allow_listed(host):
        _refuse_ip(ip)
        return
    inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    for candidate in (ip, inner):
        if candidate is None:
            continue
        if (candidate in _METADATA_ADDRESSES or candidate.is_link_local or candidate.is_multicast
                or candidate.is_unspecified):
            raise BaseUrlRefused("private_host", f"{host} resolves to a link-local, metadata or multicast "
                                                 "address; no connection is made there.")


def refusal_in_chain(exc: BaseException | None) -> BaseUrlRefused | None:
    """The `BaseUrlRefused` behind an error raised by a vendor SDK or HTTP client, if one caused it
    (clients wrap transport errors, so the refusal sits somewhere down the cause chain)."""
    seen: set[int] = set()
    current = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BaseUrlRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
