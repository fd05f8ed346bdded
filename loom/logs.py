"""Structured logs: JSON lines or logfmt, with the signal, session and run in every record,
and no secret value ever written.

``configure(settings)`` installs one handler on the root logger (``loom`` CLI does it for
every role). The ids come from context variables that the attention consumer, the worker
and each run set with ``log_context(...)``; asyncio copies them into the tasks those start,
so a record carries the ids of the work it was logged for. Named ``logs`` so it never
shadows the standard library's ``logging`` inside the package.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any, Literal, Protocol
from urllib.parse import quote, unquote, urlsplit

Format = Literal["json", "logfmt", "auto"]


class LogSection(Protocol):
    """The settings' ``log`` section (``LOOM_LOG__LEVEL``, ``LOOM_LOG__FORMAT``)."""

    @property
    def level(self) -> str: ...

    @property
    def format(self) -> Format: ...


class LoggedSettings(Protocol):
    """What ``configure`` reads of the daemon's settings: typed here, not imported, so the
    logs stay below every layer that logs."""

    @property
    def log(self) -> LogSection: ...


CONTEXT_FIELDS = ("signal_id", "session_id", "run_id")
_vars: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"loom_{name}", default=None) for name in CONTEXT_FIELDS
}

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked: replacing every "ab" in every line would hide the logs,
not protect anything worth the name of a secret."""
SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
"""Environment variables read as secrets too (the providers' keys are not Loom settings)."""

# scheme://user:password@host: the password, whatever URL it is in.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&][A-Za-z_]*password=)[^&\s]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(?=@)")


# -- context ------------------------------------------------------------------------------
def current_context() -> dict[str, str]:
    """The ids set for the code running now."""
    return {name: value for name, var in _vars.items() if (value := var.get()) is not None}


def bind(**ids: str | None) -> None:
    """Set ids for the rest of the current task (a task started now gets its own copy)."""
    for name, value in ids.items():
        _vars[name].set(value)


def log_context(**ids: str | None) -> AbstractContextManager[None]:
    """Set ids (``signal_id``, ``session_id``, ``run_id``) for the block, then restore."""
    return _LogContext(ids)


class _LogContext:
    # A class, not a generator: the attention role enters one per signal.
    __slots__ = ("_ids", "_tokens")

    def __init__(self, ids: dict[str, str | None]) -> None:
        self._ids = ids
        self._tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []

    def __enter__(self) -> None:
        self._tokens = [(_vars[name], _vars[name].set(value)) for name, value in self._ids.items()]

    def __exit__(self, *_: object) -> None:
        for var, token in reversed(self._tokens):
            var.reset(token)


# -- redaction ----------------------------------------------------------------------------
KEY_LIKE = re.compile(
    r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}"  # OpenAI and Anthropic keys (sk-proj-, sk-ant-)
    r"|\bxox[a-z]-[A-Za-z0-9-]{8,}"  # Slack bot, user and app-level tokens
    r"|\bxapp-[A-Za-z0-9-]{8,}"
    r"|(?<=[Bb]earer )[A-Za-z0-9._~+/=-]{8,}"  # an Authorization header quoted back
    r"|(?<=BEARER )[A-Za-z0-9._~+/=-]{8,}"
)
"""Text that looks like a credential, whoever it belongs to: a provider's or a proxy's error
sometimes quotes the key it was sent, and not only keys this process knows of."""


def scrub_keys(text: str) -> str:
    """``text`` with everything that looks like a key or a bearer token masked."""
    return KEY_LIKE.sub(MASK, text)


class Redactor:
    """Masks known secret values (and their URL-encoded forms), URL passwords, and text
    that looks like a key (``KEY_LIKE``)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                values.update({secret, quote(secret, safe=""), quote(secret)})
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
        text = scrub_keys(_QUERY_PASSWORD.sub(rf"\g<head>{MASK}", text))
        return text if self._pattern is None else self._pattern.sub(MASK, text)


def settings_secrets(settings: object | None) -> list[str]:
    """Every secret a process knows: the settings' SecretStr values, the passwords in their
    URLs, and secret-looking environment variables (provider API keys and the like)."""
    found: list[str] = []
    if settings is not None:
        _collect(settings, found)
    for name, value in os.environ.items():
        if name.upper().endswith(SECRET_ENV_SUFFIXES) and value:
            found.append(value)
    return found


def _collect(value: Any, found: list[str]) -> None:
    from pydantic import BaseModel, SecretStr

    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name), found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect(item, found)
    elif isinstance(value, str) and "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            return
        if password:
            found.extend({password, unquote(password)})


# -- formatting ---------------------------------------------------------------------------
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_NOT_EXTRA = _STANDARD | set(CONTEXT_FIELDS)


class _Formatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as ordered fields, every string that could hold a secret redacted."""
        data: dict[str, Any] = {
            # Written by Loom, never by a sender: nothing in them to redact.
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = self._clean(value)
        for name in sorted(record.__dict__.keys() - _NOT_EXTRA):  # extra={...} of the call
            if name not in data:
                data[name] = self._clean(record.__dict__[name])
        if record.exc_info:
            data["exc"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            data["exc"] = self.redact(record.exc_text)
        if record.stack_info:
            data["stack"] = self.redact(self.formatStack(record.stack_info))
        return data

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.redact(str(value))


class JsonFormatter(_Formatter):
    """One JSON object per line: ts, level, logger, msg, the context ids, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), ensure_ascii=False)


class LogfmtFormatter(_Formatter):
    """``ts=... level=info logger=loom.worker msg="..." session_id=ops`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt(value)}" for key, value in self.fields(record).items())


def _logfmt(value: Any) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


class ContextFilter(logging.Filter):
    """Puts the current signal, session and run ids on each record (unless given)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _vars.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


# -- setup --------------------------------------------------------------------------------
_HANDLER_MARK = "_loom_handler"


def configure(
    settings: LoggedSettings | None = None,
    *,
    level: str | int | None = None,
    fmt: Format | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Install Loom's handler on the root logger, replacing any earlier one of Loom's.

    ``level`` and ``fmt`` default to the settings' ``log`` section (``LOOM_LOG__LEVEL``,
    ``LOOM_LOG__FORMAT``); ``auto`` writes logfmt to a terminal and JSON lines otherwise.
    """
    section = settings.log if settings is not None else None
    level = level if level is not None else (section.level if section else "INFO")
    fmt = fmt or (section.format if section else "auto")
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "logfmt" if _isatty(stream) else "json"
    redact = Redactor(settings_secrets(settings))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else LogfmtFormatter(redact))
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # HTTP clients log every request at INFO (each Slack post, callback, probe, `loom send`);
    # that is DEBUG detail for Loom's log, so they speak up only from WARNING unless asked.
    chatty = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)
    return handler


CHATTY_LOGGERS = ("httpx", "httpcore", "aiohttp.access", "slack_sdk", "apscheduler")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = [
    "KEY_LIKE",
    "ContextFilter",
    "JsonFormatter",
    "LogfmtFormatter",
    "Redactor",
    "bind",
    "configure",
    "current_context",
    "log_context",
    "scrub_keys",
    "settings_secrets",
]
