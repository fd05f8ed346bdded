"""Heading-aware chunking: a Markdown document becomes one chunk per section.

Each chunk knows the headings above it ("Deploys > Rollback"); the heading path is indexed
with the text, since a section's heading often holds the words a question uses. Sections
longer than ``max_chars`` are split at paragraph breaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHUNK_CHARS = 1500
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document under one heading path."""

    document: str
    heading: str
    text: str

    @property
    def indexed(self) -> str:
        """What the ranking sees: document name, headings and text."""
        name = re.sub(r"[_\-./]+", " ", self.document)
        return f"{name}\n{self.heading}\n{self.text}"


def chunk_markdown(document: str, text: str, *, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Split ``text`` at its headings (not inside code fences) and at paragraphs past
    ``max_chars``; empty sections are left out."""
    path: list[tuple[int, str]] = []
    body: list[str] = []
    chunks: list[Chunk] = []
    in_fence = False

    def flush() -> None:
        content = "\n".join(body).strip()
        body.clear()
        if content:
            heading = " > ".join(title for _, title in path)
            chunks.extend(_split(document, heading, content, max_chars))

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        flush()
        level = len(match.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, match.group(2)))
    flush()
    return chunks


def _split(document: str, heading: str, content: str, max_chars: int) -> list[Chunk]:
    if len(content) <= max_chars:
        return [Chunk(document, heading, content)]
    pieces: list[Chunk] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", content):
        if current and len(current) + len(paragraph) + 2 > max_chars:
            pieces.append(Chunk(document, heading, current))
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
        while len(current) > max_chars:  # one paragraph longer than a chunk
            pieces.append(Chunk(document, heading, current[:max_chars]))
            current = current[max_chars:]
    if current.strip():
        pieces.append(Chunk(document, heading, current))
    return pieces
