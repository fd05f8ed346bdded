"""Policies that steer the runtime: attention and feedback (governance comes later)."""

from loom.policies.attention import (
    ACTIONS,
    Action,
    AttentionPolicy,
    AttentionRule,
    SessionView,
    SignalDecision,
)
from loom.policies.feedback import ExplicitFeedback, FeedbackEvent, FeedbackPolicy

__all__ = [
    "ACTIONS",
    "Action",
    "AttentionPolicy",
    "AttentionRule",
    "ExplicitFeedback",
    "FeedbackEvent",
    "FeedbackPolicy",
    "SessionView",
    "SignalDecision",
]
