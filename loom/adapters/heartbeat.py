"""Heartbeat: every N seconds, one signal with the daemon's own health, and probe transitions.

Ticks are aligned to the wall clock (multiples of ``every`` since the epoch), so every
scheduler replica wakes for the same tick; each claims ``heartbeat:{tick}`` in the shared
state and only the winner checks and publishes. The heartbeat signal (urgency low: the
attention policy observes it) carries whether the broker and the state answer, the depth of
the attention and work queues, the sessions whose run holds its lease past the runtime
timeout, and the probe results. A probe going down publishes a high-urgency ``probe.down``;
its recovery a low-urgency ``probe.up`` that resolves it. Each probe's last status is kept in
the state, so the replicas agree on what changed and nothing repeats while nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loom import metrics
from loom.adapters.probes import HttpProbe, Probe, ProbeResult, TcpProbe
from loom.adapters.stuck import stuck_sessions
from loom.broker.base import BrokerUnavailable
from loom.intake.adapter import Adapter
from loom.intake.context import AdapterContext, HasContext, context_of
from loom.signals import RuntimeSignal
from loom.state.base import StateUnavailable, replica_id
from loom.wire import ATTENTION_QUEUE, WORK_QUEUE

if TYPE_CHECKING:
    from loom.adapters.heartbeat_settings import HeartbeatSettings, ProbeSettings

logger = logging.getLogger("loom.heartbeat")

_STATUS_TTL = 7 * 86_400.0
_CHECK_TIMEOUT = 5.0


class Heartbeat(Adapter):
    """``Heartbeat(every=30, probes=[HttpProbe("api", "http://api/healthz")])``.

    ``session_id``: the session its signals go to (default: the daemon's default session).
    ``stuck_after``: seconds a lease may be held without a run finishing before its session
    counts as stuck (default: the agent's runtime timeout plus the worker's lease TTL).
    """

    name = "heartbeat"

    def __init__(
        self,
        every: float = 30.0,
        probes: Sequence[Probe] = (),
        *,
        session_id: str | None = None,
        stuck_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if every <= 0:
            raise ValueError("a heartbeat's interval must be positive")
        names = [probe.name for probe in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probe names must be unique, got {names}")
        self.every = float(every)
        self.probes = list(probes)
        self.session_id = session_id
        self.stuck_after = stuck_after
        self.owner = replica_id()
        self._clock = clock
        self._context: AdapterContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_tick: int | None = None

    @classmethod
    def from_settings(cls, settings: HeartbeatSettings) -> Heartbeat:
        """The heartbeat the ``heartbeat`` settings describe (their interval must be set)."""
        if settings.interval is None:
            raise ValueError("the heartbeat is off: heartbeat.interval is unset")
        probes = [probe_from_settings(probe) for probe in settings.probes]
        return cls(settings.interval, probes, session_id=settings.session_id)

    @property
    def scheduled(self) -> bool:
        return True

    async def start(self, context: AdapterContext | HasContext) -> None:
        self._context = context_of(context)
        self._task = asyncio.create_task(self._beat(), name="loom-heartbeat")
        logger.info("heartbeat every %gs with %d probe(s)", self.every, len(self.probes))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.aclose()

    async def aclose(self) -> None:
        """Close the probes' clients (a probe checked again makes a new one)."""
        for probe in self.probes:
            await probe.aclose()

    async def check(self) -> dict[str, bool]:
        return {self.name: self._task is not None and not self._task.done()}

    async def _beat(self) -> None:
        while True:
            # The next multiple of the interval: every replica wakes for the same tick.
            await asyncio.sleep(self.every - self._clock() % self.every)
            try:
                await self.tick()
            except Exception:  # one bad tick must not end the heartbeat
                logger.exception("heartbeat tick failed")

    def tick_number(self, now: float) -> int:
        return round(now / self.every)

    async def tick(self) -> dict[str, Any] | None:
        """Run one tick: the report this replica published, or None if another replica won
        the tick (this one then only refreshes its probe gauges from the state)."""
        context = self._require()
        tick = self.tick_number(self._clock())
        if tick == self._last_tick:
            return None  # woken twice for one tick (a timer a hair early)
        self._last_tick = tick
        key = f"heartbeat:{tick}"
        try:
            holder = await context.claims.claim(key, self.owner, max(10 * self.every, 60.0))
        except StateUnavailable:
            holder = None  # no way to agree; a heartbeat saying the state is down is news
        if holder is not None:
            await self._follow()
            return None
        report, results = await self._check_all()
        await self._transitions(results, tick)
        signal = RuntimeSignal.create(
            summarize(report),
            source="heartbeat",
            type="heartbeat",
            urgency="low",
            payload=report,
            session_id=self.session_id,
            dedupe_key=key,
        )
        try:
            await context.publish(signal)
        except BrokerUnavailable as problem:
            logger.error("heartbeat %d not published: %s", tick, problem)
        return report

    async def report(self) -> dict[str, Any]:
        """The daemon's health as this replica sees it now, probes included."""
        return (await self._check_all())[0]

    async def _check_all(self) -> tuple[dict[str, Any], list[ProbeResult]]:
        context = self._require()
        broker_ok, state_ok, attention, work, stuck, *probed = await asyncio.gather(
            _answer(context.ping_broker(), False),
            _answer(context.ping_state(), False),
            _answer(context.queue_depth(ATTENTION_QUEUE), None),
            _answer(context.queue_depth(WORK_QUEUE), None),
            _answer(stuck_sessions(context, self.stuck_after), None),
            *(probe.check() for probe in self.probes),
        )
        report = {
            "replica": self.owner,
            "broker": bool(broker_ok),
            "state": bool(state_ok),
            "queues": {ATTENTION_QUEUE: attention, WORK_QUEUE: work},
            "stuck_sessions": stuck,
            "probes": {result.name: result.to_dict() for result in probed},
        }
        return report, probed

    async def _transitions(self, results: Sequence[ProbeResult], tick: int) -> None:
        """Publish what changed since the last tick; remember it only once published."""
        context = self._require()
        for result in results:
            metrics.PROBE_UP.labels(result.name).set(1 if result.up else 0)
            status = "up" if result.up else "down"
            key = f"probe:{result.name}"
            try:
                previous = await context.claims.marker(key)
            except StateUnavailable:
                previous = None
            # A probe first seen up is no news; first seen down is.
            if previous == status or (previous is None and result.up):
                with contextlib.suppress(StateUnavailable):
                    await context.claims.set_marker(key, status, _STATUS_TTL)
                continue
            signal = _transition_signal(result, tick, self.session_id)
            try:
                await context.publish(signal)
                await context.claims.set_marker(key, status, _STATUS_TTL)
            except (BrokerUnavailable, StateUnavailable) as problem:
                # Not remembered, so the next tick tries again.
                logger.error("probe %s is %s, not yet reported: %s", result.name, status, problem)
                continue
            log = logger.warning if status == "down" else logger.info
            log("probe %s is %s (%s): %s", result.name, status, result.target, result.detail)

    async def _follow(self) -> None:
        """Gauges of a replica that lost the tick: the statuses the winner stored."""
        context = self._require()
        for probe in self.probes:
            with contextlib.suppress(StateUnavailable):
                status = await context.claims.marker(f"probe:{probe.name}")
                if status is not None:
                    metrics.PROBE_UP.labels(probe.name).set(1 if status == "up" else 0)

    def _require(self) -> AdapterContext:
        if self._context is None:
            raise RuntimeError("the heartbeat is not started")
        return self._context


def probe_from_settings(settings: ProbeSettings) -> Probe:
    """An ``HttpProbe`` for a url, else a ``TcpProbe`` for host and port."""
    if settings.url is not None:
        return HttpProbe(settings.name, settings.url, settings.expect_status, settings.timeout)
    if settings.host is None or settings.port is None:
        raise ValueError(f"probe {settings.name!r} needs either url, or host and port")
    return TcpProbe(settings.name, settings.host, settings.port, settings.timeout)


def _transition_signal(result: ProbeResult, tick: int, session_id: str | None) -> RuntimeSignal:
    down = not result.up
    payload = {
        "probe": result.name,
        "target": result.target,
        "detail": result.detail,
        "risk_key": f"probe:{result.name}",  # probe.up clears the risk probe.down set
        "status": "firing" if down else "resolved",
        "checked_at": datetime.now(UTC).isoformat(),
    }
    summary = (
        f"Probe {result.name} is DOWN ({result.target}): {result.detail}"
        if down
        else f"Probe {result.name} is up again ({result.target}): {result.detail}"
    )
    return RuntimeSignal.create(
        summary,
        source="heartbeat",
        type="probe.down" if down else "probe.up",
        urgency="high" if down else "low",
        payload=payload,
        session_id=session_id,
        dedupe_key=f"probe:{result.name}:{'down' if down else 'up'}:{tick}",
    )


def summarize(report: dict[str, Any]) -> str:
    """One line for people: what is wrong first, else that all is well."""
    queues = report["queues"]
    parts = [
        f"broker {'up' if report['broker'] else 'DOWN'}",
        f"state {'up' if report['state'] else 'DOWN'}",
        "queues " + ", ".join(f"{name} {'?' if n is None else n}" for name, n in queues.items()),
    ]
    stuck = report["stuck_sessions"]
    if stuck is None:
        parts.append("stuck runs unknown")
    else:
        parts.append(f"{len(stuck)} stuck run(s)" if stuck else "no stuck runs")
    probes = report["probes"]
    if probes:
        down = sorted(name for name, found in probes.items() if not found["up"])
        up = len(probes) - len(down)
        listed = f" (down: {', '.join(down)})" if down else ""
        parts.append(f"probes {up}/{len(probes)} up{listed}")
    return "Loom heartbeat: " + "; ".join(parts)


async def _answer(check: Any, failed: Any) -> Any:
    """The check's answer, or ``failed`` when it raises or takes too long."""
    try:
        return await asyncio.wait_for(check, _CHECK_TIMEOUT)
    except Exception as problem:
        logger.debug("heartbeat check failed: %s", problem)
        return failed


__all__ = [
    "Heartbeat",
    "HttpProbe",
    "TcpProbe",
    "probe_from_settings",
    "summarize",
]
