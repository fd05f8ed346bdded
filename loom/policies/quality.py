"""QualityGate: acceptance criteria judged after a run, and deterministic checks.

``QualityGate.criteria([...])`` asks the model, after the run, for a structured verdict on
each criterion (met, and why), answered as JSON and parsed strictly: an answer that is not
exactly that JSON is a FAIL of every criterion, never a guess. ``QualityGate.checks(fn,
...)`` runs functions on the work instead: ``fn(review)`` returns True (met), False (not
met) or a string (not met, for that reason); one that raises is not met (fail closed).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from loom.core.quality import CriterionVerdict, QualityVerdict, Review
from loom.providers.base import ModelProvider

logger = logging.getLogger("loom.quality")

Check = Callable[[Review], "bool | str | Awaitable[bool | str | None] | None"]

MAX_SHOWN_CHARS = 4_000
"""Of each tool result and of the answer, what the judge is shown (the rest is cut)."""
MAX_SHOWN_RESULTS = 20

JUDGE_INSTRUCTIONS = """You are a strict reviewer. Judge whether the work below meets each \
numbered acceptance criterion, using only the evidence shown (the task, the tool results \
and the final answer). A criterion without evidence that it is met is not met.

Answer with one JSON object and nothing else, in exactly this form:
{"criteria": [{"id": 1, "met": true, "reason": "why, citing the evidence"}, ...]}
with one entry for every criterion, by its number."""

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


class _Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: int = Field(ge=1)
    met: StrictBool
    reason: str


class _Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    criteria: list[_Judgement]


class UnreadableVerdict(ValueError):
    """The judge's answer is not the verdict it was asked for."""


def parse_verdict(text: str, criteria: Sequence[str]) -> tuple[CriterionVerdict, ...]:
    """The judge's answer as one verdict per criterion; raises ``UnreadableVerdict`` for
    anything but the asked JSON (a Markdown code fence around it is allowed) answering every
    criterion exactly once."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        verdict = _Verdict.model_validate_json(body)
    except ValidationError as problem:
        first = problem.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise UnreadableVerdict(f"{where}: {first['msg']}") from None
    ids = [j.id for j in verdict.criteria]
    wanted = list(range(1, len(criteria) + 1))
    if sorted(ids) != wanted:
        raise UnreadableVerdict(f"criteria answered {sorted(ids)}, expected {wanted}")
    by_id = {j.id: j for j in verdict.criteria}
    return tuple(
        CriterionVerdict(c, by_id[i].met, by_id[i].reason.strip())
        for i, c in enumerate(criteria, 1)
    )


class QualityGate:
    """Criteria a model judges and checks code runs, after each run (or sprint).

    ``QualityGate.criteria(["no error left unexplained"])``,
    ``QualityGate.checks(cites_a_log_line)``, or both: ``QualityGate(criteria=[...],
    checks=[...])``. The task's own ``RuntimeTask.criteria`` are judged too. ``model``
    names a separate judge (``Model.anthropic("claude-haiku-4-5")``): the verdict is asked
    of it instead of the agent's model, and its usage is counted in the run's.
    """

    def __init__(
        self,
        *,
        criteria: Iterable[str] = (),
        checks: Iterable[Check] = (),
        model: ModelProvider | None = None,
    ) -> None:
        if model is not None and not isinstance(model, ModelProvider):
            raise ValueError(
                f"a quality gate's model must be a model (Model.anthropic(...), "
                f"Model.function(fn), ...), not {model!r}"
            )
        self.model = model
        """The judge's own model; None: the agent's."""
        if isinstance(criteria, str):
            raise ValueError("criteria must be a list of strings, not one string")
        self._criteria = tuple(criteria)
        for criterion in self._criteria:
            if not isinstance(criterion, str) or not criterion.strip():
                raise ValueError(f"a criterion must be a non-empty string, not {criterion!r}")
        self._checks = tuple(checks)
        for check in self._checks:
            if not callable(check):
                raise ValueError(f"a quality check must be callable, not {check!r}")

    @classmethod
    def criteria(
        cls, criteria: Iterable[str], *, model: ModelProvider | None = None
    ) -> QualityGate:
        """Criteria the model (``model``, else the agent's) judges after the run; at least
        one."""
        gate = cls(criteria=criteria, model=model)
        if not gate._criteria:
            raise ValueError("QualityGate.criteria needs at least one criterion")
        return gate

    @classmethod
    def checks(cls, *checks: Check) -> QualityGate:
        """Deterministic checks: ``fn(review)`` returns True, False or a failure reason."""
        if not checks:
            raise ValueError("QualityGate.checks needs at least one check")
        return cls(checks=checks)

    @classmethod
    def task_criteria(cls) -> QualityGate:
        """Judges only what a task brings (``RuntimeTask.criteria``): the agent's default."""
        return cls()

    @property
    def criteria_list(self) -> tuple[str, ...]:
        return self._criteria

    async def evaluate(self, review: Review) -> QualityVerdict | None:
        """The verdict on ``review``; None when there is nothing to judge."""
        criteria = tuple(dict.fromkeys((*self._criteria, *review.criteria)))
        if not criteria and not self._checks:
            return None
        results = [
            await _run_check(check, index, review) for index, check in enumerate(self._checks, 1)
        ]
        if criteria:
            results.extend(await self._judge(review, criteria))
        return QualityVerdict(tuple(results))

    async def _judge(self, review: Review, criteria: Sequence[str]) -> list[CriterionVerdict]:
        if review.ask is None:
            raise RuntimeError("judging criteria needs a model call (review.ask)")
        answer = await review.ask(JUDGE_INSTRUCTIONS, judge_prompt(review, criteria))
        try:
            return list(parse_verdict(answer, criteria))
        except UnreadableVerdict as problem:
            reason = f"the judge's verdict could not be read ({problem}), so it is a FAIL"
            logger.warning("quality verdict unreadable: %s", problem)
            return [CriterionVerdict(c, False, reason) for c in criteria]

    def __repr__(self) -> str:
        return f"QualityGate(criteria={list(self._criteria)!r}, checks={len(self._checks)})"


def judge_prompt(review: Review, criteria: Sequence[str]) -> str:
    """What the judge is shown: the task, the tool results, the answer, the criteria."""
    results = review.tool_results[-MAX_SHOWN_RESULTS:]
    shown = "\n".join(
        f"- {m.tool_name}{' (error)' if m.is_error else ''}: {_cut(m.content)}" for m in results
    )
    numbered = "\n".join(f"{i}. {c}" for i, c in enumerate(criteria, 1))
    return (
        f"Task:\n{_cut(review.input)}\n\n"
        f"Tool results:\n{shown or '(none)'}\n\n"
        f"Final answer:\n{_cut(review.output) or '(empty)'}\n\n"
        f"Acceptance criteria:\n{numbered}"
    )


def _cut(text: str) -> str:
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]} [cut: {len(text) - MAX_SHOWN_CHARS} more characters]"


def _check_name(check: Check, index: int) -> str:
    name = getattr(check, "__name__", "")
    if not name or name == "<lambda>":
        return f"check {index}"
    return name.replace("_", " ")


async def _run_check(check: Check, index: int, review: Review) -> CriterionVerdict:
    name = _check_name(check, index)
    try:
        outcome: Any = check(review)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    except Exception as exc:
        logger.exception("quality check %s raised; it counts as not met", name)
        return CriterionVerdict(name, False, f"the check raised {type(exc).__name__}")
    if isinstance(outcome, str) and outcome:
        return CriterionVerdict(name, False, outcome)
    if outcome is True:
        return CriterionVerdict(name, True, "check passed")
    return CriterionVerdict(name, False, "check failed")


def verdict_json(verdicts: Sequence[tuple[bool, str]]) -> str:
    """The JSON a judge answers with, for ``(met, reason)`` per criterion in order (what a
    scripted test model returns)."""
    return json.dumps(
        {"criteria": [{"id": i, "met": m, "reason": r} for i, (m, r) in enumerate(verdicts, 1)]}
    )


__all__ = [
    "JUDGE_INSTRUCTIONS",
    "QualityGate",
    "UnreadableVerdict",
    "judge_prompt",
    "parse_verdict",
    "verdict_json",
]
