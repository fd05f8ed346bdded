"""Policies that steer the runtime: attention, feedback and governance."""

from loom.policies.attention import (
    ACTIONS,
    Action,
    AttentionPolicy,
    AttentionRule,
    SessionView,
    SignalDecision,
)
from loom.policies.feedback import ExplicitFeedback, FeedbackEvent, FeedbackPolicy
from loom.policies.governance import GovernancePolicy

__all__ = [
    "ACTIONS",
    "Action",
    "AttentionPolicy",
    "AttentionRule",
    "ExplicitFeedback",
    "FeedbackEvent",
    "FeedbackPolicy",
    "GovernancePolicy",
    "SessionView",
    "SignalDecision",
]
