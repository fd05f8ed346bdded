"""A provider error that quotes a key, any key, does not carry it into results, replies or
logs (issue 21, item 5): only the process's own keys were masked before."""

from __future__ import annotations

import pytest

from loom import Agent, Model, RunStatus
from loom.errors import AuthenticationError
from loom.logs import Redactor, scrub_keys
from loom.providers.base import ModelRequest, ModelResponse

KEYS = [
    "sk-proj-Abc123Def456Ghi789Jkl012",
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrSt",
    "xoxb-1234567890-0987654321-AbCdEfGhIj",
    "xapp-1-A0123456789-abcdef",
]


@pytest.mark.parametrize("key", KEYS)
def test_what_looks_like_a_key_is_masked(key: str) -> None:
    assert scrub_keys(f"invalid key {key}, try again") == "invalid key ***, try again"
    assert key not in Redactor()(f"refused: {key}")


def test_a_bearer_token_quoted_back_is_masked_and_plain_text_is_not() -> None:
    assert scrub_keys("got Authorization: Bearer abc.def-123_456") == (
        "got Authorization: Bearer ***"
    )
    plain = "the task-runner skipped sk-1 (too short) and a risk-assessment step"
    assert scrub_keys(plain) == plain


async def test_a_provider_error_quoting_a_foreign_key_is_masked_in_the_result() -> None:
    """A proxy in front of the provider echoed a key the process never held."""

    def refused(request: ModelRequest) -> ModelResponse:
        raise AuthenticationError(f"proxy: key {KEYS[0]} is revoked", provider="openai")

    agent = Agent(Model.function(refused))
    result = await agent.session("s").run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "key *** is revoked" in result.error
    assert KEYS[0] not in result.error
