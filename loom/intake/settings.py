"""Where Loom's settings come from: ``LOOM_*`` environment variables, then the TOML file
``LOOM_CONFIG`` names (environment variables win). Nested fields use ``__``.

The daemon's ``Settings`` is one such model; an adapter built in code reads its own
section through a small one (``Slack()`` reads ``LOOM_SLACK__*``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class SettingsBase(BaseSettings):
    """A settings model read from ``LOOM_*`` and ``LOOM_CONFIG``."""

    model_config = SettingsConfigDict(
        env_prefix="LOOM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

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


__all__ = ["SettingsBase"]
