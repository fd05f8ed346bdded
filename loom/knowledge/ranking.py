"""BM25 ranking of chunks (the ``bm25s`` library), with the goal weighing less than the text."""

from __future__ import annotations

import re
from collections.abc import Sequence

import bm25s
import numpy as np

from loom.knowledge.chunks import Chunk

GOAL_WEIGHT = 0.3
"""A query's goal counts this much against its text."""

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORD_TEXT = """
a an and are as at be but by can do does for from has have how i if in into is it its me my no
not of on or our should so than that the their then there these this to was we what when where
which who why will with you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s")


def _stem(word: str) -> str:
    # A light suffix strip: "restarts", "restarted", "restarting" meet at "restart".
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed words without stopwords."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


class Bm25Index:
    """A BM25 index over chunks; ``search`` answers (chunk, score) pairs, best first."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self._retriever = bm25s.BM25()
        if self.chunks:
            corpus = [tokenize(chunk.indexed) for chunk in self.chunks]
            self._retriever.index(corpus, show_progress=False)

    def __len__(self) -> int:
        return len(self.chunks)

    def scores(self, text: str, goal: str = "") -> np.ndarray:
        """Each chunk's score for ``text``, plus ``GOAL_WEIGHT`` times its score for ``goal``."""
        scores = np.asarray(self._retriever.get_scores(tokenize(text)), dtype=np.float64)
        if goal:
            scores = scores + GOAL_WEIGHT * self._retriever.get_scores(tokenize(goal))
        return scores

    def search(self, text: str, goal: str = "", top_k: int = 5) -> list[tuple[Chunk, float]]:
        if not self.chunks:
            return []
        scores = self.scores(text, goal)
        k = min(top_k, len(self.chunks))
        best = np.argpartition(-scores, k - 1)[:k]
        ranked = sorted(best.tolist(), key=lambda i: (-scores[i], i))
        return [(self.chunks[i], float(scores[i])) for i in ranked if scores[i] > 0]
