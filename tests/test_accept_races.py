"""The gateway's accept path under races and outages: a retry that arrives while the first
request still waits for the broker must not be told "duplicate" (the first may yet fail, and
then nobody would send the signal again); a state backend that is down is a 503 in JSON, and
leaves nothing behind that would make a later retry look like a duplicate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from loom import Agent, Model, RuntimeSignal
from loom.broker.base import BrokerUnavailable, Message
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.state import MemoryState
from loom.state.base import StateUnavailable
from loom.wire import SIGNALS_EXCHANGE, publish_signal
from tests.test_daemon_memory import drain
from tests.test_gateway_signals import published

PUBLISH_TIMEOUT = 4.0


class Gate:
    """Holds the broker's signal publishes until ``open()``; ``fail`` makes the held ones
    raise ``BrokerUnavailable`` instead of publishing."""

    def __init__(self, daemon: Daemon) -> None:
        self.opened = asyncio.Event()
        self.waiting = asyncio.Event()
        self.fail = False
        self.held = 0
        publish: Callable[[str, str, Message], Awaitable[None]] = daemon.broker.publish

        async def gated(exchange: str, routing_key: str, message: Message) -> None:
            if exchange == SIGNALS_EXCHANGE and not self.opened.is_set():
                self.held += 1
                self.waiting.set()
                await self.opened.wait()
                if self.fail:
                    raise BrokerUnavailable("no confirmation within 4.0s (test outage)")
            await publish(exchange, routing_key, message)

        daemon.broker.publish = gated  # type: ignore[method-assign]

    def open(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.opened.set()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyState(MemoryState):
    """A memory state whose primitives raise ``StateUnavailable`` while ``down`` names them
    (``"claim"``, ``"set_marker"``, ``"forget"``), like Redis going away; the accept path's
    one-step calls are made of these in memory, so they fail with them."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.down: set[str] = set()

    def _check(self, what: str) -> None:
        if what in self.down:
            raise StateUnavailable("cannot reach Redis at redis://redis:6379/0: Connection refused")

    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        self._check("claim")
        return await super().claim(key, owner, ttl)

    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        self._check("set_marker")
        await super().set_marker(key, value, ttl)

    async def forget(self, key: str) -> None:
        self._check("forget")
        await super().forget(key)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_token": "tok",
        "publish_timeout": PUBLISH_TIMEOUT,
        "worker": {"lease_ttl": 2.0, "sweep_interval": 0.05},
    }
    values.update(overrides)
    return Settings(**values)


def client_for(daemon: Daemon) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    return httpx.AsyncClient(
        transport=transport, base_url="http://loom", headers={"authorization": "Bearer tok"}
    )


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    daemon = Daemon(Agent(Model.test()), settings=make_settings())
    await daemon.start(["gateway"])
    async with client_for(daemon) as client:
        yield daemon, client
    await daemon.stop()


SIGNAL = {"summary": "deploy 7 failed", "session_id": "ops", "dedupe_key": "slack:T1:Ev1"}


async def test_a_retry_while_the_first_publish_waits_is_503_not_duplicate(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    gate = Gate(daemon)
    first = asyncio.create_task(client.post("/signals", json=SIGNAL))
    await gate.waiting.wait()  # the first request is now waiting for the broker's confirm
    retry = await client.post("/signals", json=SIGNAL)
    assert retry.status_code == 503
    assert retry.headers["content-type"] == "application/json"
    assert int(retry.headers["retry-after"]) >= 1
    assert "being accepted right now" in retry.json()["error"]
    assert gate.held == 1  # the retry did not publish a second copy
    gate.open()
    accepted = await first
    assert accepted.status_code == 202
    later = await client.post("/signals", json=SIGNAL)
    assert later.status_code == 200
    assert later.json() == {"id": accepted.json()["id"], "status": "duplicate"}
    [signal] = await published(daemon)
    assert signal["id"] == accepted.json()["id"]
    assert await daemon.state.marker("accepted:slack:T1:Ev1") == accepted.json()["id"]
    assert await daemon.state.claimed("accepting:slack:T1:Ev1") is None  # released


async def test_when_the_first_publish_fails_the_retry_after_it_is_accepted(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    gate = Gate(daemon)
    first = asyncio.create_task(client.post("/signals", json=SIGNAL))
    await gate.waiting.wait()
    assert (await client.post("/signals", json=SIGNAL)).status_code == 503
    gate.open(fail=True)
    failed = await first
    assert failed.status_code == 503
    assert "broker unavailable" in failed.json()["error"]
    retry = await client.post("/signals", json=SIGNAL)
    assert retry.status_code == 202  # not "duplicate": the first was never accepted
    [signal] = await published(daemon)
    assert signal["id"] == retry.json()["id"]


async def test_signals_without_a_dedupe_key_do_not_wait_for_each_other(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    gate = Gate(daemon)
    body = {"summary": "no key"}
    first = asyncio.create_task(client.post("/signals", json=body))
    second = asyncio.create_task(client.post("/signals", json=body))
    await gate.waiting.wait()
    await asyncio.sleep(0.05)
    assert gate.held == 2
    gate.open()
    assert [(await first).status_code, (await second).status_code] == [202, 202]
    assert len(await published(daemon)) == 2


# -- the state backend down ----------------------------------------------------------------


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Daemon, FlakyState, Clock, httpx.AsyncClient]]:
    daemon = Daemon(Agent(Model.test()), settings=make_settings())
    clock = Clock()
    state = FlakyState(clock=clock)
    daemon.state = state
    await daemon.start(["gateway"])
    async with client_for(daemon) as client:
        yield daemon, state, clock, client
    await daemon.stop()


async def test_state_down_is_a_json_503_and_a_later_retry_is_accepted(
    flaky: tuple[Daemon, FlakyState, Clock, httpx.AsyncClient],
) -> None:
    daemon, state, _, client = flaky
    state.down = {"claim", "set_marker", "forget"}
    down = await client.post("/signals", json=SIGNAL)
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/json"
    assert "retry-after" in down.headers
    error = down.json()["error"]
    assert "state store unavailable" in error
    assert "Connection refused" in error
    assert await published(daemon) == []  # nothing published that the sender would resend
    state.down = set()
    again = await client.post("/signals", json=SIGNAL)
    assert again.status_code == 202


async def test_a_claim_left_by_a_failed_forget_expires_after_the_publish_timeout(
    flaky: tuple[Daemon, FlakyState, Clock, httpx.AsyncClient],
) -> None:
    daemon, state, clock, client = flaky
    await daemon.broker.close()
    state.down = {"forget"}  # Redis goes away between the claim and the release
    failed = await client.post("/signals", json=SIGNAL)
    assert failed.status_code == 503
    assert "broker unavailable" in failed.json()["error"]
    await daemon.broker.start()
    state.down = set()
    held = await client.post("/signals", json=SIGNAL)
    assert held.status_code == 503  # the stale claim, for a little while
    assert "being accepted right now" in held.json()["error"]
    clock.now += PUBLISH_TIMEOUT + 5.0 + 0.01
    retry = await client.post("/signals", json=SIGNAL)
    assert retry.status_code == 202  # never a duplicate of a signal nobody accepted


async def test_a_confirmed_signal_is_202_even_when_its_marker_cannot_be_written(
    flaky: tuple[Daemon, FlakyState, Clock, httpx.AsyncClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon, state, _, client = flaky
    state.down = {"set_marker"}
    caplog.set_level(logging.WARNING, logger="loom.http")
    accepted = await client.post("/signals", json=SIGNAL)
    assert accepted.status_code == 202  # the broker confirmed it: it is accepted
    assert len(await published(daemon)) == 1
    assert any("not marked as accepted" in r.getMessage() for r in caplog.records)


async def test_redis_down_is_a_json_503(gateway: tuple[Daemon, httpx.AsyncClient]) -> None:
    """The real Redis client against a port nothing listens on."""
    pytest.importorskip("redis")
    from loom.state.redis_state import RedisState

    daemon, client = gateway
    memory = daemon.state
    daemon.state = RedisState("redis://127.0.0.1:9/0", socket_timeout=1.0)
    try:
        down = await client.post("/signals", json=SIGNAL)
    finally:
        await daemon.state.close()
        daemon.state = memory
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/json"
    assert "state store unavailable" in down.json()["error"]
    assert await published(daemon) == []


# -- with the attention role and the workers -----------------------------------------------


async def test_the_raced_signal_is_handled_once_and_attention_still_dedupes() -> None:
    daemon = Daemon(Agent(Model.test(), "Answer."), settings=make_settings())
    await daemon.start()
    try:
        async with client_for(daemon) as client:
            gate = Gate(daemon)
            first = asyncio.create_task(client.post("/signals", json=SIGNAL))
            await gate.waiting.wait()
            assert (await client.post("/signals", json=SIGNAL)).status_code == 503
            gate.open()
            accepted = (await first).json()["id"]
            assert (await client.post("/signals", json=SIGNAL)).status_code == 200
            # A copy that reaches the broker another way (a republish after a lost marker,
            # an older gateway) is still dropped by the attention role's own dedupe.
            copy = RuntimeSignal.create(
                "deploy 7 failed", session_id="ops", dedupe_key="slack:T1:Ev1"
            )
            await publish_signal(daemon.broker, copy)
            await drain(daemon)
        snapshot = await daemon.state.sessions.load("ops")
        assert snapshot is not None
        assert [run.metadata["signals"] for run in snapshot.runs] == [[accepted]]
        reasons = [d for d in await daemon.state.decisions("ops") if "duplicate" in d]
        assert len(reasons) == 1
    finally:
        await daemon.stop()
