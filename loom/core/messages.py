"""The provider-neutral transcript: messages, tool calls and token usage.

These are plain slotted dataclasses rather than pydantic models because a run creates
several of them per step; they convert to and from JSON-ready dicts for the stores.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to call one tool.

    ``arguments`` holds the parsed arguments; when the model sent text that is not a JSON
    object, ``arguments`` is empty and ``raw_arguments`` keeps the text so the tool layer
    can tell the model what was wrong.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name, "arguments": self.arguments}
        if self.raw_arguments is not None:
            data["raw_arguments"] = self.raw_arguments
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        return cls(
            id=data["id"],
            name=data["name"],
            arguments=dict(data.get("arguments") or {}),
            raw_arguments=data.get("raw_arguments"),
        )


def well_formed(text: str) -> str:
    """``text`` with each lone UTF-16 surrogate replaced by U+FFFD.

    A provider's JSON may escape half of a character (``"\\ud83d"``: output cut at the
    token limit), and a tool may return one; Python keeps such a string, but it has no
    UTF-8 form, so no store, reply or next request could carry it. A surrogate pair split
    across two code points is joined, not replaced.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _well_formed_value(value: Any) -> Any:
    """``well_formed`` applied to every string in a JSON-like value (keys included)."""
    if isinstance(value, str):
        return well_formed(value)
    if isinstance(value, dict):
        return {well_formed(str(k)): _well_formed_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_well_formed_value(item) for item in value]
    return value


def well_formed_call(call: ToolCall) -> ToolCall:
    """``call`` with ``well_formed`` name, arguments and raw arguments."""
    return ToolCall(
        id=call.id,
        name=well_formed(call.name),
        arguments=_well_formed_value(call.arguments),
        raw_arguments=None if call.raw_arguments is None else well_formed(call.raw_arguments),
    )


@dataclass(frozen=True, slots=True)
class Message:
    """One transcript entry.

    Instructions are not messages: they are sent with every model request and never stored
    in a session's history, so a reused session cannot accumulate copies of them.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None
    is_error: bool = False
    provider_data: dict[str, Any] | None = None
    """Opaque provider state kept with an assistant turn (e.g. signed thinking blocks)."""

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(
        cls,
        content: str = "",
        tool_calls: tuple[ToolCall, ...] = (),
        *,
        provider_data: dict[str, Any] | None = None,
    ) -> Message:
        return cls(
            role="assistant",
            content=well_formed(content),
            tool_calls=tuple(well_formed_call(call) for call in tool_calls),
            provider_data=provider_data,
        )

    @classmethod
    def tool_result(cls, call: ToolCall, content: str, *, is_error: bool = False) -> Message:
        return cls(
            role="tool",
            content=well_formed(content),
            tool_call_id=call.id,
            tool_name=call.name,
            is_error=is_error,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
            data["tool_name"] = self.tool_name
        if self.is_error:
            data["is_error"] = True
        if self.provider_data:
            data["provider_data"] = self.provider_data
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        role = data["role"]
        if role not in ("user", "assistant", "tool"):
            raise ValueError(f"unknown message role {role!r}")
        if len(data) == 2 and "content" in data and cls is Message:
            # The common entry (a plain turn, as ``to_dict`` writes it): nothing else to read.
            return _plain(role, data["content"])
        return cls(
            role=role,
            content=data.get("content", ""),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls", ())),
            tool_call_id=data.get("tool_call_id"),
            tool_name=data.get("tool_name"),
            is_error=bool(data.get("is_error", False)),
            provider_data=data.get("provider_data"),
        )


# Each field's slot setter, and the defaults of the fields after ``content`` (all plain
# values: none has a default factory).
if hasattr(Message, "__post_init__") or any(
    f.default_factory is not MISSING for f in fields(Message)
):
    raise TypeError("_plain sets Message's fields directly: it skips __post_init__ and factories")
_ROLE, _CONTENT, _CALLS, _CALL_ID, _TOOL, _ERROR, _DATA = (
    getattr(Message, field.name).__set__ for field in fields(Message)
)
_CALLS_0, _CALL_ID_0, _TOOL_0, _ERROR_0, _DATA_0 = (field.default for field in fields(Message)[2:])


def _plain(role: Role, content: str) -> Message:
    """``Message(role, content)`` at about half the cost: a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``, and a store that does not hold a
    session makes a message this way for every entry of its transcript, every run."""
    message: Message = object.__new__(Message)
    _ROLE(message, role)
    _CONTENT(message, content)
    _CALLS(message, _CALLS_0)
    _CALL_ID(message, _CALL_ID_0)
    _TOOL(message, _TOOL_0)
    _ERROR(message, _ERROR_0)
    _DATA(message, _DATA_0)
    return message


@dataclass(slots=True)
class Usage:
    """Token counts and cost; adds up across model calls, runs and sessions.

    ``input_tokens`` counts every input token, cached ones included; ``cache_read_tokens``
    and ``cache_write_tokens`` say how many of them were cache reads and writes, and
    ``reasoning_tokens`` how many output tokens went to reasoning.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0
    """Cost of the priced requests; ``unpriced_requests`` counts those without a known price."""
    unpriced_requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.requests += other.requests
        self.cost_usd += other.cost_usd
        self.unpriced_requests += other.unpriced_requests

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "requests": self.requests,
            "cost_usd": round(self.cost_usd, 8),
            "unpriced_requests": self.unpriced_requests,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        usage = cls(**{k: int(v) for k, v in data.items() if k in _COUNT_FIELDS})
        usage.cost_usd = float(data.get("cost_usd", 0.0))
        return usage


_COUNT_FIELDS = frozenset(Usage.__dataclass_fields__) - {"cost_usd"}
