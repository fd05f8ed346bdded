"""What is asked of knowledge sources, and what they answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class KnowledgeQuery(BaseModel):
    """``text`` is what to look for; ``goal`` (the task it serves) weighs less."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1)
    goal: str = ""
    top_k: int = Field(default=5, ge=1, le=100)
    source_names: tuple[str, ...] = ()
    """Only these sources answer; empty means every source."""


@dataclass(frozen=True, slots=True)
class KnowledgePassage:
    """One ranked passage: where it is from (source, document, heading) and its score."""

    source: str
    document: str
    text: str
    score: float
    heading: str = ""

    @property
    def citation(self) -> str:
        where = f"{self.source}:{self.document}"
        return f"{where} > {self.heading}" if self.heading else where


def render_passages(passages: Sequence[KnowledgePassage]) -> str:
    """Passages as the ``C_working`` evidence block, each with its citation."""
    blocks = [
        f"[{number}] ({passage.citation})\n{passage.text}"
        for number, passage in enumerate(passages, start=1)
    ]
    return "Evidence (cite by number and source):\n" + "\n\n".join(blocks)
