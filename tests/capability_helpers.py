"""A scripted model for capability tests: it plays given turns and records each request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from loom.core.messages import ToolCall
from loom.providers.base import ModelRequest, ModelResponse
from loom.providers.test import FunctionModel


class Script:
    """Turns to play, each a text answer or a list of tool calls ``(name, arguments)``."""

    def __init__(self, turns: Iterable[str | list[tuple[str, dict[str, Any]]]]) -> None:
        self.turns = list(turns)
        self.requests: list[ModelRequest] = []
        self.model = FunctionModel(self._answer, name="script")

    def _answer(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        turn = self.turns.pop(0) if self.turns else "done"
        if isinstance(turn, str):
            return ModelResponse(text=turn)
        calls = tuple(
            ToolCall(id=f"call_{len(self.requests)}_{n}", name=name, arguments=arguments)
            for n, (name, arguments) in enumerate(turn)
        )
        return ModelResponse(tool_calls=calls, stop_reason="tool_use")

    def tool_results(self) -> list[str]:
        """Every tool result the model was shown, in order (from the last request)."""
        if not self.requests:
            return []
        return [m.content for m in self.requests[-1].messages if m.role == "tool"]
