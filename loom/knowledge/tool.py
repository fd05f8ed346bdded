"""The optional retrieval tool: lets the model search the agent's knowledge itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loom.knowledge.query import KnowledgeQuery, render_passages
from loom.knowledge.sources import KnowledgeSource, resolve_knowledge
from loom.tools import Tool


def knowledge_tool(sources: Sequence[KnowledgeSource]) -> Tool[..., Any]:
    """A read-only ``retrieve_knowledge(query, top_k)`` tool over ``sources``."""

    def retrieve_knowledge(query: str, top_k: int = 3) -> str:
        """Search the agent's knowledge; answers the best passages with their sources."""
        passages = resolve_knowledge(
            sources, KnowledgeQuery(text=query, top_k=max(1, min(top_k, 10)))
        )
        return render_passages(passages) if passages else "no passage matches"

    return Tool(retrieve_knowledge, read_only=True, concurrency_safe=True)
