"""What the gateway refuses before publishing a signal (422): one that says nothing, and
one whose ``reply_to`` Loom cannot deliver to: no adapter of this process delivers it, and
it is no kind of address an adapter of Loom's delivers when configured (a ``slack:``
address is accepted by a gateway without Slack settings: the workers may have them).

Both would cost later and say nothing then: an empty signal starts a paid model run, and an
undeliverable address is found only after the run, by the reply dispatcher, which can only
dead-letter the answer. Refused at the door, the sender learns what to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loom.intake.adapter import Adapter
from loom.signals import RuntimeSignal

EMPTY = "the signal says nothing: give it a non-blank summary or a payload with at least one field"


def scheme(address: str) -> str:
    """The scheme of a ``reply_to`` address (``slack`` of ``slack:C1/1700.1``)."""
    return address.partition(":")[0]


def reply_prefixes(adapters: Sequence[Adapter], known: Iterable[str] = ()) -> list[str]:
    """How the ``reply_to`` addresses the adapters deliver to begin, with the ``known``
    kinds of address, sorted."""
    return sorted({*known, *(prefix for adapter in adapters for prefix in adapter.reply_prefixes)})


def refusal(
    signal: RuntimeSignal, adapters: Sequence[Adapter], known: Sequence[str] = ()
) -> str | None:
    """Why ``signal`` is refused at intake, or None when it may be published. ``known``:
    how the addresses begin that Loom's adapters deliver to when configured."""
    if signal.says_nothing():
        return EMPTY
    address = signal.reply_to
    if not address:  # no address (an empty one too): nobody waits for an answer
        return None
    if any(a.replies_to(address) for a in adapters) or address.startswith(tuple(known)):
        return None
    prefixes = reply_prefixes(adapters, known)
    accepted = ", ".join(prefixes) if prefixes else "none: no adapter here sends replies"
    return (
        f"reply_to {address[:200]!r}: no adapter delivers replies to "
        f"{scheme(address)[:40]!r} addresses; reply_to may begin with: {accepted}"
    )


__all__ = ["EMPTY", "refusal", "reply_prefixes", "scheme"]
