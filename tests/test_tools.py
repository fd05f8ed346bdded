"""Tests for loom.tools: schemas from signatures, validation, invocation and the registry."""

import asyncio
import dataclasses
import datetime
import importlib.util
import sys
import threading
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from loom.tools import (
    Tool,
    ToolArgumentsError,
    ToolContext,
    ToolDefinition,
    ToolRegistry,
    render_result,
    tool,
)


def _load_future_module() -> ModuleType:
    # Loaded by path so this works whether or not tests/ is a package.
    path = Path(__file__).with_name("tools_future_module.py")
    spec = importlib.util.spec_from_file_location("tools_future_module", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic looks the module up while building models
    spec.loader.exec_module(module)
    return module


future: Any = _load_future_module()


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Point(BaseModel):
    x: int
    y: int = 0


CTX = ToolContext(run_id="run-1", session_id="sess-1", tool_call_id="call-1", metadata={"k": 1})


def props(t: Tool[..., Any]) -> dict[str, Any]:
    properties: dict[str, Any] = t.parameters["properties"]
    return properties


# --- schema --------------------------------------------------------------------------------


def test_primitive_types_and_top_level_shape() -> None:
    @tool
    def f(s: str, i: int, x: float, b: bool) -> None:
        pass

    assert f.parameters == {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "x": {"type": "number"},
            "b": {"type": "boolean"},
        },
        "required": ["s", "i", "x", "b"],
        "additionalProperties": False,
    }


def test_no_parameters_gives_empty_object() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_enum_parameter_uses_defs_with_values() -> None:
    @tool
    def f(color: Color) -> None:
        pass

    assert props(f)["color"] == {"$ref": "#/$defs/Color"}
    assert f.parameters["$defs"] == {"Color": {"enum": ["red", "green"], "type": "string"}}


def test_literal_parameters() -> None:
    @tool
    def f(mode: Literal["fast", "slow"], only: Literal["x"]) -> None:
        pass

    assert props(f)["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert props(f)["only"] == {"const": "x", "type": "string"}


def test_optional_and_defaults() -> None:
    @tool
    def f(
        a: int | None = None,
        b: Optional[str] = None,  # noqa: UP045 - the typing spelling must work too
        c: int | None = 5,
        d: int | None = None,
        e: int = 3,
        *,
        must: str | None,
    ) -> None:
        pass

    p = props(f)
    assert p["a"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert p["b"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert p["c"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": 5}
    assert p["e"] == {"type": "integer", "default": 3}
    assert p["must"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert f.parameters["required"] == ["must"]


def test_containers() -> None:
    @tool
    def f(ids: list[int], weights: dict[str, float], points: list[Point]) -> None:
        pass

    p = props(f)
    assert p["ids"] == {"type": "array", "items": {"type": "integer"}}
    assert p["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert p["points"] == {"type": "array", "items": {"$ref": "#/$defs/Point"}}


def test_nested_model_parameter() -> None:
    @tool
    def f(origin: Point) -> None:
        """Move.

        Args:
            origin: where to start.
        """

    assert props(f)["origin"] == {"$ref": "#/$defs/Point", "description": "where to start."}
    assert f.parameters["$defs"]["Point"] == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
        "required": ["x"],
    }


def test_property_named_title_survives_title_stripping() -> None:
    class Doc(BaseModel):
        title: str

    @tool
    def f(title: str, doc: Doc) -> None:
        pass

    assert props(f)["title"] == {"type": "string"}
    assert f.parameters["$defs"]["Doc"]["properties"] == {"title": {"type": "string"}}


def test_missing_hint_is_any() -> None:
    @tool
    def f(x, y: int = 1):  # type: ignore[no-untyped-def]
        return x

    assert props(f)["x"] == {}
    assert f.parameters["required"] == ["x"]


def test_annotated_descriptions_and_precedence_over_docstring() -> None:
    @tool
    def f(
        a: Annotated[int, "from a string"],
        b: Annotated[int, Field(description="from Field", ge=0)],
        c: int,
    ) -> None:
        """Sum.

        Args:
            a: docstring a
            b: docstring b
            c: docstring c
        """

    p = props(f)
    assert p["a"] == {"type": "integer", "description": "from a string"}
    assert p["b"] == {"type": "integer", "description": "from Field", "minimum": 0}
    assert p["c"] == {"type": "integer", "description": "docstring c"}


def test_google_docstring() -> None:
    @tool
    def search(query: str, limit: int = 10, exact: bool = False) -> list[str]:
        """Search the   knowledge base
        for matching documents.

        Args:
            query (str): What to look for;
                may span lines.
            limit: At most this many results.
            exact:
                Match the whole phrase.

        Returns:
            Matching titles.
        """
        return []

    assert search.description == "Search the knowledge base for matching documents."
    p = props(search)
    assert p["query"]["description"] == "What to look for; may span lines."
    assert p["limit"]["description"] == "At most this many results."
    assert p["exact"]["description"] == "Match the whole phrase."


def test_sphinx_docstring() -> None:
    @tool
    def fetch(url: str, timeout: float = 5.0) -> str:
        """Fetch a URL.

        :param url: The address to fetch,
            including the scheme.
        :param float timeout: Seconds to wait.
        :returns: The body.
        """
        return ""

    assert fetch.description == "Fetch a URL."
    assert props(fetch)["url"]["description"] == "The address to fetch, including the scheme."
    assert props(fetch)["timeout"]["description"] == "Seconds to wait."


def test_description_and_name_overrides_and_no_docstring() -> None:
    @tool(name="lookup-user", description="Find a user.")
    def f(uid: int) -> None:
        """Ignored summary."""

    @tool
    def g(uid: int) -> None:
        pass

    assert (f.name, f.description) == ("lookup-user", "Find a user.")
    assert (g.name, g.description) == ("g", "")
    assert f.definition == ToolDefinition("lookup-user", "Find a user.", f.parameters)


def test_postponed_annotations_resolve_to_real_types() -> None:
    p = props(future.order)
    assert p["count"] == {"type": "integer"}
    assert p["price"] == {"type": "number"}
    assert p["rush"] == {"type": "boolean"}
    assert p["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["size"] == {"$ref": "#/$defs/Size"}
    assert p["item"] == {"$ref": "#/$defs/Item"}
    assert p["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert future.order.parameters["$defs"]["Size"] == {
        "enum": ["small", "large"],
        "type": "string",
    }
    assert "ctx" not in props(future.whoami)


async def test_postponed_annotations_invoke_converts() -> None:
    result = await future.order.invoke(
        {
            "count": "2",
            "price": 1,
            "rush": True,
            "tags": ["a"],
            "size": "large",
            "item": {"name": "pen"},
        }
    )
    assert result["count"] == 2
    assert isinstance(result["price"], float)
    assert result["size"] is future.Size.LARGE
    assert result["item"] == future.Item(name="pen", qty=1)
    assert result["note"] is None
    assert await future.whoami.invoke({}, CTX) == "hi run-1"


async def test_postponed_annotations_with_local_type() -> None:
    paint, inspect_shade = future.make_local_tools()
    assert paint.parameters["$defs"]["Shade"]["enum"] == ["dark", "light"]
    assert await paint.invoke({"shade": "dark"}) == "Shade.dark"
    assert inspect_shade.parameters["$defs"]["Shade"]["enum"] == ["dark", "light"]
    assert await inspect_shade.invoke({"shade": "light"}) == "<Shade.LIGHT: 'light'>"


def test_unresolvable_hint_names_the_parameter() -> None:
    def f(good: int, bad: "NoSuchType") -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(TypeError, match=r"tool 'f'.*'NoSuchType'.*parameter 'bad'"):
        tool(f)


def test_unsupported_type_names_the_parameter() -> None:
    class Opaque:
        pass

    def f(ok: int, thing: Opaque) -> None:
        pass

    with pytest.raises(TypeError, match=r"tool 'f'.*parameter 'thing'"):
        tool(f)


def test_variadic_parameters_rejected() -> None:
    def star(*args: int) -> None:
        pass

    def kw(a: int, **kwargs: int) -> None:
        pass

    with pytest.raises(TypeError, match=r"tool 'star'.*'args' is variadic"):
        tool(star)
    with pytest.raises(TypeError, match=r"tool 'kw'.*'kwargs' is variadic"):
        tool(kw)


@pytest.mark.parametrize("bad", ["", "has space", "dots.no", "x" * 65, "ünï"])
def test_bad_tool_names_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        tool(name=bad)(lambda: None)


def test_name_limits_accepted() -> None:
    assert tool(name="a" * 64)(lambda: None).name == "a" * 64
    assert tool(name="A-b_9")(lambda: None).name == "A-b_9"


def test_parameter_names_that_shadow_basemodel_attributes() -> None:
    @tool
    def f(json: str, model_id: str, schema: int = 0) -> str:
        return f"{json}/{model_id}/{schema}"

    assert set(props(f)) == {"json", "model_id", "schema"}
    assert asyncio.run(f.invoke({"json": "j", "model_id": "m"})) == "j/m/0"


# --- decorator forms and flags -------------------------------------------------------------


def test_decorator_forms_and_call_passthrough() -> None:
    @tool
    def a(x: int, y: int) -> int:
        """Add."""
        return x + y

    @tool()
    def b(x: int) -> int:
        return x

    assert isinstance(a, Tool)
    assert isinstance(b, Tool)
    assert a(1, 2) == 3
    assert b(x=4) == 4
    assert a.fn.__name__ == "a"
    assert a.__doc__ == "Add."
    assert not a.is_async


def test_flags_and_concurrency_default() -> None:
    @tool
    def plain() -> None:
        pass

    @tool(read_only=True)
    def reader() -> None:
        pass

    @tool(destructive=True)
    def wiper() -> None:
        pass

    @tool(read_only=True, concurrency_safe=False)
    def serial_reader() -> None:
        pass

    @tool(concurrency_safe=True)
    def safe_writer() -> None:
        pass

    assert (plain.read_only, plain.destructive, plain.concurrency_safe) == (False, False, False)
    assert (reader.read_only, reader.concurrency_safe) == (True, True)
    assert (wiper.destructive, wiper.concurrency_safe) == (True, False)
    assert serial_reader.concurrency_safe is False
    assert (safe_writer.read_only, safe_writer.concurrency_safe) == (False, True)


# --- invoke --------------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_invoke_converts_lax_values() -> None:
    assert await add.invoke({"a": "3", "b": 4}) == 7


async def test_invoke_reports_bad_and_missing_fields() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        await add.invoke({"a": "x"})
    assert info.value.tool_name == "add"
    assert str(info.value) == (
        "invalid arguments for tool 'add': a: Input should be a valid integer, unable to "
        "parse string as an integer (got 'x'); b: Field required"
    )
    assert info.value.message == str(info.value)


async def test_invoke_rejects_extra_arguments() -> None:
    with pytest.raises(ToolArgumentsError, match=r"c: Extra inputs are not permitted \(got 5\)"):
        await add.invoke({"a": 1, "b": 2, "c": 5})


async def test_invoke_nested_error_path_and_long_input_truncated() -> None:
    @tool
    def f(p: Point, s: int = 0) -> None:
        pass

    with pytest.raises(ToolArgumentsError) as info:
        await f.invoke({"p": {"x": "nope"}, "s": "y" * 500})
    message = str(info.value)
    assert "p.x: Input should be a valid integer" in message
    assert "(got 'yyyy" in message
    assert "...)" in message
    assert len(message) < 300


async def test_invoke_passes_converted_models_and_enums() -> None:
    @tool
    def f(p: Point, c: Color, tags: list[int] | None = None) -> tuple[Point, Color, Any]:
        return p, c, tags

    p, c, tags = await f.invoke({"p": {"x": 1}, "c": "green", "tags": ["1", 2]})
    assert p == Point(x=1, y=0)
    assert c is Color.GREEN
    assert tags == [1, 2]


async def test_sync_tool_runs_in_worker_thread() -> None:
    @tool
    def where() -> int:
        return threading.get_ident()

    assert await where.invoke({}) != threading.get_ident()


async def test_async_tool_is_awaited_on_the_loop() -> None:
    @tool
    async def where(delay: float = 0) -> int:
        await asyncio.sleep(delay)
        return threading.get_ident()

    assert where.is_async
    assert await where.invoke({"delay": "0"}) == threading.get_ident()


async def test_positional_only_parameters() -> None:
    @tool
    def f(a: int, /, b: int) -> tuple[int, int]:
        return a, b

    assert await f.invoke({"a": 1, "b": 2}) == (1, 2)


async def test_context_is_injected_and_hidden_from_schema() -> None:
    @tool
    async def who(question: str, context: ToolContext) -> str:
        return f"{context.run_id}/{context.session_id}/{context.tool_call_id}/{question}"

    @tool
    def optional_ctx(ctx: ToolContext | None = None) -> str | None:
        return ctx.tool_call_id if ctx else None

    assert set(props(who)) == {"question"}
    assert who.parameters["required"] == ["question"]
    assert await who.invoke({"question": "q"}, CTX) == "run-1/sess-1/call-1/q"
    assert props(optional_ctx) == {}
    assert await optional_ctx.invoke({}) is None
    assert await optional_ctx.invoke({}, CTX) == "call-1"
    with pytest.raises(TypeError, match="needs a ToolContext"):
        await who.invoke({"question": "q"})
    with pytest.raises(ToolArgumentsError, match="context: Extra inputs"):
        await who.invoke({"question": "q", "context": {}}, CTX)


# --- registry ------------------------------------------------------------------------------


def test_registry_basics() -> None:
    def mul(a: int, b: int) -> int:
        """Multiply."""
        return a * b

    registry = ToolRegistry([add, mul])
    assert len(registry) == 2
    assert "add" in registry
    assert "mul" in registry
    assert add in registry
    assert "nope" not in registry
    assert registry.get("nope") is None
    wrapped = registry.get("mul")
    assert isinstance(wrapped, Tool)
    assert wrapped.description == "Multiply."
    assert [t.name for t in registry] == ["add", "mul"]
    assert [d.name for d in registry.definitions()] == ["add", "mul"]
    assert registry.definitions()[0] is add.definition


def test_registry_definitions_refresh_after_add() -> None:
    registry = ToolRegistry()
    assert registry.definitions() == []
    registry.add(add)
    assert [d.name for d in registry.definitions()] == ["add"]
    registry.definitions().clear()  # callers get a copy, not the cache
    assert len(registry.definitions()) == 1


def test_registry_rejects_duplicates() -> None:
    @tool(name="add")
    def other(x: int) -> int:
        return x

    registry = ToolRegistry([add])
    with pytest.raises(ValueError, match="duplicate tool name 'add'"):
        registry.add(other)
    with pytest.raises(ValueError, match="'add'"):
        ToolRegistry([add, add])
    assert registry.get("add") is add


# --- render_result -------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    id: int
    when: datetime.date


def test_render_result() -> None:
    assert render_result("plain") == "plain"
    assert render_result(None) == ""
    assert render_result(Point(x=1)) == '{"x":1,"y":0}'
    assert render_result(Row(1, datetime.date(2024, 1, 2))) == '{"id": 1, "when": "2024-01-02"}'
    assert render_result({"a": [1, 2], "b": "é"}) == '{"a": [1, 2], "b": "é"}'
    assert render_result(3) == "3"
    assert render_result(True) == "true"
    assert render_result([Point(x=2), Color.RED]) == '[{"x": 2, "y": 0}, "red"]'
    assert render_result(object) == "\"<class 'object'>\""


def test_render_result_falls_back_to_str() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert render_result(loop) == "[[...]]"
    assert render_result({(1, 2): "tuple key"}) == "{(1, 2): 'tuple key'}"
