"""The web capability's tools: ``fetch_url`` (a page as readable text) and, where a search
backend is configured, ``web_search``.

Every hop goes through ``GuardedTransport`` (loom/tools/web_guard.py): resolved, every
address checked, connected to the checked address. Redirects are followed here, by hand,
so each hop is checked again; the body is cut at ``max_bytes`` while it streams.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
from selectolax.lexbor import LexborHTMLParser

from loom.tools.tool import Tool
from loom.tools.web_guard import AddressGuard, GuardedTransport, Resolver, WebRefused
from loom.tools.web_search import SearchBackend, render_results

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NOT_TEXT = ("script", "style", "noscript", "template", "svg", "iframe", "object", "canvas")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
_MAX_URL = 4096


@dataclass(frozen=True, slots=True)
class WebOptions:
    allow_private: bool = False
    allow_hosts: tuple[str, ...] | None = None
    max_bytes: int = 2 * 1024 * 1024
    timeout: float = 20.0
    max_redirects: int = 5
    user_agent: str = "loom-agent (+https://github.com/loom)"


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    status: int
    content_type: str
    text: str
    truncated: bool

    def render(self) -> str:
        cut = "\n[cut at the size limit]" if self.truncated else ""
        return (
            f"URL: {self.url}\nStatus: {self.status}\nContent-Type: {self.content_type}\n\n"
            f"{self.text}{cut}"
        )


def html_to_text(html: str) -> str:
    """The readable text of an HTML page: its title, then the body's text, one block a
    line, without scripts, styles and other non-text elements."""
    tree = LexborHTMLParser(html)
    tree.strip_tags(list(_NOT_TEXT))
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    root = tree.body or tree.root
    body = root.text(separator="\n", strip=True) if root is not None else ""
    return f"# {title}\n\n{body}" if title else body


class Web:
    """Fetches for one web capability."""

    def __init__(
        self,
        options: WebOptions | None = None,
        *,
        search: SearchBackend | None = None,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options or WebOptions()
        if self.options.max_bytes < 1 or self.options.timeout <= 0:
            raise ValueError("web max_bytes must be >= 1 and timeout > 0")
        if self.options.max_redirects < 0:
            raise ValueError("web max_redirects must be >= 0")
        self.guard = AddressGuard(
            allow_private=self.options.allow_private,
            allow_hosts=self.options.allow_hosts,
            resolver=resolver,
        )
        self.search_backend = search
        # Loading the CA bundle costs milliseconds: once per capability, not per fetch.
        self._ssl = httpx.create_ssl_context(trust_env=False)
        self._inner = transport
        """The transport under the guard (tests: a recording one); default httpx's."""

    async def fetch(self, url: str) -> Page:
        try:
            async with asyncio.timeout(self.options.timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise WebRefused(f"fetch timed out after {self.options.timeout:g}s") from None

    async def _fetch(self, url: str) -> Page:
        current = _parse(url)
        transport = GuardedTransport(self.guard, self._inner, ssl_context=self._ssl)
        headers = {"User-Agent": self.options.user_agent, "Accept-Encoding": "gzip, deflate"}
        async with httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            timeout=self.options.timeout,
            headers=headers,
            trust_env=False,
        ) as client:
            for _ in range(self.options.max_redirects + 1):
                async with client.stream("GET", current) as response:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        current = _parse(str(current.join(location)))
                        continue
                    return await self._read(current, response)
        raise WebRefused(f"more than {self.options.max_redirects} redirects")

    async def _read(self, url: httpx.URL, response: httpx.Response) -> Page:
        content_type = response.headers.get("content-type", "")
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind and not kind.startswith(_TEXT_TYPES) and not kind.endswith(("+json", "+xml")):
            return Page(str(url), response.status_code, content_type, "[binary content]", False)
        body = bytearray()
        truncated = False
        async for chunk in response.aiter_bytes():
            room = self.options.max_bytes - len(body)
            if len(chunk) > room:
                body += chunk[:room]
                truncated = True
                break
            body += chunk
        text = bytes(body).decode(response.encoding or "utf-8", errors="replace")
        if kind in ("text/html", "application/xhtml+xml") or (not kind and "<html" in text[:512]):
            text = html_to_text(text)
        return Page(str(url), response.status_code, content_type, text, truncated)

    def tools(self) -> list[Tool[..., Any]]:
        web = self

        async def fetch_url(url: str) -> str:
            """Fetch a web page (http or https) and answer with its readable text.

            Args:
                url: The absolute URL to fetch.
            """
            return (await web.fetch(url)).render()

        tools: list[Tool[..., Any]] = [Tool(fetch_url, read_only=True, idempotent=True)]
        backend = self.search_backend
        if backend is not None:

            async def web_search(query: str, limit: int = 5) -> str:
                """Search the web; answers titles, URLs and snippets (fetch a URL to read it).

                Args:
                    query: What to search for.
                    limit: Results to return (1-20).
                """
                if not query.strip():
                    raise ValueError("empty query")
                return render_results(await backend.search(query, max(1, min(limit, 20))))

            tools.append(Tool(web_search, read_only=True, idempotent=True))
        return tools


def _parse(url: str) -> httpx.URL:
    if not isinstance(url, str) or len(url) > _MAX_URL:
        raise WebRefused(f"a URL must be text of at most {_MAX_URL} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise WebRefused(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise WebRefused(f"scheme {parsed.scheme or '(none)'!r} refused: only http and https")
    if not parsed.host:
        raise WebRefused("the URL has no host")
    if parsed.userinfo:
        raise WebRefused("URLs with credentials (user:password@) are refused")
    return parsed


__all__ = ["Page", "Web", "WebOptions", "html_to_text"]
