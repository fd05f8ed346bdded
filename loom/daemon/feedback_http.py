"""``POST /sessions/{id}/feedback``: a person's verdict on a session or one of its runs.

JSON ``{"score": -1..1}`` or ``{"value": "up" | "down"}``, with an optional ``comment`` and
``run_id``; ``202 {"id": ..., "status": "accepted"}`` once the event is in the state.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from loom.daemon.session_view import session_view
from loom.errors import validation_details
from loom.intake.http import Endpoint, error, read_body
from loom.policies.feedback import ExplicitFeedback, FeedbackPolicy
from loom.signals import SESSION_ID_PATTERN
from loom.state.base import State, StateUnavailable

MAX_FEEDBACK_BODY = 16 * 1024
"""Feedback is a score and a comment: a larger body is a mistake or an attack."""


def describe(problem: ValidationError) -> str:
    return f"invalid feedback: {validation_details(problem)}"


def feedback_routes(
    policy: FeedbackPolicy,
    state: State,
    max_body_bytes: int,
    protected: Callable[[Endpoint], Endpoint],
) -> list[BaseRoute]:
    """The feedback route, behind the same bearer check as ``GET /sessions/{id}``."""
    limit = min(MAX_FEEDBACK_BODY, max_body_bytes)

    async def post_feedback(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if not re.fullmatch(SESSION_ID_PATTERN, session_id):
            return error(400, f"invalid session id {session_id!r}")
        if not policy.enabled:
            return error(
                409,
                "feedback is turned off (LOOM_FEEDBACK__ENABLED=false or "
                "Daemon(feedback=FeedbackPolicy.none()))",
            )
        body = await read_body(request, limit)
        if isinstance(body, Response):
            return body
        try:
            feedback = ExplicitFeedback.model_validate_json(body)
        except ValidationError as problem:
            return error(422, describe(problem))
        try:
            view = await session_view(state, session_id)
            if view is None:
                return error(404, f"no session {session_id!r}")
            runs = {run["run_id"] for run in view["runs"]}
            if feedback.run_id is not None and feedback.run_id not in runs:
                return error(
                    404,
                    f"session {session_id!r} has no run {feedback.run_id!r} among its "
                    f"{len(runs)} kept run(s)",
                )
            event = await policy.explicit(session_id, feedback, source="http")
        except StateUnavailable as problem:
            return error(503, f"state unavailable, feedback not recorded: {problem}")
        if event is None:  # turned off since the check above
            return error(409, "feedback is turned off")
        return JSONResponse({"id": event.id, "status": "accepted"}, status_code=202)

    return [
        Route("/sessions/{session_id:path}/feedback", protected(post_feedback), methods=["POST"])
    ]
