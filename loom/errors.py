"""Exceptions Loom raises or records as the reason a run failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class LoomError(Exception):
    """Base class of every Loom error."""


def validation_details(problem: ValidationError, *, root: str = "body", limit: int = 5) -> str:
    """A pydantic error as one line a sender can act on: ``field: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or root}: {error['msg']}"
        for error in problem.errors()[:limit]
    )


class ProviderError(LoomError):
    """A model provider call failed.

    ``retryable`` says whether trying again may help (rate limits, overload, timeouts);
    ``status`` is the HTTP status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        prefix = f"{self.provider}: " if self.provider else ""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        attempts = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{prefix}{self.args[0]}{status}{attempts}"


class AuthenticationError(ProviderError):
    """The provider refused the credentials (401/403): retrying cannot help."""


class RateLimitError(ProviderError):
    """The provider asked to slow down (429)."""


class ModelBehaviorError(LoomError):
    """The model answered something the loop cannot use (e.g. an unknown response shape)."""


class RunFailed(LoomError):
    """Raised by ``RunResult.raise_for_status()`` for a run that did not complete."""
