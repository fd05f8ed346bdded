"""Cron: a signal at each fire time of a schedule, once across every scheduler replica.

Every scheduler replica schedules every job (APScheduler 3's ``AsyncIOScheduler`` wakes it
at the fire times). At a fire time each replica claims ``cron:{job_id}:{fire time}`` in the
shared state. The claim is short: it covers one publish (the broker's publish timeout plus
a margin). The winner publishes, with the same string as the signal's ``dedupe_key``, and
once the broker confirmed it records the fire as done (``cron-fired:{job_id}:{fire time}``,
kept long). The replicas that lost the claim do not give up: they watch until the fire is
done, and if the claim lapses first (its holder died mid-publish, or stopped and handed it
back) one of them claims and publishes it, up to the misfire grace time. A publish repeated
in a race is absorbed downstream by the dedupe key. A failed publish (broker down) releases
the claim and is retried until the fire is older than the grace time. The newest published
fire is kept as ``cron-last:{job_id}``; a replica that starts fires what was missed since
then while no scheduler ran (see ``due_fires``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]

from loom.adapters.cron_schedule import CronSchedule, due_fires
from loom.broker.base import BrokerUnavailable
from loom.intake.adapter import Adapter
from loom.intake.context import AdapterContext, HasContext, context_of
from loom.signals import RuntimeSignal, Urgency
from loom.state.base import StateUnavailable
from loom.state.claims import Claims
from loom.state.leases import replica_id

if TYPE_CHECKING:
    from loom.adapters.cron_settings import CronJobSettings

logger = logging.getLogger("loom.cron")

T = TypeVar("T")

DEFAULT_MISFIRE_GRACE_TIME = 300.0
JOB_ID = re.compile(r"^[A-Za-z0-9_.@/-]{1,128}$")
_MARKER_TTL = 30 * 86_400.0
_MAX_RETRY_DELAY = 10.0
_DEFAULT_PUBLISH_TIMEOUT = 10.0  # the settings' default, until start() reads the real one
_CLAIM_MARGIN = 5.0  # the state round trips around the publish
_WATCH_INTERVAL = 1.0
_STOP_WAIT = 5.0


def fire_key(job_id: str, fire: datetime) -> str:
    """The claim and dedupe key of one fire: ``cron:{job_id}:{fire time, ISO, UTC}``."""
    return f"cron:{job_id}:{fire.astimezone(UTC).isoformat()}"


def fired_key(job_id: str, fire: datetime) -> str:
    """The marker of a fire the broker confirmed: ``cron-fired:{job_id}:{fire time}``."""
    return f"cron-fired:{job_id}:{fire.astimezone(UTC).isoformat()}"


class _Outcome(enum.Enum):
    PUBLISHED = "published"  # by this replica, now
    DONE = "done"  # recorded as fired already
    HELD = "held"  # another replica holds the claim
    FAILED = "failed"  # not published within the grace time, or stopped first


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
        self.claim_ttl = _DEFAULT_PUBLISH_TIMEOUT + _CLAIM_MARGIN
        """Seconds a claim lasts: one publish. If its holder dies, another replica takes over
        the fire once it lapses (``start`` sets it from the daemon's publish timeout)."""
        self.fired_ttl = max(3600.0, 2 * misfire_grace_time)
        """Seconds a fire stays recorded as done: past every replica's chance to act on it."""
        self.watch_interval = _WATCH_INTERVAL
        """Seconds between a watching replica's looks at a fire another replica claimed."""
        self.stop_timeout = _STOP_WAIT
        """Seconds ``stop`` lets a publish in progress be confirmed before handing it back."""
        self._clock = clock or (lambda: datetime.now(UTC))
        self._context: AdapterContext | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._last: datetime | None = None
        self._busy = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._catch_up: asyncio.Task[list[datetime]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # ticks and watchers, ours to end
        self._watched: set[str] = set()  # fire keys a watcher follows
        self._held: set[str] = set()  # claims won whose fire is not recorded done yet

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

    async def start(self, context: AdapterContext | HasContext) -> None:
        """Follow the schedule, and fire what was missed while no scheduler ran (in the
        background: a slow broker must not hold up the process's start)."""
        self._context = context = context_of(context)
        self._stopping.clear()
        self.claim_ttl = context.publish_timeout + _CLAIM_MARGIN
        self.stop_timeout = min(_STOP_WAIT, context.shutdown_timeout / 4)
        if self.claim_ttl >= self.misfire_grace_time:
            logger.warning(
                "cron job %s: misfire_grace_time %gs is not longer than a claim (%gs): a fire "
                "whose replica dies while publishing cannot be taken over by another",
                self.job_id, self.misfire_grace_time, self.claim_ttl,
            )  # fmt: skip
        self._last = await self._last_recorded()
        self._catch_up = self._spawn(self.tick(), "catch-up")
        if logging.getLogger("apscheduler").level == logging.NOTSET:
            # APScheduler logs every run at INFO; ours say more (and only the winner's).
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._wake,
            _ScheduleTrigger(self.schedule),
            id=self.job_id,
            name=self.name,
            misfire_grace_time=None,  # lateness is judged by due_fires, with our grace time
            coalesce=True,
            max_instances=4,  # _wake returns at once; this only absorbs a burst of wakes
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
        """Stop following the schedule. A publish in progress gets ``stop_timeout`` seconds
        to be confirmed; one that is not is cut off and its claim released, so a replica
        that watches the fire takes it over at once instead of when the claim lapses."""
        self._stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None
        tasks = set(self._tasks)
        if tasks:
            # Watchers and retries see the stop and end; only a publish may take a moment.
            _, unfinished = await asyncio.wait(tasks, timeout=self.stop_timeout)
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
        await self._release_held()

    async def check(self) -> dict[str, bool]:
        return {self.name: self._scheduler is not None and self._scheduler.running}

    def _spawn(self, work: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        task = asyncio.create_task(work, name=f"loom-{self.name}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (problem := task.exception()) is not None:
            logger.error("cron job %s: %s failed", self.job_id, task.get_name(), exc_info=problem)

    async def _wake(self) -> None:
        """APScheduler's job. The tick runs in a task of ours: APScheduler cancels the tasks
        it runs when it shuts down, and a publish must not be cut off unnoticed."""
        if not self._busy.locked() and not self._stopping.is_set():
            self._spawn(self.tick(), "tick")

    async def _last_recorded(self) -> datetime:
        """The newest fire recorded as published. The job's first start records the start
        instead: a new job fires nothing from before it existed."""
        state = self._state()
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
        """Fire what is due now; returns the fire times this replica published. A fire
        another replica claimed is watched in the background (see ``fire``)."""
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
                    if self._stopping.is_set():
                        break
                    outcome = await self._attempt(fire)
                    if outcome is _Outcome.PUBLISHED:
                        published.append(fire)
                    elif outcome is _Outcome.HELD:
                        self._watch(fire)
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
        """Fire ``fire`` once across the replicas; True when this replica published it.

        While another replica holds the claim this watches (up to the misfire grace time)
        until that replica records the fire as done (False), or its claim lapses with the
        fire not done (it died, or stopped before the broker confirmed): then this replica
        claims and publishes it. False too when the fire could not be published within the
        grace time (logged as an error) or the adapter stopped first.
        """
        while True:
            outcome = await self._attempt(fire)
            if outcome is not _Outcome.HELD:
                return outcome is _Outcome.PUBLISHED
            if not await self._released(fire):
                return False

    def _watch(self, fire: datetime) -> None:
        """Follow a fire another replica claimed, in the background, so the tick goes on."""
        key = fire_key(self.job_id, fire)
        if key in self._watched or self._stopping.is_set():
            return
        self._watched.add(key)
        task = self._spawn(self._take_over(fire), f"watch-{fire.astimezone(UTC):%H%M%S}")
        task.add_done_callback(lambda _: self._watched.discard(key))

    async def _take_over(self, fire: datetime) -> bool:
        return await self._released(fire) and await self.fire(fire)

    async def _released(self, fire: datetime) -> bool:
        """Watch a fire another replica claimed: True once the claim lapsed with the fire
        not done; False when it is done, its grace time ends, or the adapter stops."""
        state = self._state()
        key, done = fire_key(self.job_id, fire), fired_key(self.job_id, fire)
        deadline = fire.astimezone(UTC) + timedelta(seconds=self.misfire_grace_time)
        holder: str | None = None
        while not await self._stopped_within(self.watch_interval):
            if self._clock() >= deadline:
                logger.warning(
                    "cron job %s: fire at %s still claimed by %s and not done at the end of "
                    "the misfire grace time of %gs",
                    self.job_id, fire.astimezone(UTC).isoformat(), holder,
                    self.misfire_grace_time,
                )  # fmt: skip
                return False
            try:
                if await state.marker(done) is not None:
                    return False
                holder = await state.claimed(key)
            except StateUnavailable:
                continue  # it may come back within the grace time
            if holder is None or holder == self.owner:
                logger.info(
                    "cron job %s: the claim of the fire at %s lapsed before it was done; "
                    "trying to fire it here",
                    self.job_id, fire.astimezone(UTC).isoformat(),
                )  # fmt: skip
                return True
        return False

    async def _attempt(self, fire: datetime) -> _Outcome:
        """Claim ``fire`` and publish its signal, retrying a failed publish (with the claim
        released meanwhile) until the grace time ends."""
        context = self._require()
        state = context.claims
        fire = fire.astimezone(UTC)
        key, done = fire_key(self.job_id, fire), fired_key(self.job_id, fire)
        signal = self.signal_for(fire)  # one id across retries
        delay = 0.5
        while True:
            try:
                holder = await state.claim(key, self.owner, self.claim_ttl)
                if holder is not None and holder != self.owner:
                    logger.debug("cron job %s: %s is being fired by %s", self.job_id, key, holder)
                    return _Outcome.HELD
                self._held.add(key)
                # Checked after the claim: a fire done before it was taken is never repeated.
                if await state.marker(done) is not None:
                    self._held.discard(key)
                    logger.debug("cron job %s: %s was fired already", self.job_id, key)
                    return _Outcome.DONE
                await context.publish(signal)
            except (BrokerUnavailable, StateUnavailable) as problem:
                logger.warning(
                    "cron job %s: fire at %s not published (%s); retrying in %.1fs",
                    self.job_id, fire.isoformat(), problem, delay,
                )  # fmt: skip
                # Released, so another replica can fire it meanwhile.
                with contextlib.suppress(StateUnavailable):
                    await state.forget(key)
                    self._held.discard(key)
                if not await self._wait_to_retry(fire, delay):
                    if self._stopping.is_set():
                        logger.warning(
                            "cron job %s: fire at %s not published before the stop; its claim "
                            "is released, another replica fires it",
                            self.job_id, fire.isoformat(),
                        )  # fmt: skip
                    else:
                        logger.error(
                            "cron job %s: fire at %s LOST: not published within the misfire "
                            "grace time of %gs (last error: %s)",
                            self.job_id, fire.isoformat(), self.misfire_grace_time, problem,
                        )  # fmt: skip
                    return _Outcome.FAILED
                delay = min(delay * 2, _MAX_RETRY_DELAY)
                continue
            logger.info("cron job %s fired for %s: signal %s", self.job_id, fire, signal.id)
            await self._record(fire)
            self._held.discard(key)
            return _Outcome.PUBLISHED

    async def _wait_to_retry(self, fire: datetime, delay: float) -> bool:
        deadline = fire + timedelta(seconds=self.misfire_grace_time)
        if self._stopping.is_set() or self._clock() + timedelta(seconds=delay) > deadline:
            return False
        return not await self._stopped_within(delay)

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if the adapter stops; True when it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    async def _record(self, fire: datetime) -> None:
        """Record the fire as done (the replicas watching it stop), and keep the newest
        published fire, the point a restarted scheduler catches up from."""
        state = self._state()
        try:
            await state.set_marker(fired_key(self.job_id, fire), self.owner, self.fired_ttl)
        except StateUnavailable as problem:
            logger.warning(
                "cron job %s: fire at %s not recorded as done (%s): a replica may publish it "
                "again when the claim lapses (its dedupe key makes that a duplicate)",
                self.job_id, fire.isoformat(), problem,
            )  # fmt: skip
        try:
            recorded = await state.marker(self.marker_key)
            if recorded is None or datetime.fromisoformat(recorded) < fire:
                await state.set_marker(self.marker_key, fire.isoformat(), _MARKER_TTL)
        except (StateUnavailable, ValueError) as problem:
            logger.warning("cron job %s: last fire not recorded: %s", self.job_id, problem)

    async def _release_held(self) -> None:
        """Give back the claims of fires this replica won and did not record as done."""
        if self._context is None:
            return
        state = self._context.claims
        for key in sorted(self._held):
            try:
                # Only our own: a claim that lapsed may be another replica's by now.
                if await state.claimed(key) == self.owner:
                    await state.forget(key)
                    logger.warning(
                        "cron job %s: %s not confirmed before the stop; claim released for "
                        "another replica",
                        self.job_id, key,
                    )  # fmt: skip
            except StateUnavailable as problem:
                logger.warning(
                    "cron job %s: claim %s not released (%s); another replica takes the fire "
                    "over when it lapses",
                    self.job_id, key, problem,
                )  # fmt: skip
        self._held.clear()

    def _require(self) -> AdapterContext:
        if self._context is None:
            raise RuntimeError(f"cron job {self.job_id} is not started")
        return self._context

    def _state(self) -> Claims:
        return self._require().state


__all__ = ["DEFAULT_MISFIRE_GRACE_TIME", "Cron", "fire_key", "fired_key"]
