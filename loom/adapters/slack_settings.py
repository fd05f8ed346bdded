"""The ``slack`` settings section (``LOOM_SLACK__*``), light to import: the Slack adapter
itself loads its SDK on first use."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from loom.intake.settings import Credential, SettingsBase


class SlackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing_secret: Credential | None = None
    bot_token: Credential | None = None
    api_url: str = "https://slack.com/api/"


class _SlackEnvironment(SettingsBase):
    model_config = SettingsConfigDict(extra="ignore")  # the other sections are not ours

    slack: SlackSettings = Field(default_factory=SlackSettings)


def slack_settings_from_environment() -> SlackSettings:
    """The ``slack`` section as the environment and ``LOOM_CONFIG`` set it."""
    return _SlackEnvironment().slack


__all__ = ["SlackSettings", "slack_settings_from_environment"]
