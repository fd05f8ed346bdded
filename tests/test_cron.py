"""Cron: pure fire-time computation (injected clock), settings, fire-once claims, misfires,
and a daemon whose schedule runs the agent. No test sleeps to wait for a schedule except the
end-to-end one, which polls with a generous deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from loom import Agent, Model, RuntimeSignal
from loom.adapters import Cron
from loom.adapters.cron import fire_key, fired_key
from loom.adapters.cron_schedule import CronSchedule, cron_weekdays, due_fires
from loom.adapters.registry import adapters_from_settings
from loom.broker.base import Delivery
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.intake import Adapter
from loom.state import MemoryState
from loom.wire import ATTENTION_QUEUE, decision_view
from tests.polling import eventually


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(schedule: CronSchedule, after: datetime, count: int) -> list[datetime]:
    found: list[datetime] = []
    moment: datetime | None = after
    while len(found) < count and moment is not None:
        moment = schedule.next_after(moment)
        if moment is not None:
            found.append(moment)
    return found


# -- the pure schedule ------------------------------------------------------------------------


def test_next_fire_is_strictly_after_the_given_moment() -> None:
    every_five = CronSchedule("*/5 * * * *")
    assert every_five.next_after(utc(2026, 1, 1, 10, 2, 30)) == utc(2026, 1, 1, 10, 5)
    assert every_five.next_after(utc(2026, 1, 1, 10, 5)) == utc(2026, 1, 1, 10, 10)
    assert every_five.next_after(utc(2026, 1, 1, 10, 4, 59, 999_999)) == utc(2026, 1, 1, 10, 5)
    # Any timezone in, UTC out.
    berlin = datetime(2026, 1, 1, 11, 2, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert every_five.next_after(berlin) == utc(2026, 1, 1, 10, 5)


def test_six_fields_put_seconds_first_and_macros_expand() -> None:
    assert fires(CronSchedule("*/20 * * * * *"), utc(2026, 1, 1, 0, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
    ]
    assert CronSchedule("* * * * * *").has_seconds
    assert not CronSchedule("* * * * *").has_seconds
    assert CronSchedule("@hourly").next_after(utc(2026, 1, 1, 10, 30)) == utc(2026, 1, 1, 11)
    assert CronSchedule("@daily").next_after(utc(2026, 1, 1, 10)) == utc(2026, 1, 2)
    assert CronSchedule("@weekly").next_after(utc(2026, 1, 1)) == utc(2026, 1, 4)  # a Sunday
    assert CronSchedule("@monthly").next_after(utc(2026, 1, 15)) == utc(2026, 2, 1)
    assert CronSchedule("@yearly").next_after(utc(2026, 3, 1)) == utc(2027, 1, 1)


def test_weekdays_are_crons_not_apschedulers() -> None:
    # 2026-01-05 is a Monday. In crontab 1 is Monday and 0 and 7 are Sunday.
    assert CronSchedule("0 9 * * 1").next_after(utc(2026, 1, 1)) == utc(2026, 1, 5, 9)
    assert CronSchedule("0 9 * * 0").next_after(utc(2026, 1, 1)) == utc(2026, 1, 4, 9)
    assert CronSchedule("0 9 * * 7").next_after(utc(2026, 1, 1)) == utc(2026, 1, 4, 9)
    assert CronSchedule("0 9 * * MON-FRI").next_after(utc(2026, 1, 3)) == utc(2026, 1, 5, 9)
    assert cron_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert cron_weekdays("0-2") == "sun,mon,tue"
    assert cron_weekdays("*/2") == "sun,tue,thu,sat"
    assert cron_weekdays("5-7") == "sun,fri,sat"
    assert cron_weekdays("sat,SUN") == "sun,sat"


def test_day_of_month_and_weekday_both_restricted_fire_on_either() -> None:
    # Vixie cron: the 1st of the month, and every Monday.
    days = [f.day for f in fires(CronSchedule("0 9 1 * 1"), utc(2026, 1, 1, 12), 6)]
    assert days == [5, 12, 19, 26, 1, 2]  # Mondays of January, Feb 1st (Sunday), Feb 2nd
    # A day-of-month starting with * narrows by weekday instead (both must match).
    assert [f.day for f in fires(CronSchedule("0 9 */2 * 1"), utc(2026, 1, 1), 2)] == [5, 19]


def test_timezones_shift_the_utc_fire_time_with_daylight_saving() -> None:
    nine_berlin = CronSchedule("0 9 * * *", "Europe/Berlin")
    assert nine_berlin.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 8)  # CET, UTC+1
    assert nine_berlin.next_after(utc(2026, 7, 10)) == utc(2026, 7, 10, 7)  # CEST, UTC+2
    nine_new_york = CronSchedule("0 9 * * *", "America/New_York")
    assert nine_new_york.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 14)


def test_a_local_time_skipped_by_spring_forward_fires_once_after_the_jump() -> None:
    # 2025-03-30 in Berlin: 02:00 CET jumps to 03:00 CEST; 02:30 never happens.
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert fires(schedule, utc(2025, 3, 29, 12), 3) == [
        utc(2025, 3, 30, 1, 30),  # 03:30 CEST, right after the jump
        utc(2025, 3, 31, 0, 30),  # 02:30 CEST
        utc(2025, 4, 1, 0, 30),
    ]


def test_a_repeated_local_time_fires_once_unless_the_hour_is_a_wildcard() -> None:
    # 2025-10-26 in Berlin: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    daily = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert fires(daily, utc(2025, 10, 25, 12), 2) == [
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 27, 1, 30),
    ]
    half_hourly = CronSchedule("*/30 * * * *", "Europe/Berlin")
    night = fires(half_hourly, utc(2025, 10, 25, 23, 50), 6)
    # Every 30 real minutes, through both 02:xx hours.
    assert night == [utc(2025, 10, 26, 0, 0) + timedelta(minutes=30 * n) for n in range(6)]


def test_fires_between_is_bounded_and_oldest_first() -> None:
    every_second = CronSchedule("* * * * * *")
    start, end = utc(2026, 1, 1), utc(2026, 1, 2)
    assert every_second.fires_between(start, start + timedelta(seconds=3), 10) == [
        start + timedelta(seconds=n) for n in (1, 2, 3)
    ]
    newest = every_second.fires_between(start, end, 3)  # a day of seconds, newest three
    assert newest == [end - timedelta(seconds=n) for n in (2, 1, 0)]
    assert every_second.fires_between(end, start, 3) == []


def test_due_fires_coalesce_grace_and_bounds() -> None:
    minutely = CronSchedule("* * * * *")
    last, now = utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 5, 30)
    coalesced = due_fires(minutely, last=last, now=now, grace=180, coalesce=True)
    assert coalesced.fire == [utc(2026, 1, 1, 10, 5)]
    assert coalesced.missed == 4
    each = due_fires(minutely, last=last, now=now, grace=180, coalesce=False)
    assert each.fire == [utc(2026, 1, 1, 10, m) for m in (3, 4, 5)]
    assert each.missed == 2
    assert due_fires(minutely, last=last, now=now, grace=180, coalesce=False, limit=2).fire == [
        utc(2026, 1, 1, 10, 4),
        utc(2026, 1, 1, 10, 5),
    ]
    # Too late for all of them; and nothing at or before the last handled time.
    late = due_fires(minutely, last=last, now=utc(2026, 1, 1, 10, 5, 30), grace=20, coalesce=True)
    assert (late.fire, late.missed) == ([], 5)
    on_time = due_fires(minutely, last=utc(2026, 1, 1, 10, 5), now=now, grace=60, coalesce=True)
    assert on_time.fire == []


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("* * * *", "UTC", "has 4 fields"),
        ("61 * * * *", "UTC", "higher than the maximum"),
        ("x * * * *", "UTC", 'Unrecognized expression "x"'),
        ("0 0 30 2 *", "UTC", "never fires"),
        ("0 9 * * 8", "UTC", "out of range"),
        ("0 9 * * 5-1", "UTC", "runs backwards"),
        ("0 9 * * *", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_bad_schedules_say_what_is_wrong(expression: str, timezone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronSchedule(expression, timezone)


# -- settings ---------------------------------------------------------------------------------


def test_cron_jobs_from_the_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "LOOM_CRON",
        json.dumps([{"expression": "*/5 * * * *", "summary": "health", "job_id": "health"}]),
    )
    [job] = Settings().cron
    assert (job.job_id, job.timezone, job.coalesce, job.misfire_grace_time) == (
        "health", "UTC", True, 300.0,
    )  # fmt: skip
    monkeypatch.delenv("LOOM_CRON")
    config = tmp_path / "loom.toml"
    config.write_text(
        '[[cron]]\nexpression = "0 9 * * 1-5"\nsummary = "standup"\njob_id = "standup"\n'
        'session_id = "team"\ntimezone = "Europe/Berlin"\nurgency = "high"\ncoalesce = false\n'
        "payload = { room = 'ops' }\n"
        '[[cron]]\nexpression = "@hourly"\nsummary = "tick"\njob_id = "tick"\n'
    )
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    settings = Settings()
    assert [job.job_id for job in settings.cron] == ["standup", "tick"]
    standup = settings.cron[0]
    assert (standup.session_id, standup.urgency, standup.payload) == (
        "team",
        "high",
        {"room": "ops"},
    )
    crons = [a for a in adapters_from_settings(settings) if isinstance(a, Cron)]
    assert [(c.name, c.schedule.timezone, c.coalesce) for c in crons] == [
        ("cron:standup", "Europe/Berlin", False),
        ("cron:tick", "UTC", True),
    ]
    assert all(c.scheduled for c in crons)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([{"expression": "* * *", "summary": "s", "job_id": "a"}], "has 3 fields"),
        (
            [{"expression": "* * * * *", "summary": "s", "job_id": "a", "timezone": "Nowhere"}],
            "unknown timezone 'Nowhere'",
        ),
        (
            [
                {"expression": "* * * * *", "summary": "s", "job_id": "a"},
                {"expression": "0 * * * *", "summary": "t", "job_id": "a"},
            ],
            "job_id must be unique: a repeated",
        ),
        ([{"expression": "* * * * *", "summary": "s", "job_id": "has space"}], "job_id"),
        ([{"expression": "* * * * *", "summary": "s"}], "job_id"),
    ],
)
def test_bad_cron_settings_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, jobs: list[dict[str, str]], message: str
) -> None:
    monkeypatch.setenv("LOOM_CRON", json.dumps(jobs))
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_a_cron_given_in_code_replaces_the_configured_one_of_its_job() -> None:
    settings = Settings(cron=[{"expression": "* * * * *", "summary": "s", "job_id": "a"}])  # type: ignore[list-item]
    mine = Cron("0 * * * *", "mine", job_id="a")
    daemon = Daemon(Agent(Model.test()), settings=settings, adapters=[mine])
    assert [a for a in daemon.adapters if isinstance(a, Cron)] == [mine]


# -- firing -----------------------------------------------------------------------------------


class Published:
    """Consumes the attention queue (no attention role runs): the signals published."""

    def __init__(self) -> None:
        self.signals: list[RuntimeSignal] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.signals.append(RuntimeSignal.model_validate_json(delivery.body))
        await delivery.ack()


@pytest.fixture
async def scheduler() -> AsyncIterator[tuple[Daemon, Published]]:
    daemon = Daemon(Agent(Model.test()), settings=Settings())
    await daemon.start(["scheduler"])
    published = Published()
    await daemon.broker.consume(ATTENTION_QUEUE, published)
    yield daemon, published
    await daemon.stop()


async def settle(daemon: Daemon) -> None:
    await daemon.broker.join(ATTENTION_QUEUE, timeout=5)  # type: ignore[attr-defined]


def clock_at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


async def test_a_missed_fire_is_fired_once_on_start_within_the_grace_time(
    scheduler: tuple[Daemon, Published],
) -> None:
    daemon, published = scheduler
    await daemon.state.set_marker("cron-last:minutely", utc(2030, 1, 1, 10, 0).isoformat())
    cron = Cron(
        "* * * * *", "tick", job_id="minutely", session_id="ops",
        misfire_grace_time=180, clock=clock_at(utc(2030, 1, 1, 10, 5, 30)),
    )  # fmt: skip
    await cron.start(daemon)
    try:
        assert await cron.caught_up() == [utc(2030, 1, 1, 10, 5)]
    finally:
        await cron.stop()
    await settle(daemon)
    [signal] = published.signals
    assert (signal.source, signal.type, signal.summary, signal.session_id) == (
        "cron", "schedule", "tick", "ops",
    )  # fmt: skip
    assert signal.dedupe_key == "cron:minutely:2030-01-01T10:05:00+00:00"
    assert signal.payload["fire_time"] == "2030-01-01T10:05:00+00:00"
    assert signal.payload["job_id"] == "minutely"
    assert await daemon.state.marker("cron-last:minutely") == "2030-01-01T10:05:00+00:00"


async def test_without_coalesce_each_missed_fire_within_the_grace_time_fires(
    scheduler: tuple[Daemon, Published],
) -> None:
    daemon, published = scheduler
    await daemon.state.set_marker("cron-last:each", utc(2030, 1, 1, 10, 0).isoformat())
    cron = Cron(
        "* * * * *", "tick", job_id="each", misfire_grace_time=180, coalesce=False,
        clock=clock_at(utc(2030, 1, 1, 10, 5, 30)),
    )  # fmt: skip
    await cron.start(daemon)
    await cron.caught_up()
    await cron.stop()
    await settle(daemon)
    assert [s.payload["fire_time"][11:16] for s in published.signals] == ["10:03", "10:04", "10:05"]


async def test_a_new_job_or_one_missed_past_its_grace_fires_nothing_on_start(
    scheduler: tuple[Daemon, Published], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, published = scheduler
    now = utc(2030, 1, 1, 10, 5, 30)
    new = Cron("* * * * *", "tick", job_id="new", clock=clock_at(now))
    await new.start(daemon)
    assert await new.caught_up() == []
    await new.stop()
    # The first start is recorded, so fires after it can be caught up later.
    assert await daemon.state.marker("cron-last:new") == "2030-01-01T10:05:30+00:00"
    await daemon.state.set_marker("cron-last:old", utc(2030, 1, 1, 9, 0).isoformat())
    old = Cron("0 * * * *", "hourly", job_id="old", misfire_grace_time=60, clock=clock_at(now))
    with caplog.at_level(logging.WARNING, "loom.cron"):
        await old.start(daemon)
        assert await old.caught_up() == []
        await old.stop()
    await settle(daemon)
    assert published.signals == []
    assert "1 fire time(s) since 2030-01-01T09:00:00+00:00 not fired" in caplog.text


async def test_only_the_replica_that_wins_the_claim_publishes(
    scheduler: tuple[Daemon, Published],
) -> None:
    daemon, published = scheduler
    now = utc(2030, 1, 1, 10, 0, 0)
    replicas = [Cron("* * * * *", "tick", job_id="job", clock=clock_at(now)) for _ in range(3)]
    for replica in replicas:
        await replica.start(daemon)
    try:
        for replica in replicas:
            replica.watch_interval = 0.01
        # The losers watch until the winner records the fire as done.
        outcomes = await asyncio.gather(*(replica.fire(now) for replica in replicas))
        assert sorted(outcomes) == [False, False, True]
        # A fire another process claimed and then recorded as done is not published here.
        later = now + timedelta(minutes=1)
        assert await daemon.state.claim(fire_key("job", later), "elsewhere", 60) is None
        watching = asyncio.create_task(replicas[0].fire(later))
        await daemon.state.set_marker(fired_key("job", later), "elsewhere", 3600)
        assert await watching is False
    finally:
        for replica in replicas:
            await replica.stop()
    await settle(daemon)
    assert [s.dedupe_key for s in published.signals] == ["cron:job:2030-01-01T10:00:00+00:00"]
    winner = replicas[outcomes.index(True)]
    assert await daemon.state.claimed(fire_key("job", now)) == winner.owner


async def test_a_fire_that_cannot_be_published_is_released_and_retried(
    scheduler: tuple[Daemon, Published], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, published = scheduler
    fire = datetime.now(UTC).replace(microsecond=0)
    # A yearly schedule: the only fire in this test is the one it asks for.
    cron = Cron("0 0 1 1 *", "tick", job_id="retry", misfire_grace_time=600)
    await cron.start(daemon)
    await daemon.broker.close()  # the broker goes down
    try:
        with caplog.at_level(logging.WARNING, "loom.cron"):
            attempt = asyncio.create_task(cron.fire(fire))

            async def failed_once() -> bool:
                return "not published" in caplog.text

            await eventually(failed_once)
            # Released while it waits to retry: another replica could take it meanwhile.
            assert await daemon.state.claimed(fire_key("retry", fire)) is None
            await daemon.broker.start()  # and comes back
            assert await attempt is True
    finally:
        await cron.stop()
    await daemon.broker.consume(ATTENTION_QUEUE, published)  # close() ended the consumer
    await settle(daemon)
    assert [s.dedupe_key for s in published.signals] == [fire_key("retry", fire)]


async def test_a_fire_still_unpublished_at_the_end_of_its_grace_is_lost_loudly(
    scheduler: tuple[Daemon, Published], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, _ = scheduler
    fire = utc(2030, 1, 1, 10, 0)
    # The clock says the grace time is all but over: no time is left to retry.
    cron = Cron(
        "* * * * *", "tick", job_id="lost", misfire_grace_time=30,
        clock=clock_at(fire + timedelta(seconds=29.9)),
    )  # fmt: skip
    await cron.start(daemon)
    await cron.caught_up()
    await daemon.broker.close()
    try:
        with caplog.at_level(logging.ERROR, "loom.cron"):
            assert await cron.fire(fire) is False
    finally:
        await cron.stop()
        await daemon.broker.start()
    assert "fire at 2030-01-01T10:00:00+00:00 LOST" in caplog.text
    assert await daemon.state.claimed(fire_key("lost", fire)) is None


class Clock:
    """The memory state's clock (monotonic seconds), moved by hand: claims lapse on cue."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked() -> AsyncIterator[tuple[Daemon, Published, Clock]]:
    clock = Clock(1_000.0)
    daemon = Daemon(Agent(Model.test()), settings=Settings())
    daemon.state = MemoryState(clock=clock)
    await daemon.start(["scheduler"])
    published = Published()
    await daemon.broker.consume(ATTENTION_QUEUE, published)
    yield daemon, published, clock
    await daemon.stop()


def hang_first_publish(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first publish never gets the broker's confirm (its replica is about to die or
    stop); later ones go through."""
    publish = daemon.broker.publish
    calls = 0

    async def first_hangs(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        await publish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.broker, "publish", first_hangs)


async def test_a_fire_whose_replica_died_before_the_confirm_is_fired_by_another(
    clocked: tuple[Daemon, Published, Clock],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon, published, clock = clocked
    fire = utc(2030, 1, 1, 10, 0)
    a, b = (Cron("0 10 1 1 *", "tick", job_id="job", clock=clock_at(fire)) for _ in range(2))
    for replica in (a, b):
        await replica.start(daemon)
        replica.watch_interval = 0.01
    # A short claim: one publish, not the grace time.
    assert a.claim_ttl == daemon.settings.publish_timeout + 5 < a.misfire_grace_time
    hang_first_publish(daemon, monkeypatch)
    key = fire_key("job", fire)
    try:
        with caplog.at_level(logging.DEBUG, "loom.cron"):
            a_fire = asyncio.create_task(a.fire(fire))

            async def a_claimed() -> bool:
                return await daemon.state.claimed(key) == a.owner

            await eventually(a_claimed)
            b_fire = asyncio.create_task(b.fire(fire))

            async def b_lost() -> bool:
                return f"fired by {a.owner}" in caplog.text

            await eventually(b_lost)
            a_fire.cancel()  # A is killed: nothing of it runs again, its claim stays
            clock.now += a.claim_ttl  # and lapses, with the fire not done
            assert await b_fire is True
    finally:
        for replica in (a, b):
            await replica.stop()
    await settle(daemon)
    assert [s.dedupe_key for s in published.signals] == [key]
    assert await daemon.state.marker(fired_key("job", fire)) == b.owner


async def test_a_fire_recorded_as_done_is_never_published_again(
    clocked: tuple[Daemon, Published, Clock],
) -> None:
    daemon, published, clock = clocked
    fire = utc(2030, 1, 1, 10, 0)
    a, b = (Cron("* * * * *", "tick", job_id="job", clock=clock_at(fire)) for _ in range(2))
    for replica in (a, b):
        await replica.start(daemon)
    try:
        assert await a.fire(fire) is True
        clock.now += a.claim_ttl + 1  # its claim lapsed; the fire stays done
        assert await daemon.state.claimed(fire_key("job", fire)) is None
        assert await b.fire(fire) is False
        # Nor by a replica that starts later and catches up from before the fire.
        await daemon.state.set_marker("cron-last:job", (fire - timedelta(minutes=1)).isoformat())
        late = Cron("* * * * *", "tick", job_id="job", clock=clock_at(fire + timedelta(seconds=30)))
        await late.start(daemon)
        assert await late.caught_up() == []
        await late.stop()
    finally:
        for replica in (a, b):
            await replica.stop()
    await settle(daemon)
    assert [s.dedupe_key for s in published.signals] == [fire_key("job", fire)]


async def test_stop_hands_back_a_fire_the_broker_did_not_confirm(
    scheduler: tuple[Daemon, Published],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon, published = scheduler
    fire = utc(2030, 1, 1, 10, 0)
    await daemon.state.set_marker("cron-last:job", (fire - timedelta(minutes=1)).isoformat())
    now = clock_at(fire + timedelta(seconds=30))
    a, b = (Cron("* * * * *", "tick", job_id="job", clock=now) for _ in range(2))
    b.watch_interval = 0.01
    hang_first_publish(daemon, monkeypatch)
    key = fire_key("job", fire)
    with caplog.at_level(logging.WARNING, "loom.cron"):
        await a.start(daemon)  # its catch-up claims the fire; the publish hangs
        a.stop_timeout = 0.05

        async def a_claimed() -> bool:
            return await daemon.state.claimed(key) == a.owner

        await eventually(a_claimed)
        await b.start(daemon)
        assert await b.caught_up() == []  # held by A: B watches it
        try:
            # SIGTERM on A: the claim is released at once, not left to lapse (the memory
            # state's real clock would take the whole claim TTL), and B fires it.
            await a.stop()

            async def fired() -> bool:
                await settle(daemon)
                return len(published.signals) > 0

            await eventually(fired)
        finally:
            await b.stop()
    await settle(daemon)
    assert [s.dedupe_key for s in published.signals] == [key]
    assert await daemon.state.marker(fired_key("job", fire)) == b.owner
    assert "claim released for another replica" in caplog.text
    assert "LOST" not in caplog.text


class Rendezvous(Adapter):
    """A scheduled adapter whose stop waits (up to 5 s) for the other's stop to begin."""

    def __init__(self, name: str, stopping: list[str], everyone: asyncio.Event) -> None:
        self.name = name
        self.stopping = stopping
        self.everyone = everyone
        self.met: bool | None = None

    @property
    def scheduled(self) -> bool:
        return True

    async def stop(self) -> None:
        self.stopping.append(self.name)
        if len(self.stopping) == 2:
            self.everyone.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.everyone.wait()
        self.met = self.everyone.is_set()


class Broken(Adapter):
    name = "broken"

    @property
    def scheduled(self) -> bool:
        return True

    async def stop(self) -> None:
        raise RuntimeError("stop failed")


async def test_the_daemon_stops_its_scheduled_adapters_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopping: list[str] = []
    everyone = asyncio.Event()
    first, second = (
        Rendezvous("first", stopping, everyone),
        Rendezvous("second", stopping, everyone),
    )
    daemon = Daemon(Agent(Model.test()), settings=Settings(), adapters=[first, Broken(), second])
    await daemon.start(["scheduler"])
    with caplog.at_level(logging.ERROR, "loom.daemon"):
        await daemon.stop()
    # Each stop began while the other was still waiting: concurrently, not one by one.
    assert (first.met, second.met) == (True, True)
    assert "adapter broken: stop failed" in caplog.text


async def test_a_daemon_with_a_one_second_schedule_runs_the_agent() -> None:
    cron = Cron("* * * * * *", "Deployment health check is due", job_id="health", session_id="ops")
    settings = Settings(worker={"sweep_interval": 0.05})  # type: ignore[arg-type]
    daemon = Daemon(
        Agent(Model.test(), "You watch deployments."), settings=settings, adapters=[cron]
    )
    await daemon.start()
    try:
        assert (await daemon.readiness())["cron:health"] is True

        async def completed_runs() -> list[str]:
            snapshot = await daemon.state.sessions.load("ops")
            runs = snapshot.runs if snapshot else []
            return [run.output for run in runs if run.status == "completed"]

        async def two_runs() -> bool:
            return len(await completed_runs()) >= 2

        await eventually(two_runs)
    finally:
        await daemon.stop()
    assert (await daemon.readiness())["cron:health"] is False
    assert all("Deployment health check is due" in output for output in await completed_runs())
    decisions = [decision_view(d) for d in await daemon.state.decisions("ops")]
    assert {d["source"] for d in decisions} == {"cron"}
    assert {d["action"] for d in decisions} == {"queue"}
    assert len({d["signal_id"] for d in decisions}) == len(decisions)
