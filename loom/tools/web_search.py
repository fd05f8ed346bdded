"""Web search through a backend the user configures (never by scraping a search page):
the ``SearchBackend`` port and one implementation, a SearXNG instance's JSON API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str = ""


class SearchBackend(Protocol):
    """Anything that answers a query with results."""

    async def search(self, query: str, limit: int) -> Sequence[SearchResult]: ...


class SearxngSearch:
    """A SearXNG instance (``format=json`` must be enabled in its ``search.formats``)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, api_key: str | None = None):
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"SearXNG base URL must be http(s)://host/..., not {base_url!r}")
        self.base_url = str(url).rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def search(self, query: str, limit: int) -> list[SearchResult]:
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
            response = await client.get(
                f"{self.base_url}/search",
                params={"q": query, "format": "json"},
                headers=self._headers,
            )
        if response.status_code != 200:
            raise RuntimeError(f"search backend answered HTTP {response.status_code}")
        try:
            items = response.json().get("results", [])
        except (ValueError, AttributeError):
            raise RuntimeError("search backend answered something that is not JSON") from None
        results = [
            SearchResult(
                title=str(item.get("title", "")),
                url=str(item.get("url", "")),
                snippet=str(item.get("content", "")),
            )
            for item in items
            if isinstance(item, dict) and item.get("url")
        ]
        return results[:limit]


def render_results(results: Sequence[SearchResult]) -> str:
    if not results:
        return "no results"
    return "\n\n".join(
        f"{number}. {r.title}\n   {r.url}" + (f"\n   {r.snippet}" if r.snippet else "")
        for number, r in enumerate(results, 1)
    )


__all__ = ["SearchBackend", "SearchResult", "SearxngSearch", "render_results"]
