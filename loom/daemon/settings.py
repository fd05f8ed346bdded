"""Daemon settings: ``LOOM_*`` environment variables, optionally a TOML file (``LOOM_CONFIG``).

Nested fields use ``__``: ``LOOM_HTTP__PORT=9000``, ``LOOM_WORKER__CONCURRENCY=4``.
Environment variables win over the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from loom.policies.attention import AttentionRule

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


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=8, ge=1, le=1024)
    """Runs one worker process holds at once (each for a different session)."""
    lease_ttl: float = Field(default=15.0, gt=0.5)
    """Seconds a session lease lasts unless renewed; a dead worker's sessions wait this long."""
    sweep_interval: float = Field(default=2.0, gt=0)
    """How often a worker looks for sessions with work and no live lease."""
    prefetch: int = Field(default=32, ge=1)


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
    shutdown_timeout: float = Field(default=25.0, gt=0)
    """Seconds SIGTERM waits for in-flight work before handing it back and exiting."""
    dedupe_ttl: float = Field(default=86_400.0, gt=0)
    session_ttl: float = Field(default=30 * 86_400.0, gt=0)
    """Seconds a session's state and transcript are kept after its last activity (Redis)."""
    default_session: str = Field(default="default", pattern=r"^[A-Za-z0-9_.:@/-]{1,256}$")
    """The session of signals that name none."""
    attention_rules: list[AttentionRule] = Field(default_factory=list)
    """Rules tried in order before the urgency default (see docs/daemon.md)."""

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
