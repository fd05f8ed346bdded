"""Generation: the sampling settings sent with each model request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Generation(BaseModel):
    """How the model samples.

    Unset fields are not sent, so each provider's own default applies; providers drop the
    fields a given model refuses (reasoning models take no temperature).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_output_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    stream: bool = False
    reasoning_effort: str | None = None
    thinking_budget_tokens: int | None = Field(default=None, gt=0)
    extensions: dict[str, Any] = Field(default_factory=dict)
    """Provider-specific request fields passed through as they are."""

    def merged(self, **overrides: Any) -> Generation:
        """A copy with the given fields replaced (validated)."""
        return Generation.model_validate({**self.model_dump(), **overrides})
