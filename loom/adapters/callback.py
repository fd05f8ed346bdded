"""Callbacks: replies to ``http://`` and ``https://`` addresses, POSTed as signed JSON.

A signal whose ``reply_to`` is a URL gets the finished run's answer there::

    POST <reply_to>
    content-type: application/json
    idempotency-key: <run id>            the same on every retry of this reply
    x-loom-timestamp, x-loom-signature   see loom.intake.signing (LOOM_WEBHOOK_SECRET;
                                         signed as a callback, so never valid inbound)

    {"run_id": ..., "session_id": ..., "status": "completed", "output": ..., "error": null,
     "signal_ids": [...]}

A run paused for approval sends ``"status": "awaiting_approval"`` (the text so far in
``output``; not a failure, the answer follows in a later callback) and ``"approvals"``: per
call its ``id``, ``tool``, ``arguments``, ``digest``, ``reason``, ``expires_at`` and
``decide_path`` (``/sessions/{session}/approvals/{id}``: POST the decision there). Its
idempotency-key is the run id and the approvals (``Reply.key``), so it never hides the answer.

A non-2xx answer (redirects are not followed), a timeout or a connection error raises, so
the reply dispatcher retries it and dead-letters it past the retry budget
(``LOOM_REPLIES__RETRY_BUDGET``); a refused address is dead-lettered at once. Without a
webhook secret the callback is sent unsigned and a warning is logged once.

SSRF guard: the host is resolved first, and unless ``allow_private`` every address must be
public (not private, loopback, link-local, shared, reserved or multicast). An IPv6 address
that carries an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo, SIIT) is judged by that IPv4
address too, since a translator or relay on the way delivers it there. The connection then
goes to the address that was checked (TLS still verifies the host's name), so a DNS answer
that changes between check and connect cannot redirect the callback inward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
from typing import TYPE_CHECKING, Any, Protocol

from loom._version import __version__
from loom.errors import LoomError
from loom.intake.adapter import Adapter
from loom.intake.replies import Reply, UndeliverableReply
from loom.intake.signing import sign_callback

if TYPE_CHECKING:
    import httpx
    from pydantic import SecretStr

    from loom.adapters.webhook_settings import WebhookSettings

logger = logging.getLogger("loom.callbacks")

ALLOW_PRIVATE_SETTING = "LOOM_WEBHOOKS__CALLBACK_ALLOW_PRIVATE=true"


class CallbackSettings(Protocol):
    """What callbacks read of the settings (``loom.daemon.Settings`` has it)."""

    @property
    def webhook_secret(self) -> SecretStr | None: ...

    @property
    def webhooks(self) -> WebhookSettings: ...


class CallbackError(LoomError):
    """A callback failed; the dispatcher retries, then dead-letters it. ``retry_after`` is
    the receiver's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CallbackRefused(CallbackError, UndeliverableReply):
    """The address can never be called back (not a URL, no host, a private destination):
    dead-lettered at once."""


class Callbacks(Adapter):
    """Delivers replies to ``http(s)://`` addresses (always configured)."""

    name = "callbacks"
    reply_prefixes = ("http://", "https://")

    def __init__(
        self,
        *,
        secret: str | None = None,
        allow_private: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.secret = secret
        self.allow_private = allow_private
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._warned_unsigned = False

    @classmethod
    def from_settings(cls, settings: CallbackSettings) -> Callbacks:
        secret = settings.webhook_secret
        return cls(
            secret=secret.get_secret_value() if secret is not None else None,
            allow_private=settings.webhooks.callback_allow_private,
            timeout=settings.webhooks.callback_timeout,
        )

    def replies_to(self, address: str) -> bool:
        return address.startswith(("http://", "https://"))

    async def send_reply(self, reply: Reply) -> None:
        import httpx

        try:
            url = httpx.URL(reply.reply_to)
        except httpx.InvalidURL as problem:
            raise CallbackRefused(f"reply_to is not a URL: {problem}") from problem
        where = f"{url.scheme}://{url.netloc.decode()}{url.path}"  # no query: it may hold tokens
        if not url.host:
            raise CallbackRefused(f"callback to {where}: the URL names no host")
        body = json.dumps(callback_body(reply), ensure_ascii=False).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": f"loom/{__version__}",
            "idempotency-key": reply.key,
        }
        if self.secret:
            headers.update(sign_callback(self.secret, body))
        elif not self._warned_unsigned:
            self._warned_unsigned = True
            logger.warning("callbacks are sent unsigned: set LOOM_WEBHOOK_SECRET to sign them")
        extensions: dict[str, str] = {}
        if not self.allow_private:
            address = await self._public_address(url, where)
            # Connect to the address just checked; Host and TLS (SNI, certificate) keep the name.
            headers["host"] = url.netloc.decode()
            extensions["sni_hostname"] = url.host
            url = url.copy_with(host=address)
        try:
            response = await self._http().post(
                url, content=body, headers=headers, extensions=extensions
            )
        except httpx.HTTPError as problem:
            raise CallbackError(f"callback to {where} failed: {problem!r}") from problem
        if not response.is_success:
            raise CallbackError(
                f"callback to {where} answered HTTP {response.status_code}",
                retry_after=_seconds(response.headers.get("retry-after")),
            )

    async def _public_address(self, url: httpx.URL, where: str) -> str:
        """The first address ``url``'s host resolves to, if all of them are public."""
        loop = asyncio.get_running_loop()
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await loop.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as problem:
            raise CallbackError(f"callback to {where}: cannot resolve {url.host!r}") from problem
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            if not public(address):
                raise CallbackRefused(
                    f"callback to {where} refused: {url.host} is {address}, a private, "
                    f"loopback or link-local address; set {ALLOW_PRIVATE_SETTING} to allow it"
                )
        return addresses[0]

    def _http(self) -> httpx.AsyncClient:
        import httpx

        if self._client is None:
            # No keep-alive: a pooled connection opened for one name must not carry another
            # name's request to the same address.
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def callback_body(reply: Reply) -> dict[str, Any]:
    """The JSON a callback carries; a paused run's request adds ``approvals``, each with
    the path that decides it (``POST`` there, see docs/webhooks.md)."""
    body: dict[str, Any] = {
        "run_id": reply.run_id,
        "session_id": reply.session_id,
        "status": reply.status,
        "output": reply.output,
        "error": reply.error,
        "signal_ids": list(reply.signal_ids),
    }
    if reply.awaiting_approval:
        try:
            approvals = reply.approvals()
        except ValueError as problem:
            raise CallbackRefused(f"run {reply.run_id}: {problem}") from problem
        body["approvals"] = [
            {
                "id": approval.id,
                "tool": approval.tool,
                "arguments": approval.arguments,
                "digest": approval.digest,
                "reason": approval.reason,
                "expires_at": approval.expires_at.isoformat(),
                "decide_path": f"/sessions/{approval.session_id}/approvals/{approval.id}",
            }
            for approval in approvals
        ]
    return body


# NAT64 with the well-known prefix (RFC 6052): the IPv4 address is the low 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Never public, whatever they embed: the local-use NAT64 prefix (RFC 8215; where the IPv4
# address sits depends on the prefix length the operator chose), SIIT's IPv4-translated
# addresses (RFC 2765) and the deprecated IPv4-compatible ones (RFC 4291).
_NOT_PUBLIC = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
)


def public(address: str) -> bool:
    """True for a globally routable unicast address; an IPv6 address that embeds an IPv4
    address (mapped, NAT64, 6to4, Teredo) only if that IPv4 address is public too."""
    ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv4Address):
        return _public(ip)
    if ip.ipv4_mapped is not None:  # the socket connects over IPv4 to it
        return _public(ip.ipv4_mapped)
    if any(ip in network for network in _NOT_PUBLIC):
        return False
    embedded: ipaddress.IPv4Address | None = None
    if ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    elif ip.sixtofour is not None:
        embedded = ip.sixtofour
    elif ip.teredo is not None:
        embedded = ip.teredo[1]  # the client's address, which the relay forwards to
    return _public(ip) and (embedded is None or _public(embedded))


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def _seconds(value: str | None) -> float | None:
    """Retry-After in delta-seconds (an HTTP date is ignored: the backoff applies then)."""
    if value is None or not re.fullmatch(r"[0-9]{1,6}", value.strip()):
        return None
    return float(value.strip())


__all__ = ["CallbackError", "Callbacks", "callback_body", "public"]
