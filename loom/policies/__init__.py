"""Policies that steer the runtime: attention, feedback, context, continuity and restore."""

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
from loom.policies.feedback import ExplicitFeedback, FeedbackEvent, FeedbackPolicy
from loom.policies.restore import SessionRestorePolicy

__all__ = [
    "ACTIONS",
    "Action",
    "AttentionPolicy",
    "AttentionRule",
    "ContextManager",
    "ContextProtocol",
    "ContinuityPolicy",
    "ExplicitFeedback",
    "FeedbackEvent",
    "FeedbackPolicy",
    "HandoffContinuity",
    "SessionRestorePolicy",
    "SessionView",
    "SignalDecision",
]
