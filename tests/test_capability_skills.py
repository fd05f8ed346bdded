"""Skills: the model sees names and when_to_use, and loads a body when it decides to."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom import Agent, Capability, ContextProtocol, Runtime, tool
from tests.capability_helpers import Script

TRIAGE = "# Triage\n\nCheck the error rate first, then the last deploy."


async def test_skills_compile_to_one_load_tool_and_c_skill_lists_names_and_when_to_use() -> None:
    @tool(read_only=True)
    def error_rate(service: str) -> float:
        """The service's error rate."""
        return 0.5

    agent = Agent(
        Script([]).model,
        capabilities=[
            Capability.skill(
                "triage", content=TRIAGE, when_to_use="an alert or page", tools=[error_rate]
            ),
            Capability.skill("release", content="# Release\n\nTag it.", when_to_use="shipping"),
        ],
    )
    assert [t.name for t in agent.tools] == ["error_rate", "load_skill"]
    load = agent.tools.get("load_skill")
    assert load is not None
    assert load.read_only
    assert "triage" not in load.description  # the listing is C_skill's, under its budget
    script = Script(["done"])
    agent.loop.provider = script.model
    await agent.run("go")
    [request] = script.requests
    skills = request.instructions.split("## Skills\n", 1)[1]
    assert "- triage: an alert or page" in skills
    assert "- release: shipping" in skills
    assert "Check the error rate" not in request.instructions


async def test_c_skill_keeps_the_listing_within_its_budget() -> None:
    many = [
        Capability.skill(f"skill-{n}", content="# Body", when_to_use="x " * 60 + f"case {n}")
        for n in range(40)
    ]
    script = Script(["done"])
    manager = ContextProtocol.manager(max_tokens=8_000, budgets={"C_skill": 250})
    agent = Agent(script.model, capabilities=many, runtime=Runtime.sdk(context=manager))
    await agent.run("go")
    [request] = script.requests
    skills = request.instructions.split("## Skills\n", 1)[1]
    assert len(skills) <= 250 * 4  # 250 tokens at four characters a token
    assert "- skill-0: " in skills
    assert "case 0" in skills
    assert "case 39" not in skills
    # Skills past the budget are still named, so the model knows it may load them.
    assert "Also: " in skills
    assert "skill-39" in skills


async def test_only_names_in_the_first_request_and_the_body_after_the_load_call() -> None:
    script = Script([[("load_skill", {"name": "triage"})], "triaged"])
    agent = Agent(
        script.model,
        capabilities=[Capability.skill("triage", content=TRIAGE, when_to_use="an alert")],
    )
    result = await agent.run("the api is paging")
    assert result.output == "triaged"
    first, second = script.requests

    def everything(request: object) -> str:
        return repr(request)

    assert "triage" in everything(first)
    assert "Check the error rate" not in everything(first)
    assert script.tool_results() == [f"# Skill: triage\n\n{TRIAGE}"]
    assert "Check the error rate" in everything(second)


async def test_an_unknown_skill_is_a_tool_error_naming_the_known_ones() -> None:
    script = Script([[("load_skill", {"name": "nope"})], "ok"])
    agent = Agent(
        script.model,
        capabilities=[Capability.skill("triage", content=TRIAGE, when_to_use="an alert")],
    )
    await agent.run("go")
    [shown] = script.tool_results()
    assert "no skill named 'nope'; skills: triage" in shown


def write_skill(root: Path, folder: str, text: str) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "SKILL.md").write_text(text)


def test_a_skills_directory_reads_front_matter(tmp_path: Path) -> None:
    write_skill(
        tmp_path,
        "triage",
        "---\nname: triage\nwhen_to_use: |\n  an alert fires\n---\n# Triage\n\nSteps.\n",
    )
    write_skill(tmp_path, "deploy", "---\nname: deploy\nwhen_to_use: shipping\n---\nShip it.\n")
    (tmp_path / "notes").mkdir()  # a folder without SKILL.md is not a skill
    capability = Capability.skills_dir(tmp_path)
    assert [(s.name, s.when_to_use.strip(), s.content) for s in capability.skills] == [
        ("deploy", "shipping", "Ship it."),
        ("triage", "an alert fires", "# Triage\n\nSteps."),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# no front matter", "no front matter"),
        ("---\nname: [unclosed\n---\nbody", "not valid YAML"),
        ("---\n- a list\n---\nbody", "must be a mapping"),
        ("---\nname: x\n---\nbody", "needs when_to_use"),
        ("---\nname: bad name!\nwhen_to_use: y\n---\nbody", "skill name"),
        ("---\nname: x\nwhen_to_use: y\n---\n", "has no content"),
    ],
)
def test_a_bad_skill_file_fails_at_build_naming_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    write_skill(tmp_path, "one", text)
    with pytest.raises(ValueError, match=problem) as caught:
        Capability.skills_dir(tmp_path)
    assert "SKILL.md" in str(caught.value)


def test_skills_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Capability.skills_dir(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no"):
        Capability.skills_dir(tmp_path)
    twice = [
        Capability.skill("a", content="x", when_to_use="y"),
        Capability.skill("a", content="z", when_to_use="w"),
    ]
    with pytest.raises(ValueError, match="two skills are named 'a'"):
        Agent(Script([]).model, capabilities=twice)
