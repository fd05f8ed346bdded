"""The adapters a daemon gets from its settings, before those given in code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from loom.adapters.base import Adapter

if TYPE_CHECKING:
    from loom.daemon.settings import Settings


def adapters_from_settings(settings: Settings) -> list[Adapter]:
    """Every adapter the settings configure (each module decides from its own section)."""
    configured: list[Adapter] = []
    return configured


def merge_adapters(configured: Sequence[Adapter], given: Sequence[Adapter]) -> list[Adapter]:
    """``configured`` then ``given``; an adapter given in code replaces a configured one of
    the same name (one ``/webhooks/github`` route, one Slack app)."""
    names = {adapter.name for adapter in given}
    return [a for a in configured if a.name not in names] + list(given)


__all__ = ["adapters_from_settings", "merge_adapters"]
