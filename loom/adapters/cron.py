"""Cron: a signal at each fire time of a schedule, once across every scheduler replica.

Every scheduler replica schedules every job (APScheduler 3's ``AsyncIOScheduler`` wakes it
at the fire times). At a fire time each replica claims ``cron:{job_id}:{fire time}`` in the
shared state; only the winner publishes, with the same string as the signal's
``dedupe_key``, so even a publish repeated after a crash is handled once. A failed publish
(broker down) releases the claim and is retried until the fire is older than the misfire
grace time. The newest published fire is kept as ``cron-last:{job_id}``; a replica that
starts fires what was missed since then while no scheduler ran (see ``due_fires``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]

from loom.adapters.base import Adapter
from loom.adapters.cron_schedule import CronSchedule, due_fires
from loom.broker.base import BrokerUnavailable
from loom.daemon.signals_io import publish_signal
from loom.signals import RuntimeSignal, Urgency
from loom.state.base import StateUnavailable

if TYPE_CHECKING:
    from loom.daemon.app import Daemon
    from loom.daemon.settings import CronJobSettings

logger = logging.getLogger("loom.cron")

DEFAULT_MISFIRE_GRACE_TIME = 300.0
JOB_ID = re.compile(r"^[A-Za-z0-9_.@/-]{1,128}$")
_MARKER_TTL = 30 * 86_400.0
_MAX_RETRY_DELAY = 10.0


def replica_id() -> str:
    """This process among the replicas: host, pid and a random part (pids repeat in pods)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def fire_key(job_id: str, fire: datetime) -> str:
    """The claim and dedupe key of one fire: ``cron:{job_id}:{fire time, ISO, UTC}``."""
    return f"cron:{job_id}:{fire.astimezone(UTC).isoformat()}"


class _ScheduleTrigger(BaseTrigger):  # type: ignore[misc]
    """APScheduler's view of a ``CronSchedule``, so it wakes us exactly at its fire times."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: CronSchedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        # Never before now: missed times are ours to handle (due_fires), not APScheduler's.
        start = now - timedelta(microseconds=1)
        return self.schedule.next_after(start if previous is None else max(previous, start))


class Cron(Adapter):
    """``Cron("*/5 * * * *", "Deployment health check is due", job_id="deployment-health")``.

    Publishes a ``source``/``type`` signal with ``summary`` at each fire time of the cron
    ``expression`` in ``timezone`` (5 fields, 6 with seconds first, or ``@hourly`` and the
    like). A fire missed by up to ``misfire_grace_time`` seconds still fires; with
    ``coalesce`` several missed fires fire once. ``clock`` is for tests.
    """

    def __init__(
        self,
        expression: str,
        summary: str,
        *,
        job_id: str,
        session_id: str | None = None,
        timezone: str = "UTC",
        payload: Mapping[str, Any] | None = None,
        urgency: Urgency = "normal",
        misfire_grace_time: float = DEFAULT_MISFIRE_GRACE_TIME,
        coalesce: bool = True,
        source: str = "cron",
        type: str = "schedule",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not JOB_ID.match(job_id):
            raise ValueError(f"job_id {job_id!r} must be 1-128 letters, digits or _.@/-")
        if misfire_grace_time <= 0:
            raise ValueError("misfire_grace_time must be positive")
        self.schedule = CronSchedule(expression, timezone)
        self.summary = summary
        self.job_id = job_id
        self.name = f"cron:{job_id}"
        self.session_id = session_id
        self.payload = dict(payload or {})
        self.urgency: Urgency = urgency
        self.misfire_grace_time = misfire_grace_time
        self.coalesce = coalesce
        self.source = source
        self.type = type
        self.owner = replica_id()
        # A claim must outlive every replica's chance to act on the fire (its grace time).
        self.claim_ttl = max(3600.0, 2 * misfire_grace_time)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._daemon: Daemon | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._last: datetime | None = None
        self._busy = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._catch_up: asyncio.Task[list[datetime]] | None = None

    @classmethod
    def from_settings(cls, job: CronJobSettings) -> Cron:
        """The job of one ``[[cron]]`` table (or ``LOOM_CRON`` entry)."""
        options = job.model_dump(exclude={"expression", "summary"})
        return cls(job.expression, job.summary, **options)

    @property
    def scheduled(self) -> bool:
        return True

    @property
    def marker_key(self) -> str:
        return f"cron-last:{self.job_id}"

    async def start(self, daemon: Daemon) -> None:
        """Follow the schedule, and fire what was missed while no scheduler ran (in the
        background: a slow broker must not hold up the process's start)."""
        self._daemon = daemon
        self._stopping.clear()
        self._last = await self._last_recorded()
        self._catch_up = asyncio.create_task(self.tick(), name=f"loom-{self.name}-catch-up")
        if logging.getLogger("apscheduler").level == logging.NOTSET:
            # APScheduler logs every run at INFO; ours say more (and only the winner's).
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.tick,
            _ScheduleTrigger(self.schedule),
            id=self.job_id,
            name=self.name,
            misfire_grace_time=None,  # lateness is judged by due_fires, with our grace time
            coalesce=True,
            max_instances=4,  # a tick that finds another running returns at once
        )
        self._scheduler.start()
        logger.info(
            "cron job %s scheduled: %r (%s), next fire %s",
            self.job_id, self.schedule.expression, self.schedule.timezone,
            self.schedule.next_after(self._clock()),
        )  # fmt: skip

    async def caught_up(self) -> list[datetime]:
        """Wait for the catch-up that ``start`` began; the fire times it published."""
        return [] if self._catch_up is None else await self._catch_up

    async def stop(self) -> None:
        self._stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None
        # Let a fire in progress finish its publish (its retries see the stop and end).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0), self._busy:
                pass
        if self._catch_up is not None and not self._catch_up.done():
            self._catch_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._catch_up

    async def check(self) -> dict[str, bool]:
        return {self.name: self._scheduler is not None and self._scheduler.running}

    async def _last_recorded(self) -> datetime:
        """The newest fire recorded as published. The job's first start records the start
        instead: a new job fires nothing from before it existed."""
        assert self._daemon is not None
        state = self._daemon.state
        # Whole seconds, which fire times are: no fire falls between it and now.
        now = self._clock().astimezone(UTC).replace(microsecond=0)
        try:
            recorded = await state.marker(self.marker_key)
            if recorded is not None:
                return datetime.fromisoformat(recorded)
            await state.set_marker(self.marker_key, now.isoformat(), _MARKER_TTL)
        except (StateUnavailable, ValueError) as problem:
            logger.warning("cron job %s: no last fire to catch up from: %s", self.job_id, problem)
        return now

    async def tick(self) -> list[datetime]:
        """Fire what is due now; returns the fire times this replica published."""
        if self._busy.locked():
            return []  # the tick in progress looks again before it ends
        published: list[datetime] = []
        async with self._busy:
            while not self._stopping.is_set():
                now = self._clock()
                last = self._last or now
                due = due_fires(
                    self.schedule,
                    last=last,
                    now=now,
                    grace=self.misfire_grace_time,
                    coalesce=self.coalesce,
                )
                self._last = max(last, now)
                if due.missed:
                    logger.warning(
                        "cron job %s: %d fire time(s) since %s not fired (coalesced, or past "
                        "the misfire grace time of %gs)",
                        self.job_id, due.missed, last.isoformat(), self.misfire_grace_time,
                    )  # fmt: skip
                if not due.fire:
                    break
                for fire in due.fire:
                    if await self.fire(fire):
                        published.append(fire)
        return published

    def signal_for(self, fire: datetime) -> RuntimeSignal:
        """The signal of one fire time."""
        schedule, fire = self.schedule, fire.astimezone(UTC)
        payload = {**self.payload, "job_id": self.job_id, "fire_time": fire.isoformat()}
        payload.update(schedule=schedule.expression, timezone=schedule.timezone)
        return RuntimeSignal.create(
            self.summary,
            source=self.source,
            type=self.type,
            urgency=self.urgency,
            payload=payload,
            session_id=self.session_id,
            dedupe_key=fire_key(self.job_id, fire),
        )

    async def fire(self, fire: datetime) -> bool:
        """Claim ``fire`` and publish its signal; False when another replica has it, or it
        could not be published within the grace time (logged as an error)."""
        assert self._daemon is not None
        fire = fire.astimezone(UTC)
        key = fire_key(self.job_id, fire)
        signal = self.signal_for(fire)  # one id across retries
        delay = 0.5
        while True:
            try:
                holder = await self._daemon.state.claim(key, self.owner, self.claim_ttl)
                if holder is not None and holder != self.owner:
                    logger.debug("cron job %s: %s is fired by %s", self.job_id, key, holder)
                    return False
                await publish_signal(self._daemon.broker, signal)
            except (BrokerUnavailable, StateUnavailable) as problem:
                logger.warning(
                    "cron job %s: fire at %s not published (%s); retrying in %.1fs",
                    self.job_id, fire.isoformat(), problem, delay,
                )  # fmt: skip
                # Released, so the fire is not lost to a claim nobody acts on.
                with contextlib.suppress(StateUnavailable):
                    await self._daemon.state.forget(key)
                if not await self._wait_to_retry(fire, delay):
                    logger.error(
                        "cron job %s: fire at %s LOST: not published within the misfire grace "
                        "time of %gs (last error: %s)",
                        self.job_id, fire.isoformat(), self.misfire_grace_time, problem,
                    )  # fmt: skip
                    return False
                delay = min(delay * 2, _MAX_RETRY_DELAY)
                continue
            logger.info("cron job %s fired for %s: signal %s", self.job_id, fire, signal.id)
            await self._record(fire)
            return True

    async def _wait_to_retry(self, fire: datetime, delay: float) -> bool:
        deadline = fire + timedelta(seconds=self.misfire_grace_time)
        if self._stopping.is_set() or self._clock() + timedelta(seconds=delay) > deadline:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        return not self._stopping.is_set()

    async def _record(self, fire: datetime) -> None:
        """Keep the newest published fire, the point a restarted scheduler catches up from."""
        assert self._daemon is not None
        state = self._daemon.state
        try:
            recorded = await state.marker(self.marker_key)
            if recorded is None or datetime.fromisoformat(recorded) < fire:
                await state.set_marker(self.marker_key, fire.isoformat(), _MARKER_TTL)
        except (StateUnavailable, ValueError) as problem:
            logger.warning("cron job %s: last fire not recorded: %s", self.job_id, problem)


__all__ = ["DEFAULT_MISFIRE_GRACE_TIME", "Cron", "fire_key", "replica_id"]
