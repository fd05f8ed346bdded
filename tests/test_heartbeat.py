"""Heartbeat: its content, probe transitions against real loopback servers, one publisher per
tick across replicas, stuck runs, settings. Ticks are driven by hand with an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from loom import Agent, Model, Runtime, RuntimeSignal
from loom.adapters import Heartbeat, HttpProbe, TcpProbe
from loom.adapters.registry import adapters_from_settings
from loom.adapters.stuck import stuck_sessions
from loom.broker.base import Delivery
from loom.core.session_store import RunRecord
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.state import MemoryState
from loom.wire import ATTENTION_QUEUE, decision_view

# -- loopback services ------------------------------------------------------------------------


class HttpService:
    """A real HTTP server on loopback answering ``status`` to every GET. It keeps
    connections alive (HTTP/1.1), and notes the client address of each request."""

    def __init__(self) -> None:
        self.status = 200
        self.peers: list[tuple[str, int]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                service.peers.append(self.client_address[:2])
                self.send_response(service.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpService:
    """A TCP port on loopback that can be closed and opened again."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def open(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
def http_service() -> Iterator[HttpService]:
    service = HttpService()
    yield service
    service.close()


@pytest.fixture
async def tcp_service() -> AsyncIterator[TcpService]:
    service = TcpService()
    await service.open()
    yield service
    await service.close()


# -- a scheduler-only daemon whose published signals the test reads ---------------------------


class Published:
    def __init__(self) -> None:
        self.signals: list[RuntimeSignal] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.signals.append(RuntimeSignal.model_validate_json(delivery.body))
        await delivery.ack()

    def take(self) -> list[tuple[str, str]]:
        """(type, urgency) of what was published since the last take."""
        taken = [(s.type, s.urgency) for s in self.signals]
        self.signals.clear()
        return taken


@pytest.fixture
async def scheduler() -> AsyncIterator[tuple[Daemon, Published]]:
    daemon = Daemon(Agent(Model.test()), settings=Settings())
    await daemon.start(["scheduler"])
    published = Published()
    await daemon.broker.consume(ATTENTION_QUEUE, published)
    yield daemon, published
    await daemon.stop()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def tick(daemon: Daemon, heartbeat: Heartbeat, clock: Clock) -> dict[str, Any] | None:
    clock.now += heartbeat.every
    report = await heartbeat.tick()
    await daemon.broker.join(ATTENTION_QUEUE, timeout=5)  # type: ignore[attr-defined]
    return report


def probe_up(name: str) -> float | None:
    return REGISTRY.get_sample_value("loom_probe_up", {"probe": name})


@contextlib.asynccontextmanager
async def started(heartbeat: Heartbeat, daemon: Daemon) -> AsyncIterator[Heartbeat]:
    await heartbeat.start(daemon)
    try:
        yield heartbeat
    finally:
        await heartbeat.stop()


# -- tests ------------------------------------------------------------------------------------


async def test_the_heartbeat_reports_the_daemons_health(
    scheduler: tuple[Daemon, Published], http_service: HttpService
) -> None:
    daemon, published = scheduler
    clock = Clock(1_000_000.0)
    heartbeat = Heartbeat(every=3600, probes=[HttpProbe("web", http_service.url)], clock=clock)
    async with started(heartbeat, daemon):
        report = await tick(daemon, heartbeat, clock)
        assert await heartbeat.tick() is None  # the same tick again: already done
    assert report is not None
    [signal] = published.signals
    assert (signal.source, signal.type, signal.urgency) == ("heartbeat", "heartbeat", "low")
    assert signal.session_id is None  # the attention role files it under the default session
    assert signal.dedupe_key == f"heartbeat:{heartbeat.tick_number(clock.now)}"
    payload = signal.payload
    assert (payload["broker"], payload["state"]) == (True, True)
    assert payload["queues"] == {"loom.attention": 0, "loom.work": 0}
    assert payload["stuck_sessions"] == []
    assert payload["probes"]["web"]["up"] is True
    assert payload["probes"]["web"]["detail"] == "HTTP 200"
    assert payload["probes"]["web"]["target"] == http_service.url
    assert payload["replica"] == heartbeat.owner
    assert signal.summary == (
        "Loom heartbeat: broker up; state up; queues loom.attention 0, loom.work 0; "
        "no stuck runs; probes 1/1 up"
    )


async def test_probe_transitions_are_signalled_once_each(
    scheduler: tuple[Daemon, Published], http_service: HttpService, tcp_service: TcpService
) -> None:
    daemon, published = scheduler
    clock = Clock(2_000_000.0)
    probes = [
        HttpProbe("web", http_service.url, timeout=5),
        TcpProbe("db", "127.0.0.1", tcp_service.port, timeout=5),
    ]
    heartbeat = Heartbeat(every=60, probes=probes, clock=clock)
    async with started(heartbeat, daemon):
        await tick(daemon, heartbeat, clock)
        assert published.take() == [("heartbeat", "low")]  # up from the start: no news
        assert (probe_up("web"), probe_up("db")) == (1.0, 1.0)

        http_service.status = 503
        await tick(daemon, heartbeat, clock)
        down = published.signals[0]
        assert published.take() == [("probe.down", "high"), ("heartbeat", "low")]
        assert down.summary.startswith("Probe web is DOWN")
        assert down.payload["detail"] == "HTTP 503, expected 200"
        assert (down.payload["risk_key"], down.payload["status"]) == ("probe:web", "firing")
        assert probe_up("web") == 0.0

        await tick(daemon, heartbeat, clock)
        assert published.take() == [("heartbeat", "low")]  # still down: nothing new

        await tcp_service.close()
        await tick(daemon, heartbeat, clock)
        db_down = published.signals[0]
        assert published.take() == [("probe.down", "high"), ("heartbeat", "low")]
        assert db_down.payload["probe"] == "db"
        assert "Connect" in db_down.payload["detail"] or "refused" in db_down.payload["detail"]

        http_service.status = 200
        await tick(daemon, heartbeat, clock)
        up = published.signals[0]
        assert published.take() == [("probe.up", "low"), ("heartbeat", "low")]
        assert (up.payload["risk_key"], up.payload["status"]) == ("probe:web", "resolved")
        assert probe_up("web") == 1.0

        await tcp_service.open()  # the same port again
        await tick(daemon, heartbeat, clock)
        assert published.take() == [("probe.up", "low"), ("heartbeat", "low")]
        await tick(daemon, heartbeat, clock)
        assert published.take() == [("heartbeat", "low")]
    assert await daemon.state.marker("probe:web") == "up"


async def test_a_probe_that_is_down_from_the_start_is_news(
    scheduler: tuple[Daemon, Published], tcp_service: TcpService
) -> None:
    daemon, published = scheduler
    await tcp_service.close()  # a port that was open a moment ago, closed now
    clock = Clock(3_000_000.0)
    heartbeat = Heartbeat(
        every=60, probes=[TcpProbe("gone", "127.0.0.1", tcp_service.port)], clock=clock
    )
    async with started(heartbeat, daemon):
        await tick(daemon, heartbeat, clock)
    assert published.take() == [("probe.down", "high"), ("heartbeat", "low")]


async def test_one_replica_publishes_each_tick_and_the_others_follow_its_statuses(
    scheduler: tuple[Daemon, Published], http_service: HttpService
) -> None:
    daemon, published = scheduler
    clock = Clock(4_000_000.0)
    replicas = [
        Heartbeat(every=60, probes=[HttpProbe("shared", http_service.url)], clock=clock)
        for _ in range(3)
    ]
    http_service.status = 500
    for replica in replicas:
        await replica.start(daemon)
    try:
        for _ in range(3):
            clock.now += 60
            reports = await asyncio.gather(*(replica.tick() for replica in replicas))
            assert sum(report is not None for report in reports) == 1
        await daemon.broker.join(ATTENTION_QUEUE, timeout=5)  # type: ignore[attr-defined]
        # Three ticks, three heartbeats; the probe went down once.
        assert sorted(published.take()) == [("heartbeat", "low")] * 3 + [("probe.down", "high")]
        assert probe_up("shared") == 0.0
    finally:
        for replica in replicas:
            await replica.stop()


async def test_the_heartbeat_runs_on_its_own_in_the_scheduler_role() -> None:
    heartbeat = Heartbeat(every=0.1)
    daemon = Daemon(Agent(Model.test()), settings=Settings(), adapters=[heartbeat])
    await daemon.start(["scheduler", "attention"])
    try:
        assert (await daemon.readiness())["heartbeat"] is True

        async def observed() -> list[dict[str, Any]]:
            decisions = [decision_view(d) for d in await daemon.state.decisions("default")]
            return [d for d in decisions if d["type"] == "heartbeat"]

        async with asyncio.timeout(30):
            while len(await observed()) < 2:  # noqa: ASYNC110 - polls the state
                await asyncio.sleep(0.02)
    finally:
        await daemon.stop()
    assert {d["action"] for d in await observed()} == {"observe"}  # urgency low: no run
    assert (await daemon.readiness())["heartbeat"] is False


async def test_stuck_sessions_hold_a_lease_past_the_timeout_with_no_run_finishing() -> None:
    daemon = Daemon(Agent(Model.test(), runtime=Runtime.sdk(timeout=60)), settings=Settings())
    clock = Clock(0.0)
    daemon.state = state = MemoryState(clock=clock)  # lease ages follow this clock
    assert await state.acquire_lease("hung", "worker-a", 600) is not None
    assert await state.acquire_lease("busy", "worker-b", 600) is not None
    clock.now = 70.0
    # Runtime timeout 60 s plus the lease TTL (15 s): nothing has been held that long.
    assert await stuck_sessions(daemon) == []
    clock.now = 100.0
    assert await state.acquire_lease("fresh", "worker-c", 600) is not None
    now = datetime.now(UTC)
    # The busy session's runs keep finishing under its one lease: busy, not stuck.
    await state.sessions.append(
        "busy", run=RunRecord("run-1", "busy", "completed", started_at=now, finished_at=now)
    )
    stuck = await stuck_sessions(daemon)
    assert stuck == [
        {
            "session_id": "hung",
            "owner": "worker-a",
            "held_for": 100.0,
            "last_run_finished_at": None,
        }
    ]
    assert [s["session_id"] for s in await stuck_sessions(daemon, stuck_after=200)] == []
    timeless = Daemon(Agent(Model.test(), runtime=Runtime.sdk(timeout=None)), settings=Settings())
    timeless.state = state
    assert await stuck_sessions(timeless) == []


def test_heartbeat_settings_from_the_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not [a for a in adapters_from_settings(Settings()) if isinstance(a, Heartbeat)]
    monkeypatch.setenv("LOOM_HEARTBEAT__INTERVAL", "30")
    monkeypatch.setenv(
        "LOOM_HEARTBEAT__PROBES",
        json.dumps([{"name": "api", "url": "http://api:8080/healthz"}]),
    )
    settings = Settings()
    [heartbeat] = [a for a in adapters_from_settings(settings) if isinstance(a, Heartbeat)]
    assert heartbeat.every == 30
    [api] = heartbeat.probes
    assert isinstance(api, HttpProbe)
    assert (api.url, api.expect_status, api.timeout) == ("http://api:8080/healthz", 200, 5.0)
    monkeypatch.delenv("LOOM_HEARTBEAT__INTERVAL")
    monkeypatch.delenv("LOOM_HEARTBEAT__PROBES")
    config = tmp_path / "loom.toml"
    config.write_text(
        "[heartbeat]\ninterval = 15\nsession_id = 'ops'\n"
        "[[heartbeat.probes]]\nname = 'db'\nhost = 'db'\nport = 5432\ntimeout = 2\n"
        "[[heartbeat.probes]]\nname = 'web'\nurl = 'https://web/'\nexpect_status = 204\n"
    )
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    [heartbeat] = [a for a in adapters_from_settings(Settings()) if isinstance(a, Heartbeat)]
    db, web = heartbeat.probes
    assert isinstance(db, TcpProbe)
    assert isinstance(web, HttpProbe)
    assert (heartbeat.every, heartbeat.session_id) == (15, "ops")
    assert (db.target, db.timeout, web.expect_status) == ("db:5432", 2, 204)


@pytest.mark.parametrize(
    ("heartbeat", "message"),
    [
        ({"interval": 0}, "greater than 0"),
        ({"interval": 5, "probes": [{"name": "x"}]}, "needs either url, or host and port"),
        (
            {"interval": 5, "probes": [{"name": "x", "url": "http://a", "host": "a", "port": 1}]},
            "needs either url, or host and port",
        ),
        ({"interval": 5, "probes": [{"name": "x", "host": "a"}]}, "needs both host and port"),
        ({"interval": 5, "probes": [{"name": "x", "url": "ftp://a"}]}, "https"),
        (
            {"interval": 5, "probes": [{"name": "x", "url": "http://a"}] * 2},
            "probe names must be unique: x",
        ),
        ({"probes": [{"name": "x", "url": "http://a"}]}, "set heartbeat.interval"),
    ],
)
def test_bad_heartbeat_settings_fail_clearly(heartbeat: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(heartbeat=heartbeat)  # type: ignore[arg-type]


def test_probes_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="probe name"):
        HttpProbe("has space", "http://x")
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpProbe("x", "x:80")
    with pytest.raises(ValueError, match="out of range"):
        TcpProbe("x", "h", 70000)
    with pytest.raises(ValueError, match="unique"):
        Heartbeat(probes=[TcpProbe("x", "h", 1), TcpProbe("x", "h", 2)])


async def test_a_probe_that_does_not_answer_in_time_is_down() -> None:
    # A listening socket that never accepts: the HTTP request waits for an answer that
    # never comes.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection open, say nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await HttpProbe("slow", f"http://127.0.0.1:{port}/", timeout=0.2).check()
    finally:
        server.close()
        await server.wait_closed()
    assert (result.up, result.detail) == (False, "no answer within 0.2s")


async def test_an_http_probe_keeps_one_client_and_connects_afresh_each_check(
    http_service: HttpService, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[httpx.AsyncClient] = []

    class Counted(httpx.AsyncClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(httpx, "AsyncClient", Counted)
    probe = HttpProbe("web", http_service.url)
    heartbeat = Heartbeat(every=60, probes=[probe])
    for _ in range(3):
        assert (await probe.check()).up
    # One client (one SSL context) for every check, yet a new connection each time: the
    # server keeps connections alive, so a pooled one would have been reused.
    assert len(made) == 1
    assert len(set(http_service.peers)) == 3
    await heartbeat.stop()  # never started; still closes the probes' clients
    assert made[0].is_closed
    assert (await probe.check()).up  # checked again: a new client
    await heartbeat.aclose()
    assert len(made) == 2
    assert made[1].is_closed
