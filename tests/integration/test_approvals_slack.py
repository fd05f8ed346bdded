"""An approval decided by a signed Slack button press, across real processes on RabbitMQ and
Redis: a signed Events API message reaches the gateway, the worker posts the request with its
buttons to the fake Slack Web API on loopback, a press by someone who is not an approver is
only answered with a notice, the approver's press resumes the run (its effect, counted in a
file, happens once) and the answer lands in the same thread."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fakes.slack_api import EphemeralMessage, FakeSlackAPI, PostedMessage, UpdatedMessage
from tests.integration.conftest import Cluster
from tests.integration.test_approvals_processes import (
    APP,
    effects_of,
    ended,
    env,
    paused,
    pids_of,
)
from tests.polling import eventually
from tests.test_slack import (
    BOT,
    CHANNEL,
    SECRET,
    TEAM,
    THREAD,
    TOKEN,
    envelope,
    mention,
    post_event,
    post_interaction,
)
from tests.test_slack_approvals import button, press_payload

APPROVER, BYSTANDER = "U0007", "U0099"
SESSION = f"slack:{TEAM}:{CHANNEL}:{THREAD}"


def slack_env(api: FakeSlackAPI) -> dict[str, str]:
    return {
        "LOOM_SLACK__SIGNING_SECRET": SECRET,
        "LOOM_SLACK__BOT_TOKEN": TOKEN,
        "LOOM_SLACK__API_URL": api.api_url,
        "LOOM_SLACK__APPROVERS": APPROVER,
    }


async def _request_in_thread(api: FakeSlackAPI) -> PostedMessage | None:
    found = [m for m in api.posted() if m.thread_ts == THREAD and m.blocks]
    return found[0] if found else None


@pytest.mark.timeout(180)
async def test_an_approvers_press_in_slack_resumes_the_run_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    with FakeSlackAPI(token=TOKEN) as api:
        gateway, _attention, worker = await cluster.start_ready(
            "gateway", "attention", "worker", app=APP, **env(effects, **slack_env(api))
        )
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            said = mention(f"<@{BOT}> restart api", thread_ts=THREAD)
            accepted = await post_event(client, envelope(said, event_id="EvRestart"))
            assert accepted.status_code == 202, accepted.text

            async def posted_request() -> PostedMessage | None:
                return await _request_in_thread(api)

            message = await eventually(posted_request, "the approval request in Slack")
            checkpoint = await paused(cluster, SESSION)
            (approval,) = checkpoint.pending
            assert message.channel == CHANNEL
            assert "restart" in message.text
            assert effects_of(effects) == []

            # Someone who is not an approver presses Deny: a notice to them, nothing decided.
            deny = press_payload(message, button(message, "Deny", approval), user=BYSTANDER)
            assert (await post_interaction(client, deny)).status_code == 200
            [notice] = api.ephemerals
            assert notice == EphemeralMessage(CHANNEL, BYSTANDER, notice.text, THREAD)
            assert "not one of the approvers" in notice.text
            assert api.updates == []
            still = await cluster.state.suspensions.load(SESSION)
            assert still is not None
            assert [a.decided for a in still.pending] == [False]

            # The approver presses Approve: the message is updated and the run resumes.
            approve = press_payload(message, button(message, "Approve", approval), user=APPROVER)
            assert (await post_interaction(client, approve)).status_code == 200
            [update] = api.updates
            assert update == UpdatedMessage(CHANNEL, message.ts, update.text, update.blocks)
            assert f"Approved by <@{APPROVER}>" in str(update.blocks)
            record = await ended(cluster, checkpoint.run_id, SESSION)
            assert record.status == "completed"
            assert record.output == "api restarted"

            async def answered() -> list[PostedMessage]:
                return [m for m in api.posted() if m.text == "api restarted"]

            [answer] = await eventually(answered, "the answer in the thread", timeout=30)
            assert (answer.channel, answer.thread_ts) == (CHANNEL, THREAD)
            assert effects_of(effects) == ["restart api"]
            assert pids_of(effects) == [worker.pid]

            # A second press is told the first decision; nothing runs again.
            assert (await post_interaction(client, approve)).status_code == 200
            _, again = api.ephemerals
            assert again.user == APPROVER
            assert "already decided" in again.text
            assert f"Approved by <@{APPROVER}>" in again.text
        assert api.posted() == [message, answer]  # the request and one answer, nothing else
    assert effects_of(effects) == ["restart api"]
