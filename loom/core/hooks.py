"""Hooks: ``agent.on(name, fn)`` observers of the run lifecycle.

Handlers observe; they cannot change a run. A handler that raises is logged and the run
goes on, because an audit or UI callback must never be the reason work fails. The one
exception is ``before_tool``, which governs: its handlers may return ``DenyCall(reason)``
or new arguments (a dict), and one that raises denies the call (a check fails closed).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger("loom.hooks")

HOOK_NAMES: frozenset[str] = frozenset(
    {
        "before_run",
        "after_run",
        "run_error",
        "before_llm",
        "after_llm",
        "before_tool",
        "after_tool",
        "on_context_compact",
        "signal_received",
        "signal_decided",
    }
)

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class DenyCall:
    """Returned by a ``before_tool`` handler: the call does not run, and the model is told
    ``reason`` as the call's error result."""

    reason: str


class HookManager:
    """Registry and dispatcher of hook handlers; ``"*"`` receives every hook."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    def on(self, name: str, handler: Handler) -> Handler:
        if name != "*" and name not in HOOK_NAMES:
            known = ", ".join(sorted(HOOK_NAMES))
            raise ValueError(f"unknown hook {name!r}; known hooks: {known}, or '*' for all")
        if not callable(handler):
            raise TypeError(f"hook handler for {name!r} must be callable")
        self._handlers.setdefault(name, []).append(handler)
        return handler

    def off(self, name: str, handler: Handler | None = None) -> None:
        """Remove one handler, or every handler of ``name`` when none is given."""
        if handler is None:
            self._handlers.pop(name, None)
            return
        handlers = self._handlers.get(name, [])
        if handler in handlers:
            handlers.remove(handler)

    def wants(self, name: str) -> bool:
        """Cheap check so callers can skip building payloads nobody reads."""
        return bool(self._handlers.get(name) or self._handlers.get("*"))

    async def emit(self, name: str, **payload: Any) -> None:
        handlers = [*self._handlers.get(name, ()), *self._handlers.get("*", ())]
        for handler in handlers:
            try:
                outcome = handler(event_name=name, **payload)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("hook handler %r for %s failed; the run goes on", handler, name)

    async def consult(self, name: str, **payload: Any) -> list[Any]:
        """Call ``name``'s handlers and return what they answered (``None`` left out). A
        handler that raises propagates: the caller decides what a failed check means.
        ``"*"`` handlers only observe, as with ``emit``."""
        answers = []
        for handler in self._handlers.get(name, ()):
            outcome = handler(event_name=name, **payload)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome is not None:
                answers.append(outcome)
        for handler in self._handlers.get("*", ()):
            try:
                outcome = handler(event_name=name, **payload)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("hook handler %r for %s failed; the run goes on", handler, name)
        return answers


class HookSource(Protocol):
    """Anything whose lifecycle hooks can be listened to (an ``Agent``): observers such as
    metrics, tracing and feedback attach through this, not through the agent's class."""

    def on(self, name: str, handler: Handler) -> Handler: ...
