"""Capability.web: public addresses only unless allowed, the checked address is the one
connected to, redirects checked hop by hop, bodies cut at the cap while streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from aiohttp import web

from loom import Agent, Capability
from loom.tools.web import Web, WebOptions, html_to_text
from loom.tools.web_guard import WebRefused
from loom.tools.web_search import SearxngSearch
from tests.capability_helpers import Script

PAGE = """<html><head><title>Status</title><style>body{color:red}</style></head>
<body><h1>All good</h1><p>api: <b>up</b></p><script>steal()</script></body></html>"""


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """A loopback HTTP server: a page, redirects, an endless body and a search API."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(100_000):  # bounded, but far past any cap used here
            await response.write(b"x" * 8192)
        return response

    async def search(request: web.Request) -> web.Response:
        assert request.query["format"] == "json"
        query = request.query["q"]
        results = [
            {"title": f"{query} {n}", "url": f"https://r{n}.example/", "content": f"about {n}"}
            for n in range(10)
        ]
        return web.json_response({"query": query, "results": results})

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/endless", endless)
    app.router.add_get("/search", search)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class FakeResolver:
    """Answers each lookup with the next list of addresses; counts the lookups."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Recorder(httpx.AsyncBaseTransport):
    """Stands where the network would be: records what would have been connected to."""

    def __init__(self, answer: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answer is None:
            raise AssertionError(f"connected to {request.url}")
        return self.answer


def fetcher(**options: Any) -> Web:
    resolver = options.pop("resolver", None)
    transport = options.pop("transport", None)
    return Web(WebOptions(**options), resolver=resolver, transport=transport)


async def test_a_loopback_server_is_reachable_only_with_allow_private(server: str) -> None:
    with pytest.raises(WebRefused, match="loopback address"):
        await fetcher().fetch(server + "/")
    page = await fetcher(allow_private=True).fetch(server + "/")
    assert page.status == 200
    assert page.text == "# Status\n\nAll good\napi:\nup"
    allowed = await fetcher(allow_hosts=["127.0.0.1"]).fetch(server + "/")
    assert "All good" in allowed.text
    with pytest.raises(WebRefused, match="not in allow_hosts"):
        await fetcher(allow_hosts=["status.internal"]).fetch(server + "/")


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        (["169.254.169.254"], "cloud metadata"),
        (["::ffff:10.0.0.1"], "IPv4 inside IPv6, a private address"),
        (["::ffff:169.254.169.254"], "cloud metadata"),
        (["93.184.216.34", "10.0.0.1"], "a private address"),
        (["fe80::1"], "link-local"),
        (["0.0.0.0"], "unspecified"),
        (["224.0.0.1"], "multicast"),
        (["100.64.0.1"], "not a public address"),
    ],
)
async def test_a_host_resolving_to_a_refused_address_is_never_connected(
    answer: list[str], rule: str
) -> None:
    recorder = Recorder()
    web_ = fetcher(resolver=FakeResolver(answer), transport=recorder)
    with pytest.raises(WebRefused, match=rule):
        await web_.fetch("http://status.example.com/")
    assert recorder.requests == []


async def test_the_metadata_address_is_refused_even_with_allow_private() -> None:
    recorder = Recorder()
    web_ = fetcher(
        allow_private=True, resolver=FakeResolver(["169.254.169.254"]), transport=recorder
    )
    with pytest.raises(WebRefused, match="metadata"):
        await web_.fetch("http://metadata.example/latest/meta-data/")
    with pytest.raises(WebRefused, match="metadata"):
        await fetcher(allow_private=True).fetch("http://169.254.169.254/")
    assert recorder.requests == []


async def test_dns_rebinding_connects_to_the_address_that_was_checked() -> None:
    """The resolver answers public first, private after: the one lookup is checked and its
    address is the one connected to, with the name kept in Host and the TLS server name."""
    resolver = FakeResolver(["93.184.216.34"], ["127.0.0.1"])
    recorder = Recorder(httpx.Response(200, text="hi", headers={"content-type": "text/plain"}))
    page = await fetcher(resolver=resolver, transport=recorder).fetch(
        "https://rebind.example/x?y=1"
    )
    assert page.text == "hi"
    assert resolver.lookups == ["rebind.example"]
    [request] = recorder.requests
    assert request.url.host == "93.184.216.34"
    assert request.url.path == "/x"
    assert request.headers["host"] == "rebind.example"
    assert request.extensions["sni_hostname"] == "rebind.example"


async def test_each_redirect_hop_is_checked_again() -> None:
    resolver = FakeResolver(["93.184.216.34"], ["10.0.0.5"])
    recorder = Recorder(httpx.Response(302, headers={"location": "http://internal.example/"}))
    with pytest.raises(WebRefused, match="private address"):
        await fetcher(resolver=resolver, transport=recorder).fetch("http://public.example/")
    assert [r.url.host for r in recorder.requests] == ["93.184.216.34"]


async def test_a_redirect_from_an_allowed_server_to_a_private_address_is_refused(
    server: str,
) -> None:
    web_ = fetcher(allow_hosts=["127.0.0.1"])
    with pytest.raises(WebRefused, match="not in allow_hosts"):
        await web_.fetch(f"{server}/redirect?to=http://10.0.0.7/")
    with pytest.raises(WebRefused, match="metadata"):
        await fetcher(allow_private=True).fetch(f"{server}/redirect?to=http://169.254.169.254/")
    with pytest.raises(WebRefused, match="scheme 'file'"):
        await fetcher(allow_private=True).fetch(f"{server}/redirect?to=file:///etc/passwd")
    followed = await fetcher(allow_private=True).fetch(f"{server}/redirect?to=/")
    assert followed.url == server + "/"
    assert "All good" in followed.text


async def test_too_many_redirects_are_refused() -> None:
    recorder = Recorder(httpx.Response(302, headers={"location": "/again"}))
    web_ = fetcher(max_redirects=3, resolver=FakeResolver(["93.184.216.34"]), transport=recorder)
    with pytest.raises(WebRefused, match="more than 3 redirects"):
        await web_.fetch("http://loop.example/")
    assert len(recorder.requests) == 4


async def test_an_endless_body_is_cut_at_the_cap(server: str) -> None:
    page = await fetcher(allow_private=True, max_bytes=100_000).fetch(server + "/endless")
    assert page.truncated
    assert len(page.text) == 100_000
    assert page.render().endswith("[cut at the size limit]")


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/", "only http and https"),
        ("http://user:pw@example.com/", "credentials"),
        ("not a url", "only http and https"),
        ("http://" + "a" * 5000, "at most 4096"),
    ],
)
async def test_bad_urls_name_the_rule(url: str, rule: str) -> None:
    with pytest.raises(WebRefused, match=rule):
        await fetcher(transport=Recorder()).fetch(url)


async def test_a_slow_server_times_out() -> None:
    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(30)
            raise AssertionError("not reached")

    web_ = fetcher(timeout=0.2, resolver=FakeResolver(["93.184.216.34"]), transport=Slow())
    with pytest.raises(WebRefused, match=r"timed out after 0\.2s"):
        await web_.fetch("http://slow.example/")


def test_html_becomes_readable_text() -> None:
    assert html_to_text("<p>a<script>x()</script></p><div>b</div>") == "a\nb"


async def test_web_search_through_a_searxng_backend(server: str) -> None:
    capability = Capability.web(search=SearxngSearch(server))
    tools = {t.name: t for t in capability.tools()}
    assert set(tools) == {"fetch_url", "web_search"}
    assert all(t.read_only for t in tools.values())
    answer = await tools["web_search"].invoke({"query": "loom", "limit": 2})
    assert answer == (
        "1. loom 0\n   https://r0.example/\n   about 0\n\n2. loom 1\n   https://r1.example/\n"
        "   about 1"
    )
    assert {t.name for t in Capability.web().tools()} == {"fetch_url"}


async def test_a_models_refused_url_is_a_tool_error_naming_the_rule(server: str) -> None:
    script = Script([[("fetch_url", {"url": server + "/"})], "done"])
    agent = Agent(script.model, capabilities=[Capability.web()])
    assert (await agent.run("check")).ok
    [shown] = script.tool_results()
    assert "loopback address" in shown
    assert "All good" not in shown
