"""The ``slack`` settings section (``LOOM_SLACK__*``), light to import: the Slack adapter
itself loads its SDK on first use."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import NoDecode, SettingsConfigDict

from loom.intake.settings import Credential, SettingsBase

_USER_ID = re.compile(r"^[A-Z0-9]{2,64}$")


def user_ids(value: Any) -> Any:
    """Slack user ids from a comma-separated string (``U0123,U0456``), a JSON list or a
    list; an empty value is refused (unset the setting to let everyone decide)."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be Slack user ids separated by commas, got {value!r}")
    ids = [item.strip() if isinstance(item, str) else item for item in value]
    ids = [item for item in ids if item != ""]
    if not ids:
        raise ValueError(
            "is empty: list the Slack user ids who may decide approvals (U0123,U0456), or "
            "unset it to let everyone who can press the buttons decide"
        )
    for item in ids:
        if not isinstance(item, str) or not _USER_ID.match(item):
            raise ValueError(f"{item!r} is not a Slack user id (like U0123ABCD)")
    return tuple(ids)


class SlackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing_secret: Credential | None = None
    bot_token: Credential | None = None
    api_url: str = "https://slack.com/api/"
    approvers: Annotated[tuple[str, ...] | None, NoDecode, BeforeValidator(user_ids)] = None
    """Slack user ids who may press Approve or Deny; unset: everyone who can press them."""


class _SlackEnvironment(SettingsBase):
    model_config = SettingsConfigDict(extra="ignore")  # the other sections are not ours

    slack: SlackSettings = Field(default_factory=SlackSettings)


def slack_settings_from_environment() -> SlackSettings:
    """The ``slack`` section as the environment and ``LOOM_CONFIG`` set it."""
    return _SlackEnvironment().slack


__all__ = ["SlackSettings", "slack_settings_from_environment", "user_ids"]
