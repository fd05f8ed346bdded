"""The dependencies a daemon developer expects: the servers' fast parts, asked for by name."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {(r := Requirement(line)).name: r for line in project["dependencies"]}


def test_uvicorn_and_redis_come_with_their_standard_extras() -> None:
    required = requirements()
    assert "standard" in required["uvicorn"].extras
    assert "hiredis" in required["redis"].extras
    # Their parts come through the extras, not as dependencies of their own.
    assert not {"httptools", "hiredis", "uvloop"} & required.keys()
    assert "mcp" in required


def test_redis_parses_with_hiredis_and_uvicorn_with_httptools() -> None:
    import redis.utils
    import uvloop
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert redis.utils.HIREDIS_AVAILABLE
    assert AutoHTTPProtocol is HttpToolsProtocol  # what uvicorn's http="auto" picks
    assert uvloop.__version__
