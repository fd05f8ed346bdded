"""A failed run says why in the log, without the key; a process warns at start about a
missing key only in the role that calls the model (the worker)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from loom import Agent, Model, RuntimeSignal
from loom.broker.memory import MemoryBroker
from loom.daemon import Daemon
from loom.daemon.attention import pending_json
from loom.daemon.settings import Settings
from loom.daemon.worker import SessionWorker
from loom.logs import configure
from loom.providers.retry import RetryPolicy
from loom.state.memory_state import MemoryState
from loom.wire import TOPOLOGY
from tests.fakes.llm_server import ANTHROPIC_MESSAGES, FakeLLMServer, FakeReply, anthropic_error

WRONG_KEY = "sk-ant-wrong-key-0123456789"
KEY_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_CONFIG_DIR",
    "ANTHROPIC_IDENTITY_TOKEN",
    "ANTHROPIC_IDENTITY_TOKEN_FILE",
    "OPENAI_API_KEY",
)


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (*KEY_VARIABLES, "LOOM_MODEL", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    # No profile on disk either (the anthropic SDK looks for one under ~/.config).
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


@pytest.mark.parametrize("key_from", ["environment", "code"])
async def test_a_run_failed_on_a_wrong_key_is_logged_at_warning_with_the_reason(
    fake_llm: FakeLLMServer, no_keys: pytest.MonkeyPatch, restore_logging: None, key_from: str
) -> None:
    # A key passed in code is no setting nor variable the log handler knows to mask: the
    # provider error itself must not carry it.
    in_code = {"api_key": WRONG_KEY} if key_from == "code" else {}
    if not in_code:
        no_keys.setenv("ANTHROPIC_API_KEY", WRONG_KEY)
    # Loom's own handler (JSON, redacting), configured as `loom worker` does at start.
    log_stream = io.StringIO()
    configure(None, level="INFO", fmt="json", stream=log_stream)
    # Some providers echo (part of) the key they refused: the log must not carry it.
    refusal = anthropic_error(401, "authentication_error", f"invalid x-api-key {WRONG_KEY}")
    fake_llm.script(ANTHROPIC_MESSAGES, FakeReply(status=401, json=refusal))
    model = Model.anthropic(
        "claude-sonnet-4-6", base_url=fake_llm.anthropic_base_url, retry=RetryPolicy(0), **in_code
    )
    agent = Agent(model, "Be brief.")
    broker = MemoryBroker(topology=TOPOLOGY)
    await broker.start()
    state = MemoryState()
    signal = RuntimeSignal.create("deploy failed", session_id="ops")
    await state.add_pending("ops", pending_json(signal, "queue"))
    await state.mark_ready("ops")
    worker = SessionWorker(agent, broker, state, sweep_interval=3600)
    try:
        await worker.run_until_idle(timeout=30)
    finally:
        await worker.stop(timeout=1)
        await agent.aclose()
        await broker.close()

    records = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    [failed] = [r for r in records if r["logger"] == "loom.worker" and "failed" in r["msg"]]
    assert failed["level"] == "warning"
    assert "authentication failed" in failed["msg"]
    assert "invalid x-api-key" in failed["msg"]
    assert failed["session_id"] == "ops"
    assert WRONG_KEY not in log_stream.getvalue()
    snapshot = await agent.session_store.load("ops")
    assert snapshot is not None
    [run] = snapshot.runs
    assert run.error is not None
    assert "invalid x-api-key ***" in run.error  # nor in the result, its replies, the API
    assert WRONG_KEY not in run.error


async def served(settings: Settings, roles: tuple[str, ...]) -> None:
    daemon = Daemon(settings=settings)
    await daemon.start(roles)
    await daemon.stop()


def model_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name in ("loom.daemon", "loom.model")
    ]


@pytest.mark.parametrize("role", ["gateway", "attention", "scheduler"])
async def test_roles_that_call_no_model_do_not_warn_about_it(
    no_keys: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, role: str
) -> None:
    with caplog.at_level(logging.WARNING):
        await served(Settings(), (role,))
        await served(Settings(model="anthropic:claude-sonnet-4-6"), (role,))
    assert model_warnings(caplog) == []


async def test_the_worker_warns_once_about_the_offline_test_model(
    no_keys: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        await served(Settings(), ("worker",))
    [warning] = model_warnings(caplog)
    assert "offline test model" in warning
    assert "ANTHROPIC_API_KEY" in warning


@pytest.mark.parametrize(
    ("model", "variable"),
    [("anthropic:claude-sonnet-4-6", "ANTHROPIC_API_KEY"), ("openai:gpt-5.1", "OPENAI_API_KEY")],
)
async def test_the_worker_warns_at_start_when_the_models_key_is_missing(
    no_keys: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, model: str, variable: str
) -> None:
    with caplog.at_level(logging.WARNING):
        await served(Settings(model=model), ("worker",))
    [warning] = model_warnings(caplog)
    assert model in warning
    assert variable in warning
    caplog.clear()
    no_keys.setenv(variable, "a-key-of-some-kind")
    with caplog.at_level(logging.WARNING):
        await served(Settings(model=model), ("worker",))
    assert model_warnings(caplog) == []
