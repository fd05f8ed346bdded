"""RuntimeSignal, the one wire format for everything that reaches an agent, and SignalAdapter.

Wire format version 1. Signals are frozen and validated wherever they cross a boundary;
``RuntimeSignal.json_schema()`` publishes the schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

Urgency = Literal["low", "normal", "high", "critical"]
URGENCIES: tuple[Urgency, ...] = ("low", "normal", "high", "critical")

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:@/-]{1,256}$"
_NOT_IN_SESSION_ID = re.compile(r"[^A-Za-z0-9_.:@/-]")


def session_id_from(text: str) -> str | None:
    """``text`` made a valid session id (other characters become ``-``, at most 256), or
    None when nothing is left: for ids built from names in outside payloads."""
    return _NOT_IN_SESSION_ID.sub("-", text)[:256] or None


VISIBLE = r"[^\s\x1c-\x1f\x85\ufeff]"
"""At least one character that is not whitespace. JSON Schema patterns match anywhere, and
what counts as whitespace differs between ECMA-262 (JSON Schema), Python and Rust
(pydantic); naming the characters they disagree on makes the class the same in all three."""


SAYS_SOMETHING: dict[str, Any] = {
    "anyOf": [
        {"required": ["summary"], "properties": {"summary": {"pattern": VISIBLE}}},
        {"required": ["payload"], "properties": {"payload": {"minProperties": 1}}},
    ]
}
"""``RuntimeSignal.says_nothing`` as JSON Schema: what the gateway adds to the wire format."""


def _signal_id() -> str:
    return f"sig_{uuid4().hex}"


def _now() -> datetime:
    return datetime.now(UTC)


class RuntimeSignal(BaseModel):
    """Something that happened and may deserve the agent's attention."""

    # No whitespace stripping: what the JSON schema says is exactly what is accepted.
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    id: str = Field(default_factory=_signal_id, min_length=1, max_length=128, pattern=VISIBLE)
    source: str = Field(default="custom", min_length=1, max_length=128, pattern=VISIBLE)
    type: str = Field(default="event", min_length=1, max_length=128, pattern=VISIBLE)
    summary: str = Field(default="", max_length=10_000)
    urgency: Urgency = "normal"
    payload: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    run_id: str | None = Field(default=None, max_length=128)
    dedupe_key: str | None = Field(default=None, min_length=1, max_length=512, pattern=VISIBLE)
    reply_to: str | None = Field(default=None, max_length=2048)
    observed_at: AwareDatetime = Field(default_factory=_now)
    expires_at: AwareDatetime | None = None

    @field_validator("observed_at", "expires_at", mode="before")
    @classmethod
    def _timestamp_text(cls, value: Any) -> Any:
        # The wire format says RFC 3339 text; a bare number is refused rather than guessed
        # to be Unix seconds (or milliseconds).
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError("must be an RFC 3339 timestamp string with a timezone")
        return value

    @field_validator("observed_at", "expires_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    @classmethod
    def create(
        cls,
        summary: str,
        *,
        source: str = "custom",
        type: str = "event",
        urgency: Urgency = "normal",
        payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> RuntimeSignal:
        """A signal with ``summary``; the payload carries it as ``content`` too."""
        body = dict(payload or {})
        if re.search(VISIBLE, summary):  # a blank summary is no content
            body.setdefault("content", summary)
        return cls(
            summary=summary, source=source, type=type, urgency=urgency, payload=body, **fields
        )

    def says_nothing(self) -> bool:
        """True when the summary is blank and the payload empty: nothing for a run to work
        on. The gateway refuses such a signal (422, see ``SAYS_SOMETHING``); the wire format
        still carries one, so a signal queued before the rule is still read and decided."""
        return not self.payload and re.search(VISIBLE, self.summary) is None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or _now())

    def describe(self) -> str:
        """The signal as the agent reads it in its input."""
        text = f"[{self.source}/{self.type}, urgency {self.urgency}] {self.summary}".rstrip()
        extra = {k: v for k, v in self.payload.items() if k != "content" or v != self.summary}
        if extra:
            text += f"\npayload: {json.dumps(extra, default=str, ensure_ascii=False)}"
        return text

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return cls.model_json_schema()


Field_ = Any | Callable[[Mapping[str, Any]], Any]
_SUMMARY_KEYS = ("summary", "content", "text", "message", "name", "id")


class SignalAdapter:
    """Maps an external event (a dict) to a RuntimeSignal; each field a constant or callable."""

    def __init__(
        self,
        *,
        source: Field_ = "custom",
        type: Field_ = "event",
        urgency: Field_ = "normal",
        summary: Field_ = None,
        payload: Field_ = None,
        session_id: Field_ = None,
        dedupe_key: Field_ = None,
        reply_to: Field_ = None,
    ) -> None:
        self.fields: dict[str, Field_] = {
            "source": source,
            "type": type,
            "urgency": urgency,
            "summary": summary,
            "payload": payload,
            "session_id": session_id,
            "dedupe_key": dedupe_key,
            "reply_to": reply_to,
        }

    def adapt(self, event: Mapping[str, Any], **overrides: Any) -> RuntimeSignal:
        values: dict[str, Any] = {}
        for name, spec in self.fields.items():
            value = spec(event) if callable(spec) else spec
            if value is not None:
                values[name] = value
        if "summary" not in values:
            values["summary"] = next(
                (str(event[k]) for k in _SUMMARY_KEYS if event.get(k) not in (None, "")), ""
            )
        values.setdefault("payload", dict(event))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return RuntimeSignal(**values)
