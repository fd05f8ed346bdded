"""The ``webhooks`` settings section: GitHub's secret, generic webhook mappings, callbacks."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loom.intake.settings import Credential
from loom.signals import Urgency


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
    token: Credential | None = None
    """This webhook's own bearer token (instead of LOOM_API_TOKEN)."""
    secret: Credential | None = None
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

    github_secret: Credential | None = None
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


__all__ = ["WebhookMapping", "WebhookSettings"]
