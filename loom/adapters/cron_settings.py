"""The ``cron`` settings: one ``[[cron]]`` table (or ``LOOM_CRON`` entry) per job."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loom.adapters.cron_schedule import CronSchedule, check_timezone
from loom.signals import Urgency


class CronJobSettings(BaseModel):
    """One ``[[cron]]`` job: a signal at each fire time, once across the scheduler replicas."""

    model_config = ConfigDict(extra="forbid")

    expression: str
    """5 fields (minute hour day month weekday), 6 with seconds first, or ``@hourly`` etc."""
    summary: str = Field(min_length=1)
    job_id: str = Field(pattern=r"^[A-Za-z0-9_.@/-]{1,128}$")
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@/-]{1,256}$")
    timezone: str = "UTC"
    """An IANA zone (``Europe/Berlin``): the expression's times are local to it."""
    payload: dict[str, Any] = Field(default_factory=dict)
    urgency: Urgency = "normal"
    misfire_grace_time: float = Field(default=300.0, gt=0)
    """Seconds late a fire may still happen (after downtime, or while the broker is down)."""
    coalesce: bool = True
    """Several missed fires fire once (off: each, at most 100)."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        check_timezone(value)
        return value

    @model_validator(mode="after")
    def _schedule(self) -> CronJobSettings:
        CronSchedule(self.expression, self.timezone)  # raises with what is wrong
        return self


def unique_jobs(jobs: list[CronJobSettings]) -> list[CronJobSettings]:
    """``jobs``, unless a ``job_id`` repeats."""
    ids = [job.job_id for job in jobs]
    duplicates = sorted({job_id for job_id in ids if ids.count(job_id) > 1})
    if duplicates:
        raise ValueError(f"cron job_id must be unique: {', '.join(duplicates)} repeated")
    return jobs


__all__ = ["CronJobSettings", "unique_jobs"]
