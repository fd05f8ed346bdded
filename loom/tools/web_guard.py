"""Where the web capability may connect: every address a host resolves to is checked, and
the connection goes to the address that was checked (no second lookup to rebind).

``GuardedTransport`` is an httpx transport: for each request it resolves the host once,
refuses the request unless every address is allowed, then sends it to the checked IP with
the original ``Host`` header and TLS server name (httpcore's ``sni_hostname``), so the
certificate is still verified for the name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from typing import Protocol

import httpx
from wcmatch import fnmatch

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata: refused even with allow_private (credentials live there).
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class WebRefused(ValueError):
    """A URL the web capability will not fetch; the message names the rule."""


class Resolver(Protocol):
    """Turns a host name into addresses (the default: the system's getaddrinfo)."""

    async def resolve(self, host: str, port: int) -> Sequence[str]: ...


class SystemResolver:
    async def resolve(self, host: str, port: int) -> Sequence[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            inner = refusal(embedded)
            return None if inner is None else f"IPv4 inside IPv6, {inner}"
        if address.teredo is not None:
            return "a Teredo (tunnelled IPv4) address"
    if address in METADATA:
        return "the cloud metadata address"
    for test, what in (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
    ):
        if test:
            return what
    if not address.is_global:
        return "not a public address"
    return None


def _is_metadata(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return embedded in METADATA
    return address in METADATA


class AddressGuard:
    """The rules: public addresses only, unless ``allow_private``; with ``allow_hosts``
    only those hosts (names or ``*.example.com`` globs), which may be private."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_hosts: Sequence[str] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.allow_hosts = None if allow_hosts is None else tuple(h.lower() for h in allow_hosts)
        self.resolver = resolver or SystemResolver()

    def host_allowed(self, host: str) -> bool:
        return self.allow_hosts is None or fnmatch.fnmatch(host.lower(), self.allow_hosts)

    async def checked_address(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: every one it resolves to checked."""
        if not self.host_allowed(host):
            raise WebRefused(f"host {host!r} is not in allow_hosts")
        private_ok = self.allow_private or self.allow_hosts is not None
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                answers = await self.resolver.resolve(host, port)
            except OSError:
                raise WebRefused(f"host {host!r} does not resolve") from None
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
        if not addresses:
            raise WebRefused(f"host {host!r} does not resolve")
        for address in addresses:
            if _is_metadata(address):
                raise WebRefused(f"host {host!r} resolves to the cloud metadata address")
            why = refusal(address)
            if why is not None and not private_ok:
                raise WebRefused(
                    f"host {host!r} resolves to {why}: refused (allow_private or allow_hosts "
                    "lets it through)"
                )
        return str(addresses[0])


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to addresses ``guard`` checked."""

    def __init__(
        self,
        guard: AddressGuard,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.guard = guard
        # No proxies from the environment (they would connect for us, unchecked), and no
        # kept-alive connection shared between two names on one address.
        self.inner = inner or httpx.AsyncHTTPTransport(
            verify=ssl_context or httpx.create_ssl_context(trust_env=False),
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise WebRefused(f"scheme {url.scheme!r} refused: only http and https")
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        address = await self.guard.checked_address(host, port)
        request.url = url.copy_with(host=address)
        request.headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


__all__ = [
    "AddressGuard",
    "GuardedTransport",
    "Resolver",
    "SystemResolver",
    "WebRefused",
    "refusal",
]
