"""Loom: turn events into agent work.

``from loom import Agent, Model, Runtime, RuntimeSignal, SessionConfig, tool``. This module
stays light: brokers, state backends and vendor SDKs are imported only where used.
"""

from loom._version import __version__
from loom.agent import Agent
from loom.capabilities import Capability
from loom.core.approvals import Approval
from loom.core.hooks import DenyCall
from loom.core.messages import Message, ToolCall, Usage
from loom.core.quality import CriterionVerdict, QualityVerdict, Review
from loom.errors import (
    AuthenticationError,
    LoomError,
    ProviderError,
    RateLimitError,
    RunFailed,
)
from loom.generation import Generation
from loom.knowledge import KnowledgePassage, KnowledgeQuery, KnowledgeSource
from loom.model import Model
from loom.policies.attention import AttentionPolicy
from loom.policies.context import ContextProtocol
from loom.policies.continuity import ContinuityPolicy
from loom.policies.delegation import DelegationPolicy
from loom.policies.feedback import FeedbackEvent, FeedbackPolicy
from loom.policies.governance import GovernancePolicy
from loom.policies.harness import Harness
from loom.policies.quality import QualityGate
from loom.policies.restore import SessionRestorePolicy
from loom.providers.base import ModelProvider, ModelRequest, ModelResponse
from loom.runtime.config import RunContext, Runtime, RuntimeTask, SessionConfig
from loom.runtime.decisions import SignalDecision
from loom.runtime.events import RunEvent
from loom.runtime.run import Artifact, Run, RunResult, RunStatus
from loom.runtime.session import Session
from loom.signals import RuntimeSignal, SignalAdapter
from loom.state import FileSessionStore, InMemorySessionStore, SessionStore
from loom.tools import Tool, ToolContext, tool

__all__ = [
    "Agent",
    "Approval",
    "Artifact",
    "AttentionPolicy",
    "AuthenticationError",
    "Capability",
    "ContextProtocol",
    "ContinuityPolicy",
    "CriterionVerdict",
    "DelegationPolicy",
    "DenyCall",
    "FeedbackEvent",
    "FeedbackPolicy",
    "FileSessionStore",
    "Generation",
    "GovernancePolicy",
    "Harness",
    "InMemorySessionStore",
    "KnowledgePassage",
    "KnowledgeQuery",
    "KnowledgeSource",
    "LoomError",
    "Message",
    "Model",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "ProviderError",
    "QualityGate",
    "QualityVerdict",
    "RateLimitError",
    "Review",
    "Run",
    "RunContext",
    "RunEvent",
    "RunFailed",
    "RunResult",
    "RunStatus",
    "Runtime",
    "RuntimeSignal",
    "RuntimeTask",
    "Session",
    "SessionConfig",
    "SessionRestorePolicy",
    "SessionStore",
    "SignalAdapter",
    "SignalDecision",
    "Tool",
    "ToolCall",
    "ToolContext",
    "Usage",
    "__version__",
    "tool",
]
