"""Prices per million tokens, to turn usage into cost. Users extend the table.

``register_price("my-model", input=1.0, output=2.0)``. A model without a price is counted
in ``Usage.unpriced_requests`` rather than silently costed at zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loom.core.messages import Usage


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens; cache prices default to the input price."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        cache_read = usage.cache_read_tokens
        cache_write = usage.cache_write_tokens
        fresh = max(usage.input_tokens - cache_read - cache_write, 0)
        total = (
            fresh * self.input
            + cache_read * (self.input if self.cache_read is None else self.cache_read)
            + cache_write * (self.input if self.cache_write is None else self.cache_write)
            + usage.output_tokens * self.output
        )
        return total / 1_000_000


# Public list prices (USD per million tokens) as published by the vendors.
PRICES: dict[str, ModelPrice] = {
    "claude-opus-4-5": ModelPrice(5.0, 25.0, cache_read=0.5, cache_write=6.25),
    "claude-opus-4-1": ModelPrice(15.0, 75.0, cache_read=1.5, cache_write=18.75),
    "claude-opus-4": ModelPrice(15.0, 75.0, cache_read=1.5, cache_write=18.75),
    "claude-sonnet-4-6": ModelPrice(3.0, 15.0, cache_read=0.3, cache_write=3.75),
    "claude-sonnet-4-5": ModelPrice(3.0, 15.0, cache_read=0.3, cache_write=3.75),
    "claude-sonnet-4": ModelPrice(3.0, 15.0, cache_read=0.3, cache_write=3.75),
    "claude-haiku-4-5": ModelPrice(1.0, 5.0, cache_read=0.1, cache_write=1.25),
    "claude-3-5-haiku": ModelPrice(0.8, 4.0, cache_read=0.08, cache_write=1.0),
    "gpt-5.1": ModelPrice(1.25, 10.0, cache_read=0.125),
    "gpt-5": ModelPrice(1.25, 10.0, cache_read=0.125),
    "gpt-5-mini": ModelPrice(0.25, 2.0, cache_read=0.025),
    "gpt-5-nano": ModelPrice(0.05, 0.4, cache_read=0.005),
    "gpt-4.1": ModelPrice(2.0, 8.0, cache_read=0.5),
    "gpt-4.1-mini": ModelPrice(0.4, 1.6, cache_read=0.1),
    "gpt-4.1-nano": ModelPrice(0.1, 0.4, cache_read=0.025),
    "gpt-4o": ModelPrice(2.5, 10.0, cache_read=1.25),
    "gpt-4o-mini": ModelPrice(0.15, 0.6, cache_read=0.075),
    "o3": ModelPrice(2.0, 8.0, cache_read=0.5),
    "o3-mini": ModelPrice(1.1, 4.4, cache_read=0.55),
    "o4-mini": ModelPrice(1.1, 4.4, cache_read=0.275),
    # The offline models cost nothing.
    "test": ModelPrice(0.0, 0.0),
    "function": ModelPrice(0.0, 0.0),
}


def register_price(
    model: str,
    *,
    input: float,
    output: float,
    cache_read: float | None = None,
    cache_write: float | None = None,
) -> None:
    """Add or replace the price of ``model`` (its snapshots share it)."""
    PRICES[model] = ModelPrice(input, output, cache_read, cache_write)


_SNAPSHOT = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


def price_of(model: str) -> ModelPrice | None:
    """The price of ``model`` by exact name; a dated snapshot or ``-latest`` alias takes its
    base model's price. Other variants (``-mini``, ``-pro``) need their own entry."""
    provider, _, name = model.rpartition(":")
    if provider == "function":
        name = "function"
    price = PRICES.get(name)
    if price is None:
        price = PRICES.get(_SNAPSHOT.sub("", name))
    return price


def apply_cost(usage: Usage, model: str) -> Usage:
    """Set the cost of one model call's usage (or count it as unpriced)."""
    price = price_of(model)
    if price is None:
        usage.unpriced_requests = max(usage.requests, 1)
    else:
        usage.cost_usd = price.cost(usage)
    return usage
