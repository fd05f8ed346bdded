"""Knowledge: documents an agent can draw on, chunked at headings and ranked with BM25.

``KnowledgeSource.inline``, ``.from_directory`` and ``.dynamic`` make sources;
``resolve_knowledge(sources, KnowledgeQuery(...))`` returns scored passages, best first.
"""

from loom.knowledge.chunks import Chunk, chunk_markdown
from loom.knowledge.query import KnowledgePassage, KnowledgeQuery, render_passages
from loom.knowledge.ranking import Bm25Index, tokenize
from loom.knowledge.sources import KnowledgeSource, resolve_knowledge
from loom.knowledge.tool import knowledge_tool

__all__ = [
    "Bm25Index",
    "Chunk",
    "KnowledgePassage",
    "KnowledgeQuery",
    "KnowledgeSource",
    "chunk_markdown",
    "knowledge_tool",
    "render_passages",
    "resolve_knowledge",
    "tokenize",
]
