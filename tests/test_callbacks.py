"""Callbacks: replies to http(s) addresses reach a real loopback HTTP server, signed; private
destinations are refused unless allowed; a failing receiver is retried, then dead-lettered."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from loom import Agent, Model, RuntimeSignal
from loom.adapters import Callbacks, Reply
from loom.adapters import callback as callback_module
from loom.adapters.base import UndeliverableReply
from loom.adapters.callback import CallbackError, public
from loom.adapters.signing import verify
from loom.broker.base import DEFAULT_DELIVERY_LIMIT, REPLIES_QUEUE
from loom.daemon.app import Daemon
from loom.daemon.signals_io import publish_signal
from tests.fakes.callback_server import CallbackServer
from tests.test_daemon_memory import drain, settings


@pytest.fixture
def server() -> Iterator[CallbackServer]:
    with CallbackServer() as running:
        yield running


async def started(**overrides: Any) -> Daemon:
    daemon = Daemon(Agent(Model.test(), "Answer."), settings=settings(**overrides))
    daemon.replies.retry_delay = 0.001
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
    verify("cb-secret", request.body, request.headers)  # raises unless signed and fresh
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


async def test_a_receiver_failing_past_the_limit_is_dead_lettered(
    daemon: Daemon, server: CallbackServer
) -> None:
    server.fail(*[500] * 20)
    await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to=server.url("/down")))
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    [letter] = await daemon.broker.dead_letters()
    assert letter.origin_queue == REPLIES_QUEUE
    assert f"callback to {server.url('/down')} answered HTTP 500" in letter.reason
    assert len(server.requests) == DEFAULT_DELIVERY_LIMIT


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


def test_callbacks_are_always_configured() -> None:
    daemon = Daemon(Agent(Model.test()), settings=settings())
    assert daemon.replies.adapter_for("https://example.com/hook") is not None
    assert daemon.replies.adapter_for("http://example.com/hook") is not None
