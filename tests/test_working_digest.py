"""C_working holds a session's observed signals and active risks as a digest within its
budget (issues 16 and 19): counts per source and type, newest first, repeats and resolved
alerts collapsed; the run's input keeps only the signals to handle, in full."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loom import (
    Agent,
    Model,
    ModelResponse,
    RunContext,
    Runtime,
    RuntimeSignal,
    SessionRestorePolicy,
)
from loom.core.attention import Action
from loom.daemon.app import Daemon
from loom.daemon.run_input import CARRIED_MARK, render_run_input
from loom.policies.attention import AttentionPolicy
from loom.policies.context import ContextProtocol
from loom.providers.base import ModelRequest
from loom.runtime.working import SignalDigest
from loom.wire import PendingSignal, publish_signal
from tests.test_daemon_memory import drain, settings

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def signal(summary: str, n: int, **fields: object) -> RuntimeSignal:
    return RuntimeSignal.create(summary, observed_at=T0 + timedelta(seconds=n), **fields)  # type: ignore[arg-type]


def alert(name: str, status: str, n: int) -> RuntimeSignal:
    return signal(
        f"{name} {status}",
        n,
        source="alertmanager",
        type="alert",
        urgency="high",
        payload={"status": status, "labels": {"alertname": name}},
    )


def test_the_digest_counts_by_source_and_lists_newest_first() -> None:
    observed = (
        signal("beat", 1, source="heartbeat", urgency="low"),
        signal("deploy 7 started", 2, source="ci", type="deploy"),
        signal("beat", 3, source="heartbeat", urgency="low"),
        signal("deploy 7 done", 4, source="ci", type="deploy"),
    )
    text = SignalDigest(observed=observed).render(10_000)
    head, *lines = text.splitlines()
    assert head.endswith("4 signal(s); heartbeat/event 2, ci/deploy 2")
    assert lines == [
        "- [ci/deploy, urgency normal] deploy 7 done",
        "- [heartbeat/event, urgency low] beat (2 times)",  # repeats collapse into one line
        "- [ci/deploy, urgency normal] deploy 7 started",
    ]


def test_a_resolved_alert_collapses_the_firing_notices_before_it() -> None:
    observed = (
        alert("HighCPU", "firing", 1),
        alert("HighCPU", "firing", 2),
        alert("DiskFull", "firing", 3),
        alert("HighCPU", "resolved", 4),
        alert("HighCPU", "firing", 5),  # fired again after the resolve: still open
    )
    lines = SignalDigest(observed=observed).render(10_000).splitlines()[1:]
    assert lines == [
        "- [alertmanager/alert, urgency high] HighCPU firing",
        "- [alertmanager/alert, urgency high] HighCPU resolved "
        "(resolves 2 firing notice(s) before it)",
        "- [alertmanager/alert, urgency high] DiskFull firing",
    ]


def test_the_digest_keeps_within_its_room_and_says_what_it_left_out() -> None:
    observed = tuple(signal(f"event number {n}", n) for n in range(200))
    risks = tuple(f"[alertmanager/alert, urgency high] risk {n}" for n in reversed(range(100)))
    digest = SignalDigest(observed=observed, risks=risks)
    whole = digest.render(1_000_000)
    small = digest.render(1_000)
    assert len(whole) > 10_000
    assert len(small) <= 1_000
    assert "200 signal(s); custom/event 200" in small  # the counts are always there
    assert "Active risks (open until resolved): 100; alertmanager/alert 100" in small
    assert "event number 199" in small  # newest first
    assert "event number 0" not in small
    assert "risk 99" in small
    assert "risk 0\n" not in small
    assert "older" in small
    # Room one section does not use goes to the other.
    few = SignalDigest(observed=observed[:2], risks=risks).render(2_000)
    assert few.count("risk ") > SignalDigest(observed=observed, risks=risks).render(2_000).count(
        "risk "
    )


def test_the_run_input_keeps_the_signals_to_handle_whole_and_summarises_the_rest() -> None:
    page = signal("prod down", 9, urgency="critical", payload={"region": "eu"})
    carried = signal("cpu high", 8, urgency="high")
    beat = signal("pulse", 7, source="heartbeat", urgency="low")
    pending = [
        PendingSignal(beat, Action.OBSERVE),
        PendingSignal(carried, Action.QUEUE, carried=1),
        PendingSignal(page, Action.INTERRUPT),
    ]
    risks = {"a": "[custom/event, urgency high] old risk", "b": carried.describe()}
    given = render_run_input(pending, risks)
    assert page.describe() in given.text  # payload and all
    assert f"{CARRIED_MARK} {carried.describe()}" in given.text
    assert "pulse" not in given.text
    assert "old risk" not in given.text
    assert (
        "Your working state summarises 1 observed signal(s) (heartbeat/event 1) and 1 active "
        "risk(s) (custom/event 1)." in given.text
    )
    # A risk raised by a signal this run handles is not repeated in the digest.
    assert given.digest.risks == ("[custom/event, urgency high] old risk",)
    assert given.digest.observed == (beat,)


def test_a_run_context_refuses_a_working_item_it_cannot_render() -> None:
    with pytest.raises(ValueError, match=r"working\[1\] must be text or have render"):
        RunContext(working=("fine", 42))  # type: ignore[arg-type]


async def test_working_items_go_in_c_working_within_its_budget() -> None:
    requests: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelResponse:
        requests.append(request)
        return ModelResponse(text="ok")

    manager = ContextProtocol.manager(max_tokens=4_000, budgets={"C_working": 200})
    agent = Agent(Model.function(model), "You watch.", runtime=Runtime.sdk(context=manager))
    observed = tuple(signal(f"event number {n}", n) for n in range(300))
    digest = SignalDigest(observed=observed)
    await agent.session("ops").run("go", context=RunContext(working=("a note", digest)))
    [request] = requests
    working = request.instructions.split("## Working state\n", 1)[1]
    assert len(working) <= 200 * 4  # 200 tokens at four characters a token
    assert "300 signal(s)" in working
    assert "event number 299" in working
    assert "a note" in working
    assert "event number" not in request.last_user_text()


async def test_a_busy_session_s_prompts_do_not_repeat_its_risks_and_observed_signals() -> None:
    """Before: every run's input listed every observed signal and every open risk, and
    each earlier input stayed in the history with its own copy."""
    daemon = Daemon(Agent(Model.test(), "You watch."), settings=settings())
    daemon.attention_consumer.policy = AttentionPolicy.from_rules(
        {"source": "alertmanager", "action": "observe"}
    )
    requests: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelResponse:
        requests.append(request)
        return ModelResponse(text="ok")

    daemon.agent.loop.provider = Model.function(model)
    await daemon.start()
    try:
        for n in range(20):
            text = f"disk filling on db-{n}"
            await publish_signal(
                daemon.broker,
                RuntimeSignal.create(
                    text, source="alertmanager", type="alert", urgency="high", session_id="ops"
                ),
            )
        for n in range(3):
            await drain(daemon)
            await publish_signal(
                daemon.broker, RuntimeSignal.create(f"status {n}?", session_id="ops")
            )
            await drain(daemon)
    finally:
        await daemon.stop()
    assert len(requests) == 3
    for request in requests:
        said = "\n".join(m.content for m in request.messages)
        assert "db-" not in said  # neither this input nor an earlier one in the history
        assert "Active risks (open until resolved): 20; alertmanager/alert 20" in (
            request.instructions
        )
    assert "Observed since your last run (for awareness): 20 signal(s)" in (
        requests[0].instructions
    )
    assert "Observed since" not in requests[1].instructions  # taken by the first run


async def test_a_restore_policy_without_working_state_still_shows_the_run_s_signals() -> None:
    """``transcript_only`` keeps the stored handoff and evidence out, not the signals and
    risks this run was given."""
    requests: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelResponse:
        requests.append(request)
        return ModelResponse(text="ok")

    runtime = Runtime.sdk(
        context=ContextProtocol.manager(max_tokens=4_000),
        session_restore=SessionRestorePolicy.transcript_only(),
    )
    agent = Agent(Model.function(model), "You watch.", runtime=runtime)
    digest = SignalDigest(observed=(signal("disk at 91%", 1),))
    await agent.session("ops").run("go", context=RunContext(working=("a note", digest)))
    [request] = requests
    assert "disk at 91%" in request.instructions
    assert "a note" not in request.instructions
