"""Turn the official SDKs' exceptions into Loom's provider errors.

Both SDKs share one shape (``APIStatusError`` with ``status_code``, ``response``, ``body``;
``APIConnectionError`` and ``APITimeoutError``), so one classifier serves both.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from loom.errors import AuthenticationError, ProviderError, RateLimitError
from loom.providers.retry import parse_retry_after

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def provider_message(body: Any, fallback: str) -> str:
    """The human part of an error body: ``{"error": {"message": ...}}`` or ``{"message": ...}``."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return fallback


def classify_sdk_error(exc: Exception, sdk: ModuleType, provider: str) -> ProviderError:
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        message = provider_message(getattr(exc, "body", None), str(exc))
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if status in (401, 403):
            return AuthenticationError(message, provider=provider, status=status)
        retry_after = parse_retry_after(headers)
        if status == 429:
            return RateLimitError(
                f"rate limited: {message}",
                provider=provider,
                status=status,
                retryable=True,
                retry_after=retry_after,
            )
        return ProviderError(
            message,
            provider=provider,
            status=status,
            retryable=status in RETRYABLE_STATUS or status >= 500,
            retry_after=retry_after,
        )
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError("request timed out", provider=provider, retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc
        return ProviderError(f"connection failed: {cause}", provider=provider, retryable=True)
    if isinstance(exc, TypeError) and "Could not resolve authentication method" in str(exc):
        # anthropic 2.x builds a client without credentials and raises this per request.
        return AuthenticationError(str(exc).strip('"'), provider=provider)
    return ProviderError(f"{type(exc).__name__}: {exc}", provider=provider)
