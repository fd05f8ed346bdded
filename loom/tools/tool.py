"""The ``@tool`` decorator: a plain function becomes a tool a model can call."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import functools
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ValidationError

from loom.core.governance import ToolCallInfo
from loom.tools.context import ToolContext
from loom.tools.schema import build_argument_spec, parse_docstring

P = ParamSpec("P")
ApprovalRule = Callable[[ToolCallInfo], bool]
R = TypeVar("R")

# Anthropic and OpenAI both reject tool names outside this pattern.
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_INPUT_REPR = 80


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """What a provider sends the model about one tool."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool's signature; the message says how."""

    def __init__(self, tool_name: str, message: str) -> None:
        super().__init__(message)
        self.tool_name = tool_name
        self.message = message


class Tool(Generic[P, R]):
    """A function plus its schema and flags; calling it still calls the function."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        read_only: bool = False,
        destructive: bool = False,
        concurrency_safe: bool | None = None,
        requires_approval: bool | ApprovalRule = False,
        idempotent: bool = False,
        localns: Mapping[str, Any] | None = None,
    ) -> None:
        # First, so attributes copied from fn.__dict__ cannot shadow ours.
        functools.update_wrapper(self, fn)
        name = name if name is not None else getattr(fn, "__name__", "")
        if not _NAME.match(name):
            raise ValueError(
                f"invalid tool name {name!r}: providers require 1-64 characters from "
                "a-z, A-Z, 0-9, '_' and '-'"
            )
        summary, param_docs = parse_docstring(inspect.getdoc(fn))
        self.fn = fn
        self._call: Callable[..., Any] = fn  # invoke() passes validated values, not P
        self.name = name
        self.description = summary if description is None else description
        self.read_only = read_only
        self.destructive = destructive
        # Reads can safely overlap; anything that writes must opt in explicitly.
        self.concurrency_safe = read_only if concurrency_safe is None else concurrency_safe
        if not isinstance(requires_approval, bool) and not callable(requires_approval):
            raise ValueError(
                f"tool {name!r}: requires_approval must be True, False or a callable on the "
                f"call, not {requires_approval!r}"
            )
        self.requires_approval = requires_approval
        """A person approves each call first: always (True), or when the rule on the call
        (a ``ToolCallInfo``) returns True."""
        self.idempotent = idempotent
        """Running a call twice does no more than running it once: after a crash, a call
        found started but not finished may run again."""
        self.is_async = inspect.iscoroutinefunction(fn)
        self._spec = build_argument_spec(fn, name, param_docs, localns)
        self.parameters = self._spec.schema
        self.definition = ToolDefinition(self.name, self.description, self.parameters)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def call_info(
        self,
        arguments: Mapping[str, Any],
        *,
        call_id: str = "",
        run_id: str = "",
        session_id: str = "",
    ) -> ToolCallInfo:
        """One call of this tool as governance rules see it: its arguments and the tool's
        flags."""
        return ToolCallInfo(
            tool=self.name,
            arguments=arguments,
            call_id=call_id,
            run_id=run_id,
            session_id=session_id,
            read_only=self.read_only,
            destructive=self.destructive,
            idempotent=self.idempotent,
            requires_approval=self.requires_approval,
        )

    def __repr__(self) -> str:
        return (
            f"Tool(name={self.name!r}, read_only={self.read_only}, "
            f"destructive={self.destructive}, concurrency_safe={self.concurrency_safe}, "
            f"requires_approval={self.requires_approval!r}, idempotent={self.idempotent})"
        )

    async def invoke(self, arguments: Mapping[str, Any], context: ToolContext | None = None) -> Any:
        """Validate ``arguments`` from the model, then run the tool and return its result.

        Sync functions run in a worker thread so a slow tool cannot stall the event loop.
        """
        spec = self._spec
        try:
            validated = spec.model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, self._describe(exc)) from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param, field_name in spec.fields:
            value = getattr(validated, field_name)
            if param in spec.positional_only:
                args.append(value)
            else:
                kwargs[param] = value
        if spec.context_param is not None:
            if context is not None:
                kwargs[spec.context_param] = context
            elif not spec.context_has_default:
                raise TypeError(f"tool {self.name!r} needs a ToolContext to be invoked")
        if self.is_async:
            return await self._call(*args, **kwargs)
        result = await asyncio.to_thread(self._call, *args, **kwargs)
        # A sync wrapper around a coroutine function (some decorators do this) hands back
        # an awaitable; run it on the loop instead of returning the coroutine object.
        if inspect.isawaitable(result):
            return await result
        return result

    def _describe(self, exc: ValidationError) -> str:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "arguments"
            problem = f"{where}: {error['msg']}"
            if error["type"] != "missing":
                shown = repr(error.get("input"))
                if len(shown) > _MAX_INPUT_REPR:
                    shown = shown[: _MAX_INPUT_REPR - 3] + "..."
                problem += f" (got {shown})"
            problems.append(problem)
        return f"invalid arguments for tool {self.name!r}: " + "; ".join(problems)


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    destructive: bool = False,
    concurrency_safe: bool | None = None,
    requires_approval: bool | ApprovalRule = False,
    idempotent: bool = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    destructive: bool = False,
    concurrency_safe: bool | None = None,
    requires_approval: bool | ApprovalRule = False,
    idempotent: bool = False,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make ``fn`` a tool; use as ``@tool``, ``@tool()`` or ``@tool(name=..., ...)``.

    ``concurrency_safe`` defaults to ``read_only``. ``requires_approval`` (True, or a
    callable on the ``ToolCallInfo`` returning True) makes each call wait for a person's
    approval; ``idempotent=True`` lets a call interrupted by a crash run again.
    """

    def decorate(func: Callable[P, R]) -> Tool[P, R]:
        return Tool(
            func,
            name=name,
            description=description,
            read_only=read_only,
            destructive=destructive,
            concurrency_safe=concurrency_safe,
            requires_approval=requires_approval,
            idempotent=idempotent,
            # The decorating frame's locals resolve hints that name locally defined types
            # under `from __future__ import annotations`.
            localns=sys._getframe(2 if fn is not None else 1).f_locals,
        )

    return decorate(fn) if fn is not None else decorate


def render_result(value: Any) -> str:
    """Render a tool's return value as the text the model reads."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        if isinstance(value, BaseModel):
            return value.model_dump_json()
        return json.dumps(_jsonable(value), default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _json_default(value: Any) -> Any:
    # Values nested inside lists and dicts get the same treatment as top-level ones.
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)
