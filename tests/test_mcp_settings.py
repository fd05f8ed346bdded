"""``LOOM_MCP_SERVERS`` and ``[[mcp]]`` TOML tables: the default agent's MCP servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from loom.capabilities import MCPCapability
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings


def test_servers_from_the_environment_reach_the_default_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOOM_CONFIG", raising=False)
    servers = [
        {"name": "k8s", "command": "k8s-mcp", "args": ["--ro"], "read_only": ["get_*"]},
        {
            "name": "gh",
            "url": "https://mcp.example/mcp",
            "headers": {"Authorization": "Bearer very-secret"},
            "require_approval": ["create_*"],
        },
    ]
    monkeypatch.setenv("LOOM_MCP_SERVERS", json.dumps(servers))
    settings = Settings()
    daemon = Daemon(settings=settings)
    names = [c.name for c in daemon.agent.capabilities]
    assert names == ["mcp:k8s", "mcp:gh"]
    k8s = daemon.agent.capabilities[0]
    assert isinstance(k8s, MCPCapability)
    assert (k8s.config.command, k8s.config.args, k8s.source.read_only) == (
        "k8s-mcp",
        ("--ro",),
        ("get_*",),
    )
    masked = json.dumps(settings.masked())
    assert "very-secret" not in masked
    assert '"Authorization": "***"' in masked


def test_toml_mcp_tables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "loom.toml"
    config.write_text(
        '[[mcp]]\nname = "k8s"\ncommand = "k8s-mcp"\nconnect = true\n\n'
        '[[mcp]]\nname = "db"\ncommand = "db-mcp"\nscope = "session"\n'
    )
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    monkeypatch.delenv("LOOM_MCP_SERVERS", raising=False)
    settings = Settings()
    assert [s["name"] for s in settings.mcp_servers] == ["k8s", "db"]
    assert settings.mcp_servers[1]["scope"] == "session"


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ([{"name": "x"}], "exactly one of command="),
        ([{"name": "x", "command": "a", "colour": "red"}], "unknown field"),
        ([{"name": "x", "command": "a"}, {"name": "x", "command": "b"}], "must be unique"),
        ([{"name": "x", "url": "https://h", "headers": {"Authorization": ""}}], "is empty"),
    ],
)
def test_bad_servers_are_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, servers: list[dict[str, object]], problem: str
) -> None:
    monkeypatch.delenv("LOOM_CONFIG", raising=False)
    monkeypatch.setenv("LOOM_MCP_SERVERS", json.dumps(servers))
    with pytest.raises(ValidationError, match=problem):
        Settings()
