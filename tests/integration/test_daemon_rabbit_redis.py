"""The daemon as separate processes on the real RabbitMQ and Redis.

Role processes (``python -m loom worker|attention|run tests.integration.app:daemon``) share a
namespace per test; the test publishes with ``publish_signal`` and reads the outcome from
Redis (run records with the signals each handled, its fencing token and worker). Waits poll
with generous deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import signal
from collections import Counter
from typing import Any

import httpx
import pytest

from loom import RuntimeSignal
from loom.broker.base import Message
from loom.core.session_store import RunRecord
from loom.wire import SIGNALS_EXCHANGE, decision_view, publish_signal
from tests.integration.conftest import Cluster
from tests.polling import eventually

SLOW = "SLOWTASK"  # the word that makes the test model's first turn slow (see app.py)


async def send(c: Cluster, summary: str, session: str, **fields: Any) -> RuntimeSignal:
    signal_ = RuntimeSignal.create(summary, session_id=session, **fields)
    await publish_signal(c.broker, signal_)
    return signal_


async def runs(c: Cluster, session: str) -> list[RunRecord]:
    snapshot = await c.state.sessions.load(session)
    return [] if snapshot is None else list(snapshot.runs)


async def completed_run_with(c: Cluster, session: str, signal_id: str) -> RunRecord | None:
    for run in await runs(c, session):
        if run.status == "completed" and signal_id in run.metadata.get("signals", []):
            return run
    return None


async def settled(c: Cluster, session: str) -> bool:
    """No signal waits or is being handled, and no run holds the session."""
    state = c.state
    return not (
        await state.pending(session)
        or await state.in_flight(session)
        or await state.lease_holder(session)
    )


async def decisions(c: Cluster, session: str) -> list[dict[str, Any]]:
    return [decision_view(d) for d in await c.state.decisions(session)]


async def run_in_progress(c: Cluster, session: str) -> bool:
    # Taken signals sit in flight while a leased run handles them.
    return bool(await c.state.in_flight(session)) and (
        await c.state.lease_holder(session) is not None
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_500_signals_over_20_sessions_each_handled_by_exactly_one_run(
    cluster: Cluster,
) -> None:
    await cluster.start_ready("worker", "worker", "attention", LOOM_TEST_MODEL_DELAY="0.02")
    sessions = [f"load-{n}" for n in range(20)]
    published: list[str] = []
    for batch in range(25):
        signals = [
            RuntimeSignal.create(f"event {batch}/{n}", source="load", session_id=session)
            for n, session in enumerate(sessions)
        ]
        await asyncio.gather(*(publish_signal(cluster.broker, s) for s in signals))
        published.extend(s.id for s in signals)
    assert len(set(published)) == 500

    async def all_handled() -> bool:
        handled = set()
        for session in sessions:
            for run in await runs(cluster, session):
                handled.update(run.metadata.get("signals", []))
        if not handled >= set(published):
            return False
        return all([await settled(cluster, session) for session in sessions])

    await eventually(all_handled, timeout=150, what="every signal handled")

    seen: Counter[str] = Counter()
    workers: set[str] = set()
    for session in sessions:
        records = await runs(cluster, session)
        assert records, session
        assert [r.status for r in records] == ["completed"] * len(records), session
        for run in records:
            seen.update(run.metadata["signals"])
            workers.add(run.metadata["worker"])
        # One run of a session at a time: in start order the fencing tokens never go back
        # (runs under one lease share its token) and each run starts after the one before
        # it finished.
        ordered = sorted(records, key=lambda r: r.started_at)
        assert sorted(records, key=lambda r: (r.metadata["fencing_token"], r.started_at)) == (
            ordered
        ), session
        for before, after in itertools.pairwise(ordered):
            assert before.finished_at is not None
            assert after.started_at >= before.finished_at, (session, before, after)
            assert after.metadata["fencing_token"] >= before.metadata["fencing_token"]
    assert set(seen) == set(published)
    assert [signal_id for signal_id, n in seen.items() if n > 1] == []
    run_count = sum([len(await runs(cluster, session)) for session in sessions])
    print(f"500 signals, 20 sessions: {run_count} runs on {len(workers)} workers")
    assert len(workers) == 2, f"only {workers} ran sessions (expected both workers)"


@pytest.mark.slow
async def test_critical_signal_from_another_process_interrupts_a_running_run(
    cluster: Cluster,
) -> None:
    await cluster.start_ready("worker", "worker", "attention", LOOM_TEST_SLOW_SECONDS="4")
    slow = await send(cluster, f"{SLOW}: rebuild the index", "intr")
    await eventually(lambda: run_in_progress(cluster, "intr"), timeout=30, what="the slow run")
    critical = await send(cluster, "prod is down", "intr", urgency="critical")

    handled = await eventually(
        lambda: completed_run_with(cluster, "intr", critical.id),
        timeout=60,
        what="a completed run handling the critical signal",
    )
    records = await runs(cluster, "intr")
    first = records[0]
    assert first.status == "interrupted", records
    assert first.metadata["signals"] == [slow.id]
    assert critical.id in (first.error or ""), first.error
    assert handled.run_id != first.run_id
    assert first.finished_at is not None
    assert handled.started_at >= first.finished_at
    actions = {d["signal_id"]: d["action"] for d in await decisions(cluster, "intr")}
    assert actions == {slow.id: "queue", critical.id: "interrupt"}
    await eventually(lambda: settled(cluster, "intr"), timeout=30, what="the session to settle")


@pytest.mark.slow
async def test_a_killed_workers_session_is_finished_by_another_worker(cluster: Cluster) -> None:
    workers = await cluster.start_ready("worker", "worker", "attention", LOOM_TEST_SLOW_SECONDS="3")
    slow = await send(cluster, f"{SLOW}: migrate the database", "crash")
    await eventually(lambda: run_in_progress(cluster, "crash"), timeout=30, what="the slow run")
    lease = await cluster.state.lease_holder("crash")
    assert lease is not None
    pid = int(lease.owner.split(":")[1])
    [victim] = [p for p in workers if p.pid == pid]
    os.kill(pid, signal.SIGKILL)
    assert victim.popen.wait(timeout=10) == -signal.SIGKILL

    run = await eventually(
        lambda: completed_run_with(cluster, "crash", slow.id),
        timeout=60,
        what="another worker to complete the killed worker's signal",
    )
    assert run.metadata["worker"] != lease.owner
    assert run.metadata["fencing_token"] > lease.token
    await eventually(lambda: settled(cluster, "crash"), timeout=30, what="the session to settle")
    assert [r.metadata["signals"] for r in await runs(cluster, "crash")] == [[slow.id]]


@pytest.mark.slow
async def test_sigterm_hands_back_the_run_in_progress_and_exits_0(cluster: Cluster) -> None:
    [proc] = await cluster.start_ready(
        "run", LOOM_SHUTDOWN_TIMEOUT="2", LOOM_TEST_SLOW_SECONDS="60"
    )
    slow = await send(cluster, f"{SLOW}: long report", "term")
    await eventually(lambda: run_in_progress(cluster, "term"), timeout=30, what="the slow run")
    proc.popen.send_signal(signal.SIGTERM)
    # Shutdown timeout (2 s) plus a generous margin for handing back and disconnecting.
    assert proc.popen.wait(timeout=30) == 0, proc.output()[-4000:]
    assert "draining" in proc.output()

    # Nothing lost: the signal is still in flight (or pending) for the next worker.
    waiting = await cluster.state.in_flight("term") + await cluster.state.pending("term")
    assert any(slow.id in text for text in waiting), waiting
    assert await cluster.state.lease_holder("term") is None  # handed back, not left to expire
    await cluster.start_ready("worker", LOOM_TEST_SLOW_SECONDS="0.2")
    await eventually(
        lambda: completed_run_with(cluster, "term", slow.id),
        timeout=60,
        what="a new worker to complete the handed-back signal",
    )
    await eventually(lambda: settled(cluster, "term"), timeout=30, what="the session to settle")


@pytest.mark.slow
async def test_poison_message_is_dead_lettered_while_good_signals_flow(cluster: Cluster) -> None:
    await cluster.start_ready("worker", "attention")
    good: list[RuntimeSignal] = []
    for n in range(6):
        if n == 3:
            await cluster.broker.publish(
                SIGNALS_EXCHANGE, "bad.message", Message(body=b"{not json")
            )
        good.append(await send(cluster, f"good {n}", f"dlq-{n % 2}"))

    async def all_good_handled() -> bool:
        return all([await completed_run_with(cluster, s.session_id or "", s.id) for s in good])

    await eventually(all_good_handled, timeout=60, what="every good signal to be handled")

    async def one_letter() -> list[Any]:
        letters = await cluster.broker.dead_letters()
        return letters if len(letters) == 1 else []

    [letter] = await eventually(one_letter, timeout=30, what="the poison in the DLQ")
    assert letter.message.body == b"{not json"
    assert letter.reason.startswith("invalid signal"), letter.reason
    assert letter.origin_queue == "loom.attention"
    for session in ("dlq-0", "dlq-1"):
        assert {r.status for r in await runs(cluster, session)} == {"completed"}

    async def listed() -> list[dict[str, Any]]:
        code, out, err = await cluster.cli("dlq", "list")
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    [shown] = await eventually(listed, timeout=30, what="`loom dlq list` to show the letter")
    assert shown["reason"].startswith("invalid signal"), shown
    assert shown["body"] == "{not json"
    code, out, err = await cluster.cli("dlq", "replay")
    assert code == 0, err
    assert "replayed 1" in out, out
    # The attention role dead-letters it again: it is still poison.
    [again] = await eventually(one_letter, timeout=30, what="the replayed poison back in the DLQ")
    assert again.reason.startswith("invalid signal")


@pytest.mark.slow
async def test_a_repeated_dedupe_key_is_processed_once(cluster: Cluster) -> None:
    await cluster.start_ready("run")
    key = f"alert-{secrets.token_hex(4)}"
    sent = [await send(cluster, f"page {n}", "dedupe", dedupe_key=key) for n in range(3)]

    async def all_decided() -> list[dict[str, Any]]:
        found = await decisions(cluster, "dedupe")
        return found if len(found) == 3 else []

    found = await eventually(all_decided, timeout=30, what="three attention decisions")
    assert sorted(d["action"] for d in found) == ["drop", "drop", "queue"]
    await eventually(lambda: settled(cluster, "dedupe"), timeout=30, what="the session to settle")
    [run] = await runs(cluster, "dedupe")
    assert run.status == "completed"
    [handled] = run.metadata["signals"]
    assert handled in {s.id for s in sent}
    [queued] = [d["signal_id"] for d in found if d["action"] == "queue"]
    assert handled == queued


@pytest.mark.slow
async def test_an_observed_signal_reaches_the_next_run(cluster: Cluster) -> None:
    await cluster.start_ready("run")
    low = await send(cluster, "disk at 70% on db-1", "obs", urgency="low")

    async def observed() -> bool:
        return [d["action"] for d in await decisions(cluster, "obs")] == ["observe"]

    await eventually(observed, timeout=30, what="the low signal to be observed")
    normal = await send(cluster, "how is the database?", "obs")
    run = await eventually(
        lambda: completed_run_with(cluster, "obs", normal.id), timeout=60, what="the run"
    )
    assert set(run.metadata["signals"]) == {low.id, normal.id}
    snapshot = await cluster.state.sessions.load("obs")
    assert snapshot is not None
    [user_input] = [m.content for m in snapshot.messages if m.role == "user"]
    # The model saw it in its working state (C_working); the transcript says what that held.
    assert "1 observed signal(s) (custom/event 1)" in user_input
    assert "disk at 70% on db-1" not in user_input
    assert "how is the database?" in user_input


@pytest.mark.slow
async def test_loom_send_publishes_through_rabbitmq(cluster: Cluster) -> None:
    await cluster.start_ready("worker", "attention")
    code, out, err = await cluster.cli("send", "hello", "--session", "cli-s")
    assert code == 0, err
    accepted = json.loads(out)
    assert accepted["status"] == "accepted"
    await eventually(
        lambda: completed_run_with(cluster, "cli-s", accepted["id"]),
        timeout=60,
        what="a run handling the sent signal",
    )


@pytest.mark.slow
async def test_non_loopback_needs_an_api_token(cluster: Cluster) -> None:
    code, _, err = await cluster.cli("worker", "tests.integration.app:daemon",
                                     LOOM_HTTP__HOST="0.0.0.0")  # fmt: skip
    assert code != 0
    assert "LOOM_API_TOKEN" in err, err

    token = secrets.token_urlsafe(16)
    [proc] = await cluster.start_ready("run", LOOM_HTTP__HOST="0.0.0.0", LOOM_API_TOKEN=token)
    bearer = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
        assert (await client.get("/sessions/x")).status_code == 401
        wrong = {"authorization": "Bearer not-the-token"}
        assert (await client.get("/sessions/x", headers=wrong)).status_code == 401
        assert (await client.get("/sessions/x", headers=bearer)).status_code == 404

        signal_ = RuntimeSignal.create("over http", session_id="http-s")
        body = signal_.model_dump_json()
        headers = {"content-type": "application/json"}
        assert (await client.post("/signals", content=body, headers=headers)).status_code == 401
        posted = await client.post("/signals", content=body, headers={**headers, **bearer})
        assert posted.status_code == 202, posted.text

        async def handled() -> dict[str, Any] | None:
            response = await client.get("/sessions/http-s", headers=bearer)
            if response.status_code != 200:
                return None
            view: dict[str, Any] = response.json()
            done = [r for r in view["runs"] if r["status"] == "completed"]
            return view if done and signal_.id in done[0]["metadata"]["signals"] else None

        view = await eventually(handled, timeout=60, what="GET /sessions/http-s to show the run")
        assert view["last_reply"]


@pytest.mark.slow
async def test_sigterm_during_a_run_leaves_no_signal_stranded(cluster: Cluster) -> None:
    """A worker that finishes its run while draining must leave the session's newer pending
    signals findable by the other workers (ready), not just drop its claim on the session."""
    procs = await cluster.start_ready(
        "worker", "worker", "attention", LOOM_SHUTDOWN_TIMEOUT="30", LOOM_TEST_SLOW_SECONDS="3"
    )
    slow = await send(cluster, f"{SLOW}: nightly report", "drain")
    await eventually(lambda: run_in_progress(cluster, "drain"), timeout=30, what="the slow run")
    later = await send(cluster, "and one more thing", "drain")
    await eventually(
        lambda: cluster.state.pending("drain"), timeout=30, what="the later signal to wait"
    )
    lease = await cluster.state.lease_holder("drain")
    assert lease is not None
    [holder] = [p for p in procs if p.pid == int(lease.owner.split(":")[1])]
    holder.popen.send_signal(signal.SIGTERM)
    assert holder.popen.wait(timeout=60) == 0, holder.output()[-4000:]
    # The run in progress finished within the shutdown timeout...
    assert await completed_run_with(cluster, "drain", slow.id)
    # ...and the signal that arrived meanwhile is handled by the remaining worker.
    await eventually(
        lambda: completed_run_with(cluster, "drain", later.id),
        timeout=30,
        what="the remaining worker to handle the signal that waited behind the run",
    )
    await eventually(lambda: settled(cluster, "drain"), timeout=30, what="the session to settle")
