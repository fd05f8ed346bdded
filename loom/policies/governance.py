"""``GovernancePolicy``: which tool calls may run, which need a person's approval, and how
often a tool may run, as the kernel's ``Governor`` port asks.

``review`` checks a call in one order, the first rule that decides wins:

1. the deny list (a tool matching a deny glob is denied);
2. the allow list, when one is given (a tool matching none of it is denied);
3. read-only mode (a tool not marked ``read_only`` is denied);
4. destructive tools, unless ``allow_destructive``: denied, except a call step 6 puts to a
   person (a person may approve what the policy would not run on its own);
5. veto rules (a callable on the call returning True, or a reason as a string, denies);
6. approval: the tool's own ``requires_approval``, the policy's ``require_approval`` globs
   or rule, and (``supervised``) every destructive or non-read-only tool ask a person;
   anything left is allowed (a destructive call nobody is asked about is denied: step 4).

``admit`` runs just before a call starts, after any approval: the rate limits of every glob
the tool matches, counted in the ``RateLimits`` it is handed (shared by every replica on
Redis). A rule that raises denies the call (rule ``error``): governance fails closed.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from loom.core.governance import ALLOWED, RateLimits, Ruling, ToolCallInfo, Verdict
from loom.policies.rate_limit import (
    RateLimit,
    check_globs,
    compile_globs,
    first_match,
    parse_rate_limit,
)

logger = logging.getLogger("loom.governance")

Veto = Callable[[ToolCallInfo], Any]
"""A veto rule: return True (or a reason, as a string) to deny the call; False, None or ""
to let it pass. It may be async."""
ApprovalRule = Callable[[ToolCallInfo], Any]
"""An approval rule: return True when the call needs a person's approval. It may be async."""

_MAX_CACHED_TOOLS = 4096
_MAX_ERROR_TEXT = 200


class _Static(NamedTuple):
    """What a policy says of a tool from its name and flags alone (arguments aside)."""

    denial: Ruling | None
    approval: Ruling | None
    limits: tuple[RateLimit, ...]
    destructive: Ruling | None
    """The denial of a destructive tool the policy does not allow, unless a person is asked."""


class GovernancePolicy:
    """Allow and deny lists, read-only mode, destructive tools, veto rules, approval rules
    and rate limits over tool-name globs (fnmatch: ``shell*``, ``mcp__k8s__*``).

    Immutable once made; bad input (a glob that is not a string, a rule that is not
    callable, a rate limit like ``"ten a minute"``) is a ValueError naming it. Build one with
    ``default(...)``, ``allow_all()``, ``deny_all(reason)`` or ``supervised(...)``.
    """

    __slots__ = (
        "_allow",
        "_allow_pattern",
        "_approval_rule",
        "_static",
        "_vetoes",
        "allow",
        "allow_destructive",
        "approve_writes",
        "deny",
        "deny_reason",
        "rate_limits",
        "read_only",
        "require_approval",
        "veto",
    )

    allow: tuple[str, ...] | None
    deny: tuple[str, ...]
    read_only: bool
    allow_destructive: bool
    veto: tuple[Veto, ...]
    require_approval: tuple[str, ...] | ApprovalRule
    rate_limits: tuple[RateLimit, ...]
    approve_writes: bool
    deny_reason: str
    _allow: tuple[str, ...] | None
    _allow_pattern: re.Pattern[str] | None
    _approval_rule: ApprovalRule | None
    _vetoes: tuple[tuple[Veto, str], ...]
    _static: dict[tuple[str, bool, bool], _Static]

    def __init__(
        self,
        *,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        read_only: bool = False,
        allow_destructive: bool = False,
        veto: Iterable[Veto] = (),
        require_approval: Iterable[str] | ApprovalRule = (),
        rate_limits: Mapping[str, str] | None = None,
        approve_writes: bool = False,
        deny_reason: str = "",
    ) -> None:
        put = object.__setattr__
        put(self, "allow", None if allow is None else check_globs("allow", allow))
        put(self, "deny", check_globs("deny", deny))
        for flag, value in (
            ("read_only", read_only),
            ("allow_destructive", allow_destructive),
            ("approve_writes", approve_writes),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be True or False, not {value!r}")
            put(self, flag, value)
        vetoes: tuple[Veto, ...] = (veto,) if callable(veto) else tuple(veto)
        for rule in vetoes:
            if not callable(rule):
                raise ValueError(f"veto rules must be callables on the call, not {rule!r}")
        put(self, "veto", vetoes)
        if callable(require_approval):
            put(self, "require_approval", require_approval)
            approval_globs: tuple[str, ...] = ()
        else:
            approval_globs = check_globs("require_approval", require_approval)
            put(self, "require_approval", approval_globs)
        if rate_limits is not None and not isinstance(rate_limits, Mapping):
            raise ValueError(
                f"rate_limits must map tool globs to limits like {{'shell*': '10/minute'}}, "
                f"not {rate_limits!r}"
            )
        check_globs("rate_limits", list(rate_limits or {}))
        limits = tuple(parse_rate_limit(glob, text) for glob, text in (rate_limits or {}).items())
        put(self, "rate_limits", limits)
        put(self, "deny_reason", str(deny_reason))
        # Precompiled for review(): the per-tool answers are cached in _static.
        put(self, "_allow", self.allow)
        put(self, "_allow_pattern", None if allow is None else compile_globs(self.allow or ()))
        put(self, "_approval_rule", None if approval_globs else require_approval or None)
        put(
            self,
            "_vetoes",
            tuple((rule, _rule_name("veto rule", i, rule)) for i, rule in enumerate(vetoes)),
        )
        put(self, "_static", {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a GovernancePolicy is immutable: make a new one to change {name}")

    def __repr__(self) -> str:
        shown = [
            f"{name}={getattr(self, name)!r}"
            for name in ("allow", "deny", "read_only", "allow_destructive", "approve_writes")
        ]
        shown.append(f"veto={len(self.veto)} rules")
        shown.append(f"rate_limits={ {r.glob: r.text for r in self.rate_limits} }")
        return f"GovernancePolicy({', '.join(shown)})"

    # -- presets -------------------------------------------------------------------------

    @classmethod
    def default(
        cls,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        read_only: bool = False,
        allow_destructive: bool = False,
        veto: Iterable[Veto] = (),
        require_approval: Iterable[str] | ApprovalRule = (),
        rate_limits: Mapping[str, str] | None = None,
    ) -> GovernancePolicy:
        """The policy of the presets: destructive tools are refused, the rest allowed, and
        whatever the arguments add."""
        return cls(
            allow=allow,
            deny=deny,
            read_only=read_only,
            allow_destructive=allow_destructive,
            veto=veto,
            require_approval=require_approval,
            rate_limits=rate_limits,
        )

    @classmethod
    def allow_all(cls) -> GovernancePolicy:
        """Every call may run, destructive ones too (a tool's own ``requires_approval``
        still asks a person)."""
        return cls(allow_destructive=True)

    @classmethod
    def deny_all(cls, reason: str = "") -> GovernancePolicy:
        """No call may run; the model reads ``reason`` as the call's error."""
        return cls(deny=["*"], deny_reason=reason)

    @classmethod
    def supervised(
        cls,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        veto: Iterable[Veto] = (),
        require_approval: Iterable[str] | ApprovalRule = (),
        rate_limits: Mapping[str, str] | None = None,
    ) -> GovernancePolicy:
        """A person approves every destructive or non-read-only call (``Runtime.supervised``);
        read-only calls run at once."""
        return cls(
            allow=allow,
            deny=deny,
            allow_destructive=True,
            veto=veto,
            require_approval=require_approval,
            rate_limits=rate_limits,
            approve_writes=True,
        )

    # -- the Governor port ---------------------------------------------------------------

    async def review(self, call: ToolCallInfo) -> Ruling:
        """Allow, deny or ask, in the order of this module's docstring."""
        static = self._static.get((call.tool, call.read_only, call.destructive))
        if static is None:
            static = self._remember(call)
        if static.denial is not None:
            return static.denial
        for rule, name in self._vetoes:
            try:
                said = rule(call)
                if inspect.isawaitable(said):
                    said = await said
            except Exception as exc:
                return _failed(name, call, exc)
            if said is True or (isinstance(said, str) and said):
                reason = said if isinstance(said, str) else f"{name} refused this call."
                return Ruling(Verdict.DENY, f"Tool {call.tool!r} is denied: {reason}", "veto")
            if said not in (False, None, ""):
                return _failed(name, call, TypeError(f"returned {said!r}, not a bool or a str"))
        asked = await self._asked(call, static)
        if asked is not None:
            return asked
        return static.destructive or ALLOWED

    async def _asked(self, call: ToolCallInfo, static: _Static) -> Ruling | None:
        """Step 6: the ruling that puts the call to a person (or a failed rule), or None."""
        if static.approval is not None:
            return static.approval
        own = call.requires_approval
        if own is True:
            return _ask(call, "the tool requires approval")
        if callable(own):
            asked = await self._ask_rule(own, "the tool's approval rule", call)
            if asked is not None:
                return asked
        if self._approval_rule is not None:
            return await self._ask_rule(self._approval_rule, "the policy's approval rule", call)
        return None

    async def admit(self, call: ToolCallInfo, limits: RateLimits) -> Ruling:
        """Count the call against the rate limit of every glob its tool matches; the first
        limit already reached denies it (uses are shared by every tool a glob matches)."""
        static = self._static.get((call.tool, call.read_only, call.destructive))
        if static is None:
            static = self._remember(call)
        for limit in static.limits:
            try:
                wait = await limits.take(limit.key, limit.limit, limit.window)
            except Exception as exc:
                return _failed(f"the rate limit for {limit.glob!r}", call, exc)
            if wait is not None:
                reason = f"rate limit: {limit.describe()}; try again in {max(1, math.ceil(wait))}s."
                return Ruling(Verdict.DENY, reason, "rate_limit")
        return ALLOWED

    # -- per tool ------------------------------------------------------------------------

    def _remember(self, call: ToolCallInfo) -> _Static:
        if len(self._static) >= _MAX_CACHED_TOOLS:
            self._static.clear()
        static = _Static(
            self._denial(call),
            self._approval(call),
            self._limits(call.tool),
            self._destructive(call),
        )
        self._static[(call.tool, call.read_only, call.destructive)] = static
        return static

    def _denial(self, call: ToolCallInfo) -> Ruling | None:
        tool = call.tool
        glob = first_match(self.deny, tool)
        if glob:
            reason = self.deny_reason or f"the governance policy denies it (deny list: {glob!r})."
            return Ruling(Verdict.DENY, f"Tool {tool!r} is denied: {reason}", "deny")
        if self._allow_pattern is not None and not self._allow_pattern.match(tool):
            return Ruling(
                Verdict.DENY,
                f"Tool {tool!r} is not on the governance policy's allow list.",
                "allow",
            )
        if self._allow == ():
            return Ruling(
                Verdict.DENY,
                f"Tool {tool!r} is denied: the governance policy's allow list is empty.",
                "allow",
            )
        if self.read_only and not call.read_only:
            return Ruling(
                Verdict.DENY,
                f"Tool {tool!r} is denied: the governance policy is "
                "read-only and this tool is not marked read-only.",
                "read_only",
            )
        return None

    def _destructive(self, call: ToolCallInfo) -> Ruling | None:
        if not call.destructive or self.allow_destructive:
            return None
        return Ruling(
            Verdict.DENY,
            f"Tool {call.tool!r} is denied: it is destructive, the governance policy does "
            "not allow destructive tools, and no approval is asked for it.",
            "destructive",
        )

    def _approval(self, call: ToolCallInfo) -> Ruling | None:
        if isinstance(self.require_approval, tuple):
            glob = first_match(self.require_approval, call.tool)
            if glob:
                return _ask(call, f"the governance policy requires approval for {glob!r}")
        if self.approve_writes and call.destructive:
            return _ask(call, "the supervised policy requires approval for destructive tools")
        if self.approve_writes and not call.read_only:
            return _ask(
                call, "the supervised policy requires approval for tools that are not read-only"
            )
        return None

    def _limits(self, tool: str) -> tuple[RateLimit, ...]:
        return tuple(limit for limit in self.rate_limits if first_match((limit.glob,), tool))

    async def _ask_rule(self, rule: ApprovalRule, what: str, call: ToolCallInfo) -> Ruling | None:
        try:
            said = rule(call)
            if inspect.isawaitable(said):
                said = await said
        except Exception as exc:
            return _failed(f"{what} ({_callable_name(rule)})", call, exc)
        if said is True:
            return _ask(call, what)
        if said in (False, None):
            return None
        return _failed(
            f"{what} ({_callable_name(rule)})", call, TypeError(f"returned {said!r}, not a bool")
        )


def _ask(call: ToolCallInfo, why: str) -> Ruling:
    return Ruling(Verdict.ASK, f"Tool {call.tool!r} needs a person's approval: {why}.", "approval")


def _failed(name: str, call: ToolCallInfo, exc: Exception) -> Ruling:
    """Fail closed: the call is denied, naming the rule and the error's type. The error's
    text goes to the log only: it may quote the call's arguments or a secret, and the
    model (and whoever reads its output) must not see it."""
    detail = str(exc) or "no message"
    if len(detail) > _MAX_ERROR_TEXT:
        detail = detail[: _MAX_ERROR_TEXT - 3] + "..."
    logger.warning(
        "governance rule %s failed on %s (%s: %s); call denied",
        name, call.tool, type(exc).__name__, detail,
    )  # fmt: skip
    reason = (
        f"Tool {call.tool!r} is denied: {name} failed ({type(exc).__name__}), "
        "and a failing governance rule denies the call."
    )
    return Ruling(Verdict.DENY, reason, "error")


def _callable_name(rule: Callable[..., Any]) -> str:
    return str(getattr(rule, "__qualname__", None) or type(rule).__name__)


def _rule_name(kind: str, index: int, rule: Callable[..., Any]) -> str:
    return f"{kind} {index + 1} ({_callable_name(rule)})"


__all__ = ["ApprovalRule", "GovernancePolicy", "Veto"]
