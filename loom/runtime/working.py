"""The signal part of ``C_working``: observed signals and active risks, summarised.

A long-lived session collects signals it only observes (heartbeats, low-urgency events,
alerts folded while it was busy) and risks that stay open for hours. Repeating each of
them whole in every run's input made a prompt mostly old signals. Here they become one
working-state item rendered within whatever room the ``C_working`` budget leaves it:

- counts per source and type first (always shown, so nothing is silently missing);
- then the entries, newest first, one line each, as many as fit, with how many older
  ones were left out;
- repeats of the same signal (a heartbeat, the same line again) collapse into one line
  with a count, and an alert's resolve collapses the firing notices of the same alert
  that came before it (an alert is known by ``payload.risk_key``, else its ``labels``).

The signals a run must handle now are not here: they are the run's input, in full.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from loom.core.attention import Action
from loom.signals import RuntimeSignal

LINE_CHARS = 200
"""An entry's line is cut here: the digest says what happened, not every detail of it."""
OBSERVED_HEADING = Action.OBSERVE.prompt_section
RISKS_HEADING = "Active risks (open until resolved)"
_RISK_KIND = re.compile(r"^\[([^/\]]+)/([^,\]]+), urgency ([A-Za-z]+)\]")


def _line(text: str) -> str:
    first = text.split("\n", 1)[0].strip()
    return first if len(first) <= LINE_CHARS else first[: LINE_CHARS - 1] + "…"


def _alert_key(signal: RuntimeSignal) -> str | None:
    """What makes two notices the same alert (None: not an alert with a status)."""
    if signal.payload.get("status") not in ("firing", "resolved"):
        return None
    key = signal.payload.get("risk_key")
    if key is not None:
        return f"{signal.source}|{key}"
    labels = signal.payload.get("labels")
    if isinstance(labels, dict) and labels:
        return f"{signal.source}|{json.dumps(labels, sort_keys=True, default=str)}"
    return None


@dataclass(slots=True)
class _Entry:
    line: str
    repeats: int = 1
    resolves: int = 0

    def render(self) -> str:
        notes = []
        if self.repeats > 1:
            notes.append(f"{self.repeats} times")
        if self.resolves:
            notes.append(f"resolves {self.resolves} firing notice(s) before it")
        return f"- {self.line}" + (f" ({'; '.join(notes)})" if notes else "")


def _observed_entries(signals: Sequence[RuntimeSignal]) -> list[_Entry]:
    """Newest first; repeats and resolved alerts' firing notices collapsed."""
    newest_first = sorted(signals, key=lambda s: s.observed_at, reverse=True)
    entries: list[_Entry] = []
    by_line: dict[str, _Entry] = {}
    resolved: dict[str, _Entry] = {}  # alert key -> its newest resolve's entry
    for signal in newest_first:
        key = _alert_key(signal)
        if key is not None and signal.payload["status"] == "firing" and key in resolved:
            resolved[key].resolves += 1  # fired before it was resolved: the resolve says it
            continue
        line = _line(f"[{signal.source}/{signal.type}, urgency {signal.urgency}] {signal.summary}")
        if line in by_line:
            by_line[line].repeats += 1
            continue
        entry = by_line[line] = _Entry(line)
        entries.append(entry)
        if key is not None and signal.payload["status"] == "resolved":
            resolved.setdefault(key, entry)
    return entries


def _counts(kinds: Counter[str]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())


def risk_kind(text: str) -> str:
    """``source/type`` of a risk kept as a signal's description (``other`` if it is not)."""
    found = _RISK_KIND.match(text)
    return f"{found.group(1)}/{found.group(2)}" if found else "other"


@dataclass(frozen=True, slots=True)
class SignalDigest:
    """Observed signals and active risks as one ``C_working`` item.

    ``observed`` in any order (sorted by ``observed_at`` here); ``risks`` are the risks'
    texts (``RuntimeSignal.describe()``), newest first.
    """

    observed: tuple[RuntimeSignal, ...] = ()
    risks: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.observed or self.risks)

    def sections(self) -> list[tuple[str, list[str]]]:
        """Each section's always-shown head lines and its entries, newest first."""
        out: list[tuple[str, list[str]]] = []
        if self.observed:
            kinds = Counter(f"{s.source}/{s.type}" for s in self.observed)
            entries = [e.render() for e in _observed_entries(self.observed)]
            head = f"{OBSERVED_HEADING}: {len(self.observed)} signal(s); {_counts(kinds)}"
            out.append((head, entries))
        if self.risks:
            kinds = Counter(risk_kind(text) for text in self.risks)
            head = f"{RISKS_HEADING}: {len(self.risks)}; {_counts(kinds)}"
            out.append((head, [f"- {_line(text)}" for text in self.risks]))
        return out

    def render(self, max_chars: int) -> str:
        """The digest within ``max_chars`` (heads first; then entries, newest first, as
        many as fit; each section says how many it left out)."""
        sections = self.sections()
        heads = sum(len(head) + 1 for head, _ in sections) + 2 * (len(sections) - 1)
        room = max_chars - heads
        # Each section may take an equal share of the room; what one does not use the
        # next may (risks come after observed signals).
        blocks = []
        for index, (head, entries) in enumerate(sections):
            share = room // (len(sections) - index)
            shown: list[str] = []
            used = 0
            for n, entry in enumerate(entries):
                left = len(entries) - n - 1
                more = len(f"- … and {left} older") + 1 if left else 0
                if used + len(entry) + 1 + more > share:
                    break
                shown.append(entry)
                used += len(entry) + 1
            if len(shown) < len(entries):
                note = f"- … and {len(entries) - len(shown)} older"
                shown.append(note)
                used += len(note) + 1
            room -= used
            blocks.append("\n".join([head, *shown]))
        return "\n\n".join(blocks)


__all__ = ["OBSERVED_HEADING", "RISKS_HEADING", "SignalDigest", "risk_kind"]
