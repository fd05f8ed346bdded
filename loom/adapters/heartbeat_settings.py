"""The ``heartbeat`` settings section and its probes (``LOOM_HEARTBEAT__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ProbeSettings(BaseModel):
    """A heartbeat probe: ``url`` (HTTP GET) or ``host`` and ``port`` (TCP connect)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    url: str | None = Field(default=None, pattern=r"^https?://")
    expect_status: int = Field(default=200, ge=100, le=599)
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    timeout: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeSettings:
        tcp = self.host is not None or self.port is not None
        if (self.url is None) == (not tcp):
            raise ValueError(f"probe {self.name!r} needs either url, or host and port")
        if tcp and (self.host is None or self.port is None):
            raise ValueError(f"probe {self.name!r} needs both host and port")
        return self


class HeartbeatSettings(BaseModel):
    """The scheduler's heartbeat signal and its probes (off while ``interval`` is unset)."""

    model_config = ConfigDict(extra="forbid")

    interval: float | None = Field(default=None, gt=0)
    """Seconds between heartbeats; unset: no heartbeat."""
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@/-]{1,256}$")
    """The session of heartbeat and probe signals (unset: the default session)."""
    probes: list[ProbeSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _probes(self) -> HeartbeatSettings:
        names = [probe.name for probe in self.probes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"probe names must be unique: {', '.join(duplicates)}")
        if self.probes and self.interval is None:
            raise ValueError("probes run with the heartbeat: set heartbeat.interval")
        return self


__all__ = ["HeartbeatSettings", "ProbeSettings"]
