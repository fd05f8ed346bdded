"""Approvals: a tool call waiting for a person's decision, and the decision.

An ``Approval`` names the call exactly (tool, arguments and a digest of both), so a person
approves what will run and nothing else: a decision may carry the digest it was shown, and
one for other arguments is refused. The first decision on an approval is the one that
counts; deciding it again the same way is harmless, deciding it otherwise is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from loom.errors import LoomError

EXPIRY = "loom:expiry"
"""``decided_by`` of an approval that expired."""


class Decision(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


def argument_digest(tool: str, arguments: Any) -> str:
    """A stable digest of a call: the same tool and arguments give the same digest in any
    process (keys sorted, compact JSON)."""
    canonical = json.dumps(
        {"tool": tool, "arguments": arguments},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Approval:
    """One call that waits for a person: what it is, why it waits, until when, and (once
    decided) the decision."""

    id: str
    tool: str
    arguments: dict[str, Any]
    digest: str
    expires_at: datetime
    call_id: str
    run_id: str
    session_id: str
    reason: str = ""
    """Why the call needs approval (the rule that asked)."""
    requested_at: datetime | None = None
    decision: Decision | None = None
    message: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None

    @classmethod
    def request(
        cls,
        *,
        tool: str,
        arguments: dict[str, Any],
        call_id: str,
        run_id: str,
        session_id: str,
        ttl: float,
        reason: str = "",
        now: datetime | None = None,
    ) -> Approval:
        now = now or datetime.now(UTC)
        return cls(
            id=f"apr_{secrets.token_hex(12)}",
            tool=tool,
            arguments=arguments,
            digest=argument_digest(tool, arguments),
            expires_at=now + timedelta(seconds=ttl),
            call_id=call_id,
            run_id=run_id,
            session_id=session_id,
            reason=reason,
            requested_at=now,
        )

    @property
    def decided(self) -> bool:
        return self.decision is not None

    @property
    def approved(self) -> bool:
        return self.decision is Decision.APPROVE

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expires_at

    def decide(
        self,
        decision: Decision | str,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
        now: datetime | None = None,
    ) -> Approval:
        """This approval with ``decision`` recorded, or the reason it cannot be.

        Raises ``ApprovalDigestMismatch`` when ``digest`` names other arguments,
        ``ApprovalExpired`` after ``expires_at`` and ``ApprovalAlreadyDecided`` when it was
        decided otherwise before; the same decision again returns the first one unchanged.
        """
        decision = Decision(decision)
        now = now or datetime.now(UTC)
        if digest is not None and digest != self.digest:
            raise ApprovalDigestMismatch(
                f"approval {self.id}: the digest does not match the call's arguments "
                f"(expected {self.digest})"
            )
        if self.decision is not None:
            if self.decision is decision:
                return self
            raise ApprovalAlreadyDecided(self)
        if self.expired(now):
            raise ApprovalExpired(f"approval {self.id} expired at {self.expires_at.isoformat()}")
        return replace(self, decision=decision, message=message, decided_by=by, decided_at=now)

    def expire(self, now: datetime | None = None) -> Approval:
        """This approval denied by its expiry (the decision a person did not take in time)."""
        now = now or datetime.now(UTC)
        message = f"the approval expired at {self.expires_at.isoformat()} without a decision"
        return replace(
            self, decision=Decision.DENY, message=message, decided_by=EXPIRY, decided_at=now
        )

    @property
    def lapsed(self) -> bool:
        """Denied because nobody decided before ``expires_at``."""
        return self.decided_by == EXPIRY

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "arguments": self.arguments,
            "digest": self.digest,
            "expires_at": self.expires_at.isoformat(),
            "call_id": self.call_id,
            "run_id": self.run_id,
            "session_id": self.session_id,
            "reason": self.reason,
            "requested_at": self.requested_at.isoformat() if self.requested_at else None,
            "decision": self.decision.value if self.decision else None,
            "message": self.message,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        return cls(
            id=data["id"],
            tool=data["tool"],
            arguments=dict(data.get("arguments") or {}),
            digest=data["digest"],
            expires_at=datetime.fromisoformat(data["expires_at"]),
            call_id=data["call_id"],
            run_id=data["run_id"],
            session_id=data["session_id"],
            reason=data.get("reason") or "",
            requested_at=_when(data.get("requested_at")),
            decision=Decision(data["decision"]) if data.get("decision") else None,
            message=data.get("message"),
            decided_by=data.get("decided_by"),
            decided_at=_when(data.get("decided_at")),
        )


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class ApprovalError(LoomError):
    """A decision that cannot be taken; the subclass says why (and the HTTP status)."""

    status = 400


class UnknownApproval(ApprovalError):
    status = 404


class ApprovalDigestMismatch(ApprovalError):
    status = 409


class ApprovalAlreadyDecided(ApprovalError):
    status = 409

    def __init__(self, approval: Approval) -> None:
        decision = approval.decision.value if approval.decision else "?"
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        super().__init__(f"approval {approval.id} was already decided: {decision}{by}")
        self.approval = approval


class ApprovalGone(ApprovalError):
    """The run no longer waits for the approval (it ended without a decision on it)."""

    status = 410


class ApprovalExpired(ApprovalGone):
    status = 410


@dataclass(frozen=True, slots=True)
class Decided:
    """What taking a decision did: the approval as decided, and whether this decision is
    the one that counts (False: the same decision had been taken before)."""

    approval: Approval
    fresh: bool


class ApprovalDesk(Protocol):
    """Where a person's decision is taken (the daemon: in the shared state, then an
    ``approval`` signal resumes the run on any worker)."""

    async def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
    ) -> Decided:
        """Record the decision; the approval as decided (the first decision, when the same
        one was taken before) and whether this call took it. Raises ``UnknownApproval`` (404),
        ``ApprovalDigestMismatch`` (409), ``ApprovalAlreadyDecided`` (409, naming the first
        decision) or ``ApprovalExpired`` (410)."""
        ...

    async def pending(self, session_id: str) -> tuple[Approval, ...]:
        """The session's approvals still waiting for a decision."""
        ...


__all__ = [
    "Approval",
    "ApprovalAlreadyDecided",
    "ApprovalDesk",
    "ApprovalDigestMismatch",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalGone",
    "Decided",
    "Decision",
    "UnknownApproval",
    "argument_digest",
]
