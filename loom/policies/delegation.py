"""DelegationPolicy: how deep sub-agents may nest and how many run at once.

With ``Agent(..., subagents=[log_reader])`` the model is offered one tool per sub-agent;
each call is a child run of that agent (its own id, instructions, tools and fresh history)
under the parent's session and governance. ``DelegationPolicy.depth_limited(n)``: the top
agent is depth 0, and an agent at depth ``n`` is offered no delegation tool.
"""

from __future__ import annotations

DEFAULT_MAX_PARALLEL = 4


class DelegationPolicy:
    """A ``DelegationLimits``: ``depth_limited(n, max_parallel=...)`` or ``none()``."""

    def __init__(self, *, max_depth: int, max_parallel: int = DEFAULT_MAX_PARALLEL) -> None:
        for name, value, least in (("depth", max_depth, 0), ("max_parallel", max_parallel, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, not {value!r}")
        self._max_depth = max_depth
        self._max_parallel = max_parallel

    @classmethod
    def depth_limited(cls, n: int, *, max_parallel: int = DEFAULT_MAX_PARALLEL) -> DelegationPolicy:
        """Sub-agents down to depth ``n`` (at least 1); ``max_parallel`` children of one
        model turn run at once."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"depth must be an integer of at least 1, not {n!r}")
        return cls(max_depth=n, max_parallel=max_parallel)

    @classmethod
    def none(cls) -> DelegationPolicy:
        """No delegation: sub-agents are not offered to the model."""
        return cls(max_depth=0, max_parallel=1)

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    def __repr__(self) -> str:
        return f"DelegationPolicy(max_depth={self._max_depth}, max_parallel={self._max_parallel})"


__all__ = ["DEFAULT_MAX_PARALLEL", "DelegationPolicy"]
