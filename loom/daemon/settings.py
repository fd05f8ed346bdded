"""Daemon settings: ``LOOM_*`` environment variables, optionally a TOML file (``LOOM_CONFIG``).

Nested fields use ``__``: ``LOOM_HTTP__PORT=9000``, ``LOOM_WORKER__CONCURRENCY=4``.
Environment variables win over the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from loom.policies.attention import AttentionRule
from loom.signals import Urgency

DEFAULT_INSTRUCTIONS = (
    "You are Loom, an operations agent. Signals reach you from chat, webhooks, alerts and "
    "schedules. Answer briefly, say what you checked, and say plainly when you are unsure."
)


class HTTPSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)


class SlackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing_secret: SecretStr | None = None
    bot_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"


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
    max_session_events: int = Field(default=200, ge=1)
    """Feedback events kept per session (oldest go first): every session has its own
    stream, so this bound is the one that grows with the number of sessions."""


class WebhookMapping(BaseModel):
    """A generic webhook (``POST /webhooks/{name}``): where each signal field is in the JSON body.

    Paths are dotted keys, a number indexes a list: ``alert.title``, ``alerts.0.labels.env``.
    """

    model_config = ConfigDict(extra="forbid")

    summary: str | None = None
    """Path of the summary; unset: the body's ``summary``/``text``/``message``/... field."""
    session_id: str | None = None
    """Path of the session id (characters a session id cannot hold become ``-``)."""
    dedupe_key: str | None = None
    """Path of a delivery id; the key becomes ``{name}:{value}``."""
    reply_to: str | None = None
    """Path of the reply address (e.g. a callback URL the sender names)."""
    urgency: str = "normal"
    """An urgency (``low``, ``normal``, ``high``, ``critical``), or the path of a value that is
    one, or that ``urgency_map`` maps to one."""
    urgency_map: dict[str, Urgency] = Field(default_factory=dict)
    source: str | None = None
    """Constant, with ``{path}`` placeholders filled from the body; unset: the name."""
    type: str = "webhook"
    """Constant, with ``{path}`` placeholders: ``deploy.{status}``."""
    token: SecretStr | None = None
    """This webhook's own bearer token (instead of LOOM_API_TOKEN)."""
    secret: SecretStr | None = None
    """This webhook's own X-Loom-Signature secret (instead of LOOM_WEBHOOK_SECRET)."""

    @field_validator("summary", "session_id", "dedupe_key", "reply_to", "urgency")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(not part for part in value.split("."))):
            raise ValueError(f"{value!r} is not a dotted path like 'alert.title'")
        return value


class WebhookSettings(BaseModel):
    """Inbound webhooks and outbound callbacks (docs/webhooks.md)."""

    model_config = ConfigDict(extra="forbid")

    github_secret: SecretStr | None = None
    """The GitHub webhook's secret; set, ``POST /webhooks/github`` is served."""
    mappings: dict[str, WebhookMapping] = Field(default_factory=dict)
    """Generic webhooks by name, each served at ``POST /webhooks/{name}``."""
    callback_allow_private: bool = False
    """Let replies go to private, loopback and link-local addresses (off: SSRF guard)."""
    callback_timeout: float = Field(default=10.0, gt=0)
    """Seconds a callback POST may take before it counts as failed (and is retried)."""

    @field_validator("mappings")
    @classmethod
    def _names(cls, value: dict[str, WebhookMapping]) -> dict[str, WebhookMapping]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
                raise ValueError(f"webhook name {name!r}: use a-z, 0-9, '_' and '-'")
            if name in ("github", "alertmanager"):
                raise ValueError(f"webhook name {name!r} is taken by the built-in adapter")
        return value


class CronJobSettings(BaseModel):
    """One ``[[cron]]`` job: a signal at each fire time, once across the scheduler replicas."""

    model_config = ConfigDict(extra="forbid")

    expression: str
    """5 fields (minute hour day month weekday), 6 with seconds first, or ``@hourly`` etc."""
    summary: str = Field(min_length=1)
    job_id: str = Field(pattern=r"^[A-Za-z0-9_.@/-]{1,128}$")
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@/-]{1,256}$")
    timezone: str = "UTC"
    """An IANA zone (``Europe/Berlin``): the expression's times are local to it."""
    payload: dict[str, Any] = Field(default_factory=dict)
    urgency: Urgency = "normal"
    misfire_grace_time: float = Field(default=300.0, gt=0)
    """Seconds late a fire may still happen (after downtime, or while the broker is down)."""
    coalesce: bool = True
    """Several missed fires fire once (off: each, at most 100)."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from loom.adapters.cron_schedule import check_timezone

        check_timezone(value)
        return value

    @model_validator(mode="after")
    def _schedule(self) -> CronJobSettings:
        from loom.adapters.cron_schedule import CronSchedule

        CronSchedule(self.expression, self.timezone)  # raises with what is wrong
        return self


class ProbeSettings(BaseModel):
    """A heartbeat probe: ``url`` (HTTP GET) or ``host`` and ``port`` (TCP connect)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    url: str | None = Field(default=None, pattern=r"^https?://")
    expect_status: int = Field(default=200, ge=100, le=599)
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    timeout: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeSettings:
        tcp = self.host is not None or self.port is not None
        if (self.url is None) == (not tcp):
            raise ValueError(f"probe {self.name!r} needs either url, or host and port")
        if tcp and (self.host is None or self.port is None):
            raise ValueError(f"probe {self.name!r} needs both host and port")
        return self


class HeartbeatSettings(BaseModel):
    """The scheduler's heartbeat signal and its probes (off while ``interval`` is unset)."""

    model_config = ConfigDict(extra="forbid")

    interval: float | None = Field(default=None, gt=0)
    """Seconds between heartbeats; unset: no heartbeat."""
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@/-]{1,256}$")
    """The session of heartbeat and probe signals (unset: the default session)."""
    probes: list[ProbeSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _probes(self) -> HeartbeatSettings:
        names = [probe.name for probe in self.probes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"probe names must be unique: {', '.join(duplicates)}")
        if self.probes and self.interval is None:
            raise ValueError("probes run with the heartbeat: set heartbeat.interval")
        return self


class Settings(BaseSettings):
    """Everything a Loom process reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="LOOM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    broker_url: str = "memory://"
    state_url: str = "memory://"
    namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    """Prefix of every queue, exchange and Redis key, so several Loom deployments (or test
    runs) can share one RabbitMQ and one Redis. Empty: the plain ``loom.*`` names."""
    model: str | None = None
    """``provider:model`` or ``test``; unset: from ANTHROPIC_API_KEY / OPENAI_API_KEY."""
    instructions: str = DEFAULT_INSTRUCTIONS
    api_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    replies: ReplySettings = Field(default_factory=ReplySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
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
    cron: list[CronJobSettings] = Field(default_factory=list)
    """Cron jobs (``[[cron]]`` tables, or ``LOOM_CRON`` as a JSON list; docs/scheduler.md)."""
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)

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
        if scheme not in ("memory", "redis", "rediss"):
            raise ValueError(f"LOOM_STATE_URL must be memory:// or redis(s)://..., not {value!r}")
        return value

    @field_validator("cron")
    @classmethod
    def _unique_jobs(cls, value: list[CronJobSettings]) -> list[CronJobSettings]:
        ids = [job.job_id for job in value]
        duplicates = sorted({job_id for job_id in ids if ids.count(job_id) > 1})
        if duplicates:
            raise ValueError(f"cron job_id must be unique: {', '.join(duplicates)} repeated")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("LOOM_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"LOOM_CONFIG names {config_file!r}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def in_process(self) -> bool:
        """True when broker and state live in this process (``loom run`` on the defaults)."""
        return self.broker_url.startswith("memory:") and self.state_url.startswith("memory:")

    def masked(self) -> dict[str, Any]:
        """The settings as JSON-ready data with secrets and URL passwords masked."""
        data = self.model_dump(mode="json")
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
