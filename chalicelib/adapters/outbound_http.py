"""Outbound HTTP guard: httpx2 clients whose every new connection is resolved, checked and pinned.

Admins choose the vendor `base_url`, so a judge call is an outbound request to a tenant-chosen host
carrying the tenant's key. `chalicelib.domain.base_url` decides what is acceptable; this adapter
enforces it on the wire, for the vendor SDKs (`http_client=`) and for any other outbound URL (an
alert webhook): build an `OutboundGuard` from the stage's `BaseUrlPolicy` and ask it for a client.

- **Every connection.** The network backend under the connection pool resolves the URL's host itself
  (through the injected `Resolver`), refuses the connection if ANY address fails
  `check_connect_target` (private, loopback, link-local, metadata, a port not allowed), and then
  connects to the address it checked: the socket never resolves the name again, so there is no
  window for DNS rebinding between check and connect. TLS still verifies the certificate against
  the original host name (httpcore passes the URL's host as `server_hostname`).
- **One origin.** A client is pinned to the origin of the URL it was built for. A request for any
  other origin, which is what a redirect to another host is, is refused before a connection is
  opened; redirects within the origin are followed (and checked like any other connection).
- **No ambient configuration.** Proxy and TLS environment variables are ignored (`trust_env=False`).

A refusal is raised as the HTTP client's `ConnectError` caused by the domain's `BaseUrlRefused`, so
the SDKs report a connection error and callers find the reason with `refusal_in_chain`.

httpx2/httpcore2 (the SDKs' HTTP stack) are imported inside functions: building a guard costs the
API handler's cold start nothing; only building a client loads them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chalicelib.domain.base_url import BaseUrlPolicy, BaseUrlRefused, check_connect_target

if TYPE_CHECKING:
    import ssl

    import httpcore2
    import httpx2

# Resolves (host, port) to IP address strings. Injected so tests can make `127.0.0.1.nip.io` or
# `169.254.169.254.nip.io` resolve without DNS; the default asks the system resolver.
Resolver = Callable[[str, int], Sequence[str]]
Origin = tuple[str, str, int]
EventHooks = Mapping[str, list[Callable[[Any], Any]]]

# Same keep-alive probing the SDKs set on their own sockets (a judge call can sit silent for minutes).
_KEEPALIVE_OPTIONS: list[tuple[int, int, int]] = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)] + [
    (socket.IPPROTO_TCP, option, value)
    for name, value in (("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5), ("TCP_KEEPIDLE", 60))
    if (option := getattr(socket, name, None)) is not None
]
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_KEEPALIVE_CONNECTIONS = 100


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (A and AAAA), in its preferred order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of a URL, lower-cased, with the scheme's default port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host, port


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class OutboundGuard:
    """The stage's outbound policy plus a resolver; hands out guarded clients pinned to one URL's origin."""

    policy: BaseUrlPolicy
    resolver: Resolver = system_resolver
    # TLS verification context; None means the HTTP stack's default trust store (tests pass their CA).
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses a connection to host:port may use, all of them checked; `BaseUrlRefused` if any
        address (or the port) is not acceptable, or the name does not resolve."""
        if _is_ip_literal(host):
            found = [host]
        else:
            try:
                found = list(self.resolver(host, port))
            except OSError as exc:
                raise BaseUrlRefused("unresolvable_host", f"{host} does not resolve.") from exc
        if not found:
            raise BaseUrlRefused("unresolvable_host", f"{host} does not resolve.")
        for address in found:
            check_connect_target(host, address, port, self.policy)
        return found

    def async_transport(self, url: str, *, limits: httpx2.Limits | None = None) -> httpx2.AsyncBaseTransport:
        import httpx2

        return _pinned_async_transport(self, origin_of(url), limits or httpx2.Limits(
            max_connections=DEFAULT_MAX_CONNECTIONS, max_keepalive_connections=DEFAULT_MAX_KEEPALIVE_CONNECTIONS))

    def transport(self, url: str, *, limits: httpx2.Limits | None = None) -> httpx2.BaseTransport:
        """The synchronous twin of `async_transport` (for callers outside an event loop, e.g. a webhook)."""
        import httpx2

        return _pinned_sync_transport(self, origin_of(url), limits or httpx2.Limits(
            max_connections=DEFAULT_MAX_CONNECTIONS, max_keepalive_connections=DEFAULT_MAX_KEEPALIVE_CONNECTIONS))

    def async_client(self, url: str, *, event_hooks: EventHooks | None = None, **kwargs: Any) -> httpx2.AsyncClient:
        """An `httpx2.AsyncClient` for `url`'s origin; `kwargs` go to the client (timeout, headers…)."""
        import httpx2

        return httpx2.AsyncClient(transport=self.async_transport(url), trust_env=False,
                                  event_hooks=dict(event_hooks or {}), **kwargs)

    def client(self, url: str, *, event_hooks: EventHooks | None = None, **kwargs: Any) -> httpx2.Client:
        import httpx2

        return httpx2.Client(transport=self.transport(url), trust_env=False, event_hooks=dict(event_hooks or {}),
                             **kwargs)


def _refuse_request(origin: Origin, url: Any) -> None:
    import httpx2

    requested: Origin = (str(url.scheme).lower(), str(url.host).lower().rstrip("."),
                         int(url.port or (443 if url.scheme == "https" else 80)))
    if requested != origin:
        refusal = BaseUrlRefused("cross_origin_request",
                                 f"Refused a request to {requested[0]}://{requested[1]}:{requested[2]}: this client "
                                 f"only talks to {origin[0]}://{origin[1]}:{origin[2]} (redirects to another origin "
                                 "are not followed).")
        raise httpx2.ConnectError(refusal.message) from refusal


def _pool_kwargs(guard: OutboundGuard, limits: httpx2.Limits) -> dict[str, Any]:
    import httpx2

    return {"ssl_context": guard.ssl_context or httpx2.create_ssl_context(trust_env=False),
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry, "http1": True, "http2": False,
            "socket_options": _KEEPALIVE_OPTIONS}


def _pinned_async_transport(guard: OutboundGuard, origin: Origin, limits: httpx2.Limits) -> httpx2.AsyncBaseTransport:
    import httpcore2
    import httpx2

    class GuardedAsyncBackend(httpcore2.AsyncNetworkBackend):
        """Resolves, checks every address, connects to a checked address (never to the name)."""

        def __init__(self, inner: httpcore2.AsyncNetworkBackend) -> None:
            self._inner = inner

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                              local_address: str | None = None,
                              socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
            import anyio

            try:
                addresses = await anyio.to_thread.run_sync(guard.addresses, host, port)
            except BaseUrlRefused as refusal:
                raise httpcore2.ConnectError(refusal.message) from refusal
            for address in addresses[:-1]:
                try:
                    return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                         socket_options=socket_options)
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout):
                    continue  # the next checked address of the same name
            return await self._inner.connect_tcp(addresses[-1], port, timeout=timeout, local_address=local_address,
                                                 socket_options=socket_options)

        async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                      socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
            refusal = BaseUrlRefused("invalid_url", "Unix sockets are not an outbound destination.")
            raise httpcore2.ConnectError(refusal.message) from refusal

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    class PinnedAsyncTransport(httpx2.AsyncHTTPTransport):
        def __init__(self) -> None:
            super().__init__(trust_env=False)
            # httpx2's transport takes no network backend; its pool does. Replace the pool it built.
            self._pool = httpcore2.AsyncConnectionPool(
                network_backend=GuardedAsyncBackend(httpcore2.AnyIOBackend()), **_pool_kwargs(guard, limits))

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            _refuse_request(origin, request.url)
            return await super().handle_async_request(request)

    return PinnedAsyncTransport()


def _pinned_sync_transport(guard: OutboundGuard, origin: Origin, limits: httpx2.Limits) -> httpx2.BaseTransport:
    import httpcore2
    import httpx2

    class GuardedBackend(httpcore2.NetworkBackend):
        def __init__(self, inner: httpcore2.NetworkBackend) -> None:
            self._inner = inner

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
            try:
                addresses = guard.addresses(host, port)
            except BaseUrlRefused as refusal:
                raise httpcore2.ConnectError(refusal.message) from refusal
            for address in addresses[:-1]:
                try:
                    return self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                   socket_options=socket_options)
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout):
                    continue
            return self._inner.connect_tcp(addresses[-1], port, timeout=timeout, local_address=local_address,
                                           socket_options=socket_options)

        def connect_unix_socket(self, path: str, timeout: float | None = None,
                                socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
            refusal = BaseUrlRefused("invalid_url", "Unix sockets are not an outbound destination.")
            raise httpcore2.ConnectError(refusal.message) from refusal

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    class PinnedTransport(httpx2.HTTPTransport):
        def __init__(self) -> None:
            super().__init__(trust_env=False)
            self._pool = httpcore2.ConnectionPool(network_backend=GuardedBackend(httpcore2.SyncBackend()),
                                                  **_pool_kwargs(guard, limits))

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            _refuse_request(origin, request.url)
            return super().handle_request(request)

    return PinnedTransport()
