"""Structured logs: a scripted flow at DEBUG with every kind of secret set writes none of
them, and its records carry the signal, session and run ids."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from loom import Agent, Model, ModelResponse, RuntimeSignal, ToolCall, tool
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.logs import (
    Redactor,
    configure,
    current_context,
    log_context,
    settings_secrets,
)
from loom.providers.base import ModelRequest
from loom.wire import publish_signal
from tests.test_daemon_memory import drain

API_TOKEN = "tok-3f9a-api-secret"
SIGNING_SECRET = "slack-signing-8c1d"
BOT_TOKEN = "xoxb-1234-bot-secret"
BROKER_PASSWORD = "rabbit/pw@42"  # URL-encoded in the URL
REDIS_PASSWORD = "redis-pw-77"
PROVIDER_KEY = "sk-ant-provider-key-99"
SECRETS = (API_TOKEN, SIGNING_SECRET, BOT_TOKEN, BROKER_PASSWORD, REDIS_PASSWORD, PROVIDER_KEY)

leaky = logging.getLogger("tests.leaky")


def secret_settings() -> Settings:
    return Settings(
        api_token=API_TOKEN,
        slack={"signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN},  # type: ignore[arg-type]
        broker_url="amqp://loom:rabbit%2Fpw%4042@rabbit.internal:5672/prod",
        state_url=f"redis://:{REDIS_PASSWORD}@redis.internal:6379/0",
        worker={"sweep_interval": 0.05},  # type: ignore[arg-type]
    )


@tool
def deploy(service: str) -> str:
    """A tool that mishandles secrets: it puts them in logs and in its error."""
    leaky.debug("deploying %s with token %s and bot %s", service, API_TOKEN, BOT_TOKEN)
    leaky.info("broker at amqp://loom:%s@rabbit.internal:5672/prod", "rabbit%2Fpw%4042")
    try:
        raise PermissionError(f"signing secret {SIGNING_SECRET} rejected by {REDIS_PASSWORD}")
    except PermissionError:
        leaky.exception("deploy of %s failed", service)
    raise RuntimeError(f"cannot use key {PROVIDER_KEY}")


def script(request: ModelRequest) -> ModelResponse:
    if request.iteration == 1:
        return ModelResponse.of_tool_calls(ToolCall("c1", "deploy", {"service": "api"}))
    return ModelResponse(text=f"done (I was told the token is {API_TOKEN})")


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_a_debug_flow_logs_no_secret_and_names_its_ids(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", PROVIDER_KEY)
    settings = secret_settings()
    stream = io.StringIO()
    configure(settings, level="DEBUG", fmt="json", stream=stream)
    # The flow runs in process; the secrets stay in the settings the logs were set up from.
    local = settings.model_copy(update={"broker_url": "memory://", "state_url": "memory://"})
    daemon = Daemon(Agent(Model.function(script), tools=[deploy]), settings=local)
    await daemon.start()
    try:
        signal = RuntimeSignal.create("deploy api", source="ci", type="deploy", session_id="ops")
        await publish_signal(daemon.broker, signal)
        await drain(daemon)
        leaky.warning("settings: %s", settings.model_dump())
    finally:
        await daemon.stop()
    output = stream.getvalue()

    for secret in SECRETS:
        assert secret not in output
    assert "rabbit%2Fpw%4042" not in output
    assert "amqp://loom:***@rabbit.internal" in output
    lines = records(output)
    decided = [r for r in lines if r["logger"] == "loom.attention"]
    assert decided
    assert {(r["signal_id"], r["session_id"]) for r in decided} == {(signal.id, "ops")}
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    run_id = snapshot.runs[0].run_id
    in_tool = [r for r in lines if r["logger"] == "tests.leaky"]
    assert len(in_tool) == 4
    assert {(r["run_id"], r["session_id"]) for r in in_tool[:3]} == {(run_id, "ops")}
    assert "PermissionError" in in_tool[2]["exc"]
    assert "signing secret *** rejected by ***" in in_tool[2]["exc"]
    [tool_failed] = [r for r in lines if r["logger"] == "loom.runtime"]
    assert tool_failed["msg"] == "tool deploy raised RuntimeError: cannot use key ***"
    assert tool_failed["run_id"] == run_id
    [worker] = [r for r in lines if r["logger"] == "loom.worker" and "completed" in r["msg"]]
    assert (worker["session_id"], worker["run_id"], worker["signal_id"]) == (
        "ops",
        run_id,
        signal.id,
    )
    assert "run_id" not in in_tool[3]  # logged after the flow, outside any run


async def test_each_decided_signal_is_logged_with_its_own_ids() -> None:
    """Signals delivered together are decided in one batch task; the hooks and records of
    each carry that signal's ids, not those of the delivery that started the batch."""
    seen: list[tuple[str, dict[str, str]]] = []

    def on_signal(*, signal: RuntimeSignal, **_: Any) -> None:
        seen.append((signal.id, current_context()))

    daemon = Daemon(Agent(Model.test()), settings=Settings(worker={"sweep_interval": 0.05}))  # type: ignore[arg-type]
    daemon.agent.on("signal_decided", on_signal)
    daemon.agent.on("signal_received", on_signal)
    signals = [
        RuntimeSignal.create(f"note {i}", urgency="low", session_id=f"s{i}") for i in range(5)
    ]
    with log_context(signal_id="sig_outside", session_id="outside", run_id="run_outside"):
        await daemon.start()
    try:
        for signal in signals:
            await publish_signal(daemon.broker, signal)
        await drain(daemon)
    finally:
        await daemon.stop()
    assert sorted(sid for sid, _ in seen) == sorted(2 * [s.id for s in signals])
    for signal_id, context in seen:
        session = next(s.session_id for s in signals if s.id == signal_id)
        assert context == {"signal_id": signal_id, "session_id": session}


def test_logfmt_is_one_line_of_key_values(restore_logging: None) -> None:
    stream = io.StringIO()
    configure(None, level="INFO", fmt="logfmt", stream=stream)
    with log_context(signal_id="sig_1", session_id="ops"):
        logging.getLogger("loom.test").info("hello %s", "world", extra={"attempt": 2})
    line = stream.getvalue().strip()
    assert ' level=info logger=loom.test msg="hello world" ' in line
    assert line.endswith("signal_id=sig_1 session_id=ops attempt=2")
    assert current_context() == {}


def test_auto_writes_json_unless_on_a_terminal(restore_logging: None) -> None:
    stream = io.StringIO()
    handler = configure(Settings(log={"format": "auto", "level": "warning"}), stream=stream)  # type: ignore[arg-type]
    logging.getLogger("loom.test").info("not at WARNING")
    logging.getLogger("loom.test").warning("shown")
    [record] = records(stream.getvalue())
    assert (record["level"], record["msg"]) == ("warning", "shown")
    again = configure(None, fmt="json", stream=stream)
    assert handler not in logging.getLogger().handlers  # replaced, not stacked
    assert again in logging.getLogger().handlers


def test_redactor_masks_values_encodings_and_url_passwords() -> None:
    redact = Redactor(["p@ss/word", "abc"])
    assert redact("login p@ss/word") == "login ***"
    assert redact("url-encoded p%40ss%2Fword") == "url-encoded ***"
    assert redact("short abc stays") == "short abc stays"  # too short to be a secret
    assert redact("postgres://u:hunter2@db/x and redis://:pw@r:6379") == (
        "postgres://u:***@db/x and redis://:***@r:6379"
    )
    assert (
        redact("no secrets in https://example.com/a:b") == "no secrets in https://example.com/a:b"
    )
    # A Sentinel URL: the primary's password, and the sentinels' in the query.
    assert redact("redis+sentinel://:pw1@h1:26379,h2:26379/loom/0?sentinel_password=pw2") == (
        "redis+sentinel://:***@h1:26379,h2:26379/loom/0?sentinel_password=***"
    )


def test_settings_secrets_finds_nested_and_url_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-123")
    found = set(settings_secrets(secret_settings()))
    assert {API_TOKEN, SIGNING_SECRET, BOT_TOKEN, REDIS_PASSWORD, "sk-openai-123"} <= found
    assert {BROKER_PASSWORD, "rabbit%2Fpw%4042"} <= found


def test_the_cli_logs_json_lines_or_logfmt_for_every_command() -> None:
    env = {**os.environ, "LOOM_MODEL": "test", "LOOM_API_TOKEN": API_TOKEN}

    def stderr(**extra: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "loom", "-v", "ask", "hello"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert API_TOKEN not in done.stderr
        return done.stderr.splitlines()

    json_lines = [json.loads(line) for line in stderr()]  # not a terminal: auto is JSON
    assert any(r["level"] == "debug" and r["logger"] == "asyncio" for r in json_lines)
    logfmt = stderr(LOOM_LOG__FORMAT="logfmt")
    assert any(" level=debug logger=asyncio " in line for line in logfmt)


def test_http_clients_log_requests_only_at_debug(restore_logging: None) -> None:
    stream = io.StringIO()
    configure(None, level="INFO", fmt="logfmt", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: POST /signals")
    logging.getLogger("httpx").warning("connection reset")
    assert "POST /signals" not in stream.getvalue()
    assert "connection reset" in stream.getvalue()
    configure(None, level="DEBUG", fmt="logfmt", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: GET /healthz")
    assert "GET /healthz" in stream.getvalue()
