"""The model port: what the agent loop asks of every provider."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loom.core.messages import Message, ToolCall, Usage, well_formed, well_formed_call
from loom.errors import ProviderError
from loom.generation import Generation
from loom.tools.tool import ToolDefinition

StopReason = Literal[
    "end_turn",
    "tool_use",
    "max_tokens",
    "stop_sequence",
    "refusal",
    "context_window_exceeded",
    "other",
]


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """A piece of a streamed model turn: answer text, thinking, or a tool call's input JSON."""

    kind: Literal["text", "thinking", "tool_input"]
    text: str
    tool_call_id: str | None = None
    tool_name: str | None = None


DeltaHandler = Callable[[StreamDelta], Awaitable[None]]
"""Receives streamed pieces as they arrive (only passed when generation.stream is on)."""


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything one model call needs; providers translate it to their wire format."""

    instructions: str
    messages: Sequence[Message]
    tools: Sequence[ToolDefinition]
    generation: Generation
    run_id: str = ""
    session_id: str = ""
    iteration: int = 1
    context_chars: int = 0
    """Estimated size of instructions-free request text, kept up to date by the loop."""

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(slots=True)
class ModelResponse:
    """One model turn: text, tool calls, usage and why it stopped."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    stop_reason: StopReason = "end_turn"
    model: str = ""
    provider_data: dict[str, Any] | None = None
    """Provider state the next request must send back (e.g. signed thinking blocks)."""

    def __post_init__(self) -> None:
        # Whatever the provider sent, the run's output and transcript stay storable.
        self.text = well_formed(self.text)
        self.tool_calls = tuple(well_formed_call(call) for call in self.tool_calls)

    @classmethod
    def of_text(cls, text: str, **kwargs: Any) -> ModelResponse:
        return cls(text=text, **kwargs)

    @classmethod
    def of_tool_calls(cls, *calls: ToolCall, text: str = "", **kwargs: Any) -> ModelResponse:
        return cls(text=text, tool_calls=calls, stop_reason="tool_use", **kwargs)

    def message(self) -> Message:
        return Message.assistant(self.text, self.tool_calls, provider_data=self.provider_data)


class ModelProvider(ABC):
    """A model the agent loop can call. Implementations must be safe to share."""

    #: ``provider:model`` as used by ``LOOM_MODEL``.
    name: str = "unknown"

    @abstractmethod
    async def complete(
        self, request: ModelRequest, on_delta: DeltaHandler | None = None
    ) -> ModelResponse:
        """Run one model turn. Raise ``loom.errors.ProviderError`` on failure."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release network clients."""

    def missing_credentials(self) -> str | None:
        """What would make every call fail before it is sent (e.g. ``no ANTHROPIC_API_KEY
        set``), or None: checked at start, so a process says so before its first run."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def require_stop(reason: str | None, provider: str) -> str:
    """A response's stop reason; a response without one was cut off and is no answer."""
    if not reason:
        raise ProviderError(
            "the response ended without a stop reason (the stream was cut off)", provider=provider
        )
    return reason


def tool_call_from_json(call_id: str, name: str, text: str) -> ToolCall:
    """A tool call from the model's JSON text; text that is no JSON object is kept raw."""
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return ToolCall(call_id, name, value)
    return ToolCall(call_id, name, {}, raw_arguments=text)
