"""Daemon settings: environment, TOML file, validation and masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from loom.daemon.app import ROLES
from loom.daemon.settings import Settings, mask_url
from loom.policies.attention import SessionView
from loom.signals import RuntimeSignal


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOM_CONFIG", raising=False)
    settings = Settings()
    assert settings.broker_url == "memory://"
    assert settings.state_url == "memory://"
    assert settings.in_process
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)


def test_environment_with_nested_fields_and_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_HTTP__PORT", "9001")
    monkeypatch.setenv("LOOM_WORKER__CONCURRENCY", "3")
    monkeypatch.setenv("LOOM_API_TOKEN", "s3cret")
    monkeypatch.setenv("LOOM_ATTENTION_RULES", '[{"source": "ci*", "action": "observe"}]')
    settings = Settings()
    assert settings.http.port == 9001
    assert settings.worker.concurrency == 3
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "s3cret"
    [rule] = settings.attention_rules
    signal = RuntimeSignal.create("build", source="ci-main")
    assert rule.matches(signal, SessionView("s"))
    assert "s3cret" not in str(settings.masked())


def test_toml_file_and_environment_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "loom.toml"
    config.write_text('model = "test"\nshutdown_timeout = 7\n[http]\nport = 9100\n')
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    monkeypatch.setenv("LOOM_SHUTDOWN_TIMEOUT", "9")
    settings = Settings()
    assert settings.model == "test"
    assert settings.http.port == 9100
    assert settings.shutdown_timeout == 9  # the environment wins


def test_each_role_listens_on_its_own_port_unless_one_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LOOM_CONFIG", "LOOM_HTTP", "LOOM_HTTP__PORT"):
        monkeypatch.delenv(name, raising=False)
    http = Settings().http
    ports = {role: http.port_for((role,)) for role in ROLES}
    assert ports == {"gateway": 8080, "scheduler": 8081, "attention": 8082, "worker": 8083}
    assert http.port_for(ROLES) == 8080  # loom run
    monkeypatch.setenv("LOOM_HTTP__PORT", "8080")  # set, even to the default: it wins
    assert Settings().http.port_for(("worker",)) == 8080
    monkeypatch.delenv("LOOM_HTTP__PORT")
    config = tmp_path / "loom.toml"
    config.write_text("[http]\nport = 9100\n")
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    assert Settings().http.port_for(("attention",)) == 9100


def test_missing_config_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        Settings()


def test_bad_urls_and_unknown_settings_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_BROKER_URL", "kafka://x")
    with pytest.raises(ValidationError, match="LOOM_BROKER_URL"):
        Settings()
    monkeypatch.delenv("LOOM_BROKER_URL")
    with pytest.raises(ValidationError):
        Settings(worker={"concurrency": 0})  # type: ignore[arg-type]


def test_urls_are_masked() -> None:
    assert mask_url("amqp://loom:hunter2@mq:5672/prod") == "amqp://loom:***@mq:5672/prod"
    assert (
        mask_url("redis://r:6379/0?password=hunter2&db=1") == "redis://r:6379/0?password=***&db=1"
    )
    assert mask_url("memory://") == "memory://"
