"""Provider plumbing shared by every vendor: retries, prices, model strings, environment."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, AuthenticationError, Generation, ProviderError, RunStatus, Usage
from loom.model import DEFAULT_ANTHROPIC_MODEL, DEFAULT_OPENAI_MODEL, Model
from loom.providers import pricing
from loom.providers.anthropic import AnthropicModel
from loom.providers.openai import OpenAIModel
from loom.providers.pricing import ModelPrice, apply_cost, price_of, register_price
from loom.providers.retry import RetryPolicy, call_with_retries, parse_retry_after
from loom.providers.test import TestModel
from tests.fakes.llm_server import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    FakeLLMServer,
    anthropic_message,
    openai_chat,
)

FAST = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02)
OPEN_AGENTS: list[Agent] = []


def opened(agent: Agent) -> Agent:
    OPEN_AGENTS.append(agent)
    return agent


@pytest.fixture(autouse=True)
async def _close_agents() -> AsyncIterator[None]:
    # Close SDK clients on the test's own loop (see tests/test_provider_anthropic.py).
    yield
    while OPEN_AGENTS:
        await OPEN_AGENTS.pop().aclose()


# -- parse_retry_after ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms wins
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # bad ms falls back
        ({"retry-after": "garbage"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "Wed, 99 Foo 2024"}, None),
        ({"other": "1"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"retry-after": future})
    assert seconds is not None
    assert 27 <= seconds <= 30.5
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_parse_retry_after_date_without_zone_is_utc() -> None:
    # RFC 5322 "-0000" parses to a naive datetime; it must not be read as local time.
    future = email.utils.formatdate(time.time() + 60)  # "... -0000"
    assert future.endswith("-0000")
    seconds = parse_retry_after({"retry-after": future})
    assert seconds is not None
    assert 57 <= seconds <= 60.5


# -- RetryPolicy ------------------------------------------------------------------------------


def test_delay_backs_off_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=5.0)
    for retry, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (10, 5.0)]:
        for _ in range(50):
            delay = policy.delay(retry, None)
            assert delay is not None
            assert 0.75 * ceiling <= delay <= ceiling


def test_delay_honours_retry_after_up_to_the_limit() -> None:
    policy = RetryPolicy(max_retry_after=10.0)
    assert policy.delay(0, 3.0) == 3.0
    assert policy.delay(5, 0.0) == 0.0
    assert policy.delay(0, 10.0) == 10.0
    assert policy.delay(0, 10.5) is None


async def test_call_with_retries_counts_attempts() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        raise ProviderError("busy", provider="x", status=503, retryable=True)

    def classify(exc: Exception) -> ProviderError:
        raise AssertionError("ProviderErrors are not re-classified")

    with pytest.raises(ProviderError) as caught:
        await call_with_retries(flaky, FAST, classify)
    assert calls == 3
    assert caught.value.attempts == 3
    assert str(caught.value) == "x: busy (HTTP 503) after 3 attempts"


async def test_call_with_retries_classifies_other_errors() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("reset")
        return "ok"

    def classify(exc: Exception) -> ProviderError:
        return ProviderError(str(exc), retryable=isinstance(exc, ConnectionError))

    assert await call_with_retries(flaky, FAST, classify) == "ok"
    assert calls == 2


async def test_call_with_retries_does_not_retry_non_retryable() -> None:
    calls = 0

    async def denied() -> str:
        nonlocal calls
        calls += 1
        raise AuthenticationError("bad key", provider="x", status=401)

    with pytest.raises(AuthenticationError):
        await call_with_retries(denied, FAST, lambda exc: ProviderError(str(exc)))
    assert calls == 1


# -- pricing ----------------------------------------------------------------------------------


@pytest.fixture
def prices(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModelPrice]:
    """A private copy of the price table, so registrations do not leak into other tests."""
    table = dict(pricing.PRICES)
    monkeypatch.setattr(pricing, "PRICES", table)
    return table


def test_price_of_exact_and_provider_prefixed_names() -> None:
    assert price_of("gpt-4o") == ModelPrice(2.5, 10.0, cache_read=1.25)
    assert price_of("openai:gpt-4o") == price_of("gpt-4o")
    assert price_of("anthropic:claude-haiku-4-5") == price_of("claude-haiku-4-5")
    assert price_of("nobody-knows-this-model") is None
    assert price_of("") is None


def test_price_of_variants_are_not_guessed_from_a_prefix() -> None:
    assert price_of("gpt-4.1-nano") != price_of("gpt-4.1")
    assert price_of("o3-pro") is None
    assert price_of("claude-opus-4-6") is None
    assert price_of("claude-sonnet-4-5-latest") == price_of("claude-sonnet-4-5")


def test_price_of_dated_snapshots_use_their_base_price() -> None:
    assert price_of("claude-sonnet-4-5-20250929") == price_of("claude-sonnet-4-5")
    assert price_of("claude-haiku-4-5-20251001") == price_of("claude-haiku-4-5")
    assert price_of("gpt-4o-2024-08-06") == price_of("gpt-4o")
    # "gpt-4o-mini" is longer than "gpt-4o": its snapshots get the mini price.
    assert price_of("gpt-4o-mini-2024-07-18") == price_of("gpt-4o-mini")
    assert price_of("gpt-4o-mini") != price_of("gpt-4o")
    assert price_of("o3-mini-2025-01-31") == price_of("o3-mini")
    assert price_of(DEFAULT_ANTHROPIC_MODEL) is not None
    assert price_of(DEFAULT_OPENAI_MODEL) is not None


def test_register_price_adds_and_overrides(prices: dict[str, ModelPrice]) -> None:
    assert price_of("my-model") is None
    register_price("my-model", input=1.0, output=2.0)
    assert price_of("my-model") == ModelPrice(1.0, 2.0)
    assert price_of("my-model-20250101") == ModelPrice(1.0, 2.0)  # a dated snapshot
    assert price_of("my-model-v2") is None  # another variant: not guessed
    register_price("gpt-4o", input=100.0, output=200.0, cache_read=10.0)
    assert price_of("gpt-4o-2024-08-06") == ModelPrice(100.0, 200.0, cache_read=10.0)
    usage = apply_cost(Usage(input_tokens=1_000_000, output_tokens=0, requests=1), "gpt-4o")
    assert usage.cost_usd == pytest.approx(100.0)


def test_cost_prices_cache_reads_and_writes() -> None:
    price = ModelPrice(3.0, 15.0, cache_read=0.3, cache_write=3.75)
    usage = Usage(
        input_tokens=1_000_000 + 2_000_000 + 400_000,
        cache_read_tokens=2_000_000,
        cache_write_tokens=400_000,
        output_tokens=100_000,
    )
    assert price.cost(usage) == pytest.approx(3.0 + 2 * 0.3 + 0.4 * 3.75 + 0.1 * 15.0)
    # Without cache prices, cached tokens cost what input costs.
    plain = ModelPrice(2.0, 8.0)
    assert plain.cost(usage) == pytest.approx(3.4 * 2.0 + 0.1 * 8.0)
    # Cache reads on an OpenAI model: half price for gpt-4o.
    gpt4o = price_of("gpt-4o")
    assert gpt4o is not None
    cached = Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000)
    assert gpt4o.cost(cached) == pytest.approx(1.25)


def test_apply_cost_prices_or_counts_unpriced() -> None:
    priced = apply_cost(Usage(input_tokens=1000, output_tokens=1000, requests=1), "openai:gpt-4o")
    assert priced.cost_usd == pytest.approx((1000 * 2.5 + 1000 * 10.0) / 1_000_000)
    assert priced.unpriced_requests == 0
    unpriced = apply_cost(Usage(input_tokens=1000, requests=1), "acme:unknown")
    assert unpriced.cost_usd == 0.0
    assert unpriced.unpriced_requests == 1
    free = apply_cost(Usage(input_tokens=1000, requests=1), "test")
    assert free.cost_usd == 0.0
    assert free.unpriced_requests == 0


# -- Model.parse / from_environment -----------------------------------------------------------


def test_parse_model_strings() -> None:
    haiku = Model.parse("anthropic:claude-haiku-4-5")
    assert isinstance(haiku, AnthropicModel)
    assert haiku.model == "claude-haiku-4-5"
    assert haiku.name == "anthropic:claude-haiku-4-5"
    gpt = Model.parse("openai:gpt-4o")
    assert isinstance(gpt, OpenAIModel)
    assert gpt.model == "gpt-4o"
    assert gpt.reasoning is False
    assert gpt.api == "chat"
    assert isinstance(Model.parse("test"), TestModel)
    assert isinstance(Model.parse("  test  "), TestModel)
    assert isinstance(Model.parse("openai:o3"), OpenAIModel)
    o3 = Model.parse("openai:o3")
    assert isinstance(o3, OpenAIModel)
    assert o3.reasoning is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("openai", "say which model, e.g. openai:gpt-5.1"),
        ("openai:", "say which model"),
        ("anthropic", "say which model, e.g. anthropic:claude-sonnet-4-6"),
        ("nope:x", "unknown provider 'nope' (known: anthropic, openai, test)"),
        ("", "unknown provider ''"),
        ("test:foo", "the test model takes no name"),
    ],
)
def test_parse_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="cannot resolve model") as caught:
        Model.parse(spec)
    assert message in str(caught.value)


def test_from_environment_prefers_anthropic() -> None:
    model = Model.from_environment({"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o"})
    assert isinstance(model, AnthropicModel)
    assert model.model == DEFAULT_ANTHROPIC_MODEL


def test_from_environment_openai_when_only_openai_key() -> None:
    model = Model.from_environment({"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": ""})
    assert isinstance(model, OpenAIModel)
    assert model.model == DEFAULT_OPENAI_MODEL


def test_from_environment_falls_back_to_test_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="loom.model"):
        model = Model.from_environment({})
    assert isinstance(model, TestModel)
    [record] = [r for r in caplog.records if r.name == "loom.model"]
    assert record.levelno == logging.WARNING
    assert "offline test model" in record.getMessage()


def test_resolve_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="must be a ModelProvider or a string"):
        Model.resolve(42)  # type: ignore[arg-type]


# -- the SDKs' own environment variables ------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No provider credentials or endpoints from the surrounding environment."""
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CONFIG_DIR",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
        "ANTHROPIC_FEDERATION_RULE_ID",
        "ANTHROPIC_ORGANIZATION_ID",
        "OPENAI_API_KEY",
        "OPENAI_ADMIN_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    # anthropic 2.x also discovers credential profiles in ~/.config/anthropic: an empty home.
    # (Setting ANTHROPIC_CONFIG_DIR instead would make a missing config file an error.)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


async def test_anthropic_sdk_env_vars(
    fake_llm: FakeLLMServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("ANTHROPIC_BASE_URL", fake_llm.anthropic_base_url)
    clean_env.setenv("ANTHROPIC_API_KEY", "env-anthropic-key")
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_message("from env", model="claude-sonnet-4-6"))
    agent = opened(Agent(Model.anthropic("claude-sonnet-4-6", retry=FAST), "Be brief."))

    result = await agent.run("hi")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "from env"
    [request] = fake_llm.requests
    assert request.route == ANTHROPIC_MESSAGES
    assert request.api_key == "env-anthropic-key"


async def test_openai_sdk_env_vars(fake_llm: FakeLLMServer, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_BASE_URL", fake_llm.openai_base_url)
    clean_env.setenv("OPENAI_API_KEY", "env-openai-key")
    fake_llm.script(OPENAI_CHAT, openai_chat("from env", model="gpt-4o"))
    agent = opened(Agent(Model.openai("gpt-4o", retry=FAST), "Be brief."))

    result = await agent.run("hi")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "from env"
    [request] = fake_llm.requests
    assert request.route == OPENAI_CHAT
    assert request.api_key == "env-openai-key"


async def test_from_environment_model_reaches_the_server(
    fake_llm: FakeLLMServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("OPENAI_BASE_URL", fake_llm.openai_base_url)
    clean_env.setenv("OPENAI_API_KEY", "env-openai-key")
    fake_llm.script(OPENAI_CHAT, openai_chat("default model", model=DEFAULT_OPENAI_MODEL))

    result = await opened(Agent(None, "Be brief.")).run("hi")

    assert result.ok
    assert result.output == "default model"
    assert fake_llm.requests[0].json["model"] == DEFAULT_OPENAI_MODEL


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_missing_key_fails_the_run(
    fake_llm: FakeLLMServer, clean_env: pytest.MonkeyPatch, provider: str
) -> None:
    # openai raises OpenAIError when the client is built; anthropic 2.x builds the client and
    # raises TypeError ("Could not resolve authentication method") when the request is
    # prepared. Both are a failed run with an authentication reason, and nothing is sent.
    model: Any
    if provider == "anthropic":
        model = Model.anthropic("claude-sonnet-4-6", base_url=fake_llm.anthropic_base_url)
    else:
        model = Model.openai("gpt-4o", base_url=fake_llm.openai_base_url)
    model.retry = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.02)
    agent = opened(Agent(model, "Be brief."))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.startswith(f"authentication failed: {provider}: ")
    assert "API_KEY" in result.error or "api_key" in result.error
    assert fake_llm.requests == []
    assert result.usage.requests == 0
    assert result.events[-1].type == "run.failed"


async def test_missing_key_streaming_fails_the_run(
    fake_llm: FakeLLMServer, clean_env: pytest.MonkeyPatch
) -> None:
    model = Model.anthropic("claude-sonnet-4-6", base_url=fake_llm.anthropic_base_url, retry=FAST)
    result = await opened(Agent(model, generation=Generation(stream=True))).run("hi")
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("authentication failed: anthropic: ")
    assert fake_llm.requests == []


async def test_connection_refused_is_retried_then_fails() -> None:
    with FakeLLMServer() as server:
        url = server.url
    # The server is gone: every attempt is refused.
    model = Model.anthropic("claude-sonnet-4-6", api_key="k", base_url=url, retry=FAST)

    result = await opened(Agent(model)).run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("provider error: anthropic: connection failed")
    assert result.error.endswith("after 3 attempts")
