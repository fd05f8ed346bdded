"""Stuck runs: sessions whose run holds its lease past the runtime timeout.

The heartbeat reports them. The state lists leases held now with how long each has been
held (``State.held_leases``); the session store says when the session's runs finished.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loom.intake.context import AdapterContext, HasContext, context_of


async def stuck_sessions(
    context: AdapterContext | HasContext, stuck_after: float | None = None
) -> list[dict[str, Any]]:
    """Sessions whose lease has been held past ``stuck_after`` seconds with no run finishing
    in that time: a run has outlived its timeout (hung, or its worker is wedged).

    A worker keeps its lease across consecutive runs of a busy session, so a long-held lease
    alone is not enough: runs that keep finishing mean the session is busy, not stuck.
    """
    context = context_of(context)
    threshold = stuck_after
    if threshold is None:
        timeout = context.runtime_timeout
        if timeout is None:
            return []  # runs may take any time: nothing is "past its timeout"
        threshold = timeout + context.lease_ttl
    now = datetime.now(UTC)
    stuck: list[dict[str, Any]] = []
    for held in await context.leases.held_leases():
        if held.held_for <= threshold:
            break  # longest held first: the rest are younger still
        session_id = held.lease.session_id
        snapshot = await context.sessions.load(session_id)
        finished = [
            run.finished_at for run in (snapshot.runs if snapshot else ()) if run.finished_at
        ]
        last = max(finished) if finished else None
        if last is not None and (now - last).total_seconds() <= threshold:
            continue
        stuck.append(
            {
                "session_id": session_id,
                "owner": held.lease.owner,
                "held_for": round(held.held_for, 1),
                "last_run_finished_at": None if last is None else last.isoformat(),
            }
        )
    return stuck


__all__ = ["stuck_sessions"]
