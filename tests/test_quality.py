"""Runs that check their own work: the quality gate's verdict, the harness's sprints."""

from __future__ import annotations

from typing import Any

import pytest

from loom import (
    Agent,
    FeedbackPolicy,
    Harness,
    Model,
    ModelRequest,
    ModelResponse,
    QualityGate,
    RunStatus,
    Runtime,
    RuntimeTask,
    ToolCall,
    Usage,
    tool,
)
from loom.core.quality import Review
from loom.policies.quality import JUDGE_INSTRUCTIONS, parse_verdict, verdict_json

HEALTHZ = "the service answers /healthz"


def is_judge(request: ModelRequest) -> bool:
    return request.instructions == JUDGE_INSTRUCTIONS


class Worker:
    """A model that works in sprints: each sprint calls ``check`` once, then answers; the
    judge gets the next scripted verdict."""

    def __init__(self, *verdicts: str) -> None:
        self.verdicts = list(verdicts)
        self.requests: list[ModelRequest] = []
        self.judged: list[ModelRequest] = []

    def __call__(self, request: ModelRequest) -> ModelResponse | str:
        if is_judge(request):
            self.judged.append(request)
            return self.verdicts.pop(0)
        self.requests.append(request)
        last = request.messages[-1]
        if last.role == "user":
            return ModelResponse.of_tool_calls(
                ToolCall(f"c{len(self.requests)}", "check", {"what": "healthz"})
            )
        return f"answer after {len(self.requests)} requests"


checked: list[str] = []


@tool
def check(what: str) -> str:
    """Check something."""
    checked.append(what)
    return f"{what} is {'down' if len(checked) == 1 else 'up'}"


@pytest.fixture(autouse=True)
def _fresh_checks() -> None:
    checked.clear()


async def test_a_gate_that_fails_then_passes_across_two_sprints() -> None:
    model = Worker(
        verdict_json([(False, "the first check says down")]),
        verdict_json([(True, "the second check says up")]),
    )
    agent = Agent(
        Model.function(model),
        tools=[check],
        runtime=Runtime.long_running(criteria=[HEALTHZ]),
    )

    run = agent.session("ops").start("Is the service healthy?")
    result = await run.wait()

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.quality is not None
    assert result.quality.passed
    assert result.quality.sprint == 2
    assert [(c.criterion, c.met) for c in result.quality.criteria] == [(HEALTHZ, True)]
    assert checked == ["healthz", "healthz"]
    # The unmet criterion went back to the agent as a new turn of the same run.
    feedback = model.requests[2].messages[-1]
    assert feedback.role == "user"
    assert HEALTHZ in feedback.content
    assert "the first check says down" in feedback.content
    # Every sprint's tool events are in the run's stream, and both verdicts.
    types = [e.type for e in result.events]
    assert types.count("tool.completed") == 2
    assert [e.payload["passed"] for e in result.events if e.type == "quality.verdict"] == [
        False,
        True,
    ]
    assert (
        types.index("harness.sprint") < [i for i, t in enumerate(types) if t == "tool.completed"][1]
    )
    assert result.to_dict()["quality"]["passed"] is True
    # The judge's calls are the run's: counted in its usage.
    assert result.usage.requests == 6


async def test_a_final_fail_is_a_failed_run_naming_the_unmet_criteria() -> None:
    model = Worker(
        verdict_json([(True, "polite"), (False, "no health check shown")]),
        verdict_json([(True, "polite"), (False, "still no proof")]),
    )
    runtime = Runtime.long_running(
        criteria=[HEALTHZ], quality=QualityGate.criteria(["the answer is polite"]),
        harness=Harness.long_running(max_sprints=2),
    )  # fmt: skip
    agent = Agent(Model.function(model), tools=[check], runtime=runtime)

    result = await agent.run("Is the service healthy?")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("quality gate failed: unmet criteria")
    assert f"{HEALTHZ}: still no proof" in result.error
    assert "polite" not in result.error
    assert result.quality is not None
    assert not result.quality.passed
    assert [c.criterion for c in result.quality.unmet] == [HEALTHZ]
    assert len(model.judged) == 2
    # The gate's own criterion and the runtime's were both put to the judge.
    prompt = model.judged[0].messages[0].content
    assert "1. the answer is polite" in prompt
    assert f"2. {HEALTHZ}" in prompt
    assert "check: healthz is down" in prompt


@pytest.mark.parametrize(
    "answer",
    [
        "PASS",
        '{"criteria": [{"id": 1, "met": "yes", "reason": "ok"}]}',
        '{"criteria": [{"id": 2, "met": true, "reason": "ok"}]}',
        '{"criteria": []}',
        '{"criteria": [{"id": 1, "met": true, "reason": "ok"}], "note": 1}',
        'Sure! {"criteria": [{"id": 1, "met": true, "reason": "ok"}]}',
    ],
)
async def test_an_unparseable_verdict_is_a_fail(answer: str) -> None:
    model = Worker(answer)
    agent = Agent(Model.function(model), tools=[check],
                  runtime=Runtime.sdk(quality=QualityGate.criteria([HEALTHZ])))  # fmt: skip

    result = await agent.run("Is it healthy?")

    assert result.status is RunStatus.FAILED
    assert result.quality is not None
    assert not result.quality.passed
    assert "could not be read" in result.quality.criteria[0].reason
    assert HEALTHZ in (result.error or "")


def test_a_verdict_in_a_code_fence_is_read() -> None:
    fenced = "```json\n" + verdict_json([(True, "seen"), (False, "missing")]) + "\n```"
    verdicts = parse_verdict(fenced, ["a", "b"])
    assert [(v.criterion, v.met, v.reason) for v in verdicts] == [
        ("a", True, "seen"),
        ("b", False, "missing"),
    ]


async def test_deterministic_checks_judge_without_a_model_call() -> None:
    def mentions_healthz(review: Review) -> bool:
        return "healthz" in " ".join(m.content for m in review.tool_results)

    def short_answer(review: Review) -> str | bool:
        return len(review.output) < 10 or f"answer is {len(review.output)} characters long"

    model = Worker()
    gate = QualityGate.checks(mentions_healthz, short_answer, lambda review: 1 / 0)
    agent = Agent(Model.function(model), tools=[check], runtime=Runtime.sdk(quality=gate))

    result = await agent.run("Is it healthy?")

    assert result.status is RunStatus.FAILED
    assert result.quality is not None
    assert [(c.criterion, c.met) for c in result.quality.criteria] == [
        ("mentions healthz", True),
        ("short answer", False),
        ("check 3", False),
    ]
    assert (
        result.quality.criteria[1].reason == "answer is 23 characters long"
    )  # "answer after 2 requests"
    assert result.quality.criteria[2].reason == "the check raised ZeroDivisionError"
    assert model.judged == []  # checks need no judge


async def test_a_task_brings_its_own_criteria_to_the_default_gate() -> None:
    model = Worker(verdict_json([(True, "shown")]))
    agent = Agent(Model.function(model), tools=[check])

    passed = await agent.run(RuntimeTask(goal="check health", criteria=["a check ran"]))
    plain = await agent.run("check health")

    assert passed.status is RunStatus.COMPLETED
    assert passed.quality is not None
    assert passed.quality.criteria[0].criterion == "a check ran"
    assert plain.quality is None  # nothing to judge: no judge asked
    assert len(model.judged) == 1


async def test_metadata_named_criteria_that_is_no_list_is_not_judged() -> None:
    from loom import RunContext

    model = Worker()
    agent = Agent(Model.function(model), tools=[check])

    result = await agent.run("go", context=RunContext(metadata={"criteria": "strict"}))

    assert result.status is RunStatus.COMPLETED
    assert result.quality is None
    assert model.judged == []


async def test_a_judge_that_cannot_be_asked_fails_the_run() -> None:
    def model(request: ModelRequest) -> str:
        if is_judge(request):
            raise ConnectionError("judge unreachable")
        return "done"

    agent = Agent(Model.function(model), runtime=Runtime.sdk(quality=QualityGate.criteria(["x"])))

    result = await agent.run("go")

    assert result.status is RunStatus.FAILED
    assert "quality gate failed: the judge failed" in (result.error or "")
    assert "judge unreachable" in (result.error or "")


async def test_verdicts_are_recorded_as_quality_feedback() -> None:
    model = Worker(verdict_json([(False, "nope")]))
    agent = Agent(Model.function(model), tools=[check],
                  runtime=Runtime.sdk(quality=QualityGate.criteria([HEALTHZ])))  # fmt: skip
    feedback = FeedbackPolicy.collector()
    feedback.attach(agent)

    result = await agent.session("ops").run("Is it healthy?")

    events = [e for e in await feedback.read("ops") if e.kind == "quality_verdict"]
    assert [(e.run_id, e.value, e.score) for e in events] == [(result.run_id, "fail", -1.0)]
    assert events[0].comment == f"{HEALTHZ}: nope"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: QualityGate.criteria([]), "at least one criterion"),
        (lambda: QualityGate.criteria("be good"), "a list of strings"),
        (lambda: QualityGate.criteria(["ok", " "]), "non-empty string"),
        (lambda: QualityGate.checks(), "at least one check"),
        (lambda: QualityGate.checks("not callable"), "must be callable"),
        (lambda: Harness.long_running(max_sprints=0), "max_sprints"),
        (lambda: QualityGate.criteria(["ok"], model="haiku"), "must be a model"),
        (lambda: Runtime.sdk(quality="strict"), "quality must be a QualityGate"),
        (lambda: Runtime.sdk(harness=3), "harness must be a Harness"),
    ],
)
def test_bad_quality_settings_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


async def test_a_gate_with_its_own_model_is_judged_by_that_model() -> None:
    """Two models: the agent's works and would pass everything; the judge's fails the
    criterion. The verdict, the events and the usage show which one judged."""
    agent_model = Worker(verdict_json([(True, "the agent's model would pass it")]))
    judged: list[ModelRequest] = []

    def judge_fn(request: ModelRequest) -> ModelResponse:
        judged.append(request)
        assert is_judge(request)
        text = verdict_json([(False, "the judge saw no proof")])
        return ModelResponse(text, usage=Usage(requests=1, input_tokens=100, output_tokens=7))

    judge_model = Model.function(judge_fn, name="judge-model")
    gate = QualityGate.criteria([HEALTHZ], model=judge_model)
    agent = Agent(
        Model.function(agent_model, name="agent-model"),
        tools=[check],
        runtime=Runtime.sdk(quality=gate),
    )

    result = await agent.run("check the service")

    assert len(judged) == 1
    assert agent_model.judged == []  # the agent's model was never asked to judge
    assert result.status is RunStatus.FAILED
    assert result.quality is not None
    assert result.quality.criteria[0].reason == "the judge saw no proof"
    (asked,) = [e for e in result.events if e.type == "quality.judging"]
    assert asked.payload["model"] == "function:judge-model"
    (verdict,) = [e for e in result.events if e.type == "quality.verdict"]
    assert verdict.payload["judge"]["model"] == "function:judge-model"
    assert verdict.payload["judge"]["usage"]["input_tokens"] == 100
    # Rolled up: the run's usage holds the judge's call beside the agent's own two.
    assert result.usage.requests == 3
    assert result.usage.input_tokens >= 100


async def test_without_its_own_model_the_agents_model_judges() -> None:
    model = Worker(verdict_json([(True, "up")]))
    agent = Agent(
        Model.function(model, name="agent-model"),
        tools=[check],
        runtime=Runtime.sdk(quality=QualityGate.criteria([HEALTHZ])),
    )
    result = await agent.run("check the service")
    assert result.status is RunStatus.COMPLETED, result.error
    assert len(model.judged) == 1
    (verdict,) = [e for e in result.events if e.type == "quality.verdict"]
    assert verdict.payload["judge"]["model"] == "function:agent-model"


def test_presets_carry_their_policies() -> None:
    long = Agent("test", runtime=Runtime.long_running(criteria=[HEALTHZ])).runtime
    assert long.harness is not None
    assert long.harness.max_sprints == 5
    assert long.quality is not None
    assert long.criteria == (HEALTHZ,)
    supervised = Agent("test", runtime=Runtime.supervised(criteria=["asked first"])).runtime
    assert supervised.harness is not None
    assert supervised.harness.max_sprints == 1
    assert supervised.criteria == ("asked first",)
    assert supervised.delegation is None
    autonomous = Agent("test", runtime=Runtime.autonomous(max_depth=3, max_iterations=50)).runtime
    assert autonomous.delegation is not None
    assert autonomous.delegation.max_depth == 3
    assert autonomous.max_iterations == 50
    mine = Harness.long_running(max_sprints=2)
    assert Agent("test", runtime=Runtime.long_running(harness=mine)).runtime.harness is mine
