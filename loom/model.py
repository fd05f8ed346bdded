"""Model: factories for the providers an agent can use, and ``provider:model`` strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

from loom.providers.base import ModelProvider
from loom.providers.test import FunctionModel, FunctionModelFn, TestModel

KNOWN_PROVIDERS = ("test",)


class Model:
    """``Model.test()``, ``Model.function(fn)``, or ``Model.parse("provider:model")``."""

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
        """Resolve a ``provider:model`` string such as the value of ``LOOM_MODEL``."""
        provider, _, name = spec.strip().partition(":")
        if provider == "test" and not name:
            return TestModel()
        known = ", ".join(KNOWN_PROVIDERS)
        raise ValueError(
            f"cannot resolve model {spec!r}: unknown provider {provider!r} (known: {known})"
        )

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
