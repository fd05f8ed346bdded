"""Run configuration: Runtime presets, tasks, run context and session settings."""

from __future__ import annotations

from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from loom.core.context import ContextPolicy, ContinuityPort, RestorePort, WorkingItem
from loom.core.governance import Governor
from loom.core.quality import DelegationLimits, QualityJudge, SprintPolicy
from loom.knowledge.query import KnowledgePassage


def _governor(value: Any) -> Governor | None:
    """A governance policy is anything with ``review`` and ``admit`` (the Governor port)."""
    if value is None or (
        callable(getattr(value, "review", None)) and callable(getattr(value, "admit", None))
    ):
        return cast("Governor | None", value)
    raise ValueError(
        f"governance must be a GovernancePolicy (or a Governor: review and admit), not {value!r}"
    )


def _port(kind: str, wanted: str, *methods: str) -> Any:
    """A validator accepting None or anything with ``methods`` (the port, duck-typed)."""

    def check(value: Any) -> Any:
        if value is None or all(hasattr(value, m) for m in methods):
            return value
        raise ValueError(f"{kind} must be a {wanted}, not {value!r}")

    return PlainValidator(check)


class Runtime(BaseModel):
    """The agent loop's limits. Start from a preset and override by keyword.

    ``Runtime.sdk(max_iterations=10, timeout=60)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = "sdk"
    max_iterations: int = Field(default=32, ge=1)
    """Model calls a run may make; a run that still wants tools after that fails."""
    timeout: float | None = Field(default=300.0, gt=0)
    """Seconds a whole run may take; past it the run fails."""
    tool_timeout: float | None = Field(default=120.0, gt=0)
    """Seconds one tool call may take; past it the model gets an error result."""
    max_parallel_tools: int = Field(default=8, ge=1)
    max_tool_result_chars: int = Field(default=100_000, ge=100)
    """Longer tool results are cut, with a note saying how much was cut."""
    max_context_tokens: int = Field(default=64_000, ge=256)
    """Estimated request size at which old turns are compacted out of the working history."""
    max_events: int = Field(default=10_000, ge=16)
    """Events kept per run (token events past it are streamed, not kept)."""
    criteria: tuple[str, ...] = ()
    """Acceptance criteria sent to the model with every request, and judged after the run
    by the quality gate (with the gate's own and the task's)."""
    context: ContextPolicy | None = None
    """``ContextProtocol.manager(...)``; unset, the agent picks one (see ``Agent``)."""
    continuity: ContinuityPort | None = None
    """``ContinuityPolicy.handoff()``: a handoff is stored and injected after compaction."""
    session_restore: RestorePort | None = None
    """``SessionRestorePolicy``: what of a stored session enters each run; unset, all of it."""
    approval_ttl: float = Field(default=86_400.0, gt=0)
    """Seconds a tool call waits for a person's approval; then it is denied as expired."""
    governance: Annotated[Governor | None, PlainValidator(_governor)] = None
    """Which tool calls may run, need approval, or are rate limited; None: the preset's
    (``GovernancePolicy.supervised()`` for ``supervised``, else ``GovernancePolicy.default()``)."""
    quality: Annotated[
        QualityJudge | None, _port("quality", "QualityGate (evaluate)", "evaluate")
    ] = None
    """``QualityGate``: judges each run (or sprint); None: the preset's ``criteria`` as a
    gate, else a gate judging only a task's own criteria."""
    harness: Annotated[
        SprintPolicy | None, _port("harness", "Harness", "max_sprints", "next_turn")
    ] = None
    """``Harness.single_run()`` or ``Harness.long_running(max_sprints=...)``; None: the
    preset's (``long_running``: ``Harness.long_running()``, else one sprint)."""
    delegation: Annotated[
        DelegationLimits | None,
        _port("delegation", "DelegationPolicy", "max_depth", "max_parallel"),
    ] = None
    """``DelegationPolicy.depth_limited(n)``; None: ``depth_limited(max_depth)`` when the
    preset names a ``max_depth``, else depth 1 for an agent with sub-agents."""
    max_depth: int | None = Field(default=None, ge=1)
    """The delegation depth a preset asks for (``autonomous(max_depth=5)``)."""

    @classmethod
    def sdk(cls, **overrides: Any) -> Runtime:
        """Short interactive runs: 32 model calls, 5 minutes."""
        return cls(**{"name": "sdk", **overrides})

    @classmethod
    def long_running(cls, criteria: list[str] | None = None, **overrides: Any) -> Runtime:
        """Background work: 128 model calls, an hour, a 200k-token context."""
        defaults = {"max_iterations": 128, "timeout": 3600.0, "max_context_tokens": 200_000}
        return cls(
            **{"name": "long_running", "criteria": tuple(criteria or ()), **defaults, **overrides}
        )

    @classmethod
    def supervised(cls, criteria: list[str] | None = None, **overrides: Any) -> Runtime:
        """Work a person oversees: 80 model calls, 30 minutes, one tool at a time."""
        defaults = {
            "max_iterations": 80,
            "timeout": 1800.0,
            "max_context_tokens": 120_000,
            "max_parallel_tools": 1,
        }
        return cls(
            **{"name": "supervised", "criteria": tuple(criteria or ()), **defaults, **overrides}
        )

    @classmethod
    def autonomous(
        cls, criteria: list[str] | None = None, max_depth: int = 5, **overrides: Any
    ) -> Runtime:
        """Unattended automation: 200 model calls, two hours, a 200k-token context, and
        sub-agents down to ``max_depth``."""
        defaults = {
            "max_iterations": 200,
            "timeout": 7200.0,
            "max_context_tokens": 200_000,
            "max_depth": max_depth,
        }
        return cls(
            **{"name": "autonomous", "criteria": tuple(criteria or ()), **defaults, **overrides}
        )


class RuntimeTask(BaseModel):
    """A structured work request: a goal with input, acceptance criteria and metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)
    criteria: tuple[str, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)


def _working_items(value: Any) -> tuple[str | WorkingItem, ...]:
    items = tuple(value) if isinstance(value, list | tuple) else (value,)
    for index, item in enumerate(items):
        if not isinstance(item, str | WorkingItem):
            raise ValueError(
                f"working[{index}] must be text or have render(max_chars), not {item!r}"
            )
    return items


class RunContext(BaseModel):
    """Per-run extras: inputs shown to the model with the task, metadata kept on the run,
    and what goes in ``C_working``: knowledge passages (``agent.resolve_knowledge(...)``)
    and working items (text, or a ``SignalDigest`` of observed signals and risks)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    inputs: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    knowledge: tuple[KnowledgePassage, ...] = ()
    working: Annotated[tuple[str | WorkingItem, ...], PlainValidator(_working_items)] = ()
    """Items of ``C_working``, rendered within its budget after the handoff and knowledge;
    shown to the model for this run only (they are not kept in the transcript)."""


class SessionConfig(BaseModel):
    """Identifies a session; runs of one session share history, nothing else does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:@/-]+$")
    metadata: dict[str, Any] = Field(default_factory=dict)
