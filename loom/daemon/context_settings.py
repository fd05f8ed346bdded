"""``LOOM_CONTEXT__*``: the default agent's context budget and knowledge directories."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field

from loom.knowledge import KnowledgeSource
from loom.policies.context import ContextManager, ContextProtocol
from loom.policies.continuity import ContinuityPolicy, HandoffContinuity


class ContextSettings(BaseModel):
    """How the default agent (``loom run`` without an APP) keeps long sessions in budget.

    ``LOOM_CONTEXT__MAX_TOKENS=120000``, ``LOOM_CONTEXT__KNOWLEDGE_DIRS='["/srv/runbooks"]'``.
    """

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=64_000, ge=256)
    """Tokens a request may take; past ``trigger`` of it the session is compacted. Left
    unset, it is lowered to a smaller model's window; set above the model's window, the
    process refuses to start."""
    trigger: float = Field(default=0.85, gt=0, le=1)
    target: float = Field(default=0.6, gt=0, lt=1)
    summarize: bool = True
    """Summarise the oldest turns with the model (kept with the session); off: drop them."""
    handoff: bool = True
    """Store a handoff when compacting and inject it into the next request."""
    knowledge_dirs: list[str] = Field(default_factory=list)
    """Directories of documents the agent draws on; each must exist when the process starts."""
    knowledge_glob: str = "**/*.md"
    knowledge_tool: bool = True
    """Offer the model a ``retrieve_knowledge`` tool when knowledge directories are set."""

    def manager(self) -> ContextManager:
        steps = ["shorten_tool_results", "summarize", "drop_oldest_turns"]
        if not self.summarize:
            steps.remove("summarize")
        manager = ContextProtocol.manager(
            max_tokens=self.max_tokens, trigger=self.trigger, target=self.target, compaction=steps
        )
        if "max_tokens" not in self.model_fields_set:
            manager = dataclasses.replace(manager, model_fit="cap")
        return manager

    def continuity(self) -> HandoffContinuity | None:
        return ContinuityPolicy.handoff() if self.handoff else None

    def knowledge(self) -> list[KnowledgeSource]:
        """One source per directory (a missing one is a ``FileNotFoundError`` naming it)."""
        return [
            KnowledgeSource.from_directory(d, glob=self.knowledge_glob) for d in self.knowledge_dirs
        ]
