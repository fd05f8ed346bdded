"""Turn a tool function's signature and docstring into a pydantic model and a JSON schema.

Everything here runs once, when a tool is decorated, so that calling a tool only validates
against a ready-made model.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, create_model
from pydantic.fields import FieldInfo

from loom.tools.context import ToolContext

_SECTION = re.compile(
    r"^\s*(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters"
    r"|Returns?|Yields?|Raises|Examples?|Notes?|Warnings?|See Also|Attributes|Todo)\s*:\s*$"
)
_GOOGLE_ARGS = re.compile(
    r"^(\s*)(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments"
    r"|Other Parameters)\s*:\s*$"
)
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\(.*\))?\s*:(.*)$")
_SPHINX_FIELD = re.compile(r"^\s*:\w+")
_SPHINX_PARAM = re.compile(r"^(\s*):param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:(.*)$")
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
# Keywords whose values are data, not schemas: a "title" key inside them is not pydantic's.
_DATA_KEYS = frozenset({"default", "enum", "const", "examples"})
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})


@dataclass(frozen=True, slots=True)
class ArgumentSpec:
    """What a tool needs at call time: the model, its schema and how to call the function."""

    model: type[BaseModel]
    schema: dict[str, Any]
    fields: tuple[tuple[str, str], ...]  # (parameter name, model field name)
    positional_only: frozenset[str]
    context_param: str | None
    context_has_default: bool


def _norm(text: str) -> str:
    return " ".join(text.split())


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Return a docstring's summary and its per-parameter descriptions (Google or Sphinx)."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _SECTION.match(line) or _SPHINX_FIELD.match(line) or _NUMPY_RULE.match(nxt):
            break
        summary.append(line)
    params = _google_params(lines)
    params.update(_sphinx_params(lines))
    return _norm(" ".join(summary)), {name: _norm(text) for name, text in params.items()}


def _google_params(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    header_indent: int | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        header = _GOOGLE_ARGS.match(line)
        if header:
            header_indent, entry_indent, current = len(header.group(1)), None, None
            continue
        if header_indent is None or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:
            header_indent = None
            continue
        if entry_indent is None:
            entry_indent = indent
        entry = _GOOGLE_ENTRY.match(line.strip()) if indent <= entry_indent else None
        if entry:
            current = entry.group(1)
            params[current] = entry.group(2)
        elif current is not None:
            params[current] += " " + line.strip()
    return params


def _sphinx_params(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    current: str | None = None
    indent = 0
    for line in lines:
        match = _SPHINX_PARAM.match(line)
        if match:
            indent, current = len(match.group(1)), match.group(2)
            params[current] = match.group(3)
        elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
            params[current] += " " + line.strip()
        else:
            current = None
    return params


def _resolve_hints(
    fn: Callable[..., Any],
    params: list[inspect.Parameter],
    tool_name: str,
    localns: Mapping[str, Any] | None,
) -> dict[str, Any]:
    try:
        return get_type_hints(fn, localns=dict(localns or {}), include_extras=True)
    except Exception:
        # One bad hint (or an unhintable callable such as a partial) makes get_type_hints
        # fail as a whole; resolve each parameter alone so the error names the one at fault.
        pass
    globalns = getattr(inspect.unwrap(fn), "__globals__", {})
    hints: dict[str, Any] = {}
    for param in params:
        hint = param.annotation
        if isinstance(hint, str):
            try:
                hint = eval(hint, dict(globalns), dict(localns or {}))
            except Exception as exc:
                raise TypeError(
                    f"tool {tool_name!r}: cannot resolve the type hint {param.annotation!r} "
                    f"of parameter {param.name!r}: {exc}"
                ) from exc
        if hint is not inspect.Parameter.empty:
            hints[param.name] = hint
    return hints


def _strip_annotated(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(hint) is Annotated:
        return hint.__origin__, hint.__metadata__
    return hint, ()


def _is_context(hint: Any) -> bool:
    base, _ = _strip_annotated(hint)
    if base is ToolContext:
        return True
    if get_origin(base) in (Union, types.UnionType):
        args = [a for a in get_args(base) if a is not type(None)]
        return args == [ToolContext]
    return False


def _annotated_description(metadata: tuple[Any, ...]) -> str | None:
    # The outermost Annotated layer comes last, so the last description found wins.
    found: str | None = None
    for item in metadata:
        if isinstance(item, str):
            found = item
        elif isinstance(item, FieldInfo) and item.description:
            found = item.description
    return found


def build_argument_spec(
    fn: Callable[..., Any],
    tool_name: str,
    param_docs: Mapping[str, str],
    localns: Mapping[str, Any] | None = None,
) -> ArgumentSpec:
    """Build the arguments model and cleaned JSON schema for ``fn``'s parameters."""
    params = list(inspect.signature(fn).parameters.values())
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"tool {tool_name!r}: parameter {param.name!r} is variadic; tools need "
                "named parameters so their arguments have a schema"
            )
    hints = _resolve_hints(fn, params, tool_name, localns)
    definitions: dict[str, Any] = {}
    fields: list[tuple[str, str]] = []
    context_param: str | None = None
    context_has_default = False
    for param in params:
        hint = hints.get(param.name, Any)
        if _is_context(hint):
            context_param = param.name
            context_has_default = param.default is not param.empty
            continue
        _, metadata = _strip_annotated(hint)
        description = _annotated_description(metadata) or param_docs.get(param.name)
        # Fields get neutral names and the parameter name as alias, so parameters such as
        # `json` or `model_id` cannot collide with BaseModel's own attributes.
        field_name = f"f{len(fields)}"
        default = ... if param.default is param.empty else param.default
        definitions[field_name] = (hint, Field(default, alias=param.name, description=description))
        fields.append((param.name, field_name))
    try:
        model = create_model(
            f"{tool_name}_arguments",
            __config__=ConfigDict(extra="forbid", protected_namespaces=()),
            __module__=getattr(fn, "__module__", None) or __name__,
            **definitions,
        )
        schema = clean_schema(model.model_json_schema())
    except (PydanticUserError, TypeError, NameError) as exc:
        raise TypeError(f"tool {tool_name!r}: {_culprit(params, hints)}{exc}") from exc
    positional_only = frozenset(p.name for p in params if p.kind is p.POSITIONAL_ONLY)
    return ArgumentSpec(
        model, schema, tuple(fields), positional_only, context_param, context_has_default
    )


def _culprit(params: list[inspect.Parameter], hints: Mapping[str, Any]) -> str:
    for param in params:
        try:
            TypeAdapter(hints.get(param.name, Any)).json_schema()
        except Exception:
            return f"unsupported type for parameter {param.name!r}: "
    return "cannot build an argument schema: "


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's generated titles and pin down the top-level object shape."""
    cleaned: dict[str, Any] = _strip_titles(schema)
    result: dict[str, Any] = {
        "type": "object",
        "properties": cleaned.get("properties", {}),
        "required": cleaned.get("required", []),
        "additionalProperties": False,
    }
    if "$defs" in cleaned:
        result["$defs"] = cleaned["$defs"]
    return result


def _strip_titles(node: Any, in_map: bool = False) -> Any:
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_map:  # keys are property or definition names, any of which may be "title"
        return {key: _strip_titles(value) for key, value in node.items()}
    return {
        key: value if key in _DATA_KEYS else _strip_titles(value, key in _SCHEMA_MAPS)
        for key, value in node.items()
        if key != "title"
    }
