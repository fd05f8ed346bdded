"""Model: factories for the providers an agent can use, and ``provider:model`` strings."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

from loom.providers.base import ModelProvider
from loom.providers.test import FunctionModel, FunctionModelFn, TestModel

if TYPE_CHECKING:
    from loom.providers.anthropic import AnthropicModel
    from loom.providers.openai import OpenAIModel

logger = logging.getLogger("loom.model")

KNOWN_PROVIDERS = ("anthropic", "openai", "test")
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-6"
DEFAULT_OPENAI_MODEL = "gpt-5.1"


class Model:
    """``Model.anthropic(...)``, ``Model.openai(...)``, ``Model.test()``, ``Model.function(fn)``,
    or ``Model.parse("provider:model")``."""

    @staticmethod
    def anthropic(name: str = DEFAULT_ANTHROPIC_MODEL, **options: Any) -> AnthropicModel:
        """A Claude model (``api_key``, ``base_url``, ``timeout``, ``retry``,
        ``thinking`` (a token budget or ``"adaptive"``), ``prompt_caching``)."""
        from loom.providers.anthropic import AnthropicModel

        return AnthropicModel(name, **options)

    @staticmethod
    def openai(name: str = DEFAULT_OPENAI_MODEL, **options: Any) -> OpenAIModel:
        """An OpenAI or OpenAI-compatible model (``api_key``, ``base_url``, ``timeout``,
        ``retry``, ``api="chat"|"responses"``, ``reasoning``)."""
        from loom.providers.openai import OpenAIModel

        return OpenAIModel(name, **options)

    @staticmethod
    def test(
        *,
        call_tools: Literal["all"] | Sequence[str] = "all",
        output_text: str | None = None,
    ) -> TestModel:
        """The offline deterministic model: calls each tool once, then summarises."""
        return TestModel(call_tools=call_tools, output_text=output_text)

    @staticmethod
    def function(fn: FunctionModelFn, *, name: str | None = None) -> FunctionModel:
        """A model whose every turn ``fn(request)`` decides."""
        return FunctionModel(fn, name=name)

    @staticmethod
    def parse(spec: str) -> ModelProvider:
        """Resolve ``anthropic:claude-sonnet-4-5``, ``openai:gpt-5.1`` or ``test``."""
        provider, _, name = spec.strip().partition(":")
        if provider == "test":
            if name:
                raise ValueError(f"cannot resolve model {spec!r}: the test model takes no name")
            return TestModel()
        if provider in ("anthropic", "openai") and not name:
            raise ValueError(
                f"cannot resolve model {spec!r}: say which model, e.g. {provider}:"
                f"{DEFAULT_ANTHROPIC_MODEL if provider == 'anthropic' else DEFAULT_OPENAI_MODEL}"
            )
        if provider == "anthropic":
            return Model.anthropic(name)
        if provider == "openai":
            return Model.openai(name)
        known = ", ".join(KNOWN_PROVIDERS)
        raise ValueError(
            f"cannot resolve model {spec!r}: unknown provider {provider!r} (known: {known})"
        )

    @staticmethod
    def from_environment(
        environ: Mapping[str, str] | None = None, *, warn: bool = True
    ) -> ModelProvider:
        """The default model: Anthropic if ``ANTHROPIC_API_KEY`` is set, else OpenAI if
        ``OPENAI_API_KEY`` is, else the offline test model (with a warning, unless ``warn``
        is False: the daemon warns itself, only in the roles that call the model)."""
        env = os.environ if environ is None else environ
        if env.get("ANTHROPIC_API_KEY"):
            return Model.anthropic()
        if env.get("OPENAI_API_KEY"):
            return Model.openai()
        if warn:
            logger.warning(
                "no model configured and no ANTHROPIC_API_KEY or OPENAI_API_KEY: "
                "using the offline test model"
            )
        return TestModel()

    @staticmethod
    def resolve(model: ModelProvider | str | None) -> ModelProvider:
        """An Agent's model argument: a provider, a string, or None for the test model."""
        if model is None:
            return TestModel()
        if isinstance(model, str):
            return Model.parse(model)
        if not isinstance(cast(object, model), ModelProvider):  # untyped callers
            kind = type(model).__name__
            raise TypeError(f"model must be a ModelProvider or a string, not {kind}")
        return model
