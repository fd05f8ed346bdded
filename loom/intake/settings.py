"""Where Loom's settings come from: ``LOOM_*`` environment variables, then the TOML file
``LOOM_CONFIG`` names (environment variables win). Nested fields use ``__``.

The daemon's ``Settings`` is one such model; an adapter built in code reads its own
section through a small one (``Slack()`` reads ``LOOM_SLACK__*``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, SecretStr, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from loom.logs import Redactor

PREFIX = "LOOM_"
NESTED = "__"


def _not_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError(
            "is empty: set a value, or unset it to go without (an empty credential is a "
            "configuration error, never the absence of one)"
        )
    return value


Credential = Annotated[SecretStr, AfterValidator(_not_blank)]
"""A token or secret setting: unset, or not blank. A blank key in a Kubernetes Secret then
stops the pod with the setting's name, instead of leaving a door open."""


class SettingsBase(BaseSettings):
    """A settings model read from ``LOOM_*`` and ``LOOM_CONFIG``."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_nested_delimiter=NESTED, extra="forbid", validate_default=True
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


SECRET_NAME = re.compile(r"token|secret|password|passwd|key|credential|auth", re.IGNORECASE)
"""Names of settings whose values are secrets: an error about one never shows the value."""


def describe_settings_error(
    problem: Exception, environ: Mapping[str, str] | None = None
) -> str | None:
    """A settings error as one line naming the variable and the place in its value
    (``LOOM_HTTP__PORT: Input should be a valid integer (got 'abc')``, ``LOOM_ATTENTION_RULES:
    not JSON: Expecting value: line 1 column 12 (char 11)``), without pydantic's links; None
    when ``problem`` is no settings error."""
    line = _describe(problem, os.environ if environ is None else environ)
    return None if line is None else Redactor()(line)  # URL passwords: it goes to a terminal


def _describe(problem: Exception, env: Mapping[str, str]) -> str | None:
    if isinstance(problem, ValidationError):
        if problem.title not in _settings_models():
            return None  # a signal's or a request's fields: not the settings
        return "; ".join(_describe_field(error, env) for error in problem.errors())
    if isinstance(problem, tomllib.TOMLDecodeError):
        return f"LOOM_CONFIG {env.get('LOOM_CONFIG', '')!r} is not TOML: {problem}"
    if isinstance(problem, SettingsError):
        match = re.search(r'field "([^"]+)"', str(problem))
        field = match.group(1) if match else ""
        return _unparsable(field, env) or f"{PREFIX}{field.upper()}: {problem.__cause__ or problem}"
    return None


def _settings_models() -> set[str]:
    """The names of every settings model (a ValidationError knows only its model's name)."""
    names, todo = set(), [SettingsBase]
    while todo:
        model = todo.pop()
        names.add(model.__name__)
        todo.extend(model.__subclasses__())
    return names


def _describe_field(error: ErrorDetails, env: Mapping[str, str]) -> str:
    loc = error["loc"]
    names = [str(part) for part in loc]
    upper = {name.upper(): name for name in env}
    # The deepest variable that is set names the place: LOOM_HTTP__PORT, or LOOM_HTTP when
    # the whole section came as JSON; the rest of the location is the place in its value.
    for depth in range(len(names), 0, -1):
        if all(isinstance(part, str) for part in loc[:depth]):
            variable = PREFIX + NESTED.join(names[:depth]).upper()
            if variable in upper:
                where = upper[variable] + _position(loc[depth:])
                break
    else:
        where = ".".join(names) or "settings"
        below = PREFIX + NESTED.join(names).upper() + NESTED
        setting = sorted(upper[name] for name in upper if name.startswith(below))
        config = env.get("LOOM_CONFIG")
        if setting:
            where += f" (from {', '.join(setting)})"
        elif config:
            where += f" in {config}"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    # A secret's value is never echoed, even a wrong one: it may be the right secret put
    # in the wrong place, and this line goes to a terminal and to logs.
    secret = any(SECRET_NAME.search(str(part)) for part in loc)
    shown = not secret and isinstance(value, str | int | float) and repr(value) not in message
    return f"{where}: {message}" + (f" (got {value!r})" if shown else "")


def _position(rest: Sequence[int | str]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)


def _unparsable(field: str, env: Mapping[str, str]) -> str | None:
    """The variable of section ``field`` whose value is not JSON, with the parser's position."""
    variable = PREFIX + field.upper()
    for name, value in sorted(env.items()):
        upper = name.upper()
        if upper != variable and not upper.startswith(variable + NESTED):
            continue
        try:
            json.loads(value)
        except ValueError as problem:
            if value.lstrip()[:1] in ("[", "{"):
                return f"{name}: not JSON: {problem}"
    return None


__all__ = ["SettingsBase", "describe_settings_error"]
