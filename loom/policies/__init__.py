"""Policies that steer the runtime: attention (and, later, governance and feedback)."""

from loom.policies.attention import (
    ACTIONS,
    Action,
    AttentionPolicy,
    AttentionRule,
    SessionView,
    SignalDecision,
)

__all__ = ["ACTIONS", "Action", "AttentionPolicy", "AttentionRule", "SessionView", "SignalDecision"]
