"""Agent: a model, instructions and tools, run as one-off runs or as sessions."""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from loom.capabilities import Capability
from loom.core.governance import Governor, RateLimits
from loom.core.hooks import Handler, HookManager
from loom.core.session_store import SessionStore
from loom.generation import Generation
from loom.knowledge import (
    KnowledgePassage,
    KnowledgeQuery,
    KnowledgeSource,
    knowledge_tool,
    resolve_knowledge,
)
from loom.model import Model
from loom.policies.attention import AttentionPolicy
from loom.policies.context import ContextManager, ContextProtocol
from loom.policies.delegation import DelegationPolicy
from loom.policies.governance import GovernancePolicy
from loom.policies.harness import Harness
from loom.policies.quality import QualityGate
from loom.providers.base import ModelProvider
from loom.providers.windows import context_window, sized_for
from loom.runtime.config import RunContext, Runtime, SessionConfig
from loom.runtime.decisions import SignalDecision
from loom.runtime.delegation import TOOL_PREFIX, Delegation, SubAgent, delegation_tool
from loom.runtime.events import RunEvent
from loom.runtime.loop import AgentLoop
from loom.runtime.run import RunResult
from loom.runtime.session import Session, Task
from loom.signals import RuntimeSignal, SignalAdapter
from loom.state.memory_rate_limits import MemoryRateLimits
from loom.state.memory_sessions import InMemorySessionStore
from loom.tools import Tool, ToolRegistry
from loom.tools.skills import skill_listing, skills_tool

logger = logging.getLogger("loom.agent")


class Agent:
    """An LLM with instructions and governed tools.

    ``await agent.run("...")`` runs once with a fresh context; ``agent.session(...)`` keeps
    history across runs. Sessions are cached by id (least recently used idle ones are let
    go past ``max_sessions``; their history stays in the session store).
    """

    loop: AgentLoop

    def __init__(
        self,
        model: ModelProvider | str | None = None,
        instructions: str = "",
        *,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
        capabilities: Iterable[Capability] = (),
        generation: Generation | None = None,
        runtime: Runtime | None = None,
        session_store: SessionStore | None = None,
        attention: AttentionPolicy | None = None,
        knowledge: Iterable[KnowledgeSource] = (),
        knowledge_tool: bool = False,
        name: str = "agent",
        description: str = "",
        subagents: Iterable[Agent] = (),
        max_sessions: int = 1024,
    ) -> None:
        self.name = name
        self.description = description or instructions.strip().split("\n", 1)[0][:200]
        """What the agent does, as a parent that delegates to it describes it to its model."""
        self.subagents = _checked_subagents(name, subagents)
        self.model = Model.from_environment() if model is None else Model.resolve(model)
        self.instructions = instructions
        self.generation = generation or Generation()
        self.runtime = _with_preset_policies(
            _fitted_to_model(
                _with_context_manager(runtime or Runtime.sdk()),
                self.model.name,
                self.generation.max_output_tokens,
            ),
            bool(self.subagents),
        )
        self.knowledge = tuple(knowledge)
        names = [source.name for source in self.knowledge]
        if len(set(names)) != len(names):
            raise ValueError(f"knowledge source names must be unique, got {names}")
        self.capabilities = tuple(capabilities)
        self.tools = ToolRegistry(tools)
        if knowledge_tool:
            if not self.knowledge:
                raise ValueError("knowledge_tool=True needs at least one knowledge source")
            self.tools.add(_retrieval_tool(self.knowledge))
        for capability in self.capabilities:
            capability.attach(self.tools)
        skills = [skill for capability in self.capabilities for skill in capability.skills]
        if skills:
            # One tool loads any skill; C_skill lists their names and when_to_use.
            self.tools.add(skills_tool(skills))
        delegation = None
        if self.subagents and self.runtime.delegation is not None:
            children = []
            for sub in self.subagents:
                offered = self.tools.add(delegation_tool(sub.name, sub.description))
                children.append(SubAgent(sub.name, offered, sub.loop))
            delegation = Delegation(children, self.runtime.delegation)
        self.session_store: SessionStore = session_store or InMemorySessionStore()
        self.attention = attention or AttentionPolicy.default()
        self.governance: Governor = self.runtime.governance or _preset_governance(self.runtime)
        self.rate_limits: RateLimits = MemoryRateLimits()
        """Where ``governance`` counts rate-limited calls: this process's memory; the daemon
        puts its state backend's here, so every replica shares one count."""
        self.hooks = HookManager()
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.loop = AgentLoop(
            provider=self.model,
            instructions=instructions,
            tools=self.tools,
            runtime=self.runtime,
            generation=self.generation,
            hooks=self.hooks,
            governor=self.governance,
            rate_limits=self.rate_limits,
            delegation=delegation,
            skills=skill_listing(skills),
        )

    def share_rate_limits(self, limits: RateLimits) -> None:
        """Count governance rate limits in ``limits`` (the daemon: its state backend, so
        every replica shares one count) instead of this process's memory."""
        self.rate_limits = limits
        self.loop.govern(self.governance, limits)

    # -- hooks -------------------------------------------------------------------------
    def on(self, name: str, handler: Handler) -> Handler:
        """Call ``handler(event_name=name, **payload)`` on a lifecycle hook (sync or async)."""
        return self.hooks.on(name, handler)

    def off(self, name: str, handler: Handler | None = None) -> None:
        self.hooks.off(name, handler)

    # -- knowledge ---------------------------------------------------------------------
    def resolve_knowledge(self, query: KnowledgeQuery) -> list[KnowledgePassage]:
        """The agent's best passages for ``query``, scored, best first, each naming its
        source document; pass them on with ``RunContext(knowledge=...)``."""
        return resolve_knowledge(self.knowledge, query)

    # -- runs --------------------------------------------------------------------------
    async def run(self, task: Task, *, context: RunContext | None = None) -> RunResult:
        """One run with its own, fresh context; nothing is kept or shared afterwards."""
        return await self._anonymous_session().run(task, context=context)

    async def stream(
        self, task: Task, *, context: RunContext | None = None
    ) -> AsyncIterator[RunEvent]:
        """Like ``run`` but yields the run's events as they happen; the model's answer is
        streamed, its text arriving as ``model.token`` events."""
        async for event in self._anonymous_session().stream(task, context=context):
            yield event

    def _anonymous_session(self) -> Session:
        return Session(self, SessionConfig(id=f"anon_{secrets.token_hex(16)}"), store=None)

    # -- sessions ----------------------------------------------------------------------
    def session(self, config: SessionConfig | str) -> Session:
        """The session with this id, created on first use."""
        if isinstance(config, str):
            config = SessionConfig(id=config)
        session = self._sessions.get(config.id)
        if session is None:
            session = Session(self, config, store=self.session_store)
            self._sessions[config.id] = session
            self._evict_idle()
        else:
            self._sessions.move_to_end(config.id)
            if config.metadata:
                session.metadata.update(config.metadata)
        return session

    def _evict_idle(self) -> None:
        excess = len(self._sessions) - self.max_sessions
        for session_id in list(self._sessions)[:-1]:
            if excess <= 0:
                return
            session = self._sessions[session_id]
            if not session.busy and not session.pending_signals:
                del self._sessions[session_id]
                excess -= 1

    async def receive(
        self,
        event: RuntimeSignal | Mapping[str, Any],
        *,
        adapter: SignalAdapter | None = None,
        session_id: str | None = None,
    ) -> SignalDecision:
        """Route a signal to its session (``session_id`` argument, then the signal's own)."""
        target = session_id or _session_of(event)
        if target is None:
            raise ValueError("a signal needs a session: pass session_id= or set it on the signal")
        return await self.session(target).receive(event, adapter=adapter)

    async def start(self) -> None:
        """Start what capabilities need before the first run (MCP servers with
        ``connect=True``); raises when one cannot start."""
        for capability in self.capabilities:
            await capability.start()

    def capability_status(self) -> dict[str, dict[str, Any]]:
        """Each capability's state, for ``/readyz`` (MCP servers: connected, degraded)."""
        found = {c.name: c.status() for c in self.capabilities}
        return {name: status for name, status in found.items() if status is not None}

    async def release_session(self, session_id: str) -> None:
        """Release what capabilities hold for one session (``scope="session"`` MCP
        servers); the daemon calls it when it lets go of the session's lease."""
        for capability in self.capabilities:
            await capability.release_session(session_id)

    async def aclose(self) -> None:
        """Release the model client, the session store and what capabilities hold (MCP
        servers: a stdio server's process is stopped)."""
        for capability in self.capabilities:
            await capability.aclose()
        await self.model.aclose()
        await self.session_store.close()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Agent {self.name} model={self.model.name} tools={len(self.tools)}>"


def _with_context_manager(runtime: Runtime) -> Runtime:
    """Presets for long work carry a context manager that summarises; ``Runtime.sdk`` keeps
    the kernel's plain one (drop the oldest turns) unless a manager is set."""
    if runtime.context is not None or runtime.name == "sdk":
        return runtime
    manager = ContextProtocol.manager(max_tokens=runtime.max_context_tokens)
    # The preset's size, not the user's: lowered to a smaller model's window, not refused.
    manager = dataclasses.replace(manager, model_fit="cap")
    return runtime.model_copy(update={"context": manager})


def _fitted_to_model(runtime: Runtime, model: str, output_tokens: int | None) -> Runtime:
    """The runtime's context budget against the model's window (``ContextManager.
    for_model``): refused above it, sized from it, or a preset's lowered to it. The kernel's
    plain window (``max_context_tokens``) is lowered to it too."""
    update: dict[str, Any] = {}
    if isinstance(runtime.context, ContextManager):
        update["context"] = runtime.context.for_model(model, output_tokens)
    window = context_window(model)
    if window is not None:
        update["max_context_tokens"] = min(
            runtime.max_context_tokens, max(sized_for(window, output_tokens), 256)
        )
    return runtime.model_copy(update=update) if update else runtime


def _with_preset_policies(runtime: Runtime, has_subagents: bool) -> Runtime:
    """The quality gate, harness and delegation a preset brings where ``Runtime`` names
    none: a gate judging the preset's and a task's criteria; ``long_running``: up to five
    sprints; delegation to ``max_depth`` (``autonomous``: 5), else depth 1 with sub-agents."""
    update: dict[str, Any] = {}
    if runtime.quality is None:
        update["quality"] = QualityGate.task_criteria()
    if runtime.harness is None:
        long = runtime.name == "long_running"
        update["harness"] = Harness.long_running() if long else Harness.single_run()
    if runtime.delegation is None and (has_subagents or runtime.max_depth is not None):
        update["delegation"] = DelegationPolicy.depth_limited(runtime.max_depth or 1)
    return runtime.model_copy(update=update) if update else runtime


_AGENT_NAME = re.compile(rf"^[a-zA-Z0-9_-]{{1,{64 - len(TOOL_PREFIX)}}}$")


def _checked_subagents(name: str, subagents: Iterable[Agent]) -> tuple[Agent, ...]:
    """Sub-agents, refused when one is not an Agent, names its parent, or two share a
    name (each becomes a tool named after it)."""
    if isinstance(subagents, Agent):
        raise ValueError("subagents must be a list of Agents, not one Agent")
    found = tuple(subagents)
    names: set[str] = set()
    for sub in found:
        if not isinstance(sub, Agent):
            raise ValueError(f"a sub-agent must be an Agent, not {sub!r}")
        if sub.name == name:
            raise ValueError(
                f"sub-agent {sub.name!r} has its parent's name: an agent cannot delegate to "
                "itself (give the sub-agent its own name=...)"
            )
        if not _AGENT_NAME.match(sub.name):
            raise ValueError(
                f"sub-agent name {sub.name!r} must be 1-{64 - len(TOOL_PREFIX)} characters "
                "from a-z, A-Z, 0-9, '_' and '-' (it names the delegation tool)"
            )
        if sub.name in names:
            raise ValueError(f"two sub-agents are named {sub.name!r}: sub-agent names must differ")
        names.add(sub.name)
    return found


def _preset_governance(runtime: Runtime) -> GovernancePolicy:
    """The governance a preset brings when ``Runtime(governance=...)`` names none."""
    if runtime.name == "supervised":
        return GovernancePolicy.supervised()
    return GovernancePolicy.default()


_retrieval_tool = knowledge_tool


def _session_of(event: RuntimeSignal | Mapping[str, Any]) -> str | None:
    if isinstance(event, RuntimeSignal):
        return event.session_id
    value = event.get("session_id")
    return str(value) if value is not None else None
