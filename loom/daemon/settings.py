"""Daemon settings: ``LOOM_*`` environment variables, optionally a TOML file (``LOOM_CONFIG``).

Nested fields use ``__``: ``LOOM_HTTP__PORT=9000``, ``LOOM_WORKER__CONCURRENCY=4``.
Environment variables win over the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The adapters' sections, re-exported: ``from loom.daemon.settings import SlackSettings``.
from loom.adapters.registry import (
    AdapterSettings,
    CronJobSettings,
    HeartbeatSettings,
    ProbeSettings,
    SlackSettings,
    WebhookMapping,
    WebhookSettings,
)
from loom.capabilities import MCPCapability
from loom.daemon.capabilities_settings import CapabilitiesSettings
from loom.daemon.context_settings import ContextSettings
from loom.intake.settings import Credential, SettingsBase
from loom.policies.attention import AttentionRule, Schedule
from loom.state.redis_history import DEFAULT_HOLD_BYTES

DEFAULT_INSTRUCTIONS = (
    "You are Loom, an operations agent. Signals reach you from chat, webhooks, alerts and "
    "schedules. Answer briefly, say what you checked, and say plainly when you are unsure."
)


ROLE_PORTS = {"gateway": 8080, "scheduler": 8081, "attention": 8082, "worker": 8083}
"""Where a process of one role listens unless ``LOOM_HTTP__PORT`` says otherwise: the roles
of the README's recipe each get their own, so they run side by side on one machine."""


class HTTPSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    """Where the process listens when set; unset, ``port_for`` picks the role's own."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    def port_for(self, roles: Sequence[str]) -> int:
        """The port a process of ``roles`` listens on: ``LOOM_HTTP__PORT`` when set, else
        the one role's default (``ROLE_PORTS``), else 8080 (``loom run``, several roles)."""
        if "port" in self.model_fields_set or len(roles) != 1:
            return self.port
        return ROLE_PORTS.get(roles[0], self.port)


class ReplySettings(BaseModel):
    """Delivery of replies (Slack threads, callbacks): how long a failing one is retried."""

    model_config = ConfigDict(extra="forbid")

    retry_budget: float = Field(default=900.0, gt=0)
    """Seconds from a reply's first failed delivery during which it is retried; past them
    it is dead-lettered, with how long and how often it was tried."""
    retry_delay: float = Field(default=1.0, gt=0)
    """The pause after the first failure; it doubles with each further failure."""
    max_delay: float = Field(default=120.0, gt=0)
    """The longest pause between two attempts, a longer Retry-After included."""
    claim_ttl: float = Field(default=60.0, gt=0)
    """Seconds a worker holds a reply it is sending, so a second copy waits instead of
    posting it twice; longer than an adapter's request timeout."""


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=8, ge=1, le=1024)
    """Runs one worker process holds at once (each for a different session)."""
    lease_ttl: float = Field(default=15.0, gt=0.5)
    """Seconds a session lease lasts unless renewed; a dead worker's sessions wait this long."""
    sweep_interval: float = Field(default=2.0, gt=0)
    """How often a worker looks for sessions with work and no live lease."""
    prefetch: int = Field(default=32, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    """Times in a row a worker may fail on a session's signals before its run can start
    (not a failed run: that is an answer) before they go to the dead-letter queue, so the
    session takes new signals again. Redis and RabbitMQ outages do not count."""


class ApprovalSettings(BaseModel):
    """Tool calls waiting for a person (``LOOM_APPROVALS__*``)."""

    model_config = ConfigDict(extra="forbid")

    ttl: float | None = Field(default=None, gt=0)
    """Seconds a call waits for a decision before it is denied as expired (unset: the
    agent's ``Runtime.approval_ttl``, 24 hours by default)."""
    hold: float = Field(default=2.0, ge=0)
    """Seconds a worker keeps a paused run (and its slot and lease) before it suspends it
    to the state: a decision within them resumes the run at once."""
    poll: float = Field(default=0.02, gt=0, le=5)
    """How often a worker holding a paused run looks for its decisions."""


class LogSettings(BaseModel):
    """Structured logs (loom.logs): every record carries the signal, session and run ids."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "logfmt", "auto"] = "auto"
    """``json`` lines, ``logfmt``, or ``auto``: logfmt on a terminal, JSON otherwise."""
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class FeedbackSettings(BaseModel):
    """The default FeedbackPolicy of a Daemon (``Daemon(feedback=...)`` replaces it)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Collect run outcomes, tool failures and explicit feedback (off: FeedbackPolicy.none())."""
    max_events: int = Field(default=10_000, ge=1)
    """Feedback events kept in the stream of all sessions (about; oldest go first)."""
    max_session_events: int = Field(default=100, ge=1)
    """Feedback events kept per session (oldest go first): every session has its own
    stream, so this bound is the one that grows with the number of sessions."""


class ConsoleSettings(BaseModel):
    """The operator console at ``/console`` on the gateway (``LOOM_CONSOLE__*``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    """On, off, or unset: on whenever ``LOOM_API_TOKEN`` is set. On without the token is a
    configuration error: the console never serves without a credential."""
    page_size: int = Field(default=50, ge=1, le=500)
    """Sessions, approvals and dead letters shown on one page."""
    login_ttl: float = Field(default=12 * 3600.0, gt=0)
    """Seconds a console login lasts."""
    poll: float = Field(default=1.0, gt=0, le=60)
    """How often the live pages look for a change in the state (one cheap read each)."""

    def on(self, api_token: bool) -> bool:
        """Whether the gateway serves the console."""
        return api_token if self.enabled is None else self.enabled


class StateSettings(BaseModel):
    """What a session keeps in the state (``LOOM_STATE__*``). The defaults hold a session
    of short signals and replies to about 200 KB in Redis (docs/deploying.md, Sizing)."""

    model_config = ConfigDict(extra="forbid")

    max_messages: int = Field(default=400, ge=10)
    """Transcript entries kept per session, the newest; older ones go (the stored summary
    still covers what it summarised)."""
    max_runs: int = Field(default=100, ge=1)
    """Run records kept per session, the newest (``GET /sessions/{id}``, the console)."""
    max_decisions: int = Field(default=50, ge=1)
    """Attention decisions kept per session, the newest (``GET /sessions/{id}`` and the
    console show them all)."""
    hold_bytes: int = Field(default=DEFAULT_HOLD_BYTES, ge=0)
    """Parsed transcripts a worker keeps between runs on Redis (as the store counts them,
    about 600 bytes a message of short turns), so a run reads only what was appended since;
    a session not held is read and parsed whole (docs/deploying.md, CPU per run)."""
    claim_ttl: float = Field(default=86_400.0, gt=0)
    """Seconds a signal's redelivery claim is kept: a redelivery of the same signal within
    it is not recorded twice (about 17 bytes of Redis per signal at volume, kept between
    this and this plus six hours)."""


class Settings(SettingsBase, AdapterSettings):
    """Everything a Loom process reads from its environment. The adapters' sections
    (``slack``, ``webhooks``, ``cron``, ``heartbeat``) and ``webhook_secret`` come from
    ``loom.adapters.registry.AdapterSettings``."""

    broker_url: str = "memory://"
    state_url: str = "memory://"
    namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    """Prefix of every queue, exchange and Redis key, so several Loom deployments (or test
    runs) can share one RabbitMQ and one Redis. Empty: the plain ``loom.*`` names."""
    model: str | None = None
    """``provider:model`` or ``test``; unset: from ANTHROPIC_API_KEY / OPENAI_API_KEY."""
    instructions: str = DEFAULT_INSTRUCTIONS
    api_token: Credential | None = None
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    replies: ReplySettings = Field(default_factory=ReplySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    context: ContextSettings = Field(default_factory=ContextSettings)
    capabilities: CapabilitiesSettings = Field(default_factory=CapabilitiesSettings)
    """The default agent's built-in capabilities (LOOM_CAPABILITIES, JSON): none unless set."""
    publish_timeout: float = Field(default=10.0, gt=0)
    """Seconds a publish waits for RabbitMQ's confirmation (riding out a reconnect) before
    the gateway answers 503."""
    shutdown_timeout: float = Field(default=25.0, gt=0)
    """Seconds SIGTERM waits for in-flight work before handing it back and exiting."""
    dedupe_ttl: float = Field(default=86_400.0, gt=0)
    session_ttl: float = Field(default=30 * 86_400.0, gt=0)
    """Seconds a session's state and transcript are kept after its last activity (Redis)."""
    default_session: str = Field(default="default", pattern=r"^[A-Za-z0-9_.:@/-]{1,256}$")
    """The session of signals that name none."""
    attention_rules: list[AttentionRule] = Field(default_factory=list)
    """Rules tried in order before the urgency default (see docs/daemon.md)."""
    attention_schedule: Schedule = Field(default_factory=Schedule)
    """Default debounce, maximum wait, minimum interval and group (docs/attention.md)."""
    mcp_servers: list[dict[str, Any]] = Field(default_factory=list)
    """MCP servers of the default agent (``LOOM_MCP_SERVERS`` as a JSON list, or ``[[mcp]]``
    tables in the TOML file): the fields of ``Capability.mcp`` (see docs/mcp.md)."""

    @model_validator(mode="after")
    def _console_needs_the_token(self) -> Settings:
        if self.console.enabled and self.api_token is None:
            raise ValueError(
                "LOOM_CONSOLE__ENABLED is true but LOOM_API_TOKEN is unset: the console "
                "needs the API token (set it, or turn the console off)"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _mcp_tables(cls, data: Any) -> Any:
        # ``[[mcp]]`` reads better in TOML than ``[[mcp_servers]]``; both work.
        if isinstance(data, dict) and "mcp" in data:
            data = dict(data)
            data["mcp_servers"] = [*data.get("mcp_servers", []), *data.pop("mcp")]
        return data

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_servers(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = []
        for entry in value:
            names.append(MCPCapability.from_settings(entry).config.name)  # raises when bad
        if len(set(names)) != len(names):
            raise ValueError(f"MCP server names must be unique, got {names}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("memory", "amqp", "amqps"):
            raise ValueError(f"LOOM_BROKER_URL must be memory:// or amqp(s)://..., not {value!r}")
        return value

    @field_validator("state_url")
    @classmethod
    def _state_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("memory", "redis", "rediss", "redis+sentinel", "rediss+sentinel"):
            raise ValueError(
                "LOOM_STATE_URL must be memory://, redis(s)://... or "
                f"redis(s)+sentinel://..., not {value!r}"
            )
        return value

    @property
    def in_process(self) -> bool:
        """True when broker and state live in this process (``loom run`` on the defaults)."""
        return self.broker_url.startswith("memory:") and self.state_url.startswith("memory:")

    def masked(self) -> dict[str, Any]:
        """The settings as JSON-ready data with secrets and URL passwords masked."""
        data = self.model_dump(mode="json")
        # The process's own settings first, the adapters' sections after them.
        adapters = AdapterSettings.model_fields
        data = {k: v for k, v in data.items() if k not in adapters} | {
            k: v for k, v in data.items() if k in adapters
        }
        for server in data.get("mcp_servers", []):
            for part in ("headers", "env"):
                if isinstance(server.get(part), dict):
                    server[part] = dict.fromkeys(server[part], "***")
        data["broker_url"] = mask_url(self.broker_url)
        data["state_url"] = mask_url(self.state_url)
        return data


_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "token", "secret"})


def mask_url(url: str) -> str:
    """``amqp://user:secret@host`` -> ``amqp://user:***@host``; secret query values too."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join(
        f"{name}=***" if name.lower() in _SECRET_PARAMS else f"{name}={value}" if sep else name
        for name, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret; urlunsplit would also turn memory:// into memory:
    return urlunsplit(parts._replace(netloc=netloc, query=query))


__all__ = [
    "ROLE_PORTS",
    "ContextSettings",
    "CronJobSettings",
    "FeedbackSettings",
    "HTTPSettings",
    "HeartbeatSettings",
    "LogSettings",
    "ProbeSettings",
    "ReplySettings",
    "Settings",
    "SlackSettings",
    "StateSettings",
    "WebhookMapping",
    "WebhookSettings",
    "WorkerSettings",
    "mask_url",
]
