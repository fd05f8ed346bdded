"""Knowledge sources: inline documents, a directory of files, or a function of the query."""

from __future__ import annotations

import heapq
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loom.knowledge.chunks import Chunk, chunk_markdown
from loom.knowledge.query import KnowledgePassage, KnowledgeQuery
from loom.knowledge.ranking import Bm25Index

Resolver = Callable[[KnowledgeQuery], Iterable[KnowledgePassage | str]]
"""A dynamic source's function: the query in, passages (or plain texts) out."""


class KnowledgeSource:
    """Where passages come from. Make one with ``inline``, ``from_directory`` or ``dynamic``."""

    def __init__(
        self,
        name: str,
        *,
        documents: Mapping[str, str] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        if not name:
            raise ValueError("a knowledge source needs a name")
        if (documents is None) == (resolver is None):
            raise ValueError("a knowledge source has either documents or a resolver")
        self.name = name
        self.resolver = resolver
        self.documents = dict(documents or {})
        self._index: Bm25Index | None = None

    @classmethod
    def inline(
        cls, documents: Mapping[str, str] | Sequence[str], *, name: str = "inline"
    ) -> KnowledgeSource:
        """Documents given as text: a mapping of name to text, or texts named by position."""
        if not isinstance(documents, Mapping):
            documents = {f"doc{number}": text for number, text in enumerate(documents, 1)}
        return cls(name, documents=documents)

    @classmethod
    def from_directory(
        cls, path: str | Path, *, glob: str = "**/*.md", name: str | None = None
    ) -> KnowledgeSource:
        """The files under ``path`` that match ``glob``, read now (UTF-8)."""
        root = Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"knowledge directory {str(root)!r} does not exist")
        documents = {
            file.relative_to(root).as_posix(): file.read_text(encoding="utf-8", errors="replace")
            for file in sorted(root.glob(glob))
            if file.is_file()
        }
        return cls(name or root.name or "directory", documents=documents)

    @classmethod
    def dynamic(cls, name: str, resolver: Resolver) -> KnowledgeSource:
        """Passages computed per query by ``resolver`` (a search API, a database...)."""
        if not callable(resolver):
            raise TypeError("KnowledgeSource.dynamic needs a callable resolver")
        if inspect.iscoroutinefunction(resolver):
            raise TypeError("KnowledgeSource.dynamic needs a synchronous resolver")
        return cls(name, resolver=resolver)

    @property
    def index(self) -> Bm25Index:
        """The BM25 index of the documents' chunks, built on first use."""
        if self._index is None:
            chunks: list[Chunk] = []
            for document, text in self.documents.items():
                chunks.extend(chunk_markdown(document, text))
            self._index = Bm25Index(chunks)
        return self._index

    def search(self, query: KnowledgeQuery) -> list[KnowledgePassage]:
        """This source's best passages for ``query``, best first."""
        if self.resolver is not None:
            return [self._passage(item, rank) for rank, item in enumerate(self.resolver(query))][
                : query.top_k
            ]
        return [
            KnowledgePassage(self.name, chunk.document, chunk.text, score, chunk.heading)
            for chunk, score in self.index.search(query.text, query.goal, query.top_k)
        ]

    def _passage(self, item: Any, rank: int) -> KnowledgePassage:
        if isinstance(item, KnowledgePassage):
            return item
        if isinstance(item, str):
            # Plain texts keep the resolver's order: scores fall with rank.
            return KnowledgePassage(self.name, f"result{rank + 1}", item, 1.0 / (rank + 1))
        raise TypeError(
            f"knowledge source {self.name!r} returned {type(item).__name__}; "
            "expected KnowledgePassage or str"
        )

    def __repr__(self) -> str:
        kind = "dynamic" if self.resolver is not None else f"{len(self.documents)} documents"
        return f"<KnowledgeSource {self.name} {kind}>"


def resolve_knowledge(
    sources: Sequence[KnowledgeSource], query: KnowledgeQuery
) -> list[KnowledgePassage]:
    """The best ``query.top_k`` passages of the named (or all) sources, best first."""
    names = set(query.source_names)
    unknown = names - {source.name for source in sources}
    if unknown:
        known = ", ".join(sorted(source.name for source in sources)) or "none"
        raise ValueError(f"unknown knowledge source(s) {sorted(unknown)}; known: {known}")
    found = [
        passage
        for source in sources
        if not names or source.name in names
        for passage in source.search(query)
    ]
    return heapq.nlargest(query.top_k, found, key=lambda passage: passage.score)
