"""The operator console in one process (memory broker and state), driven over ASGI: login,
pages, escaping, 404s, paging, CSRF and Origin checks, approvals and dead letters.
The browser tests (tests/integration/test_console_browser.py) run it on RabbitMQ and Redis."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from loom import Agent, Harness, Model, QualityGate, Runtime, RuntimeSignal
from loom.broker.base import Message
from loom.core.quality import Review
from loom.daemon.app import Daemon
from loom.daemon.console.auth import COOKIE
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.wire import ATTENTION_QUEUE, DEAD_LETTER_QUEUE, REPLIES_QUEUE, WORK_QUEUE
from tests.test_approvals_daemon import ask, make_daemon, ran
from tests.test_daemon_memory import drain

TOKEN = "tok"


async def client_for(daemon: Daemon) -> httpx.AsyncClient:
    app = build_app(daemon, gateway=True, console=daemon.settings.console)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://loom")


async def log_in(client: httpx.AsyncClient, name: str = "alice") -> None:
    answer = await client.post("/console/login", data={"operator": name, "token": TOKEN})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/sessions"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    daemon = make_daemon()
    await daemon.start()
    async with await client_for(daemon) as client:
        yield daemon, client
    await daemon.stop()


async def test_without_a_login_only_the_login_page_is_served(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = served
    for path in ("/console", "/console/sessions", "/console/session?id=ops", "/console/system",
                 "/console/approvals", "/console/dead-letters", "/console/events"):  # fmt: skip
        answer = await client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/login"), path
    login = await client.get("/console/login")
    assert login.status_code == 200
    assert 'name="token"' in login.text
    assert "script-src 'self'" in login.headers["content-security-policy"]
    wrong = await client.post("/console/login", data={"operator": "mallory", "token": "nope"})
    assert wrong.status_code == 401
    assert "wrong token" in wrong.text
    assert COOKIE not in wrong.cookies
    bad_name = await client.post("/console/login", data={"operator": "<b>", "token": TOKEN})
    assert bad_name.status_code == 422
    # A forged cookie is no login.
    client.cookies.set(COOKIE, "eyJ3aG8iOiAiZXZlIiwgImV4cCI6IDk5OTk5OTk5OTl9.forged")
    assert (await client.get("/console/sessions")).status_code == 303


async def test_the_login_cookie_is_signed_http_only_and_same_site_strict(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = served
    answer = await client.post("/console/login", data={"operator": "alice", "token": TOKEN})
    header = answer.headers["set-cookie"].lower()
    assert "httponly" in header
    assert "samesite=strict" in header
    assert "path=/console" in header
    assert TOKEN not in answer.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    page = await client.get("/console/sessions")
    assert page.status_code == 200
    assert "alice" in page.text
    assert TOKEN not in page.text


async def test_sessions_page_escapes_summaries_and_pages_past_the_end(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = served
    await log_in(client)
    await ask(daemon, "<script>alert('x')</script> restart db", urgency="low")
    page = await client.get("/console/sessions")
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text
    assert 'data-session="ops"' in page.text
    beyond = await client.get("/console/sessions?page=999")
    assert beyond.status_code == 200
    assert "No sessions on this page." in beyond.text
    assert 'data-session="' not in beyond.text
    assert (await client.get("/console/sessions?status=bogus")).status_code == 400


async def test_unknown_things_are_404_pages(served: tuple[Daemon, httpx.AsyncClient]) -> None:
    _, client = served
    await log_in(client)
    for path in ("/console/session?id=nobody", "/console/session?id=%00bad",
                 "/console/run?session=nobody&run=r1", "/console/nothing-here"):  # fmt: skip
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")
    csrf = csrf_of((await client.get("/console/sessions")).text)
    decide = await client.post(
        "/console/approvals/decide",
        data={"csrf": csrf, "session": "ops", "approval": "ap-none", "decision": "approve"},
    )
    assert decide.status_code == 404
    replay = await client.post(
        "/console/dead-letters/replay", data={"csrf": csrf, "message_id": "no-such-letter"}
    )
    assert replay.status_code == 404
    assert "no dead letter" in replay.text


async def test_an_approval_is_decided_with_a_form_and_the_run_completes(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = served
    await log_in(client, "alice")
    await ask(daemon, "please restart api")
    page = await client.get("/console/approvals")
    assert "restart" in page.text
    assert "&#34;service&#34;: &#34;api&#34;" in page.text  # the exact arguments, escaped
    approval_id = re.search(r'data-approval="([^"]+)"', page.text)
    digest = re.search(r'name="digest" value="([^"]+)"', page.text)
    assert approval_id is not None
    assert digest is not None
    form: dict[str, Any] = {"session": "ops", "approval": approval_id.group(1),
                            "digest": digest.group(1), "decision": "approve"}  # fmt: skip

    no_csrf = await client.post("/console/approvals/decide", data=form)
    assert no_csrf.status_code == 403
    wrong_csrf = await client.post("/console/approvals/decide", data={**form, "csrf": "x"})
    assert wrong_csrf.status_code == 403
    cross_site = await client.post(
        "/console/approvals/decide",
        data={**form, "csrf": csrf_of(page.text)},
        headers={"origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert "cross-site" in cross_site.text
    assert ran == []
    assert (await daemon.state.suspensions.load("ops")) is not None

    done = await client.post(
        "/console/approvals/decide",
        data={**form, "csrf": csrf_of(page.text)},
        headers={"origin": "http://loom"},
    )
    assert (done.status_code, done.headers["location"]) == (303, "/console/approvals?done=approve")
    await drain(daemon)
    assert ran == ["api"]
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    (record,) = snapshot.runs
    assert record.status == "completed"
    checkpointless = await client.get("/console/approvals")
    assert "No approval is pending." in checkpointless.text
    run_page = await client.get(f"/console/run?session=ops&run={record.run_id}")
    assert run_page.status_code == 200
    assert "api restarted" in run_page.text
    assert 'class="tool">restart<' in run_page.text  # the tool call in the transcript


async def test_an_action_without_a_login_is_refused_even_with_a_csrf_token(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = served
    await log_in(client)
    csrf = csrf_of((await client.get("/console/sessions")).text)
    client.cookies.clear()
    answer = await client.post("/console/dead-letters/replay", data={"csrf": csrf,
                               "message_id": "x"})  # fmt: skip
    assert answer.status_code == 401


async def test_a_dead_letter_is_listed_escaped_and_replayed(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = served
    signal = RuntimeSignal.create("<img src=x onerror=alert(1)> disk full", session_id="disk")
    message = Message(signal.model_dump_json().encode(), {}, signal.id)
    await daemon.broker.dead_letter(message, ATTENTION_QUEUE, "handler gave up <b>")
    await log_in(client)
    page = await client.get("/console/dead-letters")
    assert f'data-message="{signal.id}"' in page.text
    assert "handler gave up &lt;b&gt;" in page.text
    assert "<img src=x" not in page.text
    answer = await client.post(
        "/console/dead-letters/replay", data={"csrf": csrf_of(page.text), "message_id": signal.id}
    )
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "/console/dead-letters?replayed=1",
    )
    await drain(daemon)
    assert await daemon.broker.dead_letters() == []
    assert (await client.get("/console/session?id=disk")).status_code == 200


async def test_bearer_header_needs_no_cookie_and_no_csrf_token(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = served
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/console/system", headers=bearer)).status_code == 200
    wrong = {"authorization": "Bearer nope"}
    assert (await client.get("/console/system", headers=wrong)).status_code == 303
    answer = await client.post(
        "/console/dead-letters/replay", data={"message_id": "none"}, headers=bearer
    )
    assert answer.status_code == 404  # let in; there is no such letter


async def test_the_system_page_shows_roles_queues_and_no_secret(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = served
    await log_in(client)
    page = await client.get("/console/system")
    assert page.status_code == 200
    assert ATTENTION_QUEUE in page.text
    assert "attention_consuming" in page.text
    # One process runs every role: each consumed queue has one live consumer.
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td><td>(\d*)</td>", page.text)
    assert {queue: (role, consumers) for queue, role, consumers in rows} == {
        ATTENTION_QUEUE: ("attention", "1"),
        WORK_QUEUE: ("worker", "1"),
        REPLIES_QUEUE: ("worker (replies)", "1"),
        DEAD_LETTER_QUEUE: ("", "0"),
    }
    assert TOKEN not in page.text.replace("token", "")


async def test_filters_and_paging_by_status() -> None:
    daemon = make_daemon(console={"page_size": 2})
    await daemon.start()
    try:
        for name in ("a", "b", "c"):
            await ask(daemon, f"note {name}", session=name, urgency="low")
        await ask(daemon, "please restart api", session="waiting")
        async with await client_for(daemon) as client:
            await log_in(client)
            idle1 = await client.get("/console/sessions?status=idle&page=1")
            idle2 = await client.get("/console/sessions?status=idle&page=2")
            ids = re.findall(r'data-session="([^"]+)"', idle1.text + idle2.text)
            assert sorted(ids) == ["a", "b", "c"]
            assert "Page 1 of 2" in idle1.text
            waiting = await client.get("/console/sessions?status=awaiting")
            assert re.findall(r'data-session="([^"]+)"', waiting.text) == ["waiting"]
            busy = await client.get("/console/sessions?status=busy")
            assert re.findall(r'data-session="([^"]+)"', busy.text) == []
    finally:
        await daemon.stop()


async def test_the_console_is_off_without_a_token_and_cannot_be_forced_on() -> None:
    daemon = Daemon(Agent(Model.test(), "x"), settings=Settings())
    app = build_app(daemon, gateway=True, console=daemon.settings.console)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l") as c:
        for path in ("/console", "/console/login", "/console/sessions"):
            answer = await c.get(path)
            assert answer.status_code == 404
            assert "LOOM_API_TOKEN" in answer.json()["error"]
    with pytest.raises(ValidationError, match="LOOM_API_TOKEN"):
        Settings(console={"enabled": True})
    off = make_daemon(console={"enabled": False})
    async with await client_for(off) as client:
        assert (await client.get("/console/login")).status_code == 404


async def test_a_run_page_shows_exactly_the_runs_own_messages() -> None:
    """A run that writes several user turns (a harness's second sprint) and the run after
    it: each run page shows the messages its worker placed, nothing of the other run's."""

    def answer(request: Any) -> str:
        last = request.messages[-1].content
        if "not met" in last:
            return "sprint two: healthz is fine"
        return "second run: healthz again" if "later" in last else "sprint one: looked around"

    def mentions_healthz(review: Review) -> bool | str:
        return "healthz" in review.output or "say healthz"

    runtime = Runtime.long_running(
        quality=QualityGate.checks(mentions_healthz), harness=Harness.long_running(max_sprints=2)
    )
    settings = Settings(broker_url="memory://", state_url="memory://", api_token=TOKEN)
    daemon = Daemon(Agent(Model.function(answer), runtime=runtime), settings=settings)
    await daemon.start()
    try:
        await ask(daemon, "check the service", session="hc", urgency="high")
        await ask(daemon, "check it later", session="hc", urgency="high")
        snapshot = await daemon.state.sessions.load("hc")
        assert snapshot is not None
        first, second = sorted(snapshot.runs, key=lambda r: r.started_at)
        assert first.metadata["transcript"] == {"from": 0, "count": 4}
        assert second.metadata["transcript"] == {"from": 4, "count": 2}
        async with await client_for(daemon) as client:
            await log_in(client)
            one = (await client.get(f"/console/run?session=hc&run={first.run_id}")).text
            two = (await client.get(f"/console/run?session=hc&run={second.run_id}")).text
        assert "sprint one" in one
        assert "sprint two" in one
        assert "second run" not in one
        assert "second run" in two
        assert "sprint" not in two
    finally:
        await daemon.stop()
