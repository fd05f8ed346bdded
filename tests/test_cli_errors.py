"""The ``loom`` command fails cleanly: one line saying what is wrong, no traceback, no
pydantic links; a closed pipe is quiet; every command and option says what it is for;
``--limit`` means the same everywhere. Each runs the CLI as a subprocess."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.daemon.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_RABBITMQ = "amqp://guest:guest@127.0.0.1:1/"
NOISE = ("Traceback", "Event loop is closed", "Task was destroyed", "pydantic.dev")


def environment(**settings: str) -> dict[str, str]:
    """The caller's environment without its LOOM_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    # A port no other test listens on: `loom run` must fail before it binds anyway.
    return env | {"LOOM_HTTP__PORT": "1", "PYTHONUNBUFFERED": "1"} | settings


def loom(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", *args],
        cwd=ROOT,
        env=environment(**settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(stderr: str) -> str:
    for noise in NOISE:
        assert noise not in stderr
    [line] = stderr.splitlines()
    return line


@pytest.mark.parametrize("command", ["config", "run"])
@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        (
            "LOOM_ATTENTION_RULES",
            '[{"match": ',
            "LOOM_ATTENTION_RULES: not JSON: Expecting value: line 1 column 12 (char 11)",
        ),
        (
            "LOOM_ATTENTION_RULES",
            '[{"action": "zap"}]',
            "LOOM_ATTENTION_RULES[0].action: Input should be",
        ),
        ("LOOM_HTTP__PORT", "abc", "LOOM_HTTP__PORT: Input should be a valid integer"),
    ],
)
def test_a_settings_error_is_one_line_naming_the_variable_and_the_place(
    command: str, variable: str, value: str, says: str
) -> None:
    done = loom(command, **{variable: value})
    assert done.returncode == 2
    assert done.stdout == ""
    line = one_line(done.stderr)
    assert line.startswith(f"loom: error: bad settings: {says}")


def test_other_input_errors_are_one_line_naming_the_field() -> None:
    done = loom("send", "hello", "--session", "not a session id!")
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith("loom: error: session_id: String should match pattern")


@pytest.mark.parametrize(
    ("args", "settings", "says"),
    [
        (("run",), {"LOOM_STATE_URL": UNREACHABLE_REDIS}, "Redis at redis://127.0.0.1:1/0"),
        (("worker",), {"LOOM_BROKER_URL": UNREACHABLE_RABBITMQ}, "RabbitMQ at amqp://guest:***@"),
        (("dlq", "list"), {"LOOM_BROKER_URL": UNREACHABLE_RABBITMQ}, "RabbitMQ at amqp://"),
        (("feedback",), {"LOOM_STATE_URL": UNREACHABLE_REDIS}, "Redis at redis://127.0.0.1:1/0"),
    ],
)
def test_a_missing_service_is_one_line(
    args: tuple[str, ...], settings: dict[str, str], says: str
) -> None:
    done = loom(*args, **settings)
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert line.startswith(f"loom: error: {says}")


@pytest.fixture
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose read end is already closed: as `| head -1` once head
    has read its line and gone, every write to it fails."""
    read, write = os.pipe()
    os.close(read)
    yield write
    os.close(write)


def test_a_closed_pipe_ends_the_command_quietly(closed_pipe: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loom", "config"],
        cwd=ROOT,
        env=environment(),
        stdout=closed_pipe,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert done.stderr == ""
    assert done.returncode == 1


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every (sub)command: its words, its parser, and the help it is listed with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, listed.get(name)
                yield from commands(sub, (*path, name))


def test_every_command_and_option_has_help() -> None:
    parser = build_parser()
    found = list(commands(parser))
    assert {path[0] for path, _, _ in found} >= {"run", "send", "config", "dlq", "feedback"}
    missing: list[str] = []
    for path, sub, listed in [((), parser, "top"), *found]:
        where = " ".join(("loom", *path))
        if not listed:
            missing.append(where)
        for action in sub._actions:
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    done = loom("--help")
    assert done.returncode == 0
    shown = " ".join(done.stdout.split())  # argparse wraps the lines
    for path, _, listed in found:
        if len(path) == 1:
            assert f"{path[0]} {listed}" in shown


def limited() -> list[tuple[str, ...]]:
    """Every command that takes --limit."""
    return [
        path
        for path, sub, _ in commands(build_parser())
        if any("--limit" in action.option_strings for action in sub._actions)
    ]


def test_the_commands_with_a_limit_are_known() -> None:
    assert limited() == [("feedback",), ("dlq", "list"), ("dlq", "replay")]


@pytest.mark.parametrize("path", limited(), ids=" ".join)
def test_limit_zero_is_refused_alike_everywhere(path: tuple[str, ...]) -> None:
    done = loom(*path, "--limit", "0")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"loom {' '.join(path)}: error: argument --limit: must be at least 1, not 0"
    )


@pytest.mark.parametrize(
    "variable",
    [
        "LOOM_API_TOKEN",
        "LOOM_WEBHOOK_SECRET",
        "LOOM_SLACK__SIGNING_SECRET",
        "LOOM_SLACK__BOT_TOKEN",
        "LOOM_WEBHOOKS__GITHUB_SECRET",
        "LOOM_WEBHOOKS__MAPPINGS__DEPLOYS__TOKEN",
    ],
)
@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_credential_is_a_configuration_error(variable: str, blank: str) -> None:
    """A blank key (an empty value in a Kubernetes Secret, a compose file's unset
    ``${TOKEN}``) stops the process naming the setting: it never turns authentication off."""
    settings = {variable: blank}
    if "MAPPINGS" in variable:
        settings["LOOM_WEBHOOKS__MAPPINGS__DEPLOYS__SUMMARY"] = "title"
    done = loom("config", **settings)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith(f"loom: error: bad settings: {variable}: is empty"), line


def test_a_bad_secret_setting_is_named_but_its_value_never_shown() -> None:
    """Before: ``LOOM_WEBHOOKS.mappings.x.token: Input should be a valid string (got
    12345678)`` printed the secret given in the wrong shape."""
    result = loom(
        "config",
        LOOM_WEBHOOKS='{"mappings": {"x": {"summary": "t", "token": 12345678}}}',
    )
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "LOOM_WEBHOOKS.mappings.x.token" in line
    assert "12345678" not in line
