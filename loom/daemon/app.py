"""Daemon: an agent plus its attention policy and adapters, run as roles.

Roles: ``gateway`` (HTTP in), ``scheduler`` (cron, heartbeat), ``attention`` (the signal
consumer) and ``worker`` (session runs). ``loom run`` runs all of them in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import uvicorn
from pydantic import SecretStr

from loom import metrics, tracing
from loom.adapters.registry import adapters_from_settings, merge_adapters
from loom.agent import Agent
from loom.broker import Broker
from loom.capabilities import MCPCapability
from loom.daemon.approvals import StateApprovalDesk
from loom.daemon.attention import AttentionConsumer
from loom.daemon.http import build_app, credentials_warning, describe_routes
from loom.daemon.http_server import GuardedHttpToolsProtocol
from loom.daemon.replies import ReplyDispatcher
from loom.daemon.settings import Settings
from loom.daemon.worker import SessionWorker
from loom.intake.adapter import Adapter
from loom.intake.context import AdapterContext
from loom.model import Model
from loom.policies.attention import AttentionPolicy, Schedule
from loom.policies.feedback import FeedbackPolicy
from loom.policies.governance import GovernancePolicy
from loom.providers.test import TestModel
from loom.runtime.config import Runtime
from loom.state import State, state_from_url
from loom.wire import broker_from_url

logger = logging.getLogger("loom.daemon")

ROLES = ("gateway", "scheduler", "attention", "worker")


class InsecureBinding(Exception):
    """A process would listen beyond loopback without an API token."""


class AddressInUse(Exception):
    """The HTTP address could not be bound."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a busy port is reported before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only when it does,
    # and without it every response waits ~40 ms on the client's delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as problem:
        listener.close()
        raise AddressInUse(
            f"cannot listen on {host}:{port}: {problem.strerror}; set LOOM_HTTP__PORT"
        ) from problem
    listener.set_inheritable(True)
    return listener


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


CLOSE_RESERVE = 0.3
"""Seconds of the drain's deadline kept for closing the broker and state connections."""


YOUNG_OBJECTS = 10_000
"""Allocations between two collections of the youngest generation while a process serves
(Python's default is 700)."""


def settle_heap() -> tuple[int, int, int]:
    """Make the garbage collector cheap for a process about to serve; returns the thresholds
    it had (``gc.set_threshold(*old)`` and ``gc.unfreeze()`` undo it).

    What the start made (modules, schemas, settings, clients: most of the process's objects)
    is frozen (``gc.freeze``): full collections no longer walk it, which cost a gateway about
    a sixth of its CPU per accepted signal (``bench/gateway.py``); it lives as long as the
    process anyway. The youngest generation is collected every ``YOUNG_OBJECTS`` allocations
    instead of 700: each collection has a cost of its own, and a request makes hundreds of
    objects (about an eighth more of the gateway's CPU). Garbage without cycles is still
    freed at once; cycles wait a little longer, a few megabytes at most.
    """
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *old[1:])
    return old


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class Daemon:
    """``Daemon(agent, attention=..., adapters=[...], feedback=...)``; ``loom run
    module:daemon`` runs it. ``feedback`` defaults to a collector bounded by
    ``LOOM_FEEDBACK__MAX_EVENTS`` (``FeedbackPolicy.none()`` when
    ``LOOM_FEEDBACK__ENABLED=false``)."""

    def __init__(
        self,
        agent: Agent | None = None,
        *,
        attention: AttentionPolicy | None = None,
        adapters: Sequence[Adapter] = (),
        settings: Settings | None = None,
        feedback: FeedbackPolicy | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._test_model_by_default = False
        self.agent = agent or self._agent_from_settings()
        scheduled = self.settings.attention_schedule != Schedule()
        if attention is None and (self.settings.attention_rules or scheduled):
            attention = AttentionPolicy(
                rules=self.settings.attention_rules, schedule=self.settings.attention_schedule
            )
        self.attention = attention or self.agent.attention
        self.adapters = merge_adapters(adapters_from_settings(self.settings), adapters)
        self.broker: Broker = broker_from_url(
            self.settings.broker_url,
            namespace=self.settings.namespace,
            publish_timeout=self.settings.publish_timeout,
        )
        self.feedback = feedback or _default_feedback(self.settings)
        self.state: State = state_from_url(
            self.settings.state_url,
            **state_options(self.settings.state_url, self.settings),
            max_feedback=self.feedback.max_events,
            max_session_feedback=self.feedback.max_session_events,
        )
        # Runs keep their transcripts where every replica can read them, and so does feedback;
        # governance's rate limits count across replicas.
        self.agent.session_store = self.state.sessions
        self.agent.share_rate_limits(self.state.rate_limits)
        if self.settings.approvals.ttl is not None:
            ttl = {"approval_ttl": self.settings.approvals.ttl}
            self.agent.runtime = self.agent.runtime.model_copy(update=ttl)
            self.agent.loop.retune(self.agent.runtime)
        self.feedback.bind(self.state)
        self.feedback.attach(self.agent)
        metrics.instrument(self.agent)
        tracing.instrument(self.agent)
        self.attention_consumer = AttentionConsumer(
            self.broker,
            self.state,
            self.attention,
            hooks=self.agent.hooks,
            dedupe_ttl=self.settings.dedupe_ttl,
            default_session=self.settings.default_session,
            feedback=self.feedback,
        )
        worker = self.settings.worker
        self.worker = SessionWorker(
            self.agent,
            self.broker,
            self.state,
            concurrency=worker.concurrency,
            lease_ttl=worker.lease_ttl,
            sweep_interval=worker.sweep_interval,
            prefetch=worker.prefetch,
            max_attempts=worker.max_attempts,
            approvals=self.settings.approvals,
        )
        self.replies = ReplyDispatcher(
            self.broker,
            self.state,
            self.adapters,
            settings=self.settings.replies,
            session_ttl=self.settings.session_ttl,
        )
        self.roles: tuple[str, ...] = ()
        self.started = False
        self.draining = False
        self.adapter_context = _adapter_context(self)
        """What adapters are handed (``routes``, ``start``): never the Daemon itself."""
        self.approvals = StateApprovalDesk(self.state.suspensions, self.adapter_context.publish)
        """Where decisions on approvals are taken (HTTP, ``loom approve``, Slack)."""
        self.adapter_context.approvals = self.approvals
        self._stop = asyncio.Event()
        self._server: _Server | None = None

    def _agent_from_settings(self) -> Agent:
        # Quietly: only the worker calls the model, so only it warns (at start).
        spec = self.settings.model
        model = Model.parse(spec) if spec else Model.from_environment(warn=False)
        self._test_model_by_default = spec is None and isinstance(model, TestModel)
        context = self.settings.context
        capabilities = self.settings.capabilities
        # A configured shell or writable files root is the operator saying destructive
        # calls may run; the shell's own approval rule still asks a person per command.
        governance = GovernancePolicy.default(allow_destructive=capabilities.destructive)
        runtime = Runtime.sdk(
            context=context.manager(), continuity=context.continuity(), governance=governance
        )
        knowledge = context.knowledge()
        return Agent(
            model,
            self.settings.instructions,
            runtime=runtime,
            knowledge=knowledge,
            knowledge_tool=context.knowledge_tool and bool(knowledge),
            capabilities=[
                *capabilities.build(),
                *(MCPCapability.from_settings(s) for s in self.settings.mcp_servers),
            ],
        )

    def _warn_about_model(self) -> None:
        """Say once, at start, what will make the worker's runs fail or answer offline."""
        if self._test_model_by_default:
            logger.warning(
                "no LOOM_MODEL and no ANTHROPIC_API_KEY or OPENAI_API_KEY: runs answer with "
                "the offline test model"
            )
        elif (problem := self.agent.model.missing_credentials()) is not None:
            logger.warning(
                "model %s: %s; every run will fail until it is", self.agent.model.name, problem
            )

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, roles: Iterable[str] = ROLES) -> None:
        """Connect and start the given roles (consumers, sweeper); no HTTP."""
        self.roles = tuple(roles)
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
        try:
            await self.broker.start()
            await self.state.start()
            if "attention" in self.roles:
                await self.attention_consumer.start()
            if "worker" in self.roles:
                self._warn_about_model()
                await self.agent.start()  # MCP servers with connect=True; raises if one fails
                await self.worker.start()
                await self.replies.start()
            if "scheduler" in self.roles:
                for adapter in self.scheduled_adapters:
                    await adapter.start(self.adapter_context)
        except BaseException:
            # Redis or RabbitMQ missing: close what did connect, so the process exits with
            # the one line that says why, not with the connection's tasks torn down by the
            # closing event loop ("Event loop is closed", "Task was destroyed").
            with contextlib.suppress(Exception):
                await self.broker.close()
            with contextlib.suppress(Exception):
                await self.state.close()
            with contextlib.suppress(Exception):
                await self.agent.aclose()
            raise
        self.started = True
        logger.info(
            "loom started: roles %s, broker %s, state %s, model %s",
            ",".join(self.roles), self.broker.url, self.state.url, self.agent.model.name,
        )  # fmt: skip

    async def stop(self) -> None:
        """Drain: stop consuming, finish or hand back in-flight work, disconnect."""
        self.draining = True
        # One deadline for the whole drain, so it fits the pod's grace period.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout
        # All at once: each may wait a moment (a cron publish being confirmed). The bound
        # only stops a stuck adapter from eating the drain; a cron job bounds itself.
        scheduled, bound = self.scheduled_adapters, self.settings.shutdown_timeout / 2
        stopped: Sequence[object] = ()
        try:
            async with asyncio.timeout(bound):
                stopped = await asyncio.gather(
                    *(adapter.stop() for adapter in scheduled), return_exceptions=True
                )
        except TimeoutError:
            logger.error("scheduled adapters not all stopped within %gs; going on", bound)
        for adapter, outcome in zip(scheduled, stopped, strict=False):
            if isinstance(outcome, BaseException):
                logger.error("adapter %s: stop failed: %r", adapter.name, outcome)
        await self.attention_consumer.stop(min(5.0, self.settings.shutdown_timeout / 4))
        # Closing the connections below takes a moment of the deadline too.
        await self.worker.stop(max(deadline - loop.time() - CLOSE_RESERVE, 0.0))
        await self.replies.stop(max(min(5.0, deadline - loop.time() - CLOSE_RESERVE), 0.0))
        await self.broker.close()
        await self.state.close()
        await self.agent.aclose()
        for adapter in self.adapters:
            await adapter.aclose()
        self.started = False

    async def readiness(self) -> dict[str, bool]:
        checks: dict[str, bool] = {"started": self.started and not self.draining}
        if "attention" in self.roles:
            checks["attention_consuming"] = self.attention_consumer.consuming
        if "worker" in self.roles:
            checks["worker_consuming"] = self.worker.consuming
            checks["replies_consuming"] = self.replies.consuming
            for name, status in self.capability_status().items():
                if status.get("connect"):  # readiness waits for servers started eagerly
                    checks[name] = bool(status.get("ready"))
        if "scheduler" in self.roles:
            for adapter in self.scheduled_adapters:
                checks.update(await adapter.check())
        checks["broker"] = await _safely(self.broker.ping())
        checks["state"] = await _safely(self.state.ping())
        return checks

    def capability_status(self) -> dict[str, dict[str, Any]]:
        """The agent's capabilities (MCP servers) as ``/readyz`` details them (only the
        worker role holds them)."""
        return self.agent.capability_status() if "worker" in self.roles else {}

    @property
    def scheduled_adapters(self) -> list[Adapter]:
        return [adapter for adapter in self.adapters if adapter.scheduled]

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self, roles: Iterable[str] = ROLES) -> None:
        """Run the roles and the HTTP server until SIGTERM or SIGINT, then drain."""
        roles = tuple(roles)
        http = self.settings.http
        port = http.port_for(roles)
        # The same credentials the routes are guarded by (``Credentials``): one decision.
        if not is_loopback(http.host) and self.adapter_context.credentials.token is None:
            raise InsecureBinding(
                f"refusing to listen on {http.host}:{port} without an API token: set "
                "LOOM_API_TOKEN, or listen on 127.0.0.1 (LOOM_HTTP__HOST)"
            )
        listener = bind(http.host, port)  # before anything starts: fail fast and clearly
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start(roles)
        except BaseException:
            listener.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            raise
        app = build_app(self, gateway="gateway" in self.roles, console=self.settings.console)
        logger.info("serving %s", describe_routes(app, self.adapters))
        # Said once the process serves: a start that fails says only why it failed.
        notice = credentials_warning(
            api_token=self.settings.api_token is not None,
            webhook_secret=self.settings.webhook_secret is not None,
        )
        if notice is not None:
            logger.warning(notice)
        # log_config=None: uvicorn's records go through Loom's handler (format, redaction).
        # access_log=False: at "warning" its INFO lines are dropped anyway, but their
        # arguments (client address, quoted path) were still worked out for every request.
        # http: httptools with a header timeout (uvicorn has none).
        config = uvicorn.Config(
            app,
            http=GuardedHttpToolsProtocol,
            log_level="warning",
            lifespan="off",
            log_config=None,
            access_log=False,
        )
        self._server = _Server(config)
        thresholds = settle_heap()
        try:
            server_task = asyncio.create_task(self._server.serve([listener]), name="loom-http")
            logger.info("listening on http://%s:%d", http.host, listener.getsockname()[1])
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({server_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            logger.info("loom stopping: draining for up to %.0fs", self.settings.shutdown_timeout)
            self.draining = True
            try:
                await self.stop()
            finally:
                self._server.should_exit = True
                with contextlib.suppress(Exception):
                    await server_task
                stopper.cancel()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        finally:
            gc.unfreeze()  # what the start made may be collected again (in-process servers)
            gc.set_threshold(*thresholds)
        if server_task.done() and server_task.exception() is not None:
            raise server_task.exception()  # type: ignore[misc]
        logger.info("loom stopped")


def _adapter_context(daemon: Daemon) -> AdapterContext:
    """The daemon's narrow face to its adapters: state, broker and draining read live."""
    settings = daemon.settings
    return AdapterContext(
        daemon,
        settings=settings,
        api_token=_secret(settings.api_token),
        webhook_secret=_secret(settings.webhook_secret),
        max_body_bytes=settings.http.max_body_bytes,
        publish_timeout=settings.publish_timeout,
        shutdown_timeout=settings.shutdown_timeout,
        dedupe_ttl=settings.dedupe_ttl,
        lease_ttl=settings.worker.lease_ttl,
        runtime_timeout=daemon.agent.runtime.timeout,
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _default_feedback(settings: Settings) -> FeedbackPolicy:
    if not settings.feedback.enabled:
        return FeedbackPolicy.none()
    return FeedbackPolicy.collector(
        max_events=settings.feedback.max_events,
        max_session_events=settings.feedback.max_session_events,
    )


def state_options(url: str, settings: Settings) -> dict[str, Any]:
    bounds: dict[str, Any] = {
        "max_messages": settings.state.max_messages,
        "max_runs": settings.state.max_runs,
        "max_decisions": settings.state.max_decisions,
        "recorded_ttl": settings.state.claim_ttl,
    }
    if url.startswith("memory:"):
        return bounds
    options: dict[str, Any] = {
        **bounds,
        "session_ttl": settings.session_ttl,
        "transcript_ttl": settings.session_ttl,
        "hold_bytes": settings.state.hold_bytes,
    }
    if settings.namespace:
        options["prefix"] = f"{settings.namespace}:loom"
    return options


async def _safely(check: Any) -> bool:
    try:
        return bool(await asyncio.wait_for(check, 2.0))
    except Exception:
        return False
