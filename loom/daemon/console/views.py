"""What each console page shows, read from the shared state and the broker: plain dicts and
lists for the templates (which escape every value)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Protocol

from loom.broker.base import Broker
from loom.core.messages import Message
from loom.core.session_store import RUN_TRANSCRIPT, RunRecord, SessionSnapshot
from loom.daemon.approvals import StateApprovalDesk
from loom.daemon.session_view import session_view
from loom.intake.context import AdapterContext
from loom.state.base import State
from loom.state.leases import replica_id
from loom.state.session_index import SessionStatus
from loom.wire import ATTENTION_QUEUE, REPLIES_QUEUE, WORK_QUEUE, decision_view

CONSUMING_ROLE = {
    ATTENTION_QUEUE: "attention",
    WORK_QUEUE: "worker",
    REPLIES_QUEUE: "worker (replies)",
}
"""Which role consumes each queue: its consumers are that role's live replicas (gateways
and schedulers consume nothing, so the broker does not see them)."""
NOT_PLACED = "This run's place in the transcript was not recorded (stored by an older Loom)."
LEFT_THE_WINDOW = "This run's messages have left the stored transcript (its cap or the summary)."
MAX_BUSY = 10_000
"""Leases read to tell busy sessions (one per running session across every worker)."""
MAX_SUSPENDED = 10_000
"""Suspended runs read to tell sessions that wait for approvals."""
MAX_TRANSCRIPT = 200
"""Transcript entries a session page shows (the newest)."""
BODY_PREVIEW = 2000
"""Characters of a dead letter's body shown."""


class ConsoleHost(Protocol):
    """What the console reads of the process that serves it (a ``Daemon``)."""

    @property
    def adapter_context(self) -> AdapterContext: ...

    @property
    def state(self) -> State: ...

    @property
    def approvals(self) -> StateApprovalDesk: ...

    async def readiness(self) -> dict[str, bool]: ...


def when(unix: float | None) -> str:
    """A unix time as UTC text for people."""
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty(value: Any) -> str:
    """JSON for reading: indented, keys in the order given, non-ASCII kept."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


async def statuses(state: State) -> tuple[set[str], set[str]]:
    """The busy sessions (a lease held) and those waiting for approvals."""
    busy = {held.lease.session_id for held in await state.held_leases(MAX_BUSY)}
    awaiting = set(await state.suspensions.suspended_sessions(MAX_SUSPENDED)) - busy
    return busy, awaiting


async def sessions_page(
    state: State, status: SessionStatus | None, page: int, size: int
) -> dict[str, Any]:
    """The sessions page: rows, counts and paging (a page past the last is empty)."""
    busy, awaiting = await statuses(state)
    offset = (page - 1) * size
    if status is SessionStatus.BUSY:
        found = await state.sessions_page(offset, size, only=busy)
    elif status is SessionStatus.AWAITING:
        found = await state.sessions_page(offset, size, only=awaiting)
    elif status is SessionStatus.IDLE:
        found = await state.sessions_page(offset, size, exclude=busy | awaiting)
    else:
        found = await state.sessions_page(offset, size)
    rows = []
    for summary in await state.session_summaries(found.session_ids):
        sid = summary.session_id
        decision = decision_view(summary.last_decision) if summary.last_decision else None
        run = json.loads(summary.last_run) if summary.last_run else None
        rows.append(
            {
                "id": sid,
                "status": "busy" if sid in busy else "awaiting" if sid in awaiting else "idle",
                "last_active": when(summary.last_active),
                "decision": decision,
                "run": run,
            }
        )
    pages = max(1, math.ceil(found.total / size))
    return {
        "rows": rows,
        "total": found.total,
        "page": page,
        "pages": pages,
        "status": status.value if status else "",
        "counts": {"busy": len(busy), "awaiting": len(awaiting)},
        "all": await state.count_sessions(),
    }


def message_view(message: Message) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": [
            {"id": call.id, "name": call.name,
             "arguments": pretty(call.arguments) if call.raw_arguments is None
             else call.raw_arguments}
            for call in message.tool_calls
        ],
        "tool_name": message.tool_name,
        "tool_call_id": message.tool_call_id,
        "is_error": message.is_error,
    }  # fmt: skip


def run_messages(snapshot: SessionSnapshot, record: RunRecord) -> list[Message] | None:
    """The run's own messages, by where its worker placed them in the transcript
    (``RUN_TRANSCRIPT``): ``[]`` when they left the stored window, None when the record does
    not say (a run stored before placements were kept)."""
    placed = record.metadata.get(RUN_TRANSCRIPT)
    if not isinstance(placed, dict):
        return None
    start = int(placed.get("from", 0)) - snapshot.first_entry
    stop = start + int(placed.get("count", 0))
    if start < 0:  # the transcript's cap or the summary took its beginning
        return []
    return snapshot.messages[start:stop]


def run_view(record: dict[str, Any]) -> dict[str, Any]:
    usage = record.get("usage") or {}
    metadata = record.get("metadata") or {}
    return {
        **record,
        "cost": usage.get("cost_usd"),
        "tokens": {k: v for k, v in usage.items() if k != "cost_usd"},
        "signals": list(metadata.get("signals") or []),
    }


async def session_page(state: State, session_id: str) -> dict[str, Any] | None:
    """One session: working state, decisions, runs, transcript; None if nothing is known."""
    view = await session_view(state, session_id)
    if view is None:
        return None
    snapshot = await state.sessions.load(session_id)
    messages = snapshot.messages[-MAX_TRANSCRIPT:] if snapshot else []
    return {
        **view,
        "status": "busy" if view["busy"] else "awaiting" if view["awaiting_run"] else "idle",
        "runs": [run_view(r) for r in reversed(view["runs"])],
        "decisions": list(reversed(view["decisions"])),
        "transcript": [message_view(m) for m in messages],
        "transcript_cut": snapshot is not None and len(snapshot.messages) > MAX_TRANSCRIPT,
    }


async def run_page(state: State, session_id: str, run_id: str) -> dict[str, Any] | None:
    """One run: its record, the signals it handled and its transcript; a suspended run's
    transcript comes from its checkpoint. None if the session has no such run."""
    snapshot = await state.sessions.load(session_id)
    suspended = await state.suspensions.load(session_id)
    record = next((r for r in snapshot.runs if r.run_id == run_id), None) if snapshot else None
    if suspended is not None and suspended.run_id == run_id:
        view = {
            "run_id": run_id, "session_id": session_id, "status": "awaiting_approval",
            "output": suspended.output, "error": None, "usage": suspended.usage.to_dict(),
            "started_at": suspended.started_at.isoformat() if suspended.started_at else None,
            "finished_at": None, "metadata": suspended.metadata,
        }  # fmt: skip
        transcript = [message_view(m) for m in suspended.transcript]
        approvals = [a.to_dict() for a in suspended.pending]
        note = ""
    elif record is not None and snapshot is not None:
        view = record.to_dict()
        own = run_messages(snapshot, record)
        transcript = [message_view(m) for m in own or ()]
        approvals = []
        note = (
            NOT_PLACED if own is None
            else LEFT_THE_WINDOW if not own and record.metadata[RUN_TRANSCRIPT].get("count")
            else ""
        )  # fmt: skip
    else:
        return None
    return {
        "run": run_view(view),
        "transcript": transcript,
        "transcript_note": note,
        "approvals": approvals,
    }


async def approvals_page(state: State, limit: int) -> list[dict[str, Any]]:
    """Pending approvals across sessions, the soonest to expire first."""
    found = []
    for session_id in await state.suspensions.suspended_sessions(limit):
        checkpoint = await state.suspensions.load(session_id)
        for approval in checkpoint.pending if checkpoint else ():
            row = approval.to_dict()
            row["arguments_text"] = pretty(approval.arguments)
            found.append(row)
    found.sort(key=lambda row: row["expires_at"])
    return found[:limit]


def letter_view(broker: Broker, letter: Any) -> dict[str, Any]:
    body = letter.message.body.decode("utf-8", "replace")
    return {
        "message_id": letter.message.message_id or "",
        "origin": letter.origin_queue,
        "reason": letter.reason,
        "at": letter.dead_lettered_at.isoformat() if letter.dead_lettered_at else "",
        "body": body[:BODY_PREVIEW],
        "cut": len(body) > BODY_PREVIEW,
        "replayable": letter.origin_queue in broker.topology.limited,
    }


async def system_page(host: ConsoleHost) -> dict[str, Any]:
    """This process (roles, replica, readiness), the workers seen holding sessions, the
    queue depths and the counts."""
    context = host.adapter_context
    broker = context.broker
    state = host.state
    queues: dict[str, dict[str, int | str]] = {}
    for queue in broker.topology.queues:
        try:
            queues[queue] = {
                "role": CONSUMING_ROLE.get(queue, ""),
                "ready": await broker.queue_depth(queue),
                "consumers": await broker.queue_consumers(queue),
            }
        except Exception as problem:  # a broker away is shown, not a failed page
            away = f"unavailable ({type(problem).__name__})"
            queues[queue] = {"role": CONSUMING_ROLE.get(queue, ""), "ready": away, "consumers": ""}
    workers: dict[str, list[dict[str, Any]]] = {}
    for held in await state.held_leases(MAX_BUSY):
        workers.setdefault(held.lease.owner, []).append(
            {"session_id": held.lease.session_id, "held_for": round(held.held_for, 1)}
        )
    return {
        "replica": replica_id(),
        "roles": list(getattr(host, "roles", ())),
        "readiness": await host.readiness(),
        "workers": workers,
        "queues": queues,
        "sessions": await state.count_sessions(),
        "suspended": await state.suspensions.count(),
        "broker": broker.url,
        "state": state.url,
    }


async def fingerprint(state: State) -> str:
    """Changes when a decision is recorded, a run ends, starts or suspends, or an approval
    is decided: what the live pages watch (a few cheap reads)."""
    newest = await state.recent_sessions(0, 1)
    busy, awaiting = await statuses(state)
    return json.dumps([newest, await state.count_sessions(), sorted(busy), sorted(awaiting)])


__all__ = [
    "ConsoleHost",
    "approvals_page",
    "fingerprint",
    "run_messages",
    "run_page",
    "session_page",
    "sessions_page",
    "system_page",
]
