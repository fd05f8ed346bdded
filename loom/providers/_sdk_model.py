"""What the providers built on an official SDK share: the lazily built client, and calls
retried the same way for every provider, never after streamed output went out."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

from loom.errors import AuthenticationError, ProviderError
from loom.providers._sdk_errors import classify_sdk_error
from loom.providers.base import DeltaHandler, ModelProvider, StreamDelta
from loom.providers.retry import RetryPolicy, call_with_retries

T = TypeVar("T")


class SDKModel(ModelProvider):
    """Base of AnthropicModel and OpenAIModel."""

    provider = "sdk"

    def __init__(
        self, model: str, *, retry: RetryPolicy | None, client: Any, **client_options: Any
    ) -> None:
        self.model = model
        self.name = f"{self.provider}:{model}"
        self.retry = retry or RetryPolicy()
        # The SDKs retry by themselves unless told not to; ours honours the same headers and
        # is bounded the same way for every provider.
        self._client_options = {**client_options, "max_retries": 0}
        self._client = client

    client_class = ""
    """The SDK's async client class, e.g. ``AsyncAnthropic``."""
    key_variables: tuple[str, ...] = ()
    """The environment variables the SDK reads a key from when none is given."""

    def missing_credentials(self) -> str | None:
        # The SDK decides, as it will for the first call: the client is built (no request
        # is sent), and one that resolved no credential is reported.
        try:
            client = self.client
        except AuthenticationError as problem:
            return str(problem)
        if self.has_credentials(client):
            return None
        return f"no {' or '.join(self.key_variables)} set"

    def has_credentials(self, client: Any) -> bool:
        """Whether a built client found a credential (an SDK that builds none without one
        keeps this default)."""
        return True

    def sdk(self) -> ModuleType:
        """The SDK module, named like the provider (imported on first use, so ``import loom``
        stays light)."""
        try:
            return importlib.import_module(self.provider)
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ImportError(f"Model.{self.provider} needs: pip install {self.provider}") from exc

    def new_client(self, **options: Any) -> Any:
        return getattr(self.sdk(), self.client_class)(**options)

    @property
    def client(self) -> Any:  # the SDK's overloads are checked by its own tests, not ours
        if self._client is None:
            options = {k: v for k, v in self._client_options.items() if v is not None}
            try:
                self._client = self.new_client(**options)
            except Exception as exc:  # e.g. no key anywhere: a failed run, not a crash
                raise AuthenticationError(str(exc), provider=self.provider) from exc
        return self._client

    async def call(
        self,
        attempt: Callable[[DeltaHandler | None], Awaitable[T]],
        on_delta: DeltaHandler | None,
    ) -> T:
        """Run ``attempt`` with retries; SDK errors become ``ProviderError``s."""
        sdk = self.sdk()
        streamed = False

        def classify(exc: Exception) -> ProviderError:
            return scrubbed(classify_sdk_error(exc, sdk, self.provider), self.secrets())

        async def counting(delta: StreamDelta) -> None:
            nonlocal streamed
            streamed = True
            assert on_delta is not None
            await on_delta(delta)

        async def once() -> T:
            try:
                return await attempt(counting if on_delta is not None else None)
            except ProviderError:
                raise
            except Exception as exc:
                error = classify(exc)
                if streamed:  # deltas already went out: a retry would repeat them
                    error.retryable = False
                raise error from exc

        return await call_with_retries(once, self.retry, classify)

    def secrets(self) -> list[str]:
        """The credentials the client holds (keys passed in code as well as read from the
        environment): an error text that echoes one must not carry it any further."""
        client = self._client
        if client is None:
            return []
        found = (getattr(client, name, None) for name in ("api_key", "auth_token"))
        return [value for value in found if isinstance(value, str) and value]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


MASK = "***"


def scrubbed(error: ProviderError, secrets: list[str]) -> ProviderError:
    """``error`` with every credential in its message masked: provider and proxy errors
    sometimes quote the key they refused, and the message goes to results, replies and logs.
    """
    text = str(error.args[0]) if error.args else ""
    for secret in secrets:
        text = text.replace(secret, MASK)
    error.args = (text, *error.args[1:])
    return error
