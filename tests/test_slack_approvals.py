"""Approvals in Slack: a paused run's request posted with the call and its buttons, and a
signed button press taken as the decision (by approvers only), with the message updated.

The Web API is the fake on loopback; the decisions go to an in-memory ``ApprovalDesk``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loom.adapters import Slack
from loom.adapters.slack import reply_text
from loom.adapters.slack_approval_blocks import MAX_APPROVALS, request_message
from loom.adapters.slack_settings import SlackSettings
from loom.core.approvals import Approval, Decided, Decision, UnknownApproval
from loom.daemon.app import Daemon
from loom.intake import Reply
from loom.intake.replies import AWAITING_APPROVAL
from tests.fakes.slack_api import FakeSlackAPI
from tests.test_gateway_signals import published
from tests.test_slack import (
    CHANNEL,
    SECRET,
    TEAM,
    THREAD,
    TOKEN,
    USER,
    client_for,
    fake_slack,
    post_interaction,
    started,
)

__all__ = ["fake_slack"]  # the fixture, used by name

SESSION = f"slack:{TEAM}:{CHANNEL}:{THREAD}"


class MemoryDesk:
    """An ``ApprovalDesk`` in memory: the first decision counts, as in the daemon's."""

    def __init__(self, *approvals: Approval) -> None:
        self.approvals = {a.id: a for a in approvals}
        self.calls: list[tuple[str, str, Decision, str | None, str | None]] = []

    async def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
    ) -> Decided:
        self.calls.append((session_id, approval_id, decision, digest, by))
        approval = self.approvals.get(approval_id)
        if approval is None or approval.session_id != session_id:
            raise UnknownApproval(f"no approval {approval_id} in session {session_id}")
        decided = approval.decide(decision, message=message, digest=digest, by=by)
        self.approvals[approval_id] = decided
        return Decided(decided, decided is not approval)

    async def pending(self, session_id: str) -> tuple[Approval, ...]:
        return tuple(
            a for a in self.approvals.values() if a.session_id == session_id and not a.decided
        )


def restart(ttl: float = 3600, **arguments: Any) -> Approval:
    return Approval.request(
        tool="restart_service",
        arguments=arguments or {"service": "api", "region": "eu-west-1"},
        call_id="call_1",
        run_id="run_1",
        session_id=SESSION,
        ttl=ttl,
        reason="restart_service is destructive",
    )


def request(*approvals: Approval, output: str = "The api is down; I will restart it.") -> Reply:
    return Reply(
        f"slack:{CHANNEL}:{THREAD}",
        SESSION,
        "run_1",
        AWAITING_APPROVAL,
        output,
        extra={"approvals": [a.to_dict() for a in approvals]},
    )


def blocks_of(kind: str, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for block in blocks if block["type"] == kind]


def press_payload(message: Any, button: dict[str, Any], user: str = USER) -> str:
    """Slack's block_actions payload for a press of ``button`` in the posted ``message``."""
    return json.dumps(
        {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "acme"},
            "user": {"id": user, "username": "ada", "team_id": TEAM},
            "api_app_id": "A0001",
            "trigger_id": "13345224609.738474920.8088930838d",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": CHANNEL},
            "channel": {"id": CHANNEL, "name": "ops"},
            "message": {
                "type": "message",
                "ts": message.ts,
                "thread_ts": THREAD,
                "text": message.text,
                "blocks": message.blocks,
            },
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": "b",
                    "type": "button",
                    "value": button["value"],
                    "action_ts": "1712345680.123456",
                }
            ],
        }
    )


def button(message: Any, label: str, approval: Approval) -> dict[str, Any]:
    [actions] = [
        b for b in blocks_of("actions", message.blocks) if b["block_id"].endswith(approval.id)
    ]
    [pressed] = [e for e in actions["elements"] if e["text"]["text"] == label]
    return dict(pressed)


async def posted_request(api: FakeSlackAPI, *approvals: Approval) -> Any:
    adapter = Slack(signing_secret=SECRET, bot_token=TOKEN, api_url=api.api_url)
    try:
        await adapter.send_reply(request(*approvals))
    finally:
        await adapter.aclose()
    return api.posted()[-1]


@pytest.fixture
async def gateway_for(
    fake_slack: FakeSlackAPI,
) -> AsyncIterator[Any]:
    """A gateway with a desk and approvers: ``await gateway_for(desk, approvers)``."""
    daemons: list[Daemon] = []

    async def start(desk: MemoryDesk | None, approvers: list[str] | None) -> Any:
        adapter = Slack(
            signing_secret=SECRET, bot_token=TOKEN, api_url=fake_slack.api_url, approvers=approvers
        )
        daemon = await started(adapter, roles=["gateway"])
        daemon.adapter_context.approvals = desk
        daemons.append(daemon)
        return daemon, client_for(daemon)

    yield start
    for daemon in daemons:
        await daemon.stop()


# -- the request -----------------------------------------------------------------------------


async def test_the_request_shows_the_exact_call_and_carries_its_buttons(
    fake_slack: FakeSlackAPI,
) -> None:
    approval = restart(service="api", note="<!channel> & <@U0001>")
    message = await posted_request(fake_slack, approval)
    assert (message.channel, message.thread_ts) == (CHANNEL, THREAD)
    assert "could not finish" not in message.text
    assert "fail" not in message.text
    assert message.text == "Approval needed: 1 call(s) of restart_service"
    blocks = message.blocks
    first, about = blocks_of("section", blocks)
    assert first["text"]["text"] == "The api is down; I will restart it."
    text = about["text"]["text"]
    assert "`restart_service`" in text
    assert "restart_service is destructive" in text
    stamp = int(approval.expires_at.timestamp())
    assert f"<!date^{stamp}^" in text
    assert approval.expires_at.isoformat() in text
    [arguments] = blocks_of("rich_text", blocks)
    [pre] = arguments["elements"]
    shown = pre["elements"][0]["text"]
    assert json.loads(shown) == {"service": "api", "note": "<!channel> & <@U0001>"}  # exact
    [context] = blocks_of("context", blocks)
    assert approval.digest in context["elements"][0]["text"]
    approve, deny = button(message, "Approve", approval), button(message, "Deny", approval)
    assert approve["action_id"] == f"loom_approval_approve:{approval.id}"
    assert deny["action_id"] == f"loom_approval_deny:{approval.id}"
    assert json.loads(approve["value"]) == {
        "session_id": SESSION, "approval_id": approval.id, "digest": approval.digest
    }  # fmt: skip
    assert approve["value"] == deny["value"]


def test_long_arguments_are_cut_and_the_message_keeps_slacks_limits() -> None:
    session = "s" * 256  # the longest session id
    approvals = [
        Approval.request(
            tool=f"tool_{i}", arguments={"script": "x" * 10_000}, call_id=f"c{i}",
            run_id="r", session_id=session, ttl=60,
        )
        for i in range(MAX_APPROVALS + 3)
    ]  # fmt: skip
    _text, blocks = request_message(session, "<!here> " + "y" * 5000, approvals)
    assert len(blocks) <= 50
    assert blocks[0]["text"]["text"].startswith("&lt;!here&gt;")  # no mention of everyone
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "actions":
            for element in block["elements"]:
                assert len(element["value"]) <= 2000
                assert len(element["action_id"]) <= 255
            assert len(block["block_id"]) <= 255
    [first, *_] = blocks_of("context", blocks)
    assert "arguments cut: 2,500 of 10," in first["elements"][0]["text"]
    assert approvals[0].digest in first["elements"][0]["text"]
    assert len(blocks_of("actions", blocks)) == MAX_APPROVALS
    rest = blocks[-1]["text"]["text"]
    assert rest.startswith("3 more call(s) wait for approval")
    assert approvals[-1].id in rest
    assert "loom approve" in rest


def test_a_request_is_never_worded_as_a_failure() -> None:
    waiting = request(restart())
    assert not waiting.ok
    assert waiting.awaiting_approval
    assert reply_text(waiting) == ":raised_hand: Waiting for approval before I go on."


# -- decisions from the buttons ----------------------------------------------------------------


async def test_an_approvers_press_decides_and_updates_the_message(
    fake_slack: FakeSlackAPI, gateway_for: Any
) -> None:
    approval, other = restart(), restart(service="db")
    message = await posted_request(fake_slack, approval, other)
    desk = MemoryDesk(approval, other)
    daemon, client = await gateway_for(desk, [USER, "U0007"])
    async with client:
        press = press_payload(message, button(message, "Approve", approval))
        response = await post_interaction(client, press)
    assert response.status_code == 200
    assert response.content == b""
    assert desk.calls == [
        (SESSION, approval.id, Decision.APPROVE, approval.digest, f"slack:{USER}")
    ]
    assert await published(daemon) == []  # a decision, not an interaction signal
    [update] = fake_slack.updates
    assert (update.channel, update.ts) == (CHANNEL, message.ts)
    assert update.blocks is not None
    ids = [b.get("block_id") for b in blocks_of("actions", update.blocks)]
    assert ids == [f"loom_approval:{other.id}"]  # the other call keeps its buttons
    outcomes = [
        b["elements"][0]["text"]
        for b in blocks_of("context", update.blocks)
        if "Approved" in b["elements"][0]["text"]
    ]
    assert len(outcomes) == 1
    assert outcomes[0].startswith(f":white_check_mark: Approved by <@{USER}>")
    assert fake_slack.ephemerals == []


async def test_a_deny_press_with_everyone_allowed(
    fake_slack: FakeSlackAPI, gateway_for: Any
) -> None:
    """Without LOOM_SLACK__APPROVERS anyone who can press decides; a Deny carries no message."""
    approval = restart()
    message = await posted_request(fake_slack, approval)
    desk = MemoryDesk(approval)
    _, client = await gateway_for(desk, None)
    async with client:
        press = press_payload(message, button(message, "Deny", approval), user="U0099")
        assert (await post_interaction(client, press)).status_code == 200
    assert desk.approvals[approval.id].decision is Decision.DENY
    assert desk.approvals[approval.id].decided_by == "slack:U0099"
    [update] = fake_slack.updates
    assert blocks_of("actions", update.blocks or []) == []
    assert ":no_entry: Denied by <@U0099>" in json.dumps(update.blocks)


async def test_a_press_by_someone_not_an_approver_is_not_counted(
    fake_slack: FakeSlackAPI, gateway_for: Any
) -> None:
    approval = restart()
    message = await posted_request(fake_slack, approval)
    desk = MemoryDesk(approval)
    daemon, client = await gateway_for(desk, ["U0007"])
    async with client:
        press = press_payload(message, button(message, "Approve", approval))
        assert (await post_interaction(client, press)).status_code == 200
    assert desk.calls == []
    assert not desk.approvals[approval.id].decided
    [notice] = fake_slack.ephemerals
    assert (notice.channel, notice.user, notice.thread_ts) == (CHANNEL, USER, THREAD)
    assert "not one of the approvers" in notice.text
    assert fake_slack.updates == []
    assert await published(daemon) == []


async def test_a_press_after_the_first_decision_names_it(
    fake_slack: FakeSlackAPI, gateway_for: Any
) -> None:
    approval = restart()
    message = await posted_request(fake_slack, approval)
    desk = MemoryDesk(approval.decide(Decision.DENY, by="slack:U0001", message="not now"))
    _, client = await gateway_for(desk, None)
    async with client:
        press = press_payload(message, button(message, "Approve", approval))
        assert (await post_interaction(client, press)).status_code == 200
    [notice] = fake_slack.ephemerals
    assert "already decided" in notice.text
    assert "Denied by <@U0001>" in notice.text
    assert "not now" in notice.text
    [update] = fake_slack.updates  # the stale buttons give way to the first decision
    assert blocks_of("actions", update.blocks or []) == []
    assert "Denied by <@U0001>" in json.dumps(update.blocks)
    assert desk.approvals[approval.id].decision is Decision.DENY


async def test_the_same_press_again_is_told_it_was_decided_before(
    fake_slack: FakeSlackAPI, gateway_for: Any
) -> None:
    """A second press of the same button, by the approver who decided or another one, is
    answered with the first decision (Slack shows an error on a slow answer: people retry)."""
    approval = restart()
    message = await posted_request(fake_slack, approval)
    desk = MemoryDesk(approval)
    _, client = await gateway_for(desk, [USER, "U0007"])
    async with client:
        press = press_payload(message, button(message, "Approve", approval))
        assert (await post_interaction(client, press)).status_code == 200
        assert fake_slack.ephemerals == []  # the decision itself: no notice
        assert (await post_interaction(client, press)).status_code == 200
        other = press_payload(message, button(message, "Approve", approval), user="U0007")
        assert (await post_interaction(client, other)).status_code == 200
    mine, theirs = fake_slack.ephemerals
    assert (mine.user, theirs.user) == (USER, "U0007")
    for notice in (mine, theirs):
        assert notice.text.startswith("It was already decided: ")
        assert f"Approved by <@{USER}>" in notice.text
    assert desk.approvals[approval.id].decided_by == f"slack:{USER}"
    assert len(fake_slack.updates) == 3


async def test_an_expired_or_unknown_approval_gets_a_notice(
    fake_slack: FakeSlackAPI, gateway_for: Any
) -> None:
    expired = Approval.request(
        tool="restart_service", arguments={"service": "api"}, call_id="c", run_id="run_1",
        session_id=SESSION, ttl=60, now=datetime.now(UTC) - timedelta(hours=1),
    )  # fmt: skip
    message = await posted_request(fake_slack, expired)
    _, client = await gateway_for(MemoryDesk(expired), None)
    async with client:
        press = press_payload(message, button(message, "Approve", expired))
        assert (await post_interaction(client, press)).status_code == 200
        gone = MemoryDesk()  # the run ended: the approval is no longer kept
        unknown = await gateway_for(gone, None)
        async with unknown[1] as other:
            assert (await post_interaction(other, press)).status_code == 200
    expiry, missing = fake_slack.ephemerals
    assert "Not counted" in expiry.text
    assert "expired" in expiry.text
    [update] = fake_slack.updates
    assert "Expired without a decision" in json.dumps(update.blocks)
    assert blocks_of("actions", update.blocks or []) == []
    assert f"no approval `{expired.id}`" in missing.text


async def test_presses_of_other_buttons_still_become_signals(
    fake_slack: FakeSlackAPI, gateway_for: Any
) -> None:
    approval = restart()
    message = await posted_request(fake_slack, approval)
    desk = MemoryDesk(approval)
    daemon, client = await gateway_for(desk, None)
    payload = json.loads(press_payload(message, button(message, "Approve", approval)))
    payload["actions"].append(
        {"action_id": "rollback", "type": "button", "value": "v2", "action_ts": "1712345680.2"}
    )
    async with client:
        assert (await post_interaction(client, json.dumps(payload))).status_code == 200
    [signal] = await published(daemon)
    assert signal["summary"] == f"{USER} clicked rollback = v2"
    assert [call[2] for call in desk.calls] == [Decision.APPROVE]


async def test_a_malformed_approval_button_is_refused(gateway_for: Any) -> None:
    _, client = await gateway_for(MemoryDesk(), None)
    payload = json.loads(
        press_payload(
            type("M", (), {"ts": "1712345678.000100", "text": "", "blocks": []})(),
            {"action_id": "loom_approval_approve:apr_1", "value": "{}"},
        )
    )
    async with client:
        response = await post_interaction(client, json.dumps(payload))
    assert response.status_code == 422
    assert "session_id, approval_id and digest" in response.json()["error"]


def test_approvers_are_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_SLACK__APPROVERS", "U0001, U0002")
    adapter = Slack(signing_secret=SECRET, bot_token=TOKEN, api_url="http://x/")
    assert adapter.approvals.approvers == {"U0001", "U0002"}
    assert SlackSettings(approvers='["U0003"]').approvers == ("U0003",)  # type: ignore[arg-type]
    assert SlackSettings().approvers is None
    for bad, reason in (("", "is empty"), ("U1,bob", "not a Slack user id")):
        with pytest.raises(ValueError, match=reason):
            SlackSettings(approvers=bad)  # type: ignore[arg-type]
