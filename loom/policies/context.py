"""``ContextProtocol.manager``: the context budget of a request, its partitions, compaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from loom.core.context import COMPACTION_STEPS, PARTITIONS, ContextPolicy
from loom.providers.windows import context_window, sized_for

DEFAULT_BUDGETS = {"C_working": 0.10, "C_memory": 0.10, "C_skill": 0.05}
"""Shares of ``max_tokens`` the partitions other than history get unless told otherwise."""
DEFAULT_MAX_TOKENS = 200_000
"""``max_tokens`` of a manager given none, for a model whose window is not known."""

ModelFit = Literal["check", "size", "cap"]
"""How a manager meets the model's window when the agent is built: ``check`` refuses a
``max_tokens`` above it, ``size`` takes the window (less the answer's tokens), ``cap``
lowers ``max_tokens`` to that when above (a default nobody asked for)."""


@dataclass(frozen=True, slots=True)
class ContextManager(ContextPolicy):
    """Budgets per partition, and when and how far a request is compacted.

    Build it with ``ContextProtocol.manager(...)``; set it as ``Runtime(context=...)``.
    """

    max_tokens: int
    budgets: Mapping[str, int] = field(default_factory=dict)
    trigger: float = 0.85
    target: float = 0.6
    compaction: tuple[str, ...] = COMPACTION_STEPS
    keep_tool_result_chars: int = 2000
    model_fit: ModelFit = "check"
    given_budgets: Mapping[str, int] = field(default_factory=dict)
    """The budgets asked for (the others are shares of ``max_tokens``, computed again when
    the manager is sized to a model)."""

    def __post_init__(self) -> None:
        if self.max_tokens < 256:
            raise ValueError(f"max_tokens must be at least 256, got {self.max_tokens}")
        if not 0 < self.target < self.trigger <= 1:
            raise ValueError(
                f"need 0 < target < trigger <= 1, got target={self.target} trigger={self.trigger}"
            )
        unknown = [step for step in self.compaction if step not in COMPACTION_STEPS]
        if unknown or not self.compaction:
            raise ValueError(
                f"compaction steps must be some of {list(COMPACTION_STEPS)}, got "
                f"{list(self.compaction)}"
            )
        bad = [name for name in self.budgets if name not in PARTITIONS or name == "C_history"]
        if bad:
            raise ValueError(
                f"budgets are for {list(PARTITIONS[:-1])} (C_history gets the rest), got {bad}"
            )
        negative = {name: value for name, value in self.budgets.items() if value < 0}
        if negative:
            raise ValueError(f"budgets must not be negative: {negative}")
        fixed = sum(self.budgets.values())
        room = int(self.max_tokens * self.target)
        if fixed >= room:
            raise ValueError(
                f"budgets add up to {fixed} tokens, which leaves no room for history under the "
                f"compaction target of {room} tokens ({self.target:g} x max_tokens "
                f"{self.max_tokens})"
            )

    def with_window(self, window: int | None, model: str = "the model") -> ContextManager:
        """Itself, after checking it fits a model's context ``window`` (tokens)."""
        if window is not None and self.max_tokens > window:
            raise ValueError(
                f"context max_tokens {self.max_tokens} is above the context window of "
                f"{model} ({window} tokens): lower max_tokens, or leave it out to size the "
                "budget from the model"
            )
        return self

    def for_model(self, model: str, output_tokens: int | None = None) -> ContextManager:
        """This manager for ``model`` (see ``model_fit``); unchanged for a model whose
        window is not in ``loom.providers.windows.CONTEXT_WINDOWS``."""
        window = context_window(model)
        if window is None:
            return self
        sized = sized_for(window, output_tokens)
        if self.model_fit == "check":
            return self.with_window(window, model)
        if self.model_fit == "cap" and self.max_tokens <= sized:
            return self
        return replace(
            ContextProtocol.manager(
                sized,
                budgets=self.given_budgets,
                compaction=self.compaction,
                trigger=self.trigger,
                target=self.target,
                keep_tool_result_chars=self.keep_tool_result_chars,
            ),
            model_fit="check",
        )


class ContextProtocol:
    """Namespace of context policies: ``ContextProtocol.manager(max_tokens=120_000)``."""

    @staticmethod
    def manager(
        max_tokens: int | None = None,
        *,
        budgets: Mapping[str, int] | None = None,
        compaction: tuple[str, ...] | list[str] = COMPACTION_STEPS,
        trigger: float = 0.85,
        target: float = 0.6,
        keep_tool_result_chars: int = 2000,
    ) -> ContextManager:
        """A manager of ``max_tokens`` per request. ``budgets`` caps the partitions other
        than history (tokens; defaults are shares of ``max_tokens``); past ``trigger`` x
        ``max_tokens`` the ``compaction`` steps run, in order, until the request is under
        ``target`` x ``max_tokens``.

        Without ``max_tokens`` the agent sizes it from its model's context window, less
        the answer's tokens (``DEFAULT_MAX_TOKENS`` for a model of unknown window); a
        ``max_tokens`` above the model's window is refused when the agent is built."""
        fit: ModelFit = "size" if max_tokens is None else "check"
        tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
        chosen = {name: int(tokens * share) for name, share in DEFAULT_BUDGETS.items()}
        chosen.update(budgets or {})
        return ContextManager(
            max_tokens=tokens,
            budgets=chosen,
            trigger=trigger,
            target=target,
            compaction=tuple(compaction),
            keep_tool_result_chars=keep_tool_result_chars,
            model_fit=fit,
            given_budgets=dict(budgets or {}),
        )
