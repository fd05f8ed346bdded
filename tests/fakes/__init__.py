"""Test doubles that speak real wire protocols (see ``tests.fakes.llm_server``)."""

from tests.fakes.llm_server import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    FakeLLMServer,
    FakeReply,
    RecordedRequest,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    anthropic_stream_error,
    openai_chat,
    openai_chat_stream,
    openai_error,
    openai_response,
    openai_response_stream,
)

__all__ = [
    "ANTHROPIC_MESSAGES",
    "OPENAI_CHAT",
    "OPENAI_RESPONSES",
    "FakeLLMServer",
    "FakeReply",
    "RecordedRequest",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "anthropic_stream_error",
    "openai_chat",
    "openai_chat_stream",
    "openai_error",
    "openai_response",
    "openai_response_stream",
]
