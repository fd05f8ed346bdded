"""Known models' context windows: a context budget above the model's window is refused when
the agent is built; a manager given no ``max_tokens`` is sized from the window (issue 16)."""

from __future__ import annotations

import pytest

from loom import Agent, ContextProtocol, Generation, Model, ModelResponse, Runtime
from loom.daemon.context_settings import ContextSettings
from loom.policies.context import DEFAULT_MAX_TOKENS, ContextManager
from loom.providers.base import ModelRequest
from loom.providers.windows import DEFAULT_OUTPUT_RESERVE, context_window


def answer(request: ModelRequest) -> ModelResponse:
    return ModelResponse(text="ok")


def named(name: str) -> Model:
    return Model.function(answer, name=name)  # type: ignore[return-value]


def manager_of(agent: Agent) -> ContextManager:
    context = agent.runtime.context
    assert isinstance(context, ContextManager)
    return context


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("claude-sonnet-4-5-20250929", 200_000),
        ("claude-3-5-haiku-latest", 200_000),
        ("claude-opus-4-1", 200_000),
        ("gpt-4o-mini-2024-07-18", 128_000),
        ("openai/gpt-4o", 128_000),
        ("gpt-4.1-mini", 1_047_576),
        ("gpt-4-turbo-2024-04-09", 128_000),
        ("gpt-4-0613", 8_192),
        ("gpt-5-mini", 400_000),
        ("o3-mini", 200_000),
        ("o1-mini", 128_000),
        ("llama3.1:8b", None),
        ("function", None),
        ("anthropic:claude-sonnet-4-5", 200_000),
        ("openai:gpt-4o", 128_000),
        ("openai:llama3.1:8b", None),
    ],
)
def test_a_model_s_window_is_found_by_its_family(model: str, window: int | None) -> None:
    assert context_window(model) == window


def test_max_tokens_above_the_model_s_window_is_refused_when_the_agent_is_built() -> None:
    runtime = Runtime.sdk(context=ContextProtocol.manager(max_tokens=150_000))
    with pytest.raises(ValueError, match="above the context window") as refused:
        Agent(named("gpt-4o-2024-08-06"), runtime=runtime)
    message = str(refused.value)
    assert "max_tokens 150000" in message
    assert "function:gpt-4o-2024-08-06 (128000 tokens)" in message
    # Within the window: taken as it is.
    within = Agent(named("gpt-4o"), runtime=Runtime.sdk(context=ContextProtocol.manager(100_000)))
    assert manager_of(within).max_tokens == 100_000


def test_a_manager_without_max_tokens_is_sized_from_the_model_s_window() -> None:
    runtime = Runtime.sdk(context=ContextProtocol.manager(budgets={"C_memory": 5_000}))
    agent = Agent(named("gpt-4o"), runtime=runtime)
    sized = manager_of(agent)
    assert sized.max_tokens == 128_000 - DEFAULT_OUTPUT_RESERVE
    assert sized.budgets["C_memory"] == 5_000  # as asked
    assert sized.budgets["C_working"] == int(sized.max_tokens * 0.10)  # shares of the new size
    small = Agent(named("gpt-4o"), runtime=runtime, generation=Generation(max_output_tokens=4000))
    assert manager_of(small).max_tokens == 124_000
    # A model whose window is unknown keeps the default, and nothing is checked.
    assert manager_of(Agent(named("my-local"), runtime=runtime)).max_tokens == DEFAULT_MAX_TOKENS
    huge = Runtime.sdk(context=ContextProtocol.manager(max_tokens=5_000_000))
    assert manager_of(Agent(named("my-local"), runtime=huge)).max_tokens == 5_000_000


def test_a_preset_s_own_budget_is_lowered_to_a_smaller_window_not_refused() -> None:
    agent = Agent(named("gpt-4o"), runtime=Runtime.long_running())  # 200k by default
    assert manager_of(agent).max_tokens == 128_000 - DEFAULT_OUTPUT_RESERVE
    claude = Agent(named("claude-sonnet-4-5"), runtime=Runtime.long_running())
    assert manager_of(claude).max_tokens == 200_000 - DEFAULT_OUTPUT_RESERVE
    plain = Agent(named("gpt-4"), runtime=Runtime.sdk())  # the kernel's plain window
    assert plain.runtime.max_context_tokens == 4_096
    assert Agent(named("my-local"), runtime=Runtime.sdk()).runtime.max_context_tokens == 64_000


def test_the_daemon_setting_is_checked_when_set_and_lowered_when_left_out() -> None:
    unset = Runtime.sdk(context=ContextSettings().manager())
    assert manager_of(Agent(named("gpt-4"), runtime=unset)).max_tokens == 4_096
    explicit = Runtime.sdk(context=ContextSettings(max_tokens=64_000).manager())
    refused = r"above the context window of function:gpt-4 \(8192 tokens\)"
    with pytest.raises(ValueError, match=refused):
        Agent(named("gpt-4"), runtime=explicit)
