"""What the gateway refuses before publishing a signal (422): one that says nothing, and
one whose ``reply_to`` no adapter of this process delivers to.

Both would cost later and say nothing then: an empty signal starts a paid model run, and an
undeliverable address is found only after the run, by the reply dispatcher, which can only
dead-letter the answer. Refused at the door, the sender learns what to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from loom.intake.adapter import Adapter
from loom.signals import RuntimeSignal

EMPTY = "the signal says nothing: give it a non-blank summary or a payload with at least one field"


def scheme(address: str) -> str:
    """The scheme of a ``reply_to`` address (``slack`` of ``slack:C1/1700.1``)."""
    return address.partition(":")[0]


def reply_prefixes(adapters: Sequence[Adapter]) -> list[str]:
    """How the ``reply_to`` addresses the adapters deliver to begin, sorted."""
    return sorted({prefix for adapter in adapters for prefix in adapter.reply_prefixes})


def refusal(signal: RuntimeSignal, adapters: Sequence[Adapter]) -> str | None:
    """Why ``signal`` is refused at intake, or None when it may be published."""
    if signal.says_nothing():
        return EMPTY
    address = signal.reply_to
    if address is not None and not any(a.replies_to(address) for a in adapters):
        known = reply_prefixes(adapters)
        accepted = ", ".join(known) if known else "none: no adapter here sends replies"
        return (
            f"reply_to {address[:200]!r}: no adapter delivers replies to "
            f"{scheme(address)[:40]!r} addresses; reply_to may begin with: {accepted}"
        )
    return None


__all__ = ["EMPTY", "refusal", "reply_prefixes", "scheme"]
