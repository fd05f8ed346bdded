"""Decisions on approvals in the daemon: taken in the shared state, announced by a signal.

``StateApprovalDesk`` is the ``ApprovalDesk`` every way of deciding goes through (``POST
/sessions/{id}/approvals/{approval_id}``, ``loom approve``, Slack's buttons). The decision
is taken atomically in the state first (the first one wins, across every replica); then an
``approval`` signal is published, which wakes a worker to resume the run. If that publish
fails, nothing is lost: workers sweep the state for suspended runs whose decisions are in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from loom import metrics
from loom.core.approvals import Approval, ApprovalError, Decided, Decision
from loom.core.attention import APPROVAL_SIGNAL
from loom.errors import validation_details
from loom.intake.http import error, read_body
from loom.signals import SESSION_ID_PATTERN, RuntimeSignal
from loom.state.base import StateUnavailable
from loom.state.suspensions import Suspensions

logger = logging.getLogger("loom.approvals")

MAX_DECISION_BODY = 16 * 1024
"""A decision is a word, a digest and a message: a larger body is a mistake or an attack."""

Publish = Callable[[RuntimeSignal], Awaitable[None]]


class StateApprovalDesk:
    """Takes decisions in ``suspensions`` and announces each with an ``approval`` signal."""

    def __init__(self, suspensions: Suspensions, publish: Publish) -> None:
        self.suspensions = suspensions
        self.publish = publish

    async def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision | str,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
    ) -> Decided:
        decision = Decision(decision)
        approval, fresh = await self.suspensions.decide(
            session_id, approval_id, decision, message=message, digest=digest, by=by
        )
        if fresh:
            metrics.approval_decided(approval)
            logger.info(
                "session %s: approval %s (%s) %sd by %s",
                session_id, approval.id, approval.tool, decision.value, by or "someone",
            )  # fmt: skip
        # Announced again on a repeated decision too: the first announcement may be the
        # one that was lost (its dedupe key keeps it to one resume).
        await self._announce(approval)
        return Decided(approval, fresh)

    async def pending(self, session_id: str) -> tuple[Approval, ...]:
        checkpoint = await self.suspensions.load(session_id)
        return checkpoint.pending if checkpoint is not None else ()

    async def _announce(self, approval: Approval) -> None:
        decision = approval.decision.value if approval.decision else "decided"
        signal = RuntimeSignal.create(
            f"{approval.tool}: {decision} ({approval.id})",
            source="loom.approvals",
            type=APPROVAL_SIGNAL,
            session_id=approval.session_id,
            dedupe_key=f"approval:{approval.id}",
            payload={
                "approval_id": approval.id,
                "decision": decision,
                "by": approval.decided_by,
                "message": approval.message,
            },
        )
        try:
            await self.publish(signal)
        except Exception as problem:  # the decision is kept; a worker's sweep resumes it
            logger.warning(
                "approval %s: decision kept, its signal not published (%s); a worker's "
                "sweep will resume the run",
                approval.id, problem,
            )  # fmt: skip


class DecisionBody(BaseModel):
    """``POST /sessions/{id}/approvals/{approval_id}``'s body."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    message: str | None = Field(default=None, max_length=4000)
    digest: str | None = Field(default=None, max_length=200)
    """The digest the person was shown: a decision on other arguments is refused (409)."""
    by: str | None = Field(default=None, min_length=1, max_length=200)
    """Who decides, kept with the decision as ``api:<by>`` (``api`` when not given)."""


def approval_routes(
    desk: StateApprovalDesk,
    max_body_bytes: int,
    refusal: Callable[[Request, bytes], str | None],
    signed_only: Callable[[Request], bool],
) -> list[BaseRoute]:
    """The decision route; ``refusal`` says why a request is not authenticated (the bearer
    token or a signature, as for ``POST /signals``). ``signed_only`` tells a request that
    authenticated by a signature alone: a signature covers the body, not the path, so such
    a decision must name its call by ``digest``, or a captured one could decide another."""
    limit = min(MAX_DECISION_BODY, max_body_bytes)

    async def post_decision(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        approval_id = request.path_params["approval_id"]
        if not re.fullmatch(SESSION_ID_PATTERN, session_id):
            return error(400, f"invalid session id {session_id!r}")
        body = await read_body(request, limit)
        if isinstance(body, Response):
            return body
        refused = refusal(request, body)
        if refused is not None:
            return error(401, refused)
        try:
            wanted = DecisionBody.model_validate_json(body)
        except ValidationError as problem:
            return error(422, f"invalid decision: {validation_details(problem)}")
        if wanted.digest is None and signed_only(request):
            return error(
                422,
                "invalid decision: digest: a decision authenticated by X-Loom-Signature "
                "must carry the call's digest (GET /sessions/{id} lists it)",
            )
        try:
            decided = await desk.decide(
                session_id,
                approval_id,
                Decision(wanted.decision),
                message=wanted.message,
                digest=wanted.digest,
                by=f"api:{wanted.by}" if wanted.by else "api",
            )
        except ApprovalError as problem:
            return error(problem.status, str(problem))
        except StateUnavailable as problem:
            return error(503, f"state unavailable, decision not taken: {problem}")
        return JSONResponse({"approval": decided.approval.to_dict(), "fresh": decided.fresh})

    return [
        Route(
            "/sessions/{session_id:path}/approvals/{approval_id}",
            post_decision,
            methods=["POST"],
        )
    ]


__all__ = ["DecisionBody", "StateApprovalDesk", "approval_routes"]
