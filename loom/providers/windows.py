"""Context windows of known model families (tokens), so a context budget above the model's
window is refused when the agent is built instead of failing on the first long request.

A model is found by the longest family prefix its name starts with (``gpt-4o-mini-2024-07-18``
is ``gpt-4o``, ``anthropic:claude-sonnet-4-5-20250929`` is ``claude-sonnet-4``). A name in no family
(a local model behind an OpenAI-compatible server, a test model) has no known window: no
check is made. ``CONTEXT_WINDOWS`` may be extended by an application.
"""

from __future__ import annotations

CONTEXT_WINDOWS: dict[str, int] = {
    # Anthropic: every current Claude model has a 200k window (1M for some Sonnet models
    # only behind a beta header, which Loom does not send).
    "claude-opus-4": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-haiku-4": 200_000,
    "claude-3-7-sonnet": 200_000,
    "claude-3-5-sonnet": 200_000,
    "claude-3-5-haiku": 200_000,
    "claude-3-opus": 200_000,
    "claude-3-sonnet": 200_000,
    "claude-3-haiku": 200_000,
    "claude-2.1": 200_000,
    "claude-2.0": 100_000,
    # OpenAI.
    "gpt-5-chat": 128_000,
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-1106": 128_000,
    "gpt-4-0125": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
}
"""Family prefix -> context window in tokens (input and output together)."""

DEFAULT_OUTPUT_RESERVE = 8_192
"""Tokens kept for the answer when a context budget is sized from a window and the agent's
``Generation`` sets no ``max_output_tokens`` (Anthropic's provider asks for this many)."""


def context_window(model: str) -> int | None:
    """The context window of ``model`` (tokens), or None for a model in no known family.
    A provider's model is named ``provider:model`` (``openai:gpt-4o``); some gateways name
    it ``vendor/model``: both prefixes are looked through."""
    name = model.strip().lower()
    candidates = [name]
    if ":" in name:
        candidates.append(name.split(":", 1)[1])
    for candidate in candidates:
        candidate = candidate.rsplit("/", 1)[-1]
        families = [prefix for prefix in CONTEXT_WINDOWS if candidate.startswith(prefix)]
        if families:
            return CONTEXT_WINDOWS[max(families, key=len)]
    return None


def sized_for(window: int, output_tokens: int | None) -> int:
    """The request budget a window leaves once the answer's tokens are kept aside (at
    least half the window)."""
    reserve = output_tokens or DEFAULT_OUTPUT_RESERVE
    return max(window - reserve, window // 2)


__all__ = ["CONTEXT_WINDOWS", "DEFAULT_OUTPUT_RESERVE", "context_window", "sized_for"]
