"""The per-call context a tool may ask for."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling a tool: injected into any parameter annotated ``ToolContext``.

    Such a parameter is left out of the schema the model sees, so a model can neither
    forge nor even notice it.
    """

    run_id: str
    session_id: str
    tool_call_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    interrupted: Callable[[], bool] = lambda: False
    """True once the run was asked to stop: a long tool (a shell command) polls it and
    ends its work early."""
