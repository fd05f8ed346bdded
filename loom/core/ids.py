"""Loom's random ids packed: ``<prefix><32 hex digits>`` (``uuid4().hex``, as in ``fb_``,
``run_`` and ``sig_`` ids) kept as the 16 bytes' URL-safe base64, 22 characters instead of
32. Stored forms that keep many of them (decisions, run records, feedback events) use it."""

from __future__ import annotations

import base64
import re
from typing import Any

PACKED = 22
"""Characters of one packed id."""
_HEX_ID = re.compile(r"[0-9a-f]{32}")


def pack_id(ident: Any, prefix: str) -> str | None:
    """``ident`` packed, when it is ``prefix`` and 32 lowercase hex digits (else None)."""
    if not isinstance(ident, str) or not ident.startswith(prefix):
        return None
    rest = ident[len(prefix) :]
    if not _HEX_ID.fullmatch(rest):
        return None
    return base64.urlsafe_b64encode(bytes.fromhex(rest)).decode()[:PACKED]


def unpack_id(packed: str, prefix: str) -> str:
    """The id ``pack_id`` packed (``ValueError`` when ``packed`` is not one)."""
    if len(packed) != PACKED:
        raise ValueError(f"not a packed id: {packed!r}")
    return prefix + base64.urlsafe_b64decode(packed + "==").hex()


def pack_ids(idents: Any, prefix: str) -> str | None:
    """A non-empty list of ids, each packable, as one string of packed ids (else None)."""
    if not isinstance(idents, list) or not idents:
        return None
    packed = [pack_id(ident, prefix) for ident in idents]
    if any(item is None for item in packed):
        return None
    return "".join(item for item in packed if item is not None)


def unpack_ids(packed: str, prefix: str) -> list[str]:
    """The ids ``pack_ids`` packed."""
    if not isinstance(packed, str) or not packed or len(packed) % PACKED:
        raise ValueError(f"not packed ids: {packed!r}")
    return [unpack_id(packed[i : i + PACKED], prefix) for i in range(0, len(packed), PACKED)]


__all__ = ["PACKED", "pack_id", "pack_ids", "unpack_id", "unpack_ids"]
