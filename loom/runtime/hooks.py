"""Deprecated path: the hook registry lives in ``loom.core.hooks``."""

from loom.core.hooks import HOOK_NAMES, Handler, HookManager

__all__ = ["HOOK_NAMES", "Handler", "HookManager"]
