"""Contract tests of ``Suspensions`` (suspended runs, decisions, journals), run on memory
and Redis: fenced writes, first decision wins, resumable sessions found by the sweep."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loom.core.approvals import (
    Approval,
    ApprovalAlreadyDecided,
    ApprovalDigestMismatch,
    ApprovalExpired,
    Decision,
    UnknownApproval,
)
from loom.core.checkpoints import RunCheckpoint
from loom.core.messages import Message, ToolCall
from loom.state import StaleFencingToken
from tests.state_contract.backends import Backend


def checkpoint(session_id: str, run_id: str = "run_1", ttl: float = 3600) -> RunCheckpoint:
    call = ToolCall("c1", "restart", {"service": "api"})
    approval = Approval.request(
        tool="restart",
        arguments={"service": "api"},
        call_id="c1",
        run_id=run_id,
        session_id=session_id,
        ttl=ttl,
        reason="restarts need a person",
    )
    return RunCheckpoint(
        run_id=run_id,
        session_id=session_id,
        input="restart the api",
        iteration=1,
        transcript=(Message.user("restart the api"), Message.assistant("", (call,))),
        calls=(call,),
        approvals=(approval,),
        started_at=datetime.now(UTC),
    )


async def leased(state: Any, session_id: str) -> int:
    lease = await state.acquire_lease(session_id, "worker-1", 60)
    assert lease is not None
    return int(lease.token)


async def test_a_checkpoint_is_kept_whole_and_seen_by_every_replica(backend: Backend) -> None:
    state = backend.new()
    peer = backend.peer(state)
    token = await leased(state, "s")
    saved = checkpoint("s")

    await state.suspensions.save(saved, token)

    loaded = await peer.suspensions.load("s")
    assert loaded == saved
    assert await peer.suspensions.count() == 1
    assert await peer.suspensions.load("other") is None


async def test_a_stale_token_writes_nothing(backend: Backend) -> None:
    state = backend.new()
    first = await state.acquire_lease("s", "worker-1", 0.1)
    await asyncio.sleep(0.2)
    second = await state.acquire_lease("s", "worker-2", 60)
    assert first is not None
    assert second is not None
    await state.suspensions.save(checkpoint("s", "run_new"), second.token)

    with pytest.raises(StaleFencingToken):
        await state.suspensions.save(checkpoint("s", "run_old"), first.token)
    with pytest.raises(StaleFencingToken):
        await state.suspensions.journal_started("s", "run_new", "c1", first.token)
    with pytest.raises(StaleFencingToken):
        await state.suspensions.discard("s", "run_new", first.token)

    loaded = await state.suspensions.load("s")
    assert loaded is not None
    assert loaded.run_id == "run_new"
    assert await state.suspensions.journal("s", "run_new") == {}


async def test_the_first_decision_wins(backend: Backend) -> None:
    state = backend.new()
    peer = backend.peer(state)
    await state.suspensions.save(checkpoint("s"), await leased(state, "s"))
    (approval,) = (await state.suspensions.load("s")).pending  # type: ignore[union-attr]

    decided, fresh = await state.suspensions.decide(
        "s", approval.id, Decision.APPROVE, digest=approval.digest, by="alice"
    )
    again, fresh_again = await peer.suspensions.decide("s", approval.id, Decision.APPROVE, by="bob")

    assert (decided.decision, decided.decided_by, fresh) == (Decision.APPROVE, "alice", True)
    assert (again.decided_by, fresh_again) == ("alice", False)  # the same decision: harmless
    with pytest.raises(ApprovalAlreadyDecided, match="approve by alice"):
        await peer.suspensions.decide("s", approval.id, Decision.DENY)
    stored = await peer.suspensions.load("s")
    assert stored is not None
    assert stored.approvals[0].decided_by == "alice"


async def test_concurrent_decisions_have_one_winner(backend: Backend) -> None:
    state = backend.new()
    peers = [backend.peer(state) for _ in range(4)]
    await state.suspensions.save(checkpoint("s"), await leased(state, "s"))
    (approval,) = (await state.suspensions.load("s")).pending  # type: ignore[union-attr]

    async def decide(peer: Any, decision: Decision) -> str:
        try:
            await peer.suspensions.decide("s", approval.id, decision, by=decision.value)
        except ApprovalAlreadyDecided:
            return "lost"
        return "won"

    outcomes = await asyncio.gather(
        *(decide(p, Decision.APPROVE if i % 2 else Decision.DENY) for i, p in enumerate(peers))
    )
    stored = await state.suspensions.load("s")
    assert stored is not None
    winner = stored.approvals[0].decision
    assert winner is not None
    assert outcomes.count("won") == sum(
        1 for i in range(4) if (Decision.APPROVE if i % 2 else Decision.DENY) is winner
    )


async def test_bad_decisions_say_why(backend: Backend) -> None:
    state = backend.new()
    token = await leased(state, "s")
    await state.suspensions.save(checkpoint("s"), token)
    (approval,) = (await state.suspensions.load("s")).pending  # type: ignore[union-attr]

    with pytest.raises(UnknownApproval):
        await state.suspensions.decide("s", "apr_nope", Decision.APPROVE)
    with pytest.raises(UnknownApproval):
        await state.suspensions.decide("nobody", approval.id, Decision.APPROVE)
    with pytest.raises(ApprovalDigestMismatch):
        await state.suspensions.decide("s", approval.id, Decision.APPROVE, digest="sha256:00")

    await state.suspensions.save(checkpoint("e", ttl=0.01), await leased(state, "e"))
    (expiring,) = (await state.suspensions.load("e")).pending  # type: ignore[union-attr]
    await asyncio.sleep(0.05)
    with pytest.raises(ApprovalExpired):
        await state.suspensions.decide("e", expiring.id, Decision.APPROVE)


async def test_the_sweep_finds_runs_that_can_go_on(backend: Backend) -> None:
    state = backend.new()
    await state.suspensions.save(checkpoint("waiting"), await leased(state, "waiting"))
    await state.suspensions.save(checkpoint("decided"), await leased(state, "decided"))
    await state.suspensions.save(checkpoint("expiring", ttl=0.01), await leased(state, "expiring"))
    (approval,) = (await state.suspensions.load("decided")).pending  # type: ignore[union-attr]
    await state.suspensions.decide("decided", approval.id, Decision.DENY, message="no")
    await asyncio.sleep(0.05)

    now = datetime.now(UTC)
    assert sorted(await state.suspensions.resumable(now)) == ["decided", "expiring"]
    later = now + timedelta(hours=2)
    assert sorted(await state.suspensions.resumable(later)) == ["decided", "expiring", "waiting"]


async def test_discard_forgets_the_run_and_its_journal_only(backend: Backend) -> None:
    state = backend.new()
    token = await leased(state, "s")
    await state.suspensions.save(checkpoint("s", "run_1"), token)
    await state.suspensions.journal_started("s", "run_1", "c1", token)

    await state.suspensions.discard("s", "run_other", token)  # not the suspended run
    assert await state.suspensions.load("s") is not None

    await state.suspensions.discard("s", "run_1", token)
    assert await state.suspensions.load("s") is None
    assert await state.suspensions.journal("s", "run_1") == {}
    assert await state.suspensions.count() == 0
    assert await state.suspensions.resumable(datetime.now(UTC) + timedelta(days=2)) == []


async def test_the_journal_records_starts_and_results(backend: Backend) -> None:
    state = backend.new()
    peer = backend.peer(state)
    token = await leased(state, "s")

    await state.suspensions.journal_started("s", "run_1", "c1", token)
    await state.suspensions.journal_started("s", "run_1", "c2", token)
    await state.suspensions.journal_finished("s", "run_1", "c2", "done ✓", False, token)

    entries = await peer.suspensions.journal("s", "run_1")
    assert (entries["c1"].finished, entries["c2"].finished) == (False, True)
    assert (entries["c2"].content, entries["c2"].is_error) == ("done ✓", False)
    assert await peer.suspensions.journal("s", "run_2") == {}


async def test_a_late_decision_after_the_run_ended_is_answered_truthfully(
    backend: Backend,
) -> None:
    from loom.core.approvals import ApprovalGone

    state = backend.new()
    peer = backend.peer(state)
    token = await leased(state, "s")
    await state.suspensions.save(checkpoint("s", "run_1"), token)
    (approval,) = (await state.suspensions.load("s")).pending  # type: ignore[union-attr]
    await state.suspensions.decide("s", approval.id, Decision.APPROVE, by="alice")
    await state.suspensions.discard("s", "run_1", token)

    again, fresh = await peer.suspensions.decide("s", approval.id, Decision.APPROVE)
    assert (again.decided_by, fresh) == ("alice", False)
    with pytest.raises(ApprovalAlreadyDecided, match="approve by alice"):
        await peer.suspensions.decide("s", approval.id, Decision.DENY)
    with pytest.raises(UnknownApproval):
        await peer.suspensions.decide("other", approval.id, Decision.APPROVE)

    # A run that ended without a decision (interrupted), and one whose approval expired.
    await state.suspensions.save(checkpoint("s", "run_2"), token)
    (left,) = (await state.suspensions.load("s")).pending  # type: ignore[union-attr]
    await state.suspensions.discard("s", "run_2", token)
    with pytest.raises(ApprovalGone):
        await peer.suspensions.decide("s", left.id, Decision.APPROVE)
    await state.suspensions.save(checkpoint("s", "run_3", ttl=0.01), token)
    (lapsed,) = (await state.suspensions.load("s")).pending  # type: ignore[union-attr]
    await asyncio.sleep(0.05)
    await state.suspensions.discard("s", "run_3", token)
    with pytest.raises(ApprovalExpired):
        await peer.suspensions.decide("s", lapsed.id, Decision.DENY)


async def test_writing_a_run_again_keeps_the_decisions_taken_on_it(backend: Backend) -> None:
    """A run tree's checkpoint is written again while people decide on it (its children
    went on meanwhile): a decision taken since the worker's copy is never undone."""
    state = backend.new()
    peer = backend.peer(state)
    token = await leased(state, "s")
    first = checkpoint("s")
    await state.suspensions.save(first, token)
    (approval,) = first.approvals
    await peer.suspensions.decide("s", approval.id, Decision.APPROVE, by="alice")

    child = checkpoint("s", "run_child")
    await state.suspensions.save(dataclasses.replace(first, children={"d1": child}), token)

    loaded = await peer.suspensions.load("s")
    assert loaded is not None
    assert loaded.children == {"d1": child}
    assert loaded.approvals[0].decision is Decision.APPROVE
    assert loaded.approvals[0].decided_by == "alice"
    assert await peer.suspensions.resumable(datetime.now(UTC) + timedelta(seconds=1)) == ["s"]
    # Another run's checkpoint takes nothing of the one before.
    await state.suspensions.save(checkpoint("s", "run_2"), token)
    other = await peer.suspensions.load("s")
    assert other is not None
    assert other.pending
    assert other.run_id == "run_2"
