"""The context window of one run: partitions, calibrated token counts, compaction in steps.

A request is rendered from the partitions in a fixed order: ``C_system`` (instructions),
``C_working`` (handoff, evidence), ``C_memory`` (the stored summary), ``C_skill``, then
``C_history`` (earlier turns and this run's transcript). Before each model call the window
checks the request against the policy's ``max_tokens``; past ``trigger`` it compacts, step by
step, down to ``target``: shorten old tool results, summarise the oldest turns with the model
(stored with the session as "everything up to entry N"), drop the oldest turns. Cuts happen
only where a user message begins, so no tool call is ever parted from its result.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loom.core.context import (
    ContextPolicy,
    ContextSummary,
    ContinuityPort,
    StoredContext,
    WorkingItem,
)
from loom.core.messages import Message, Usage
from loom.runtime.history import WorkingHistory, message_chars

logger = logging.getLogger("loom.context")

DEFAULT_TOKENS_PER_CHAR = 0.25
"""The estimate until a provider reports real input tokens: four characters a token."""
SUMMARY_INSTRUCTIONS = (
    "You compact a long-running conversation so it can go on. Write a faithful summary of "
    "the conversation you are given, extending the earlier summary if there is one: the "
    "goals, decisions, facts learnt (with numbers and names), tool findings, and what is "
    "still open. Write plain prose and lists, no preamble."
)
"""The instructions of a summarising request (so a ``Model.function`` can tell it apart)."""

Summariser = Callable[[str | None, Sequence[Message], int], Awaitable[str]]
"""``(previous summary, messages to fold in, token budget) -> new summary``."""
Saver = Callable[[StoredContext], Awaitable[None]]


def render_transcript(messages: Sequence[Message]) -> str:
    """Messages as plain text for a summarising request."""
    lines = []
    for message in messages:
        if message.role == "tool":
            lines.append(f"[tool {message.tool_name} result] {message.content}")
            continue
        if message.content:
            lines.append(f"[{message.role}] {message.content}")
        for call in message.tool_calls:
            arguments = json.dumps(call.arguments, default=str, ensure_ascii=False)
            lines.append(f"[assistant calls {call.name}] {arguments}")
    return "\n".join(lines)


def summary_prompt(previous: str | None, messages: Sequence[Message], budget: int) -> str:
    """The user message of a summarising request."""
    earlier = f"Earlier summary:\n{previous}\n\n" if previous else ""
    return (
        f"{earlier}Conversation to fold in:\n{render_transcript(messages)}\n\n"
        f"Write the new summary in at most about {budget} tokens."
    )


@dataclass(slots=True)
class TokenCounter:
    """Characters to tokens, calibrated by what the provider reported for the last request."""

    tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR
    calibrated: bool = False

    def tokens(self, chars: int) -> int:
        return math.ceil(chars * self.tokens_per_char)

    def chars(self, tokens: float) -> int:
        return int(tokens / self.tokens_per_char)

    def observe(self, request_chars: int, usage: Usage) -> None:
        if usage.input_tokens > 0 and request_chars > 0:
            # Bounded, so one odd report (a cached prefix counted apart) cannot wreck it.
            ratio = usage.input_tokens / request_chars
            self.tokens_per_char = min(max(ratio, 0.02), 2.0)
            self.calibrated = True


@dataclass(slots=True)
class Compaction:
    """What one compaction did, as the ``on_context_compact`` hook reports it."""

    tokens_before: int
    tokens_after: int = 0
    steps: list[str] = field(default_factory=list)
    shortened_results: int = 0
    summarized_upto: int | None = None
    summary_error: str | None = None
    dropped_messages: int = 0
    dropped_run_messages: int = 0

    @property
    def strategy(self) -> str:
        return self.steps[-1] if self.steps else "none"

    def payload(self, max_tokens: int) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "steps": list(self.steps),
            "rho": self.tokens_before / max_tokens,
            "rho_after": self.tokens_after / max_tokens,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "shortened_results": self.shortened_results,
            "summarized_upto": self.summarized_upto,
            "summary_error": self.summary_error,
            "dropped_messages": self.dropped_messages,
            "dropped_run_messages": self.dropped_run_messages,
        }


@dataclass(frozen=True, slots=True)
class DropOldestTurns(ContextPolicy):
    """The kernel's own policy when none is configured: drop whole turns past 90%."""

    max_tokens: int
    budgets: dict[str, int] = field(default_factory=dict)
    trigger: float = 0.9
    target: float = 0.7
    compaction: tuple[str, ...] = ("drop_oldest_turns",)
    keep_tool_result_chars: int = 2000


class ContextWindow:
    """One run's view of its session: what each request is rendered from.

    ``history`` is this run's copy of the earlier turns (compaction shortens and drops in it,
    never in the stored transcript); ``first_entry`` is the session-wide number of its first
    message; ``stored`` is the session's stored context, updated in place and saved through
    ``save`` whenever a summary is written.
    """

    def __init__(
        self,
        policy: ContextPolicy,
        history: WorkingHistory,
        *,
        first_entry: int = 0,
        stored: StoredContext | None = None,
        use_summary: bool = True,
        working: Sequence[str | WorkingItem] = (),
        skills: Sequence[tuple[str, str]] = (),
        runtime_items: int | None = None,
        continuity: ContinuityPort | None = None,
        save: Saver | None = None,
    ) -> None:
        self.policy = policy
        self.history = history
        self.first_entry = first_entry
        self.stored = stored if stored is not None else StoredContext()
        self.use_summary = use_summary
        self.working = list(working)
        self.skills = list(skills)
        self._rendered: dict[str, tuple[object, str]] = {}
        self.runtime_items = runtime_items
        self.continuity = continuity
        self.save = save
        self.counter = TokenCounter()
        if self.stored.tokens_per_char is not None:
            self.counter = TokenCounter(self.stored.tokens_per_char, calibrated=True)
        self.summaries = 0
        self._tool_chars = 0
        # This run's own turns as requests show them (the transcript itself is kept whole
        # for the store): shortened results by index, and how many messages after the
        # run's first are left out, with the characters the view saves.
        self._run_replaced: dict[int, Message] = {}
        self._run_dropped = 0
        self._run_saved = 0
        self._skip_summarized()

    def _skip_summarized(self) -> None:
        """Leave out of the view what the stored summary already covers."""
        summary = self.stored.summary
        if summary is None or not self.use_summary or summary.upto <= self.first_entry:
            return
        skip = min(summary.upto - self.first_entry, len(self.history.messages))
        messages = self.history.messages
        while skip < len(messages) and messages[skip].role != "user":
            skip += 1  # the summary ends where a turn begins; keep that boundary
        self._drop_head(skip)

    def _drop_head(self, count: int) -> None:
        if count:
            kept = self.history.messages[count:]
            self.history = WorkingHistory(kept)
            self.first_entry += count

    # -- rendering -------------------------------------------------------------------------
    def _budget(self, partition: str) -> int:
        return self.policy.budgets.get(partition, self.policy.max_tokens)

    def _fit(self, text: str, partition: str) -> str:
        limit = self.counter.chars(self._budget(partition))
        if len(text) <= limit:
            return text
        return text[: max(limit - 40, 0)] + "\n[cut to fit the context budget]"

    def _cached(self, partition: str, key: object, render: Callable[[], str]) -> str:
        """A partition's text, rendered again only when ``key`` (its budget in characters,
        the handoff) changed: the request of every model call reads it."""
        cached = self._rendered.get(partition)
        if cached is not None and cached[0] == key:
            return cached[1]
        text = render()
        self._rendered[partition] = (key, text)
        return text

    def working_text(self) -> str:
        """The handoff, then the items that render themselves within the room they are
        given (signals and risks), then text items (knowledge evidence): a partition over
        budget is cut at its end, where the evidence is."""
        limit = self.counter.chars(self._budget("C_working"))
        key = (limit, self.stored.handoff)
        return self._cached("C_working", key, lambda: self._render_working(limit))

    def _render_working(self, limit: int) -> str:
        # The restore policy's ``runtime_items`` bounds the stored handoff and the text
        # items; self-rendering items are this run's own signals and risks: always in.
        kept = [item for item in self.working if isinstance(item, str)]
        renderable = [item for item in self.working if not isinstance(item, str)]
        if self.stored.handoff is not None:
            handoff = self.stored.handoff.render()
            kept.insert(0, f"Handoff from the compacted part of this session:\n{handoff}")
        if self.runtime_items is not None:
            kept = kept[: self.runtime_items]
        if not kept and not renderable:
            return ""
        head = kept[:1] if self.stored.handoff is not None else []
        texts = kept[len(head) :]
        fixed = sum(len(text) + 2 for text in head)
        # Self-rendering items get what the handoff leaves, at least half the budget: the
        # evidence after them is what the cut takes first.
        room = max(limit - fixed - sum(len(text) + 2 for text in texts), (limit - fixed) // 2)
        rendered = []
        for index, item in enumerate(renderable):
            text = item.render(max(room // (len(renderable) - index), 0))
            room -= len(text) + 2
            rendered.append(text)
        parts = [text for text in (*head, *rendered, *texts) if text]
        return self._fit("\n\n".join(parts), "C_working") if parts else ""

    def memory_text(self) -> str:
        summary = self.stored.summary
        if summary is None or not self.use_summary or not summary.text:
            return ""
        return self._fit(summary.text, "C_memory")

    def skill_text(self) -> str:
        """The skills the agent may load: name and when to use each, within the budget;
        skills past it are named without their description, then cut."""
        if not self.skills:
            return ""
        limit = self.counter.chars(self._budget("C_skill"))
        return self._cached("C_skill", limit, lambda: self._render_skills(limit))

    def _render_skills(self, limit: int) -> str:
        lead = "Load a skill's instructions with load_skill(name) when the task fits it."
        lines = [lead]
        used = len(lead)
        names = [name for name, _ in self.skills]
        # Room is kept for naming the skills left undescribed: each stays loadable.
        also = [
            len(", ".join(names[i:])) + 7 if i < len(names) else 0 for i in range(len(names) + 1)
        ]
        for index, (name, when) in enumerate(self.skills):
            line = f"- {name}: {' '.join(when.split())}"
            if used + len(line) + 1 + also[index + 1] > limit:
                lines.append(f"Also: {', '.join(names[index:])}")
                break
            lines.append(line)
            used += len(line) + 1
        return self._fit("\n".join(lines), "C_skill")

    def instructions(self, system: str) -> str:
        """C_system, then C_working, C_memory and C_skill under their headings."""
        parts = [system] if system else []
        if working := self.working_text():
            parts.append(f"## Working state\n{working}")
        if memory := self.memory_text():
            parts.append(f"## Summary of the earlier conversation\n{memory}")
        if skills := self.skill_text():
            parts.append(f"## Skills\n{skills}")
        return "\n\n".join(parts)

    def set_tools(self, definitions: Sequence[Any]) -> None:
        self._tool_chars = sum(
            len(d.name) + len(d.description) + len(json.dumps(d.parameters)) for d in definitions
        )

    def request_chars(self, instructions: str, transcript_chars: int) -> int:
        return len(instructions) + self._tool_chars + self.history.chars + transcript_chars

    # -- this run's own turns --------------------------------------------------------------
    def run_messages(self, transcript: Sequence[Message]) -> list[Message]:
        """This run's transcript as the next request shows it (compacted if it had to be)."""
        if not self._run_replaced and not self._run_dropped:
            return list(transcript)
        return [
            self._run_replaced.get(index, message)
            for index, message in enumerate(transcript)
            if not 1 <= index <= self._run_dropped
        ]

    def run_chars(self, transcript_chars: int) -> int:
        """The characters of ``run_messages`` (the transcript's, less what the view saves)."""
        return transcript_chars - self._run_saved

    def _run_view(self, transcript: Sequence[Message], index: int) -> Message:
        return self._run_replaced.get(index, transcript[index])

    @staticmethod
    def _newest_step(transcript: Sequence[Message]) -> int:
        """Index of the run's newest model turn: its results stay whole, it stays in."""
        return max((i for i, m in enumerate(transcript) if m.role == "assistant"), default=0)

    def _shorten_run_results(self, transcript: Sequence[Message]) -> int:
        keep = self.policy.keep_tool_result_chars
        changed = 0
        for index in range(self._run_dropped + 1, self._newest_step(transcript)):
            message = transcript[index]
            if (
                message.role != "tool"
                or index in self._run_replaced
                or len(message.content) <= keep
            ):
                continue
            cut = len(message.content) - keep
            content = f"{message.content[:keep]}\n[shortened: {cut} characters left out]"
            short = self._run_replaced[index] = replace(message, content=content)
            self._run_saved += message_chars(message) - message_chars(short)
            changed += 1
        return changed

    def _drop_run_steps(self, transcript: Sequence[Message], over: int) -> int:
        """Leave out this run's oldest steps (a model turn with the results of its calls,
        never one without the other) until ``over`` characters are saved; the newest step
        stays, and the run's first message says how many were left out."""
        newest = self._newest_step(transcript)
        start = index = self._run_dropped + 1
        saved = 0
        while saved < over and index < newest and transcript[index].role == "assistant":
            end = index + 1
            while end < len(transcript) and transcript[end].role == "tool":
                end += 1
            if end >= len(transcript) or transcript[end].role != "assistant":
                break  # the turns must still alternate after the first message
            for gone in range(index, end):
                saved += message_chars(self._run_replaced.pop(gone, transcript[gone]))
            index = end
        if index == start:
            return 0
        self._run_dropped = index - 1
        self._run_saved += saved
        first = transcript[0]
        if first.role == "user":
            steps = sum(1 for m in transcript[1:index] if m.role == "assistant")
            note = (
                f"\n\n[{steps} earlier step(s) of this run, tool calls with their results, "
                "were left out to fit the context]"
            )
            before = message_chars(self._run_view(transcript, 0))
            marked = self._run_replaced[0] = replace(first, content=first.content + note)
            self._run_saved -= message_chars(marked) - before
        return index - start

    # -- compaction ------------------------------------------------------------------------
    async def fit(
        self,
        system: str,
        transcript: Sequence[Message],
        transcript_chars: int,
        summarise: Summariser | None,
        run_id: str = "",
    ) -> tuple[str, Compaction | None]:
        """The instructions of the next request, compacting first if it would be too big."""
        instructions = self.instructions(system)
        limit = self.policy.max_tokens
        used = self.counter.tokens(
            self.request_chars(instructions, self.run_chars(transcript_chars))
        )
        if used < limit * self.policy.trigger:
            return instructions, None
        report = Compaction(tokens_before=used)
        target = limit * self.policy.target

        def size() -> int:
            run = self.run_chars(transcript_chars)
            return self.counter.tokens(self.request_chars(instructions, run))

        for step in self.policy.compaction:
            if step == "shorten_tool_results":
                # The earlier turns' results, then this run's own older ones.
                shortened = self._shorten_tool_results() + self._shorten_run_results(transcript)
                if shortened:
                    report.steps.append(step)
                    report.shortened_results = shortened
            elif step == "summarize" and summarise is not None:
                run = self.run_chars(transcript_chars)
                await self._summarize(system, transcript, run, summarise, run_id, report, target)
                instructions = self.instructions(system)
            elif step == "drop_oldest_turns":
                fixed = len(instructions) + self._tool_chars + self.run_chars(transcript_chars)
                dropped = self._drop_turns(self.counter.chars(target) - fixed)
                if dropped:
                    report.steps.append(step)
                    report.dropped_messages += dropped
            if size() <= target:
                break
        dropping = "drop_oldest_turns" in self.policy.compaction or report.summary_error
        if report.summary_error and size() > target and "drop_oldest_turns" not in report.steps:
            # Summarising failed: dropping turns is the fallback whatever the steps say.
            fixed = len(instructions) + self._tool_chars + self.run_chars(transcript_chars)
            report.dropped_messages += self._drop_turns(self.counter.chars(target) - fixed)
            report.steps.append("drop_oldest_turns")
        if dropping and size() > target:
            # The earlier turns are gone and this run alone outgrows the budget: its own
            # oldest steps go next (the stored transcript keeps them).
            over = self.counter.chars(size() - target)
            dropped = self._drop_run_steps(transcript, over)
            if dropped:
                report.steps.append("drop_run_steps")
                report.dropped_run_messages = dropped
        report.tokens_after = size()
        if not report.steps and not self.history.messages:
            return instructions, None  # nothing to compact: the request goes as it is
        return instructions, report

    def _shorten_tool_results(self) -> int:
        keep = self.policy.keep_tool_result_chars
        messages = self.history.messages
        changed = 0
        # Results of the newest turn stay whole: the model may still be reading them.
        last_turn = max((i for i, m in enumerate(messages) if m.role == "user"), default=0)
        for index in range(last_turn):
            message = messages[index]
            if message.role == "tool" and len(message.content) > keep:
                cut = len(message.content) - keep
                content = f"{message.content[:keep]}\n[shortened: {cut} characters left out]"
                messages[index] = replace(message, content=content)
                changed += 1
        if changed:
            self.history = WorkingHistory(messages)
        return changed

    def _cut_for(self, target_chars: int) -> int:
        """The first user message from which the remaining history fits ``target_chars``."""
        messages = self.history.messages
        chars = self.history.chars
        cut = 0
        while cut < len(messages) and chars > target_chars:
            chars -= message_chars(messages[cut])
            cut += 1
            while cut < len(messages) and messages[cut].role != "user":
                chars -= message_chars(messages[cut])
                cut += 1
        return cut

    def _drop_turns(self, target_chars: int) -> int:
        cut = self._cut_for(max(target_chars, 0))
        self._drop_head(cut)
        return cut

    async def _summarize(
        self,
        system: str,
        transcript: Sequence[Message],
        transcript_chars: int,
        summarise: Summariser,
        run_id: str,
        report: Compaction,
        target: float,
    ) -> None:
        memory_budget = self._budget("C_memory")
        room = (
            self.counter.chars(target - memory_budget)
            - len(system)
            - len(self.working_text())
            - len(self.skill_text())
            - self._tool_chars
            - transcript_chars
        )
        cut = self._cut_for(max(room, 0))
        if cut == 0:
            return
        folded = self.history.messages[:cut]
        previous = self.stored.summary.text if self.stored.summary and self.use_summary else None
        try:
            text = (await summarise(previous, folded, memory_budget)).strip()
            if not text:
                raise ValueError("the model answered with an empty summary")
        except Exception as exc:  # the run goes on: the next step drops turns instead
            logger.warning("summarising the context failed: %s", exc)
            report.summary_error = f"{type(exc).__name__}: {exc}"
            return
        upto = self.first_entry + cut
        self._drop_head(cut)
        self.stored.summary = ContextSummary(upto=upto, text=text, run_id=run_id)
        self.use_summary = True
        self.summaries += 1
        report.steps.append("summarize")
        report.summarized_upto = upto
        if self.continuity is not None:
            goal = next((m.content for m in transcript if m.role == "user"), "")
            self.stored.handoff = self.continuity.handoff(
                goal=goal,
                summary=text,
                recent=[*self.history.messages, *transcript],
                risks=(),
                upto=upto,
            )
        self.stored.tokens_per_char = self.counter.tokens_per_char
        if self.save is not None:
            # Under the run's fencing token: a run that lost its session cannot write.
            await self.save(self.stored.copy())

    async def remember_calibration(self) -> None:
        """Store the calibration learnt in this run if it moved by more than a tenth."""
        stored = self.stored.tokens_per_char
        ratio = self.counter.tokens_per_char
        if not self.counter.calibrated or self.save is None:
            return
        if stored is not None and abs(ratio - stored) <= 0.1 * stored:
            return
        self.stored.tokens_per_char = ratio
        await self.save(self.stored.copy())
