"""What an adapter is handed: the intake port and the few things of its process it may use.

``AdapterContext`` replaces the ``Daemon`` adapters used to receive. The state, the broker
and whether the process drains are read from the process at each use; the rest are the
settings adapters need, as plain values. ``settings`` (the process's ``Settings``) is kept
for adapters written against the Daemon; built-in adapters read ``section`` or the fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from loom.core.approvals import ApprovalDesk
from loom.intake.auth import Credentials
from loom.intake.port import Host, Intake

if TYPE_CHECKING:
    from starlette.responses import Response

    from loom.broker.base import Broker
    from loom.core.session_store import SessionStore
    from loom.signals import RuntimeSignal
    from loom.state.base import State
    from loom.state.claims import Claims
    from loom.state.leases import Leases

T = TypeVar("T")


class AdapterContext:
    """The narrow view of a Loom process that ``Adapter.routes`` and ``Adapter.start`` get."""

    def __init__(
        self,
        host: Host,
        *,
        settings: Any = None,
        api_token: str | None = None,
        webhook_secret: str | None = None,
        max_body_bytes: int = 1_048_576,
        publish_timeout: float = 10.0,
        shutdown_timeout: float = 25.0,
        dedupe_ttl: float = 86_400.0,
        lease_ttl: float = 15.0,
        runtime_timeout: float | None = None,
        approvals: ApprovalDesk | None = None,
    ) -> None:
        self._host = host
        self.intake = Intake(host, publish_timeout=publish_timeout, dedupe_ttl=dedupe_ttl)
        self.settings: Any = settings
        """The process's settings (``loom.daemon.Settings``), for adapters written against
        the Daemon; prefer ``section`` and the typed fields below."""
        self.credentials = Credentials(api_token, webhook_secret)
        """What inbound routes accept by default, and the one place that decides
        (``Credentials.refusal``); a blank token or secret is refused here."""
        self.api_token = api_token
        """LOOM_API_TOKEN: the bearer token inbound routes accept by default."""
        self.webhook_secret = webhook_secret
        """LOOM_WEBHOOK_SECRET: the key of ``X-Loom-Signature`` (see ``loom.intake.signing``)."""
        self.max_body_bytes = max_body_bytes
        self.publish_timeout = publish_timeout
        """Seconds a publish waits for the broker's confirmation."""
        self.shutdown_timeout = shutdown_timeout
        self.lease_ttl = lease_ttl
        """Seconds a worker's session lease lasts unless renewed."""
        self.runtime_timeout = runtime_timeout
        """The agent's run timeout (None: runs may take any time)."""
        self.approvals = approvals
        """Where a person's decision on a tool call is taken (Slack's Approve and Deny
        buttons); None where the process takes none."""

    @property
    def claims(self) -> Claims:
        """Claims and markers in the shared state: how replicas agree on a tick or a fire,
        and what an adapter remembers (a posted message, a probe's status)."""
        return self._host.state

    @property
    def leases(self) -> Leases:
        """The session leases, read-only by convention: who runs which session, how long."""
        return self._host.state

    @property
    def sessions(self) -> SessionStore:
        """The sessions' transcripts and runs (the stuck-run check reads their endings)."""
        return self._host.state.sessions

    async def ping_state(self) -> bool:
        """Whether the shared state answers (a health report's line)."""
        return await self._host.state.ping()

    async def ping_broker(self) -> bool:
        """Whether the broker answers (a health report's line)."""
        return await self._host.broker.ping()

    async def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (``BrokerUnavailable`` when the broker cannot say)."""
        return await self._host.broker.queue_depth(queue)

    @property
    def state(self) -> State:
        """The whole shared state, for adapters written against the Daemon; the built-in
        adapters use the narrow views above."""
        return self._host.state

    @property
    def broker(self) -> Broker:
        """The whole broker, for adapters written against the Daemon; publish through
        ``publish`` or ``accept``, ask for health with ``ping_broker`` and ``queue_depth``."""
        return self._host.broker

    @property
    def draining(self) -> bool:
        """True once the process stops taking work (inbound routes answer 503)."""
        return self._host.draining

    async def accept(self, signal: RuntimeSignal) -> Response:
        """``intake.accept``: publish with dedupe, answered 202, 200 or 503."""
        return await self.intake.accept(signal)

    async def publish(self, signal: RuntimeSignal) -> None:
        """``intake.publish``: publish, confirmed, or raise ``BrokerUnavailable``."""
        await self.intake.publish(signal)

    def section(self, name: str, kind: type[T]) -> T | None:
        """The settings section ``name`` when the settings have one of type ``kind``."""
        value = getattr(self.settings, name, None)
        return value if isinstance(value, kind) else None


class HasContext(Protocol):
    """A process that makes adapter contexts (the Daemon)."""

    @property
    def adapter_context(self) -> AdapterContext: ...


def context_of(source: AdapterContext | HasContext) -> AdapterContext:
    """``source`` itself, or the context of a process handed in its place (code written
    before the context existed calls ``adapter.start(daemon)``)."""
    return source if isinstance(source, AdapterContext) else source.adapter_context


__all__ = ["AdapterContext", "HasContext", "context_of"]
