"""GovernancePolicy: every rule kind, the order of checks, fail-closed rules, globs, rate
limits and presets (the policy alone; the agent loop's use of it is tested with the kernel)."""

from __future__ import annotations

from typing import Any

import pytest

from loom import GovernancePolicy, tool
from loom.core.governance import Governor, Ruling, ToolCallInfo, Verdict
from loom.policies.rate_limit import parse_rate_limit
from loom.state.memory_rate_limits import MemoryRateLimits


def call(
    name: str = "shell",
    *,
    read_only: bool = False,
    destructive: bool = False,
    requires_approval: Any = False,
    **arguments: Any,
) -> ToolCallInfo:
    return ToolCallInfo(
        tool=name,
        arguments=arguments,
        read_only=read_only,
        destructive=destructive,
        requires_approval=requires_approval,
    )


async def verdict(policy: Governor, info: ToolCallInfo) -> tuple[Verdict, str]:
    ruling = await policy.review(info)
    return ruling.verdict, ruling.rule


# -- each rule -----------------------------------------------------------------------------


async def test_the_default_policy_allows_all_but_destructive_tools() -> None:
    policy = GovernancePolicy.default()
    assert await policy.review(call("search", read_only=True)) == Ruling(Verdict.ALLOW)
    assert await verdict(policy, call("write_file")) == (Verdict.ALLOW, "")
    denied = await policy.review(call("wipe", destructive=True))
    assert (denied.verdict, denied.rule) == (Verdict.DENY, "destructive")
    assert "'wipe'" in denied.reason
    assert "destructive" in denied.reason


async def test_the_deny_list_denies_matching_tools_naming_the_glob() -> None:
    policy = GovernancePolicy.default(deny=["shell*", "mcp__k8s__*"])
    ruling = await policy.review(call("shell_exec"))
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "deny")
    assert "'shell*'" in ruling.reason
    assert await verdict(policy, call("mcp__k8s__delete_pod")) == (Verdict.DENY, "deny")
    assert await verdict(policy, call("mcp__github__merge")) == (Verdict.ALLOW, "")
    assert await verdict(policy, call("myshell")) == (Verdict.ALLOW, "")


async def test_an_allow_list_denies_every_tool_it_does_not_match() -> None:
    policy = GovernancePolicy.default(allow=["search", "read_*"])
    assert await verdict(policy, call("search")) == (Verdict.ALLOW, "")
    assert await verdict(policy, call("read_file")) == (Verdict.ALLOW, "")
    ruling = await policy.review(call("write_file"))
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "allow")
    assert "allow list" in ruling.reason
    assert await verdict(GovernancePolicy.default(allow=[]), call("search")) == (
        Verdict.DENY,
        "allow",
    )


async def test_globs_match_whole_names_case_sensitively() -> None:
    policy = GovernancePolicy.default(deny=["shell", "k8s_[dp]*", "ge?"])
    assert await verdict(policy, call("shell")) == (Verdict.DENY, "deny")
    assert await verdict(policy, call("shell_exec")) == (Verdict.ALLOW, "")
    assert await verdict(policy, call("Shell")) == (Verdict.ALLOW, "")
    assert await verdict(policy, call("k8s_delete")) == (Verdict.DENY, "deny")
    assert await verdict(policy, call("k8s_get")) == (Verdict.ALLOW, "")
    assert await verdict(policy, call("get")) == (Verdict.DENY, "deny")
    assert await verdict(policy, call("gets")) == (Verdict.ALLOW, "")


async def test_read_only_mode_denies_tools_not_marked_read_only() -> None:
    policy = GovernancePolicy.default(read_only=True)
    assert await verdict(policy, call("search", read_only=True)) == (Verdict.ALLOW, "")
    ruling = await policy.review(call("write_file"))
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "read_only")
    assert "read-only" in ruling.reason


async def test_destructive_tools_run_when_allowed() -> None:
    policy = GovernancePolicy.default(allow_destructive=True)
    assert await verdict(policy, call("wipe", destructive=True)) == (Verdict.ALLOW, "")


async def test_a_veto_returning_true_or_a_reason_denies() -> None:
    def no_prod(info: ToolCallInfo) -> bool:
        return info.arguments.get("env") == "prod"

    def no_rm(info: ToolCallInfo) -> str | None:
        return "rm -rf is never allowed." if "rm -rf" in info.arguments.get("cmd", "") else None

    policy = GovernancePolicy.default(veto=[no_prod, no_rm])
    ruling = await policy.review(call(env="prod"))
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "veto")
    assert "veto rule 1 (" in ruling.reason
    assert "no_prod" in ruling.reason
    ruling = await policy.review(call(cmd="rm -rf /"))
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "veto")
    assert ruling.reason.endswith("rm -rf is never allowed.")
    assert await verdict(policy, call(env="dev", cmd="ls")) == (Verdict.ALLOW, "")


async def test_an_async_veto_is_awaited() -> None:
    async def never(info: ToolCallInfo) -> bool:
        return True

    assert await verdict(GovernancePolicy.default(veto=[never]), call()) == (Verdict.DENY, "veto")


async def test_approval_globs_a_policy_rule_and_the_tool_flag_ask() -> None:
    by_glob = GovernancePolicy.default(require_approval=["mcp__k8s__delete*"])
    ruling = await by_glob.review(call("mcp__k8s__delete_ns"))
    assert (ruling.verdict, ruling.rule) == (Verdict.ASK, "approval")
    assert "'mcp__k8s__delete*'" in ruling.reason
    assert await verdict(by_glob, call("mcp__k8s__get")) == (Verdict.ALLOW, "")

    by_rule = GovernancePolicy.default(require_approval=lambda c: c.arguments.get("n", 0) > 5)
    assert await verdict(by_rule, call(n=6)) == (Verdict.ASK, "approval")
    assert await verdict(by_rule, call(n=1)) == (Verdict.ALLOW, "")

    policy = GovernancePolicy.default()
    assert await verdict(policy, call(requires_approval=True)) == (Verdict.ASK, "approval")
    big = call(requires_approval=lambda c: c.arguments["n"] > 5, n=9)
    assert await verdict(policy, big) == (Verdict.ASK, "approval")
    small = call(requires_approval=lambda c: c.arguments["n"] > 5, n=1)
    assert await verdict(policy, small) == (Verdict.ALLOW, "")


# -- the order of checks -------------------------------------------------------------------


async def test_a_tool_on_both_lists_is_denied_by_the_deny_list() -> None:
    policy = GovernancePolicy.default(allow=["shell"], deny=["shell"])
    assert await verdict(policy, call("shell")) == (Verdict.DENY, "deny")


async def test_the_allow_list_comes_before_read_only_and_destructive() -> None:
    policy = GovernancePolicy.default(allow=["a"], read_only=True)
    assert await verdict(policy, call("b", destructive=True)) == (Verdict.DENY, "allow")
    policy = GovernancePolicy.default(read_only=True)
    assert await verdict(policy, call("b", destructive=True)) == (Verdict.DENY, "read_only")


async def test_denials_come_before_approval() -> None:
    read_only = GovernancePolicy.default(read_only=True, require_approval=["*"])
    assert await verdict(read_only, call(requires_approval=True)) == (Verdict.DENY, "read_only")


async def test_a_destructive_call_is_denied_unless_a_person_is_asked() -> None:
    default = GovernancePolicy.default()
    assert await verdict(default, call(destructive=True)) == (Verdict.DENY, "destructive")
    # A person may approve what the policy would not run on its own.
    asking = GovernancePolicy.default(require_approval=["*"])
    assert await verdict(asking, call(destructive=True)) == (Verdict.ASK, "approval")
    own = call(destructive=True, requires_approval=True)
    assert await verdict(default, own) == (Verdict.ASK, "approval")
    maybe = call(destructive=True, requires_approval=lambda c: c.arguments.get("x") == 1)
    assert await verdict(default, maybe) == (Verdict.DENY, "destructive")
    vetoed = GovernancePolicy.default(veto=[lambda c: True])
    assert await verdict(vetoed, own) == (Verdict.DENY, "veto")


async def test_a_veto_beats_approval_and_runs_after_the_lists() -> None:
    seen: list[str] = []

    def veto(info: ToolCallInfo) -> bool:
        seen.append(info.tool)
        return True

    policy = GovernancePolicy.default(deny=["x"], veto=[veto], require_approval=["*"])
    assert await verdict(policy, call("y", requires_approval=True)) == (Verdict.DENY, "veto")
    assert await verdict(policy, call("x")) == (Verdict.DENY, "deny")
    assert seen == ["y"]  # a call the deny list refused never reaches the veto rules


async def test_the_answer_of_a_veto_is_read_per_call_not_cached() -> None:
    policy = GovernancePolicy.default(veto=[lambda c: c.arguments.get("stop", False)])
    assert await verdict(policy, call(stop=True)) == (Verdict.DENY, "veto")
    assert await verdict(policy, call(stop=False)) == (Verdict.ALLOW, "")
    assert await verdict(policy, call(stop=True)) == (Verdict.DENY, "veto")


async def test_flags_of_the_call_are_part_of_what_is_cached() -> None:
    policy = GovernancePolicy.default()
    assert await verdict(policy, call("t")) == (Verdict.ALLOW, "")
    assert await verdict(policy, call("t", destructive=True)) == (Verdict.DENY, "destructive")


# -- failing closed ------------------------------------------------------------------------


async def test_a_rule_that_raises_denies_the_call_naming_the_rule() -> None:
    def broken(info: ToolCallInfo) -> bool:
        raise KeyError("cmd")

    for policy in (
        GovernancePolicy.default(veto=[broken]),
        GovernancePolicy.default(require_approval=broken),
    ):
        ruling = await policy.review(call())
        assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "error")
        assert "broken" in ruling.reason
        assert "KeyError" in ruling.reason
    ruling = await GovernancePolicy.default().review(call(requires_approval=broken))
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "error")
    assert "the tool's approval rule" in ruling.reason


async def test_a_rule_answering_neither_bool_nor_str_fails_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = GovernancePolicy.default(veto=[lambda c: 1])
    ruling = await policy.review(call())
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "error")
    assert "(TypeError)" in ruling.reason
    assert "not a bool or a str" in caplog.text  # the detail is logged
    odd_approval = GovernancePolicy.default(require_approval=lambda c: "yes")
    assert await verdict(odd_approval, call()) == (Verdict.DENY, "error")


async def test_a_rules_error_text_is_logged_cut_and_never_shown_to_the_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def chatty(info: ToolCallInfo) -> bool:
        raise RuntimeError("token=s3cret " + "x" * 5000)

    ruling = await GovernancePolicy.default(veto=[chatty]).review(call())
    assert ruling.rule == "error"
    assert "s3cret" not in ruling.reason
    assert "(RuntimeError)" in ruling.reason
    assert "token=" in caplog.text
    assert "x" * 300 not in caplog.text  # cut


async def test_a_rate_limit_backend_that_fails_denies_the_call() -> None:
    class Down:
        async def take(self, key: str, limit: int, window: float) -> float | None:
            raise ConnectionError("state is down")

    policy = GovernancePolicy.default(rate_limits={"shell": "1/minute"})
    ruling = await policy.admit(call(), Down())
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "error")
    assert "'shell'" in ruling.reason
    assert "ConnectionError" in ruling.reason


# -- rate limits ---------------------------------------------------------------------------


async def test_rate_limits_are_shared_by_every_tool_a_glob_matches() -> None:
    policy = GovernancePolicy.default(rate_limits={"shell*": "2/minute"})
    limits = MemoryRateLimits()
    assert (await policy.admit(call("shell_a"), limits)).allowed
    assert (await policy.admit(call("shell_b"), limits)).allowed
    ruling = await policy.admit(call("shell_a"), limits)
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "rate_limit")
    assert ruling.reason.startswith("rate limit: at most 2 calls per minute for 'shell*'")
    assert "try again in 60s" in ruling.reason
    assert (await policy.admit(call("search"), limits)).allowed  # no glob matches it


async def test_every_matching_limit_applies() -> None:
    policy = GovernancePolicy.default(rate_limits={"*": "100/minute", "shell": "1/hour"})
    limits = MemoryRateLimits()
    assert (await policy.admit(call("shell"), limits)).allowed
    ruling = await policy.admit(call("shell"), limits)
    assert ruling.rule == "rate_limit"
    assert "per hour for 'shell'" in ruling.reason


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [
        ("10/minute", 10, 60.0),
        ("1/second", 1, 1.0),
        ("5 / hours", 5, 3600.0),
        ("100/5minutes", 100, 300.0),
        ("3/DAY", 3, 86400.0),
    ],
)
def test_rate_limit_texts(text: str, limit: int, window: float) -> None:
    parsed = parse_rate_limit("g", text)
    assert (parsed.limit, parsed.window) == (limit, window)


@pytest.mark.parametrize("text", ["ten/minute", "10 per minute", "10/fortnight", "0/minute", ""])
def test_a_bad_rate_limit_is_refused_naming_the_glob_and_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=r"rate limit for 'shell\*'") as refused:
        GovernancePolicy.default(rate_limits={"shell*": text})
    assert repr(text) in str(refused.value)


# -- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"deny": "shell"}, "not the string 'shell'"),
        ({"allow": [""]}, "non-empty"),
        ({"require_approval": [3]}, "non-empty string"),
        ({"veto": ["shell"]}, "callables"),
        ({"read_only": "yes"}, "read_only must be True or False"),
        ({"rate_limits": ["shell"]}, "rate_limits must map"),
        ({"rate_limits": {"": "1/minute"}}, "rate_limits"),
    ],
)
def test_bad_input_is_a_value_error_naming_it(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GovernancePolicy.default(**arguments)


def test_a_policy_is_immutable() -> None:
    policy = GovernancePolicy.default(deny=["shell"])
    with pytest.raises(AttributeError, match="immutable"):
        policy.read_only = True  # type: ignore[misc]
    assert "deny=('shell',)" in repr(policy)


# -- presets -------------------------------------------------------------------------------


async def test_allow_all_allows_destructive_tools_but_keeps_a_tools_own_approval() -> None:
    policy = GovernancePolicy.allow_all()
    assert await verdict(policy, call("wipe", destructive=True)) == (Verdict.ALLOW, "")
    assert await verdict(policy, call(requires_approval=True)) == (Verdict.ASK, "approval")


async def test_deny_all_denies_everything_with_its_reason() -> None:
    policy = GovernancePolicy.deny_all("This agent may only talk.")
    ruling = await policy.review(call("search", read_only=True))
    assert (ruling.verdict, ruling.rule) == (Verdict.DENY, "deny")
    assert ruling.reason.endswith("This agent may only talk.")


async def test_supervised_asks_for_every_write_and_lets_reads_run() -> None:
    policy = GovernancePolicy.supervised()
    assert await verdict(policy, call("search", read_only=True)) == (Verdict.ALLOW, "")
    ruling = await policy.review(call("write_file"))
    assert (ruling.verdict, ruling.rule) == (Verdict.ASK, "approval")
    assert "not read-only" in ruling.reason
    ruling = await policy.review(call("wipe", destructive=True, read_only=True))
    assert ruling.verdict is Verdict.ASK
    assert "destructive" in ruling.reason
    denied = GovernancePolicy.supervised(deny=["wipe"])
    assert await verdict(denied, call("wipe", destructive=True)) == (Verdict.DENY, "deny")


# -- tool flags ----------------------------------------------------------------------------


async def test_a_tools_flags_reach_the_call_info() -> None:
    @tool(destructive=True, requires_approval=True, idempotent=True)
    def restart(service: str) -> str:
        return service

    info = restart.call_info({"service": "api"}, call_id="c1", run_id="r1", session_id="s1")
    assert info == ToolCallInfo(
        tool="restart",
        arguments={"service": "api"},
        call_id="c1",
        run_id="r1",
        session_id="s1",
        destructive=True,
        idempotent=True,
        requires_approval=True,
    )
    policy = GovernancePolicy.default(allow_destructive=True)
    assert await verdict(policy, info) == (Verdict.ASK, "approval")


def test_requires_approval_must_be_a_flag_or_a_callable() -> None:
    @tool
    def plain() -> None:
        pass

    assert (plain.requires_approval, plain.idempotent) == (False, False)
    with pytest.raises(ValueError, match="requires_approval must be"):
        tool(name="x", requires_approval="always")(lambda: None)  # type: ignore[call-overload]


# -- where an agent gets its governance ----------------------------------------------------


def test_an_agent_takes_the_runtimes_governance_or_its_presets() -> None:
    from loom import Agent, Runtime
    from loom.state.memory_rate_limits import MemoryRateLimits

    mine = GovernancePolicy.deny_all("no")
    assert Agent("test", runtime=Runtime.long_running(governance=mine)).governance is mine
    supervised = Agent("test", runtime=Runtime.supervised()).governance
    assert isinstance(supervised, GovernancePolicy)
    assert supervised.approve_writes
    for runtime in (None, Runtime.sdk(), Runtime.autonomous()):
        agent = Agent("test", runtime=runtime)
        assert isinstance(agent.governance, GovernancePolicy)
        assert not agent.governance.approve_writes
        assert not agent.governance.allow_destructive
        assert isinstance(agent.rate_limits, MemoryRateLimits)


def test_runtime_governance_must_be_a_governor() -> None:
    from pydantic import ValidationError

    from loom import Runtime

    with pytest.raises(ValidationError, match="governance must be a GovernancePolicy"):
        Runtime(governance="deny everything")


def test_a_denial_is_counted_by_rule_and_tool_with_bounded_labels() -> None:
    from prometheus_client import REGISTRY

    from loom import metrics

    def count(rule: str, tool: str) -> float:
        labels = {"rule": rule, "tool": tool}
        return REGISTRY.get_sample_value("loom_governance_denials_total", labels) or 0.0

    before = count("veto", "shell"), count("other", "shell")
    metrics.governance_denied("veto", "shell")
    metrics.governance_denied("made-up rule", "shell")
    assert (count("veto", "shell"), count("other", "shell")) == (before[0] + 1, before[1] + 1)
