"""``GET /sessions/{id}``: a session as JSON, read from the shared state."""

from __future__ import annotations

from typing import Any

from loom.state.base import State
from loom.wire import PendingSignal, decision_view


async def session_view(state: State, session_id: str) -> dict[str, Any] | None:
    """A session as JSON: working state, runs with the signals each handled, last reply,
    the run waiting for people and its pending approvals; None for a session nothing is
    known of."""
    snapshot = await state.sessions.load(session_id)
    stored = await state.sessions.load_context(session_id)
    runs = [record.to_dict() for record in snapshot.runs] if snapshot else []
    last_reply = next((r["output"] for r in reversed(runs) if r["status"] == "completed"), None)
    holder = await state.lease_holder(session_id)
    pending = await state.pending(session_id)
    in_flight = await state.in_flight(session_id)
    decisions = await state.decisions(session_id)
    suspended = await state.suspensions.load(session_id)
    if snapshot is None and not (pending or in_flight or decisions or holder or suspended):
        return None
    return {
        "session_id": session_id,
        "busy": holder is not None,
        "pending_signals": [_pending(text) for text in pending],
        "in_flight_signals": [_pending(text) for text in in_flight],
        "active_risks": await state.risks(session_id),
        "decisions": [decision_view(d) for d in decisions],
        "runs": runs,
        "last_reply": last_reply,
        # What compaction kept: "everything up to entry N" and the handoff it injects.
        "summary": None if stored is None or stored.summary is None else stored.summary.to_dict(),
        "handoff": None if stored is None or stored.handoff is None else stored.handoff.to_dict(),
        "awaiting_run": suspended.run_id if suspended else None,
        "approvals": [a.to_dict() for a in suspended.pending] if suspended else [],
    }


def _pending(text: str) -> dict[str, Any]:
    pending = PendingSignal.from_json(text)
    return {"action": pending.action, "signal": pending.signal.model_dump(mode="json")}


__all__ = ["session_view"]
