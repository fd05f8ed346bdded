"""``loom approve SESSION APPROVAL_ID [--deny] [--message M]``: decide a waiting tool call.

On Redis the decision is taken in the state directly and announced on the broker (the same
``StateApprovalDesk`` the HTTP route uses); with the embedded memory state it is posted to
the running process's ``POST /sessions/{id}/approvals/{approval_id}``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any
from urllib.parse import quote

from loom.core.approvals import ApprovalError, Decision


class ApproveFailed(Exception):
    """The decision was not taken; the message says why."""


def add_parser(commands: Any) -> None:
    approve = commands.add_parser(
        "approve",
        help="approve (or deny) a tool call a run waits for",
        description="Approve, or with --deny refuse, a tool call a run of SESSION waits "
        "for (the ids are in GET /sessions/SESSION, under approvals). Exits 1 when the "
        "decision cannot be taken (unknown, expired, already decided otherwise).",
    )
    approve.add_argument("session", help="the session id")
    approve.add_argument("approval_id", help="the approval id (apr_...)")
    approve.add_argument("--deny", action="store_true", help="refuse the call instead")
    approve.add_argument("--message", default=None, help="a note the agent reads")
    approve.add_argument("--digest", default=None, help="decide only if the call's digest is this")
    approve.add_argument("--by", default=None, help="who decides (default: cli:<user>)")


async def approve(args: argparse.Namespace) -> int:
    from loom.daemon.settings import Settings

    settings = Settings()
    decision = Decision.DENY if args.deny else Decision.APPROVE
    by = args.by or f"cli:{getpass.getuser()}"
    try:
        if settings.state_url.startswith("memory:"):
            answer = await _post(settings, args, decision, by)
        else:
            answer = await _decide_in_state(settings, args, decision, by)
    except ApproveFailed as problem:
        print(f"loom: decision not taken: {problem}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


async def _decide_in_state(
    settings: Any, args: argparse.Namespace, decision: Decision, by: str
) -> dict[str, Any]:
    from loom.broker.base import BrokerUnavailable
    from loom.daemon.app import state_options
    from loom.daemon.approvals import StateApprovalDesk
    from loom.state import state_from_url
    from loom.state.base import StateUnavailable
    from loom.wire import broker_from_url, publish_signal

    state = state_from_url(settings.state_url, **state_options(settings.state_url, settings))
    broker = broker_from_url(settings.broker_url, namespace=settings.namespace)
    try:
        await state.start()
        try:
            await broker.start()
        except BrokerUnavailable as problem:  # the decision still counts: a sweep resumes it
            print(f"loom: the broker is unavailable ({problem}); deciding anyway", file=sys.stderr)

        async def publish(signal: Any) -> None:
            await publish_signal(broker, signal)

        desk = StateApprovalDesk(state.suspensions, publish)
        decided = await desk.decide(
            args.session,
            args.approval_id,
            decision,
            message=args.message,
            digest=args.digest,
            by=by,
        )
    except (ApprovalError, StateUnavailable) as problem:
        raise ApproveFailed(str(problem)) from problem
    finally:
        await broker.close()
        await state.close()
    return {"approval": decided.approval.to_dict(), "fresh": decided.fresh}


async def _post(
    settings: Any, args: argparse.Namespace, decision: Decision, by: str
) -> dict[str, Any]:
    import httpx

    from loom.intake.signing import sign

    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    path = quote(f"/sessions/{args.session}/approvals/{args.approval_id}", safe="/:@")
    url = f"http://{host}:{settings.http.port}{path}"  # `loom run`: every role, one port
    body = json.dumps(
        {"decision": decision.value, "message": args.message, "digest": args.digest, "by": by}
    ).encode()
    headers = {"content-type": "application/json"}
    if settings.api_token is not None:
        headers["authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    elif settings.webhook_secret is not None:
        headers.update(sign(settings.webhook_secret.get_secret_value(), body))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as problem:
        raise ApproveFailed(
            f"no loom process answers at {url} ({problem}); with the embedded memory state "
            "the decision goes to the running `loom run`"
        ) from problem
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text}
    if response.status_code == 200 and isinstance(answer, dict):
        return answer
    reason = answer.get("error", answer) if isinstance(answer, dict) else answer
    raise ApproveFailed(f"{url} answered {response.status_code}: {reason}")


__all__ = ["add_parser", "approve"]
