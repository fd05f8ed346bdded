"""LOOM_CAPABILITIES: the daemon's default agent gets what is configured, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom.daemon.app import Daemon
from loom.daemon.settings import Settings


def daemon_with(monkeypatch: pytest.MonkeyPatch, capabilities: object | None) -> Daemon:
    for name in ("LOOM_CAPABILITIES", "LOOM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    if capabilities is not None:
        monkeypatch.setenv("LOOM_CAPABILITIES", json.dumps(capabilities))
    return Daemon(settings=Settings(model="test"))


def test_the_default_agent_offers_no_dangerous_tool_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = daemon_with(monkeypatch, None).agent
    assert [t.name for t in agent.tools] == []


def test_configured_capabilities_become_the_default_agents_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    skills = tmp_path / "skills"
    (skills / "triage").mkdir(parents=True)
    (skills / "triage" / "SKILL.md").write_text(
        "---\nname: triage\nwhen_to_use: an alert\n---\nLook at the logs.\n"
    )
    agent = daemon_with(
        monkeypatch,
        {
            "files": {"root": str(tmp_path), "read_only": True},
            "web": {"allow_hosts": ["status.internal"], "searxng_url": "http://search:8080"},
            "shell": {"allow": ["^uptime$"], "timeout": 30},
            "skills_dir": str(skills),
        },
    ).agent
    tools = {t.name: t for t in agent.tools}
    assert list(tools) == [
        "read_file",
        "list_files",
        "search_files",
        "fetch_url",
        "web_search",
        "run_command",
        "load_skill",
    ]
    assert callable(tools["run_command"].requires_approval)
    # The shell is destructive: the default agent's governance lets it reach its approval.
    assert agent.governance.allow_destructive  # type: ignore[attr-defined]


def test_read_only_files_alone_keep_destructive_calls_denied(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    agent = daemon_with(monkeypatch, {"files": {"root": str(tmp_path)}}).agent
    assert not agent.governance.allow_destructive  # type: ignore[attr-defined]


def test_a_root_that_does_not_exist_fails_at_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"LOOM_CAPABILITIES: files root .*nope.* does not exist"):
        daemon_with(monkeypatch, {"files": {"root": str(tmp_path / "nope")}})


def test_unknown_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_CAPABILITIES", json.dumps({"file": {"root": "/"}}))
    with pytest.raises(ValueError, match="file"):
        Settings()
