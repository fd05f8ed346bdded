"""Harness: how long a run keeps working toward its quality gate.

``Harness.single_run()`` is one sprint: the run ends when the model gives its final answer,
and the gate's verdict is the run's. ``Harness.long_running(max_sprints=5)`` goes on: after
a sprint the gate judges the work, and on a FAIL the unmet criteria go back to the agent as
a new turn of the same run, until the gate passes or the sprints run out (then the run
fails with the unmet criteria). Every sprint's events stay in the run's stream; in the
daemon each sprint boundary is a checkpoint, so a worker that dies resumes at the next
sprint instead of starting over.
"""

from __future__ import annotations

from loom.core.quality import QualityVerdict


class Harness:
    """A ``SprintPolicy``: ``single_run()`` or ``long_running(max_sprints=...)``."""

    def __init__(self, *, name: str, max_sprints: int) -> None:
        if isinstance(max_sprints, bool) or not isinstance(max_sprints, int) or max_sprints < 1:
            raise ValueError(f"max_sprints must be an integer of at least 1, not {max_sprints!r}")
        self.name = name
        self._max_sprints = max_sprints

    @classmethod
    def single_run(cls) -> Harness:
        """One sprint: the gate's verdict on it is final."""
        return cls(name="single_run", max_sprints=1)

    @classmethod
    def long_running(cls, max_sprints: int = 5) -> Harness:
        """Up to ``max_sprints`` sprints: each FAIL sends the unmet criteria back."""
        return cls(name="long_running", max_sprints=max_sprints)

    @property
    def max_sprints(self) -> int:
        return self._max_sprints

    def next_turn(self, verdict: QualityVerdict) -> str:
        """What the agent is told after a failed sprint."""
        return (
            f"A review of your work (sprint {verdict.sprint}) found these acceptance criteria "
            f"not met:\n{verdict.describe_unmet()}\n\n"
            "Keep working until every criterion is met, then give your final answer."
        )

    def __repr__(self) -> str:
        return f"Harness.{self.name}(max_sprints={self._max_sprints})"


__all__ = ["Harness"]
