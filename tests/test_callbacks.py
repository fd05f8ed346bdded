"""Callbacks: replies to http(s) addresses reach a real loopback HTTP server, signed; private
destinations are refused unless allowed; a failing receiver is retried, then dead-lettered."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from loom import Agent, Model, RuntimeSignal
from loom.adapters import Callbacks, Reply
from loom.adapters import callback as callback_module
from loom.adapters.callback import CallbackError, public
from loom.broker.base import DEFAULT_DELIVERY_LIMIT
from loom.daemon.app import Daemon
from loom.intake import UndeliverableReply
from loom.intake.signing import SignatureError, sign, verify
from loom.wire import REPLIES_QUEUE, publish_signal
from tests.fakes.callback_server import CallbackServer
from tests.test_daemon_memory import drain, settings


@pytest.fixture
def server() -> Iterator[CallbackServer]:
    with CallbackServer() as running:
        yield running


async def started(**overrides: Any) -> Daemon:
    daemon = Daemon(Agent(Model.test(), "Answer."), settings=settings(**overrides))
    daemon.replies.budget.retry_delay = 0.001
    await daemon.start()
    return daemon


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    d = await started(webhook_secret="cb-secret", webhooks={"callback_allow_private": True})
    yield d
    await d.stop()


async def test_the_run_result_is_posted_signed_to_the_reply_url(
    daemon: Daemon, server: CallbackServer
) -> None:
    signal = RuntimeSignal.create("is the api up?", session_id="ops", reply_to=server.url())
    await publish_signal(daemon.broker, signal)
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    [request] = server.wait_for(1)
    from loom.intake.signing import verify_callback

    verify_callback("cb-secret", request.body, request.headers)  # raises unless valid
    with pytest.raises(SignatureError, match="does not match"):
        verify("cb-secret", request.body, request.headers)  # not an inbound signature
    assert request.path == "/cb"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["session_id"] == "ops"
    assert body["status"] == "completed"
    assert "is the api up?" in body["output"]
    assert body["error"] is None
    assert body["signal_ids"] == [signal.id]
    assert request.headers["idempotency-key"] == body["run_id"]
    assert body["run_id"].startswith("run")


async def test_a_failing_receiver_is_retried_with_the_same_idempotency_key(
    daemon: Daemon, server: CallbackServer
) -> None:
    server.fail(503)
    await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to=server.url()))
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    first, second = server.wait_for(2)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert await daemon.broker.dead_letters() == []


async def test_a_receiver_failing_past_the_retry_budget_is_dead_lettered(
    daemon: Daemon, server: CallbackServer
) -> None:
    from tests.test_replies import FakeTime

    FakeTime().use(daemon.replies)  # the pauses pass at once, on a fake clock
    daemon.replies.budget.retry_delay, daemon.replies.budget.budget = 1.0, 60.0
    server.fail(*[500] * 20)
    await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to=server.url("/down")))
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    [letter] = await daemon.broker.dead_letters()
    assert letter.origin_queue == REPLIES_QUEUE
    assert f"callback to {server.url('/down')} answered HTTP 500" in letter.reason
    assert "failed 7 times over 1m00s" in letter.reason  # pauses 1, 2, 4, 8, 16, 29 s
    # The retry budget decides when to give up, not the broker's delivery limit.
    assert len(server.requests) == 7 > DEFAULT_DELIVERY_LIMIT


async def test_private_destinations_are_refused_unless_allowed(server: CallbackServer) -> None:
    daemon = await started(webhook_secret="cb-secret")  # callback_allow_private: False
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to=server.url()))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        [letter] = await daemon.broker.dead_letters()
        assert "undeliverable" in letter.reason  # at once: no retry could deliver it
        assert "127.0.0.1, a private, loopback or link-local address" in letter.reason
        assert "LOOM_WEBHOOKS__CALLBACK_ALLOW_PRIVATE=true" in letter.reason
        assert server.requests == []
    finally:
        await daemon.stop()
    callbacks = Callbacks()
    for address in ("http://localhost:9/x", "http://169.254.169.254/latest/meta-data/",
                    "https://10.1.2.3/hook", "http://[::1]:9/x"):  # fmt: skip
        with pytest.raises(UndeliverableReply, match="refused"):
            await callbacks.send_reply(Reply(address, "s", "run_1", "completed", "hi"))
    with pytest.raises(CallbackError, match="names no host"):
        await callbacks.send_reply(Reply("http:///x", "s", "run_1", "completed", "hi"))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        # NAT64 (RFC 6052 well-known prefix, RFC 8215 local-use prefix): the low 32 bits
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b::a9fe:a9fe", False),  # 169.254.169.254, the cloud metadata service
        ("64:ff9b::8.8.8.8", True),
        # the local-use NAT64 prefix: where the IPv4 address sits depends on the operator
        ("64:ff9b:1::10.0.0.1", False),
        ("64:ff9b:1:ffff::c0a8:101", False),
        ("64:ff9b:1::8.8.8.8", False),
        # 6to4: the IPv4 address after 2002::/16
        ("2002:0a00:0001::1", False),
        ("2002:7f00:1::", False),
        ("2002:a9fe:a9fe::1", False),
        ("2002:0808:0808::1", True),
        # Teredo hides its client address too
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # client 10.0.0.1
        # SIIT's IPv4-translated and the deprecated IPv4-compatible addresses
        ("::ffff:0:10.0.0.1", False),
        ("::ffff:0:8.8.8.8", False),
        ("::10.0.0.1", False),
        ("::8.8.8.8", False),
    ],
)
def test_public_addresses(address: str, expected: bool) -> None:
    assert public(address) is expected


async def test_the_connection_goes_to_the_address_that_was_checked(
    server: CallbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to an allowed address once, then elsewhere. The
    callback must connect to the checked address, not resolve the name again."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.example.test":
            address = next(answers, None)
            if address is None:
                raise socket.gaierror("resolved a second time")
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(callback_module, "public", lambda address: address == "127.0.0.1")
    callbacks = Callbacks(secret="s")
    url = f"http://hooks.example.test:{server.port}/cb?token=abc"
    try:
        await callbacks.send_reply(Reply(url, "s", "run_1", "completed", "hi"))
    finally:
        await callbacks.aclose()
    [request] = server.wait_for(1)
    assert request.headers["host"] == f"hooks.example.test:{server.port}"


async def test_without_a_secret_callbacks_go_unsigned_with_one_warning(
    server: CallbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    callbacks = Callbacks(allow_private=True)
    caplog.set_level(logging.WARNING, logger="loom.callbacks")
    try:
        for run in ("run_1", "run_2"):
            await callbacks.send_reply(Reply(server.url(), "s", run, "failed", "", error="boom"))
    finally:
        await callbacks.aclose()
    first, second = server.wait_for(2)
    assert "x-loom-signature" not in first.headers
    assert json.loads(second.body)["error"] == "boom"
    assert [r.message for r in caplog.records].count(
        "callbacks are sent unsigned: set LOOM_WEBHOOK_SECRET to sign them"
    ) == 1


async def test_a_connection_error_raises_for_a_retry() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    callbacks = Callbacks(allow_private=True, timeout=2)
    try:
        with pytest.raises(CallbackError, match="failed: ConnectError"):
            await callbacks.send_reply(
                Reply(f"http://127.0.0.1:{port}/cb", "s", "run_1", "completed", "hi")
            )
    finally:
        await callbacks.aclose()


async def test_the_documented_callback_check_accepts_a_real_callback(
    server: CallbackServer,
) -> None:
    """The verification snippet in docs/webhooks.md, run against a callback Loom sent."""
    import re
    from pathlib import Path

    import httpx

    docs = (Path(__file__).parents[1] / "docs" / "webhooks.md").read_text()
    section = docs[docs.index("Verifying a callback") :]
    [snippet] = re.findall(r"```python\n(.*?)```", section, re.S)[:1]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    callbacks = Callbacks(secret="cb-secret", allow_private=True)
    try:
        await callbacks.send_reply(Reply(server.url(), "ops", "run_1", "completed", "ok"))
    finally:
        await callbacks.aclose()
    [callback] = server.wait_for(1)
    headers = httpx.Headers(callback.headers)
    assert namespace["valid"](b"cb-secret", callback.body, headers) is True
    assert namespace["valid"](b"other", callback.body, headers) is False
    inbound = httpx.Headers({**callback.headers, **sign("cb-secret", callback.body)})
    assert namespace["valid"](b"cb-secret", callback.body, inbound) is False


async def test_a_replayed_callback_is_refused_inbound(server: CallbackServer) -> None:
    """A callback receiver holds a body and headers signed with LOOM_WEBHOOK_SECRET; sent
    back to the gateway within the replay window they must not authenticate."""
    from tests.test_webhooks import client_for, make_settings

    callbacks = Callbacks(secret="whsec", allow_private=True)
    try:
        await callbacks.send_reply(Reply(server.url(), "ops", "run_1", "completed", "ok"))
    finally:
        await callbacks.aclose()
    [callback] = server.wait_for(1)
    replayed = {
        "content-type": "application/json",
        "x-loom-timestamp": callback.headers["x-loom-timestamp"],
        "x-loom-signature": callback.headers["x-loom-signature"],
    }
    daemon = Daemon(Agent(Model.test()), settings=make_settings())  # LOOM_WEBHOOK_SECRET=whsec
    await daemon.start(["gateway"])
    try:
        async with client_for(daemon) as client:
            for path in ("/signals", "/webhooks/deploys"):
                response = await client.post(path, content=callback.body, headers=replayed)
                assert response.status_code == 401, (path, response.text)
                assert "does not match" in response.json()["error"]
            # The same bytes signed the inbound way do authenticate: only the domain differs.
            inbound = {**replayed, **sign("whsec", callback.body)}
            response = await client.post(
                "/webhooks/deploys", content=callback.body, headers=inbound
            )
            assert response.status_code != 401
    finally:
        await daemon.stop()


def test_callbacks_are_always_configured() -> None:
    daemon = Daemon(Agent(Model.test()), settings=settings())
    assert daemon.replies.adapter_for("https://example.com/hook") is not None
    assert daemon.replies.adapter_for("http://example.com/hook") is not None


async def test_a_receivers_retry_after_sets_the_least_pause() -> None:
    callbacks = Callbacks(allow_private=True)
    callbacks._client = httpx.AsyncClient(
        transport=httpx.MockTransport(
            lambda request: httpx.Response(429, headers={"retry-after": "30"})
        )
    )
    with pytest.raises(CallbackError, match="answered HTTP 429") as raised:
        await callbacks.send_reply(
            Reply("http://receiver.test/cb", "s", "run_1", "completed", "hi")
        )
    assert raised.value.retry_after == 30.0
    await callbacks.aclose()
    assert callback_module._seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert callback_module._seconds(" 5 ") == 5.0


async def test_a_request_for_approval_is_a_signed_callback_with_the_approvals(
    server: CallbackServer,
) -> None:
    """A paused run's callback names each call and where to decide it; it is no failure,
    and its idempotency key differs from the later answer's (same run id)."""
    from loom.core.approvals import Approval
    from loom.intake.signing import verify_callback

    approval = Approval.request(
        tool="delete_namespace", arguments={"name": "staging", "force": True},
        call_id="call_1", run_id="run_1", session_id="ops/eu", ttl=3600,
        reason="destructive tool",
    )  # fmt: skip
    request = Reply(
        server.url(), "ops/eu", "run_1", "awaiting_approval", "Deleting staging.",
        extra={"approvals": [approval.to_dict()]},
    )  # fmt: skip
    callbacks = Callbacks(secret="cb-secret", allow_private=True)
    try:
        await callbacks.send_reply(request)
        await callbacks.send_reply(Reply(server.url(), "ops/eu", "run_1", "completed", "Done."))
        with pytest.raises(UndeliverableReply, match="malformed approval"):
            await callbacks.send_reply(
                Reply(
                    server.url(), "s", "run_2", "awaiting_approval", "", extra={"approvals": [{}]}
                )
            )
    finally:
        await callbacks.aclose()
    paused, answered = server.wait_for(2)
    verify_callback("cb-secret", paused.body, paused.headers)  # raises unless valid
    body = json.loads(paused.body)
    assert (body["status"], body["output"], body["error"]) == (
        "awaiting_approval", "Deleting staging.", None
    )  # fmt: skip
    assert body["approvals"] == [
        {
            "id": approval.id,
            "tool": "delete_namespace",
            "arguments": {"name": "staging", "force": True},
            "digest": approval.digest,
            "reason": "destructive tool",
            "expires_at": approval.expires_at.isoformat(),
            "decide_path": f"/sessions/ops/eu/approvals/{approval.id}",
        }
    ]
    assert "approvals" not in json.loads(answered.body)
    assert answered.headers["idempotency-key"] == "run_1"
    assert paused.headers["idempotency-key"].startswith("run_1:approvals:")
