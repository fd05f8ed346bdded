"""Policies that steer the runtime: attention, feedback, governance, context, continuity,
restore, quality, harness and delegation."""

from loom.policies.attention import (
    ACTIONS,
    Action,
    AttentionPolicy,
    AttentionRule,
    SessionView,
    SignalDecision,
)
from loom.policies.context import ContextManager, ContextProtocol
from loom.policies.continuity import ContinuityPolicy, HandoffContinuity
from loom.policies.delegation import DelegationPolicy
from loom.policies.feedback import ExplicitFeedback, FeedbackEvent, FeedbackPolicy
from loom.policies.governance import GovernancePolicy
from loom.policies.harness import Harness
from loom.policies.quality import QualityGate
from loom.policies.restore import SessionRestorePolicy

__all__ = [
    "ACTIONS",
    "Action",
    "AttentionPolicy",
    "AttentionRule",
    "ContextManager",
    "ContextProtocol",
    "ContinuityPolicy",
    "DelegationPolicy",
    "ExplicitFeedback",
    "FeedbackEvent",
    "FeedbackPolicy",
    "GovernancePolicy",
    "HandoffContinuity",
    "Harness",
    "QualityGate",
    "SessionRestorePolicy",
    "SessionView",
    "SignalDecision",
]
