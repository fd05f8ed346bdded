"""The Slack adapter: signed Events API and interactions in, answers back in the thread.

Requests are signed with Slack's real algorithm (slack_sdk's verifier); replies go over HTTP
to a fake Slack Web API on loopback; the daemon runs in memory with Model.test().
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from slack_sdk.signature import SignatureVerifier

from loom import Agent, Model, ModelResponse, ProviderError
from loom.adapters import Slack
from loom.adapters.registry import adapters_from_settings
from loom.adapters.slack import PERMANENT_ERRORS, SlackError, reply_text
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.intake import Reply, UndeliverableReply
from loom.providers.base import ModelRequest
from loom.signals import RuntimeSignal
from loom.state.base import StateUnavailable
from loom.state.memory_state import MemoryState
from loom.wire import publish_signal
from tests.fakes.slack_api import FakeSlackAPI, api_error, rate_limited
from tests.test_daemon_memory import drain, settings
from tests.test_gateway_signals import published
from tests.test_replies import FakeTime

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-test-token"
TEAM, BOT, USER, CHANNEL = "T0001", "UBOT", "U0042", "C0100"
TS, THREAD = "1712345678.000100", "1712345000.000200"


def signed(body: bytes, *, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """Slack's headers: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"x-slack-request-timestamp": stamp, "x-slack-signature": signature}


def envelope(event: dict[str, Any], event_id: str = "Ev0001") -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": "A0001",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1712345678,
        "authorizations": [{"team_id": TEAM, "user_id": BOT, "is_bot": True}],
    }


def mention(text: str = f"<@{BOT}> is the api up?", **fields: Any) -> dict[str, Any]:
    event = {"type": "app_mention", "user": USER, "text": text, "ts": TS, "channel": CHANNEL}
    return event | fields


def button_payload(
    value: str = "approve", trigger: str = "13345224609.738474920.8088930838d"
) -> str:
    return json.dumps(
        {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "acme"},
            "user": {"id": USER, "username": "ada", "team_id": TEAM},
            "api_app_id": "A0001",
            "trigger_id": trigger,
            "container": {"type": "message", "message_ts": TS, "channel_id": CHANNEL},
            "channel": {"id": CHANNEL, "name": "ops"},
            "message": {"type": "message", "ts": TS, "thread_ts": THREAD, "text": "Deploy?"},
            "actions": [
                {
                    "action_id": value,
                    "block_id": "decision",
                    "type": "button",
                    "value": value,
                    "action_ts": "1712345680.123456",
                    "text": {"type": "plain_text", "text": value.title()},
                }
            ],
        }
    )


async def post_event(
    client: httpx.AsyncClient, body: dict[str, Any] | bytes, **headers: str
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        "/slack/events",
        content=raw,
        headers={"content-type": "application/json", **signed(raw), **headers},
    )


async def post_interaction(client: httpx.AsyncClient, payload: str) -> httpx.Response:
    raw = urlencode({"payload": payload}).encode()
    return await client.post(
        "/slack/interactions",
        content=raw,
        headers={"content-type": "application/x-www-form-urlencoded", **signed(raw)},
    )


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(token=TOKEN) as api:
        yield api


def slack_for(api: FakeSlackAPI, **options: Any) -> Slack:
    return Slack(signing_secret=SECRET, bot_token=TOKEN, api_url=api.api_url, **options)


async def started(adapter: Slack, agent: Agent | None = None, roles: Any = None) -> Daemon:
    daemon = Daemon(
        agent or Agent(Model.test(), "Answer."), adapters=[adapter], settings=settings()
    )
    daemon.replies.budget.retry_delay = 0.001
    await (daemon.start() if roles is None else daemon.start(roles))
    return daemon


def client_for(daemon: Daemon) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    return httpx.AsyncClient(transport=transport, base_url="http://loom")


@pytest.fixture
async def gateway(fake_slack: FakeSlackAPI) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """Only the gateway role: what is published stays on the broker for ``published``."""
    daemon = await started(slack_for(fake_slack), roles=["gateway"])
    async with client_for(daemon) as client:
        yield daemon, client
    await daemon.stop()


@pytest.fixture
async def loom(fake_slack: FakeSlackAPI) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """Every role: events run the agent and the answers reach the fake Slack."""
    daemon = await started(slack_for(fake_slack))
    async with client_for(daemon) as client:
        yield daemon, client
    await daemon.stop()


async def settle(daemon: Daemon) -> None:
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]


# -- signatures and the handshake ------------------------------------------------------------


async def test_url_verification_answers_the_challenge(gateway: Any) -> None:
    _, client = gateway
    body = {
        "token": "x",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    response = await post_event(client, body)
    assert response.status_code == 200
    assert response.json() == {"challenge": body["challenge"]}


async def test_only_correctly_signed_fresh_requests_get_in(gateway: Any) -> None:
    daemon, client = gateway
    raw = json.dumps(envelope(mention())).encode()
    headers = {"content-type": "application/json"}
    good = await client.post("/slack/events", content=raw, headers={**headers, **signed(raw)})
    assert good.status_code == 202

    cases = {
        "wrong secret": signed(raw, secret="not-the-secret"),
        "tampered body": signed(raw.replace(b"api up", b"api down")),
        "older than 5 minutes": signed(raw, timestamp=int(time.time()) - 6 * 60),
        "from the future": signed(raw, timestamp=int(time.time()) + 6 * 60),
        "missing": {},
        "not a unix time": {**signed(raw), "x-slack-request-timestamp": "yesterday"},
    }
    answers = {}
    for case, signature in cases.items():
        refused = await client.post("/slack/events", content=raw, headers={**headers, **signature})
        answers[case] = (refused.status_code, refused.json()["error"])
    assert {case: status for case, (status, _) in answers.items()} == dict.fromkeys(cases, 401)
    assert "does not match" in answers["wrong secret"][1]
    assert "does not match" in answers["tampered body"][1]
    assert "more than 5 minutes" in answers["older than 5 minutes"][1]
    assert "missing X-Slack-Signature" in answers["missing"][1]
    assert "not a Unix time" in answers["not a unix time"][1]
    assert len(await published(daemon)) == 1  # only the good one


async def test_bad_payloads_say_what_is_wrong(gateway: Any) -> None:
    _, client = gateway
    not_json = await post_event(client, b"{nope")
    assert not_json.status_code == 400
    assert "not JSON" in not_json.json()["error"]
    no_event_id = envelope(mention())
    del no_event_id["event_id"]
    missing = await post_event(client, no_event_id)
    assert missing.status_code == 422
    assert "envelope.event_id must be a Slack id" in missing.json()["error"]
    bad_ts = await post_event(client, envelope(mention(ts="noon")))
    assert bad_ts.status_code == 422
    assert "event.ts must be a Slack timestamp" in bad_ts.json()["error"]
    no_challenge = await post_event(client, {"type": "url_verification"})
    assert no_challenge.status_code == 422
    too_deep = await post_event(client, b"[" * 100_000 + b"]" * 100_000)
    assert too_deep.status_code == 400
    too_big = await post_event(client, b"x" * 2_000_000)
    assert too_big.status_code == 413


# -- events to signals -----------------------------------------------------------------------


async def test_an_event_slack_sends_three_times_is_one_signal_and_one_run(
    loom: Any, fake_slack: FakeSlackAPI
) -> None:
    daemon, client = loom
    body = envelope(mention())
    first = await post_event(client, body)
    again = await post_event(
        client, body, **{"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"}
    )
    third = await post_event(
        client, body, **{"x-slack-retry-num": "2", "x-slack-retry-reason": "http_timeout"}
    )
    assert first.status_code == 202
    assert [again.status_code, third.status_code] == [200, 200]
    assert again.json() == third.json() == {"id": first.json()["id"], "status": "duplicate"}
    await settle(daemon)
    snapshot = await daemon.state.sessions.load(f"slack:{TEAM}:{CHANNEL}:{TS}")
    assert snapshot is not None
    assert len(snapshot.runs) == 1
    assert len(fake_slack.posted()) == 1


async def test_bot_messages_edits_and_double_mentions_are_ignored(gateway: Any) -> None:
    daemon, client = gateway
    message = {
        "type": "message",
        "channel": CHANNEL,
        "user": USER,
        "text": "hi",
        "ts": TS,
        "channel_type": "channel",
    }
    ignored = {
        "another bot": message | {"bot_id": "B0999", "user": "U0999"},
        "bot_message": message | {"subtype": "bot_message", "user": None},
        "edited": message | {"subtype": "message_changed"},
        "deleted": message | {"subtype": "message_deleted"},
        "joined": message | {"subtype": "channel_join"},
        "our own": message | {"user": BOT},
        "mention as message": message | {"text": f"<@{BOT}> status?"},
        "unhandled type": {"type": "team_join", "user": {"id": USER}},
    }
    for number, (case, event) in enumerate(ignored.items()):
        response = await post_event(client, envelope(event, event_id=f"Ev{number}"))
        assert (case, response.status_code, response.json()["status"]) == (case, 200, "ignored")
    assert await published(daemon) == []
    person = await post_event(client, envelope(message, event_id="EvPerson"))
    assert person.status_code == 202
    [signal] = await published(daemon)
    assert (signal["type"], signal["summary"]) == ("message", "hi")


async def test_mentions_and_thread_messages_share_the_thread_session(gateway: Any) -> None:
    daemon, client = gateway
    await post_event(client, envelope(mention(f"<@{BOT}>  deploy 42   to prod <@U0007>"), "Ev1"))
    reply_in_thread = {
        "type": "message",
        "channel": CHANNEL,
        "user": USER,
        "text": "and 43?",
        "ts": "1712345999.000300",
        "thread_ts": TS,
        "channel_type": "channel",
    }
    await post_event(client, envelope(reply_in_thread, "Ev2"))
    first, second = await published(daemon)
    assert first["source"] == "slack"
    assert first["type"] == "app_mention"
    assert first["summary"] == "deploy 42 to prod <@U0007>"  # only the bot's mention is gone
    assert first["urgency"] == "normal"
    assert first["session_id"] == second["session_id"] == f"slack:{TEAM}:{CHANNEL}:{TS}"
    assert first["reply_to"] == second["reply_to"] == f"slack:{CHANNEL}:{TS}"
    assert first["dedupe_key"] == f"slack:{TEAM}:Ev1"
    assert first["observed_at"].startswith("2024-04-05T")
    assert first["payload"] == {
        "content": "deploy 42 to prod <@U0007>",
        "team": TEAM,
        "channel": CHANNEL,
        "user": USER,
        "ts": TS,
        "event_id": "Ev1",
    }
    assert second["payload"]["thread_ts"] == TS


async def test_sessions_per_channel_and_direct_messages(fake_slack: FakeSlackAPI) -> None:
    daemon = await started(slack_for(fake_slack, session_per="channel"), roles=["gateway"])
    async with client_for(daemon) as client:
        await post_event(client, envelope(mention(), "Ev1"))
        dm = {
            "type": "message",
            "channel": "D0200",
            "user": USER,
            "text": "hello",
            "ts": TS,
            "channel_type": "im",
        }
        await post_event(client, envelope(dm, "Ev2"))
    in_channel, direct = await published(daemon)
    await daemon.stop()
    assert in_channel["session_id"] == f"slack:{TEAM}:{CHANNEL}"
    assert in_channel["reply_to"] == f"slack:{CHANNEL}:{TS}"  # still answered in the thread
    assert direct["session_id"] == f"slack:{TEAM}:D0200"
    assert direct["reply_to"] == "slack:D0200"  # a DM is answered at the top level
    with pytest.raises(ValueError, match="session_per must be"):
        Slack(signing_secret=SECRET, session_per="workspace")  # type: ignore[arg-type]


async def test_reactions_are_low_urgency_feedback_signals(gateway: Any) -> None:
    daemon, client = gateway
    reaction = {
        "type": "reaction_added",
        "user": USER,
        "reaction": "thumbsup",
        "item_user": BOT,
        "item": {"type": "message", "channel": CHANNEL, "ts": TS},
        "event_ts": "1712345690.000100",
    }
    assert (await post_event(client, envelope(reaction, "EvR"))).status_code == 202
    on_a_file = reaction | {"item": {"type": "file", "file": "F1"}}
    assert (await post_event(client, envelope(on_a_file, "EvF"))).json()["status"] == "ignored"
    [signal] = await published(daemon)
    assert (signal["type"], signal["urgency"]) == ("reaction_added", "low")
    assert signal["reply_to"] is None
    assert signal["session_id"] == f"slack:{TEAM}:{CHANNEL}:{TS}"
    assert signal["payload"] | {"content": None} == {
        "content": None,
        "reaction": "thumbsup",
        "user": USER,
        "item_user": BOT,
        "channel": CHANNEL,
        "ts": TS,
        "team": TEAM,
        "event_id": "EvR",
    }


def reaction_to(ts: str, reaction: str = "thumbsup", **item: str) -> dict[str, Any]:
    return {
        "type": "reaction_added",
        "user": USER,
        "reaction": reaction,
        "item_user": BOT,
        "item": {"type": "message", "channel": CHANNEL, "ts": ts} | item,
        "event_ts": "1712345690.000100",
    }


async def test_a_reaction_to_an_answer_in_a_thread_is_feedback_on_that_run(
    loom: Any, fake_slack: FakeSlackAPI
) -> None:
    daemon, client = loom
    await post_event(client, envelope(mention(thread_ts=THREAD), "Ev1"))
    await settle(daemon)
    [answer] = fake_slack.posted()
    assert answer.thread_ts == THREAD
    assert answer.ts != THREAD
    session = f"slack:{TEAM}:{CHANNEL}:{THREAD}"
    snapshot = await daemon.state.sessions.load(session)
    assert snapshot is not None
    [run] = snapshot.runs
    # Slack names only the answer's channel and ts: no thread.
    assert (await post_event(client, envelope(reaction_to(answer.ts), "EvR"))).status_code == 202
    await settle(daemon)
    [feedback] = [e for e in await daemon.feedback.read(session) if e.kind == "explicit"]
    assert (feedback.session_id, feedback.run_id, feedback.value) == (session, run.run_id, "up")
    assert await daemon.feedback.read(f"slack:{TEAM}:{CHANNEL}:{answer.ts}") == []


async def test_reactions_to_other_messages_keep_their_fallback_session(gateway: Any) -> None:
    daemon, client = gateway
    await post_event(client, envelope(reaction_to(TS), "Ev1"))  # a message that roots a thread
    await post_event(client, envelope(reaction_to(TS, channel="D0200", channel_type="im"), "Ev2"))
    await daemon.state.set_marker(f"slack-message:{CHANNEL}:{THREAD}", "not json")
    await post_event(client, envelope(reaction_to(THREAD), "Ev3"))  # an unreadable note
    root, direct, unreadable = await published(daemon)
    assert root["session_id"] == f"slack:{TEAM}:{CHANNEL}:{TS}"
    assert "run_id" not in root["payload"]
    assert direct["session_id"] == f"slack:{TEAM}:D0200"  # the DM's session
    assert unreadable["session_id"] == f"slack:{TEAM}:{CHANNEL}:{THREAD}"


async def test_a_reaction_while_the_state_is_down_is_refused_for_slack_to_retry(
    fake_slack: FakeSlackAPI,
) -> None:
    class Down(MemoryState):
        async def marker(self, key: str) -> str | None:
            raise StateUnavailable("Redis at redis://state:6379/0 is unavailable: reset")

    daemon = Daemon(
        Agent(Model.test(), "Answer."), adapters=[slack_for(fake_slack)], settings=settings()
    )
    daemon.state = Down()
    await daemon.start(["gateway"])
    async with client_for(daemon) as client:
        response = await post_event(client, envelope(reaction_to(TS)))
    assert response.status_code == 503
    assert await published(daemon) == []
    await daemon.stop()


# -- the whole way: event, run, answer in the thread -----------------------------------------


async def test_a_mention_is_answered_in_its_thread(loom: Any, fake_slack: FakeSlackAPI) -> None:
    daemon, client = loom
    response = await post_event(client, envelope(mention(thread_ts=THREAD)))
    assert response.status_code == 202
    await settle(daemon)
    [message] = fake_slack.posted()
    assert (message.channel, message.thread_ts, message.token) == (CHANNEL, THREAD, TOKEN)
    assert "is the api up?" in message.text  # Model.test names its input
    assert f"<@{BOT}>" not in message.text
    snapshot = await daemon.state.sessions.load(f"slack:{TEAM}:{CHANNEL}:{THREAD}")
    assert snapshot is not None
    assert [run.status for run in snapshot.runs] == ["completed"]
    assert await daemon.broker.dead_letters() == []  # type: ignore[attr-defined]


async def test_a_failed_run_is_posted_as_a_failure(fake_slack: FakeSlackAPI) -> None:
    def broken(request: ModelRequest) -> ModelResponse:
        raise ProviderError("the model is overloaded", provider="test", status=529)

    daemon = await started(slack_for(fake_slack), agent=Agent(Model.function(broken), "Answer."))
    async with client_for(daemon) as client:
        await post_event(client, envelope(mention()))
        await settle(daemon)
    await daemon.stop()
    [message] = fake_slack.posted()
    assert message.text.startswith(":warning: I could not finish (failed):")
    assert "the model is overloaded" in message.text


async def test_the_gateway_over_a_real_socket(fake_slack: FakeSlackAPI) -> None:
    daemon = await started(slack_for(fake_slack))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # connections wait in the backlog until uvicorn accepts them
    port = listener.getsockname()[1]
    config = uvicorn.Config(build_app(daemon, gateway=True), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve([listener]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            challenge = await post_event(client, {"type": "url_verification", "challenge": "c1"})
            assert challenge.json() == {"challenge": "c1"}
            accepted = await post_event(client, envelope(mention()))
            assert accepted.status_code == 202
            await settle(daemon)
    finally:
        server.should_exit = True
        await serving
        await daemon.stop()
    [message] = fake_slack.posted()
    assert (message.channel, message.thread_ts) == (CHANNEL, TS)


# -- interactions ----------------------------------------------------------------------------


async def test_an_approve_button_becomes_a_high_urgency_signal_in_the_thread(gateway: Any) -> None:
    daemon, client = gateway
    response = await post_interaction(client, button_payload("approve"))
    assert response.status_code == 200
    assert response.content == b""  # Slack wants an empty acknowledgement
    again = await post_interaction(client, button_payload("approve"))  # the same click again
    assert again.status_code == 200
    [signal] = await published(daemon)
    assert (signal["source"], signal["type"], signal["urgency"]) == ("slack", "interaction", "high")
    assert signal["summary"] == f"{USER} clicked approve"
    assert signal["session_id"] == f"slack:{TEAM}:{CHANNEL}:{THREAD}"
    assert signal["reply_to"] == f"slack:{CHANNEL}:{THREAD}"
    assert signal["dedupe_key"] == f"slack:{TEAM}:action:13345224609.738474920.8088930838d:approve"
    payload = signal["payload"]
    assert (payload["action_id"], payload["value"], payload["user"]) == ("approve", "approve", USER)
    assert (payload["channel"], payload["message_ts"]) == (CHANNEL, TS)


async def test_bad_interactions_are_refused(gateway: Any) -> None:
    daemon, client = gateway
    raw = urlencode({"payload": button_payload()}).encode()
    form = {"content-type": "application/x-www-form-urlencoded"}
    unsigned = await client.post("/slack/interactions", content=raw, headers=form)
    assert unsigned.status_code == 401
    as_json = await client.post(
        "/slack/interactions",
        content=raw,
        headers={"content-type": "application/json", **signed(raw)},
    )
    assert as_json.status_code == 400
    no_payload = urlencode({"other": "x"}).encode()
    missing = await client.post(
        "/slack/interactions", content=no_payload, headers={**form, **signed(no_payload)}
    )
    assert missing.status_code == 400
    assert "payload=<JSON>" in missing.json()["error"]
    no_actions = json.loads(button_payload()) | {"actions": []}
    empty = await post_interaction(client, json.dumps(no_actions))
    assert empty.status_code == 422
    assert "payload.actions must be a non-empty list" in empty.json()["error"]
    modal = json.loads(button_payload()) | {"type": "view_submission"}
    assert (await post_interaction(client, json.dumps(modal))).status_code == 200
    assert await published(daemon) == []


# -- failures: the broker, Slack's API, configuration ----------------------------------------


async def test_broker_down_is_503_and_slacks_retry_gets_through(gateway: Any) -> None:
    daemon, client = gateway
    body = envelope(mention())
    await daemon.broker.close()
    down = await post_event(client, body)
    assert down.status_code == 503
    assert "broker unavailable" in down.json()["error"]
    button = await post_interaction(client, button_payload())
    assert button.status_code == 503
    await daemon.broker.start()  # the broker is back; Slack retries the same event
    retried = await post_event(client, body, **{"x-slack-retry-num": "1"})
    assert retried.status_code == 202
    [signal] = await published(daemon)
    assert signal["dedupe_key"] == f"slack:{TEAM}:Ev0001"


async def test_a_draining_gateway_answers_503(gateway: Any) -> None:
    daemon, client = gateway
    daemon.draining = True
    response = await post_event(client, envelope(mention()))
    daemon.draining = False
    assert response.status_code == 503


async def test_slack_api_errors_and_rate_limits_are_retried_until_delivered(
    loom: Any, fake_slack: FakeSlackAPI
) -> None:
    daemon, client = loom
    time = FakeTime().use(daemon.replies)
    daemon.replies.budget.retry_delay = 1.0
    fake_slack.fail(
        rate_limited(retry_after=30),  # longer than the old 15 s of retries in all
        *[api_error("internal_error")] * 5,  # more failures than the delivery limit
    )
    await post_event(client, envelope(mention()))
    await settle(daemon)
    [message] = fake_slack.posted()
    assert message.thread_ts == TS
    assert len(fake_slack.calls) == 7
    assert time.pauses == [30, 2, 4, 8, 16, 32]  # Slack's Retry-After, then the backoff
    assert await daemon.broker.dead_letters() == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("code", ["not_in_channel", "channel_not_found", "token_revoked"])
async def test_permanent_slack_errors_are_dead_lettered_at_once(
    loom: Any, fake_slack: FakeSlackAPI, code: str
) -> None:
    daemon, client = loom
    fake_slack.fail(api_error(code))
    await post_event(client, envelope(mention()))
    await settle(daemon)
    assert fake_slack.posted() == []
    assert len(fake_slack.calls) == 1
    [letter] = await daemon.broker.dead_letters()  # type: ignore[attr-defined]
    assert f"slack reply undeliverable: chat.postMessage to {CHANNEL} failed: {code}" in (
        letter.reason
    )


def test_the_permanent_errors_are_slacks_documented_ones() -> None:
    assert {
        "channel_not_found", "not_in_channel", "invalid_auth", "account_inactive",
        "token_revoked", "is_archived", "msg_too_long", "no_text", "restricted_action",
        "missing_scope",
    } <= PERMANENT_ERRORS  # fmt: skip
    assert not {"ratelimited", "internal_error", "fatal_error", "service_unavailable"} & (
        PERMANENT_ERRORS
    )


async def test_send_reply_raises_what_slack_said(fake_slack: FakeSlackAPI) -> None:
    adapter = slack_for(fake_slack)
    reply = Reply(f"slack:{CHANNEL}:{TS}", "s", "run_1", "completed", "hello")
    fake_slack.fail(rate_limited(retry_after=7), api_error("channel_not_found"))
    try:
        with pytest.raises(SlackError, match=r"ratelimited \(HTTP 429\).*wait 7s") as limited:
            await adapter.send_reply(reply)
        assert (limited.value.code, limited.value.retry_after) == ("ratelimited", 7.0)
        assert not isinstance(limited.value, UndeliverableReply)
        with pytest.raises(SlackError, match=r"channel_not_found \(HTTP 200\)") as missing:
            await adapter.send_reply(reply)
        assert isinstance(missing.value, UndeliverableReply)
        await adapter.send_reply(reply)
    finally:
        await adapter.aclose()
    assert [(m.channel, m.thread_ts, m.text) for m in fake_slack.posted()] == [
        (CHANNEL, TS, "hello")
    ]
    wrong_token = Slack(signing_secret=SECRET, bot_token="xoxb-wrong", api_url=fake_slack.api_url)
    with pytest.raises(UndeliverableReply, match="invalid_auth"):
        await wrong_token.send_reply(reply)
    await wrong_token.aclose()
    top_level = Reply("slack:D0200", "s", "run_2", "cancelled", "", error="superseded")
    await adapter.send_reply(top_level)
    await adapter.aclose()
    last = fake_slack.posted()[-1]
    assert (last.channel, last.thread_ts) == ("D0200", None)
    assert last.text == ":no_entry_sign: The run was cancelled: superseded"


def test_reply_text_never_passes_off_a_failure_as_an_answer() -> None:
    def text(status: str, output: str = "partial", error: str | None = None) -> str:
        return reply_text(Reply("slack:C1", "s", "r", status, output, error=error))

    assert text("completed", "  all good \n") == "all good"
    assert text("completed", "") == "(I finished without a written answer.)"
    assert text("failed", error="timed out") == ":warning: I could not finish (failed): timed out"
    assert text("interrupted") == ":warning: I could not finish (interrupted): no reason given"
    long = text("completed", "x" * 50_000)
    assert len(long) < 40_000
    assert long.endswith("(cut: the answer is longer than a Slack message)")


async def test_without_a_bot_token_replies_fail_clearly() -> None:
    adapter = Slack(signing_secret=SECRET, bot_token="", api_url="http://127.0.0.1:9/api/")
    assert adapter.replies_to("slack:C1:1.2")
    assert not adapter.replies_to("inbox:1")
    with pytest.raises(SlackError, match="LOOM_SLACK__BOT_TOKEN") as refused:
        await adapter.send_reply(Reply("slack:C1", "s", "r", "completed", "x"))
    assert isinstance(refused.value, UndeliverableReply)  # a retry cannot find a token


async def test_an_answer_not_noted_in_state_is_still_sent_once(
    fake_slack: FakeSlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    class Down(MemoryState):
        async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
            raise StateUnavailable("Redis at redis://state:6379/0 is unavailable: reset")

    adapter = slack_for(fake_slack)
    adapter.use_state(Down(), ttl=60)
    await adapter.send_reply(Reply(f"slack:{CHANNEL}:{TS}", "s", "run_1", "completed", "hi"))
    await adapter.aclose()
    assert len(fake_slack.posted()) == 1
    assert "posted, but not noted" in caplog.text


def test_without_a_signing_secret_no_routes_are_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = Slack(signing_secret="", bot_token=TOKEN, api_url="http://127.0.0.1:9/api/")
    daemon = Daemon(Agent(Model.test()), settings=settings())
    assert adapter.routes(daemon) == []
    assert adapter.openapi() == {}
    assert "LOOM_SLACK__SIGNING_SECRET" in caplog.text


async def test_a_worker_with_only_the_bot_token_posts_replies(fake_slack: FakeSlackAPI) -> None:
    configured = settings(slack={"bot_token": TOKEN, "api_url": fake_slack.api_url})
    [slack] = [a for a in adapters_from_settings(configured) if a.name == "slack"]
    assert isinstance(slack, Slack)
    assert slack.signing_secret is None
    daemon = Daemon(Agent(Model.test(), "Answer."), settings=configured)
    paths = {getattr(r, "path", "") for r in build_app(daemon, gateway=True).routes}
    assert "/slack/events" not in paths
    await daemon.start(["attention", "worker"])
    signal = RuntimeSignal.create("deploy done?", reply_to=f"slack:{CHANNEL}:{TS}")
    await publish_signal(daemon.broker, signal)
    await settle(daemon)
    await daemon.stop()
    [message] = fake_slack.posted()
    assert (message.channel, message.thread_ts, message.token) == (CHANNEL, TS, TOKEN)
    assert await daemon.broker.dead_letters() == []  # type: ignore[attr-defined]


async def test_a_worker_with_only_the_signing_secret_dead_letters_replies_at_once() -> None:
    configured = settings(slack={"signing_secret": SECRET})
    daemon = Daemon(Agent(Model.test(), "Answer."), settings=configured)
    await daemon.start(["attention", "worker"])
    signal = RuntimeSignal.create("deploy done?", reply_to=f"slack:{CHANNEL}:{TS}")
    await publish_signal(daemon.broker, signal)
    await settle(daemon)
    await daemon.stop()
    [letter] = await daemon.broker.dead_letters()  # type: ignore[attr-defined]
    assert "slack reply undeliverable" in letter.reason  # at once: retrying cannot help
    assert "LOOM_SLACK__BOT_TOKEN" in letter.reason


def test_settings_configure_the_adapter() -> None:
    assert not [a for a in adapters_from_settings(Settings()) if a.name == "slack"]
    configured = Settings(
        slack={
            "signing_secret": "s3cret",
            "bot_token": "xoxb-1",
            "api_url": "http://127.0.0.1:9/api/",
        }
    )
    [slack] = [a for a in adapters_from_settings(configured) if a.name == "slack"]
    assert isinstance(slack, Slack)
    assert slack.signing_secret is not None
    assert slack.signing_secret.get_secret_value() == "s3cret"
    assert slack.api_url == "http://127.0.0.1:9/api/"
    paths = {
        getattr(route, "path", "")
        for route in build_app(Daemon(settings=configured), gateway=True).routes
    }
    assert {"/slack/events", "/slack/interactions"} <= paths


def test_importing_the_adapter_does_not_import_the_slack_sdk() -> None:
    code = (
        "import sys, loom.adapters, loom.adapters.slack; "
        "loaded = [m for m in ('slack_sdk', 'aiohttp') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
