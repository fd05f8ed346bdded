"""What a worker's run is given: the signals to handle in its input, in full; what was only
observed and the session's active risks as a digest in ``C_working``.

Observed signals and open risks used to be listed whole in every run's input, so each run
of a busy session repeated them all, and every earlier input stayed in the history with its
own copy. Now the input (the user turn the transcript keeps) holds only what the run is
asked to handle and one line saying what the working state summarises; the digest is
rendered within the ``C_working`` budget for this run only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loom.core.attention import TO_HANDLE
from loom.runtime.working import SignalDigest, risk_kind
from loom.wire import PendingSignal

CARRIED_MARK = "(carried over from an interrupted run)"
"""How a run's input marks a signal an interrupted run handed on untreated."""
NOTHING_TO_HANDLE = "No signal asks for action in this run; review your working state."
RISK_TEXT_CHARS = 1000
"""A risk is kept as its signal's description cut here (``loom.daemon.ledger``)."""


@dataclass(frozen=True, slots=True)
class RunInput:
    """The run's input text and its ``C_working`` digest."""

    text: str
    digest: SignalDigest


def render_run_input(signals: Sequence[PendingSignal], risks: Mapping[str, str]) -> RunInput:
    """The signals that ask for a run, in full (carried-over ones marked), as the input;
    observed signals and active risks as a digest. A risk raised by a signal this run
    handles is not repeated in the digest: the input has it whole."""
    handle: list[str] = []
    observed = []
    for pending in signals:
        if not pending.action.wakes_a_worker:
            observed.append(pending.signal)
            continue
        line = pending.signal.describe()
        handle.append(f"{CARRIED_MARK} {line}" if pending.carried else line)
    here = {p.signal.describe()[:RISK_TEXT_CHARS] for p in signals if p.action.wakes_a_worker}
    # The state keeps risks oldest first: the digest lists them newest first.
    open_risks = tuple(text for text in reversed(list(risks.values())) if text not in here)
    digest = SignalDigest(observed=tuple(observed), risks=open_risks)
    parts = []
    if handle:
        parts.append(f"{TO_HANDLE}:\n" + "\n".join(f"- {line}" for line in handle))
    else:
        parts.append(NOTHING_TO_HANDLE)
    # What the working state holds, in the transcript too: kinds and counts, not copies.
    counts = []
    if observed:
        kinds = Counter(f"{s.source}/{s.type}" for s in observed)
        counts.append(f"{len(observed)} observed signal(s) ({_kinds(kinds)})")
    if open_risks:
        kinds = Counter(risk_kind(text) for text in open_risks)
        counts.append(f"{len(open_risks)} active risk(s) ({_kinds(kinds)})")
    if counts:
        parts.append(f"Your working state summarises {' and '.join(counts)}.")
    return RunInput("\n\n".join(parts), digest)


def _kinds(kinds: Counter[str]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())


__all__ = ["CARRIED_MARK", "RunInput", "render_run_input"]
