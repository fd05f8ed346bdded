"""``LOOM_CAPABILITIES``: which built-in capabilities the daemon's default agent gets.

JSON in the variable (or a ``[capabilities]`` table in the settings file), e.g.
``{"files": {"root": "/srv/logs"}, "web": {"allow_hosts": ["status.internal"]},
"shell": {"allow": ["uptime"]}, "skills_dir": "/etc/loom/skills"}``. Unset: none, so the
default agent offers no tool that reads, fetches or runs anything.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from loom.capabilities import Capability
from loom.tools.confined import DEFAULT_EXCLUDE
from loom.tools.web_search import SearxngSearch


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilesCapabilitySettings(_Section):
    root: str
    read_only: bool = True
    max_read_bytes: int = Field(default=256 * 1024, ge=1)
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))


class WebCapabilitySettings(_Section):
    allow_private: bool = False
    allow_hosts: list[str] | None = None
    max_bytes: int = Field(default=2 * 1024 * 1024, ge=1)
    timeout: float = Field(default=20.0, gt=0)
    searxng_url: str | None = None
    """A SearXNG instance with its JSON format on: adds ``web_search``."""


class ShellCapabilitySettings(_Section):
    require_approval: bool = True
    timeout: float = Field(default=60.0, gt=0)
    max_output_bytes: int = Field(default=64 * 1024, ge=2)
    allow: list[str] = Field(default_factory=list)
    cwd: str | None = None
    """Default: the files root when files are configured, else the process's directory."""


class CapabilitiesSettings(_Section):
    files: FilesCapabilitySettings | None = None
    web: WebCapabilitySettings | None = None
    shell: ShellCapabilitySettings | None = None
    skills_dir: str | None = None

    @property
    def destructive(self) -> bool:
        """True when a configured tool is destructive (shell, writable files): the default
        agent's governance must then let destructive calls through (each shell call
        still waits for approval unless configured otherwise)."""
        return self.shell is not None or (self.files is not None and not self.files.read_only)

    def build(self) -> list[Capability]:
        """The capabilities; a bad root or pattern is a ValueError naming the section."""
        built: list[Capability] = []
        try:
            if self.files is not None:
                f = self.files
                built.append(
                    Capability.files(
                        f.root,
                        read_only=f.read_only,
                        max_read_bytes=f.max_read_bytes,
                        exclude=f.exclude,
                    )
                )
            if self.web is not None:
                w = self.web
                built.append(
                    Capability.web(
                        allow_private=w.allow_private,
                        allow_hosts=w.allow_hosts,
                        max_bytes=w.max_bytes,
                        timeout=w.timeout,
                        search=SearxngSearch(w.searxng_url) if w.searxng_url else None,
                    )
                )
            if self.shell is not None:
                s = self.shell
                cwd = s.cwd or (self.files.root if self.files is not None else None)
                built.append(
                    Capability.shell(
                        require_approval=s.require_approval,
                        timeout=s.timeout,
                        max_output_bytes=s.max_output_bytes,
                        allow=s.allow,
                        cwd=cwd,
                    )
                )
            if self.skills_dir is not None:
                built.append(Capability.skills_dir(self.skills_dir))
        except ValueError as exc:
            raise ValueError(f"LOOM_CAPABILITIES: {exc}") from None
        return built


__all__ = [
    "CapabilitiesSettings",
    "FilesCapabilitySettings",
    "ShellCapabilitySettings",
    "WebCapabilitySettings",
]
