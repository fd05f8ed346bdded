"""Cron expressions as pure functions of time: no clock, no I/O, so tests need no sleeps.

``CronSchedule("*/5 * * * *", "Europe/Berlin")`` parses once; ``next_after(moment)`` and
``due_fires(...)`` answer for any moment the caller passes in (the injected clock).

Accepted: the five standard fields (minute hour day-of-month month day-of-week), or six with
a leading seconds field (``*/10 * * * * *``: every ten seconds), or a macro (``@hourly``,
``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``). Fields follow
standard cron, not APScheduler 3's own convention where they differ:

- day-of-week numbers are cron's: 0 or 7 is Sunday, 1 is Monday (names work too);
- when both day-of-month and day-of-week are restricted (neither starts with ``*``), a day
  matching either fires, as in Vixie cron (``0 9 1 * mon``: the 1st and every Monday).

Daylight saving time: a local time skipped by the clock change fires once, right after the
jump; a local time that occurs twice fires once (the first) when the hour field is fixed,
and at both instants when the hour field starts with ``*`` (``*/30 * * * *`` keeps firing
every 30 real minutes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_CATCH_UP = 100
"""The most fire times handed out at once when ``coalesce`` is off (the newest win)."""

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_APS_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # names APScheduler also reads
_DOW_ITEM = re.compile(r"^(\*|[0-9a-z]{1,3})(?:-([0-9a-z]{1,3}))?(?:/(\d+))?$")
_TICK = timedelta(microseconds=1)


def check_timezone(name: str) -> ZoneInfo:
    """The zone named ``name``; ValueError with a hint when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None


def _day(token: str) -> int:
    if token.isdigit():
        number = int(token)
        if number > 7:
            raise ValueError(f"day of week {number} is out of range 0-7")
        return number % 7
    if token not in _DAY_NAMES:
        raise ValueError(f"unknown day of week {token!r}")
    return _DAY_NAMES.index(token)


def cron_weekdays(field: str) -> str:
    """A cron day-of-week field in APScheduler 3's terms (names, so 0 and 7 mean Sunday)."""
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.match(item)
        if match is None:
            raise ValueError(f"cannot read day-of-week item {item!r}")
        first, last, step = match.groups()
        if first == "*":
            low, high = 0, 6
        else:
            low = _day(first)
            high = (7 if last == "7" else _day(last)) if last else (6 if step else low)
        if step is not None and int(step) < 1:
            raise ValueError("a day-of-week step must be at least 1")
        if high < low:
            raise ValueError(f"day-of-week range {item!r} runs backwards")
        days.update(day % 7 for day in range(low, high + 1, int(step or 1)))
    return ",".join(_APS_DAYS[day] for day in sorted(days))


def _trigger(fields: list[str], zone: ZoneInfo) -> Any:
    # Imported here: parsing is the only place that needs APScheduler.
    from apscheduler.triggers.combining import OrTrigger  # type: ignore[import-untyped]
    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

    second, minute, hour, dom, month, dow = fields
    common = {"second": second, "minute": minute, "hour": hour, "month": month, "timezone": zone}
    if dow == "*":
        return CronTrigger(day=dom, day_of_week="*", **common)
    weekdays = cron_weekdays(dow)
    if dom.startswith("*") or dow.startswith("*"):
        return CronTrigger(day=dom, day_of_week=weekdays, **common)
    return OrTrigger(
        [
            CronTrigger(day=dom, day_of_week="*", **common),
            CronTrigger(day_of_week=weekdays, **common),
        ]
    )


class CronSchedule:
    """A parsed cron expression in a timezone; fire times come back timezone-aware UTC."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = expression.strip()
        self.timezone = timezone
        zone = check_timezone(timezone)
        text = MACROS.get(self.expression.lower(), self.expression)
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ValueError(
                f"cron expression {expression!r} has {len(fields)} fields; use 5 (minute hour "
                "day month weekday), 6 with seconds first, or a macro such as @hourly"
            )
        try:
            self._trigger = _trigger(fields, zone)
        except ValueError as problem:
            raise ValueError(f"cron expression {expression!r}: {problem}") from None
        self._fixed_hour = not fields[2].startswith("*")
        self.has_seconds = len(text.split()) == 6
        # Validation reads the real clock once; every later answer depends on its arguments.
        if self.next_after(datetime.now(UTC)) is None:
            raise ValueError(f"cron expression {expression!r} never fires")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r})"

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment`` (None: it never fires again)."""
        start = moment.astimezone(UTC) + _TICK
        while True:
            fire: datetime | None = self._trigger.get_next_fire_time(None, start)
            if fire is None:
                return None
            if not (self._fixed_hour and fire.fold == 1 and _repeated(fire)):
                return fire.astimezone(UTC)
            start = fire.astimezone(UTC) + _TICK  # the second instance of a fixed local time

    def fires_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Fire times in ``(after, until]``, oldest first; at most the newest ``limit``."""
        if limit <= 0 or until <= after:
            return []
        window = timedelta(seconds=1)
        while True:
            start = max(after, until - window)
            fires: list[datetime] = []
            fire = self.next_after(start)
            while fire is not None and fire <= until:
                fires.append(fire)
                fire = self.next_after(fire)
            if len(fires) >= limit or start == after:
                return fires[-limit:]
            # Look further back only as far as needed: a schedule every second over a grace
            # of a day must not mean 86,400 steps.
            window *= 4


def _repeated(fire: datetime) -> bool:
    """True when ``fire``'s local time also occurred an hour (or so) earlier (DST end)."""
    first = fire.replace(fold=0)
    return first.astimezone(UTC) != fire.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class DueFires:
    """What a scheduler should do now: ``fire`` these times, oldest first; ``missed`` counts
    the fire times passed over (past the grace time, coalesced, or beyond the bound)."""

    fire: list[datetime]
    missed: int


def due_fires(
    schedule: CronSchedule,
    *,
    last: datetime,
    now: datetime,
    grace: float,
    coalesce: bool,
    limit: int = MAX_CATCH_UP,
) -> DueFires:
    """The fire times after ``last`` (handled already) up to ``now`` to fire now.

    Only those no older than ``grace`` seconds are fired: with ``coalesce`` the newest of them
    once, else each of them (at most ``limit``, the newest).
    """
    horizon = max(last, now - timedelta(seconds=grace))
    within = schedule.fires_between(horizon, now, 1 if coalesce else limit)
    # Counted only over a bounded stretch: this is for the log, not for accounting.
    earlier = schedule.fires_between(last, now, MAX_CATCH_UP + 1)
    missed = max(len(earlier) - len(within), 0)
    return DueFires(within, missed)


__all__ = ["MACROS", "CronSchedule", "DueFires", "check_timezone", "cron_weekdays", "due_fires"]
