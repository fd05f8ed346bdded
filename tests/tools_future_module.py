"""Tools defined under postponed annotations, where every hint is a string until resolved."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel

from loom.tools import Tool, ToolContext, tool


class Size(Enum):
    SMALL = "small"
    LARGE = "large"


class Item(BaseModel):
    name: str
    qty: int = 1


@tool
def order(
    count: int,
    price: float,
    rush: bool,
    tags: list[str],
    size: Size,
    item: Item,
    note: str | None = None,
) -> dict[str, object]:
    """Place an order."""
    return {
        "count": count,
        "price": price,
        "rush": rush,
        "tags": tags,
        "size": size,
        "item": item,
        "note": note,
    }


@tool
async def whoami(ctx: ToolContext, greeting: str = "hi") -> str:
    """Greet the caller by run id."""
    return f"{greeting} {ctx.run_id}"


def make_local_tools() -> tuple[Tool[..., str], Tool[..., str]]:
    """Build tools whose hints name a class that exists only in this function's scope.

    One uses ``@tool`` and one ``@tool(...)``: the two forms are called from different
    stack depths, and both must find the decorating frame's locals.
    """

    class Shade(Enum):
        DARK = "dark"
        LIGHT = "light"

    @tool
    def paint(shade: Shade) -> str:
        return f"{type(shade).__name__}.{shade.value}"

    @tool(read_only=True)
    def inspect_shade(shade: Shade | None = None) -> str:
        return repr(shade)

    return paint, inspect_shade
